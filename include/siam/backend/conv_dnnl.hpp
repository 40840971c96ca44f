// oneDNN (Intel's Deep Neural Network Library, Debian libdnnl-dev 2.6) as the float
// convolution engine of the CPU backend. Optional: CMake option SIAM_DNNL (target
// siam::dnnl); never included by <siam/siamese.hpp>. Including this header registers the
// engine; set_conv_engine(ConvEngine::onednn) selects it.
//
// Primitives (forward, backward-data, backward-weights with the bias gradient) are created
// once per geometry and thread and cached, with their layouts left to oneDNN (`any`): it
// picks blocked layouts (nChw16c on AVX-512) and its direct JIT kernels, as PyTorch's CPU
// convolution does. An NCHW tensor is reordered into the chosen layout and an output back,
// through cached reorder primitives, into a per-thread arena sized when a geometry is first
// seen. A channel-blocked tensor (ConvGeometry::xblock / yblock, in the block size that
// block() reports) is already in the kernels' layout: the primitives are created with it and
// read and write it in place, so a network that keeps its activations blocked from one
// convolution to the next (nn::Conv2D in training) copies nothing. Weights stay OIHW. The
// scratchpad is the caller's workspace (a tape slot). oneDNN overwrites gradients, so a gradient
// that must accumulate is computed into the workspace and added. oneDNN allocates inside every
// primitive execution (its argument maps), so this engine is not allocation-free (docs/conv.md).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <dnnl.hpp>
#include <memory>
#include <new>
#include <vector>

#include "siam/backend/blocked_host.hpp"
#include "siam/backend/conv_dispatch.hpp"

namespace siam::detail {

struct DnnlConv {
  using md = dnnl::memory::desc;
  using tag = dnnl::memory::format_tag;
  static constexpr auto f32 = dnnl::memory::data_type::f32;

  // One tensor of a primitive: siam's plain memory (`user`, re-pointed on each call) and,
  // when oneDNN chose another layout for it, its copy in that layout (`blk`, in the
  // thread's arena at `offset` floats) with the reorder between the two.
  struct Arg {
    dnnl::memory user, blk;
    dnnl::reorder reorder;  // user -> blk for inputs, blk -> user for outputs
    bool blocked = false;
    index_t offset = 0;
    index_t unblock = 0;  // an output in nChw16c / nChw8c: its channel block (own copy-out)
    index_t n = 0, c = 0, hw = 0;
  };
  struct Entry {
    ConvGeometry g;
    dnnl::convolution_forward fwd;
    dnnl::convolution_backward_data bwd_data;
    dnnl::convolution_backward_weights bwd_weights;
    Arg f_x, f_w, f_y;            // forward
    Arg d_dy, d_w, d_dx;          // backward data
    Arg w_x, w_dy, w_dw;          // backward weights
    bool dy_shared = false;       // w_dy is d_dy's layout: reordered once
    dnnl::memory b, db, scratch;  // plain: re-pointed on each call
    index_t scratch_floats = 0, arena_floats = 0;
  };
  struct FreeDeleter {
    void operator()(float* p) const { std::free(p); }
  };
  struct Context {
    dnnl::engine engine{dnnl::engine::kind::cpu, 0};
    dnnl::stream stream{engine};
    std::vector<std::unique_ptr<Entry>> entries;
    // The blocked copies of the running call: grown when a new geometry needs more, never
    // per call.
    std::unique_ptr<float, FreeDeleter> arena;
    index_t arena_floats = 0;
  };
  // One cache per thread: memory objects are re-pointed per call, so threads never share.
  static Context& context() {
    thread_local Context c;
    return c;
  }

  static index_t floats_of(const md& d) {
    return static_cast<index_t>((d.get_size() + sizeof(float) - 1) / sizeof(float));
  }
  static index_t round16(index_t n) { return (n + 15) / 16 * 16; }

  // The Arg for a tensor whose plain layout is `plain` and whose layout in the primitive is
  // `chosen`; an input reorders plain -> chosen, an output chosen -> plain. Blocked copies
  // are laid out from `at` (floats), which advances.
  static Arg make_arg(Context& c, const md& plain, const md& chosen, bool input, index_t& at) {
    Arg a;
    a.user = dnnl::memory(plain, c.engine, nullptr);
    if (chosen == plain) {
      a.blk = a.user;
      return a;
    }
    a.blocked = true;
    a.blk = dnnl::memory(chosen, c.engine, nullptr);
    a.offset = at;
    at += round16(floats_of(chosen));
    a.reorder = input ? dnnl::reorder(a.user, a.blk) : dnnl::reorder(a.blk, a.user);
    const dnnl::memory::dims d = plain.dims();
    if (!input && d.size() == 4 && plain == md(d, f32, tag::nchw))
      for (const auto& [block, t] : {std::pair{16, tag::aBcd16b}, std::pair{8, tag::aBcd8b}})
        if (chosen == md(d, f32, t)) {
          a.unblock = block;
          a.n = d[0], a.c = d[1], a.hw = d[2] * d[3];
        }
    return a;
  }

  // The memory format of channel blocks of k (8 or 16), nchw for 0.
  static tag block_tag(index_t k) {
    return k == 16 ? tag::aBcd16b : k == 8 ? tag::aBcd8b : tag::nchw;
  }

  /// The channel block of the layout oneDNN's forward kernels choose on this CPU (16 with
  /// AVX-512, 8 with AVX2), found once from a probe convolution; 0 when it keeps a plain one.
  static index_t block() {
    static const index_t k = [] {
      const dnnl::engine eng(dnnl::engine::kind::cpu, 0);
      const md x_any({2, 32, 8, 8}, f32, tag::any), w_any({32, 32, 3, 3}, f32, tag::any);
      auto fpd = dnnl::convolution_forward::primitive_desc(
          dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                          dnnl::algorithm::convolution_direct, x_any, w_any, x_any,
                                          {1, 1}, {1, 1}, {1, 1}),
          eng);
      for (index_t b : {16, 8})
        if (fpd.dst_desc() == md({2, 32, 8, 8}, f32, block_tag(b))) return b;
      return index_t(0);
    }();
    return k;
  }

  static Entry& entry(const ConvGeometry& g) {
    Context& c = context();
    for (auto& e : c.entries)
      if (e->g == g) return *e;
    using dims = dnnl::memory::dims;
    // siam's memory: NCHW, or channel-blocked where the geometry says so (block() or the
    // caller's choice; oneDNN's own check refuses a block its kernels lack).
    const md x_md({g.n, g.c, g.h, g.w}, f32, block_tag(g.xblock));
    const md w_md({g.o, g.c, g.kh, g.kw}, f32, tag::oihw);
    const md b_md({g.o}, f32, tag::x);
    const md y_md({g.n, g.o, g.oh, g.ow}, f32, block_tag(g.yblock));
    // `any`: oneDNN picks its layouts (blocked, for its direct JIT kernels); a blocked
    // tensor is given as it is.
    const md x_any = g.xblock ? x_md : md({g.n, g.c, g.h, g.w}, f32, tag::any);
    const md w_any({g.o, g.c, g.kh, g.kw}, f32, tag::any);
    const md y_any = g.yblock ? y_md : md({g.n, g.o, g.oh, g.ow}, f32, tag::any);
    const dims strides{g.stride, g.stride}, pad{g.pad, g.pad};
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const auto alg = dnnl::algorithm::convolution_direct;
    auto fpd = dnnl::convolution_forward::primitive_desc(
        dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, alg, x_any, w_any, b_md,
                                        y_any, strides, pad, pad),
        attr, c.engine);
    auto dpd = dnnl::convolution_backward_data::primitive_desc(
        dnnl::convolution_backward_data::desc(alg, x_any, w_any, y_any, strides, pad, pad), attr,
        c.engine, fpd);
    auto wpd = dnnl::convolution_backward_weights::primitive_desc(
        dnnl::convolution_backward_weights::desc(alg, x_any, w_any, b_md, y_any, strides, pad, pad),
        attr, c.engine, fpd);
    auto e = std::make_unique<Entry>();
    e->g = g;
    e->fwd = dnnl::convolution_forward(fpd);
    e->bwd_data = dnnl::convolution_backward_data(dpd);
    e->bwd_weights = dnnl::convolution_backward_weights(wpd);
    index_t at = 0;  // forward copies
    e->f_x = make_arg(c, x_md, fpd.src_desc(), true, at);
    e->f_w = make_arg(c, w_md, fpd.weights_desc(), true, at);
    e->f_y = make_arg(c, y_md, fpd.dst_desc(), false, at);
    index_t need = at;
    at = 0;  // backward copies (the forward's are dead by then)
    e->d_dy = make_arg(c, y_md, dpd.diff_dst_desc(), true, at);
    e->d_w = make_arg(c, w_md, dpd.weights_desc(), true, at);
    e->d_dx = make_arg(c, x_md, dpd.diff_src_desc(), false, at);
    e->w_x = make_arg(c, x_md, wpd.src_desc(), true, at);
    e->dy_shared = wpd.diff_dst_desc() == dpd.diff_dst_desc();
    if (e->dy_shared) {
      e->w_dy = e->d_dy;
    } else {
      e->w_dy = make_arg(c, y_md, wpd.diff_dst_desc(), true, at);
    }
    e->w_dw = make_arg(c, w_md, wpd.diff_weights_desc(), false, at);
    e->arena_floats = std::max(need, at);
    e->b = dnnl::memory(b_md, c.engine, nullptr);
    e->db = dnnl::memory(b_md, c.engine, nullptr);
    std::size_t bytes =
        std::max({fpd.scratchpad_desc().get_size(), dpd.scratchpad_desc().get_size(),
                  wpd.scratchpad_desc().get_size()});
    e->scratch = dnnl::memory(md({static_cast<index_t>(bytes / sizeof(float) + 1)}, f32, tag::x),
                              c.engine, nullptr);
    e->scratch_floats = static_cast<index_t>(bytes / sizeof(float) + 16);
    if (e->arena_floats > c.arena_floats) {
      float* p = static_cast<float*>(
          std::aligned_alloc(64, static_cast<std::size_t>(e->arena_floats) * sizeof(float)));
      if (!p) throw std::bad_alloc();
      c.arena.reset(p);
      c.arena_floats = e->arena_floats;
    }
    c.entries.push_back(std::move(e));
    return *c.entries.back();
  }

  // Workspace: the scratchpad, then room for gradients that must be added rather than
  // written (dx, dw, db), 16-float aligned.
  static index_t workspace(const ConvGeometry& g) {
    if (g.n == 0) return 0;
    return round16(entry(g).scratch_floats) + round16(g.in_size()) + round16(g.weight_size()) +
           round16(g.o);
  }

  // Execution through oneDNN's C API: an argument array on the stack instead of the C++
  // API's std::unordered_map built on every call.
  template <std::size_t N>
  static void run(const dnnl::primitive& p, const dnnl_exec_arg_t (&args)[N]) {
    dnnl::error::wrap_c_api(
        dnnl_primitive_execute(p.get(), context().stream.get(), static_cast<int>(N), args),
        "siam: oneDNN convolution");
  }
  // Points an input Arg at `plain` and returns the memory the primitive reads (reordered).
  static dnnl_memory_t in(Arg& a, const float* plain) {
    a.user.set_data_handle(const_cast<float*>(plain));
    if (!a.blocked) return a.user.get();
    a.blk.set_data_handle(context().arena.get() + a.offset);
    run(a.reorder, {{DNNL_ARG_FROM, a.user.get()}, {DNNL_ARG_TO, a.blk.get()}});
    return a.blk.get();
  }
  // Points an output Arg at `plain` and returns the memory the primitive writes.
  static dnnl_memory_t out(Arg& a, float* plain) {
    a.user.set_data_handle(plain);
    if (!a.blocked) return a.user.get();
    a.blk.set_data_handle(context().arena.get() + a.offset);
    return a.blk.get();
  }
  // Copies an output written in oneDNN's layout back to siam's. Activations in nChw16c /
  // nChw8c are copied here, in tiles (HostBlocked; oneDNN 2.6's reorder in that direction
  // measured 5x slower than the other way on the ResNet shapes).
  // With `acc`, the copy adds into siam's memory (only for an Arg with `unblock`).
  static void finish(Arg& a, bool acc = false) {
    if (!a.blocked) return;
    if (a.unblock) {  // read on this thread: the primitive's writes must be done
      context().stream.wait();
      const float* blk = static_cast<const float*>(a.blk.get_data_handle());
      float* y = static_cast<float*>(a.user.get_data_handle());
      if (acc)
        HostBlocked<float>::unblock<true>(a.n, a.c, a.hw, a.unblock, blk, y);
      else
        HostBlocked<float>::unblock<false>(a.n, a.c, a.hw, a.unblock, blk, y);
      return;
    }
    run(a.reorder, {{DNNL_ARG_FROM, a.blk.get()}, {DNNL_ARG_TO, a.user.get()}});
  }

  static void forward(const ConvGeometry& g, const float* x, const float* w, const float* b,
                      float* y, float* work) {
    if (g.n == 0) return;
    Entry& e = entry(g);
    e.scratch.set_data_handle(work);
    if (b) {
      e.b.set_data_handle(const_cast<float*>(b));
    } else {  // oneDNN always adds the bias given: a zero one from the workspace
      float* zb =
          work + round16(e.scratch_floats) + round16(g.in_size()) + round16(g.weight_size());
      std::fill(zb, zb + g.o, 0.f);
      e.b.set_data_handle(zb);
    }
    const dnnl_memory_t mx = in(e.f_x, x), mw = in(e.f_w, w), my = out(e.f_y, y);
    run(e.fwd, {{DNNL_ARG_SRC, mx},
                {DNNL_ARG_WEIGHTS, mw},
                {DNNL_ARG_BIAS, e.b.get()},
                {DNNL_ARG_DST, my},
                {DNNL_ARG_SCRATCHPAD, e.scratch.get()}});
    finish(e.f_y);
    context().stream.wait();
  }

  static void backward(const ConvGeometry& g, const float* x, const float* w, const float* dy,
                       float* dx, bool acc_dx, float* dw, bool acc_dw, float* db, bool acc_db,
                       float* work) {
    if (g.n == 0) {  // no images: zero weight and bias gradients
      if (dw && !acc_dw) std::fill(dw, dw + g.weight_size(), 0.f);
      if (db && !acc_db) std::fill(db, db + g.o, 0.f);
      return;
    }
    Entry& e = entry(g);
    auto& s = context().stream;
    float* tdx = work + round16(e.scratch_floats);
    float* tdw = tdx + round16(g.in_size());
    float* tdb = tdw + round16(g.weight_size());
    e.scratch.set_data_handle(work);
    dnnl_memory_t mdy = nullptr;  // dy in the backward-data layout, reordered once
    if (dw || db) {
      const dnnl_memory_t mx = in(e.w_x, x);
      mdy = in(e.w_dy, dy);
      const dnnl_memory_t mdw = out(e.w_dw, dw && !acc_dw ? dw : tdw);
      e.db.set_data_handle(db && !acc_db ? db : tdb);
      run(e.bwd_weights, {{DNNL_ARG_SRC, mx},
                          {DNNL_ARG_DIFF_DST, mdy},
                          {DNNL_ARG_DIFF_WEIGHTS, mdw},
                          {DNNL_ARG_DIFF_BIAS, e.db.get()},
                          {DNNL_ARG_SCRATCHPAD, e.scratch.get()}});
      finish(e.w_dw);
      s.wait();
      if (dw && acc_dw) add(dw, tdw, g.weight_size());
      if (db && acc_db) add(db, tdb, g.o);
      if (!e.dy_shared) mdy = nullptr;
    }
    if (dx) {
      if (!mdy) mdy = in(e.d_dy, dy);
      // An accumulated dx in a channel-blocked layout is added by the copy-out itself.
      const bool add_in_copy = acc_dx && e.d_dx.unblock;
      const dnnl_memory_t mw = in(e.d_w, w), mdx = out(e.d_dx, acc_dx && !add_in_copy ? tdx : dx);
      run(e.bwd_data, {{DNNL_ARG_DIFF_DST, mdy},
                       {DNNL_ARG_WEIGHTS, mw},
                       {DNNL_ARG_DIFF_SRC, mdx},
                       {DNNL_ARG_SCRATCHPAD, e.scratch.get()}});
      finish(e.d_dx, add_in_copy);
      s.wait();
      if (acc_dx && !add_in_copy) add(dx, tdx, g.in_size());
    }
  }
  static void add(float* out, const float* in, index_t n) {
    parallel_for((n + 4095) / 4096, n >= (1 << 15), [&](index_t t) {
      const index_t e = std::min(n, (t + 1) * 4096);
      for (index_t i = t * 4096; i < e; ++i)
        out[i] += in[i];
    });
  }

  static bool register_engine() {
    static const HostConvFns fns{"onednn", &block, &workspace, &forward, &backward};
    onednn_conv_fns() = &fns;
    return true;
  }
};

// Registration when this header is part of the program (before main).
inline const bool dnnl_conv_registered = DnnlConv::register_engine();

}  // namespace siam::detail
