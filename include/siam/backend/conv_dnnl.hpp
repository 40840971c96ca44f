// oneDNN (Intel's Deep Neural Network Library, Debian libdnnl-dev 2.6) as the float
// convolution engine of the CPU backend. Optional: CMake option SIAM_DNNL (target
// siam::dnnl); never included by <siam/siamese.hpp>. Including this header registers the
// engine; set_conv_engine(ConvEngine::onednn) selects it. It is not the default: on the LeNet
// shapes, with siam's NCHW layouts, oneDNN 2.6 picks its own im2col + GEMM ("gemm:jit") and
// was slower than siam's im2col engine, and it allocates on every call (docs/conv.md).
//
// Primitives (forward, backward-data, backward-weights with the bias gradient) are created
// once per geometry and thread and cached; tensors stay in siam's NCHW/OIHW layouts; the
// scratchpad is the caller's workspace (a tape slot). oneDNN overwrites gradients, so a
// gradient that must accumulate is computed into the workspace and added.
#pragma once

#include <dnnl.hpp>
#include <memory>
#include <vector>

#include "siam/backend/conv_dispatch.hpp"

namespace siam::detail {

struct DnnlConv {
  using md = dnnl::memory::desc;
  using tag = dnnl::memory::format_tag;
  static constexpr auto f32 = dnnl::memory::data_type::f32;

  struct Entry {
    ConvGeometry g;
    dnnl::convolution_forward fwd;
    dnnl::convolution_backward_data bwd_data;
    dnnl::convolution_backward_weights bwd_weights;
    dnnl::memory x, w, b, y, dx, dw, db, scratch;  // handles re-pointed on each call
    index_t scratch_floats = 0;
  };
  struct Context {
    dnnl::engine engine{dnnl::engine::kind::cpu, 0};
    dnnl::stream stream{engine};
    std::vector<std::unique_ptr<Entry>> entries;
  };
  // One cache per thread: memory objects are re-pointed per call, so threads never share.
  static Context& context() {
    thread_local Context c;
    return c;
  }

  static Entry& entry(const ConvGeometry& g) {
    Context& c = context();
    for (auto& e : c.entries)
      if (e->g == g) return *e;
    using dims = dnnl::memory::dims;
    const md x_md({g.n, g.c, g.h, g.w}, f32, tag::nchw);
    const md w_md({g.o, g.c, g.kh, g.kw}, f32, tag::oihw);
    const md b_md({g.o}, f32, tag::x);
    const md y_md({g.n, g.o, g.oh, g.ow}, f32, tag::nchw);
    const dims strides{g.stride, g.stride}, pad{g.pad, g.pad};
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const auto alg = dnnl::algorithm::convolution_direct;
    auto fpd = dnnl::convolution_forward::primitive_desc(
        dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, alg, x_md, w_md, b_md,
                                        y_md, strides, pad, pad),
        attr, c.engine);
    auto dpd = dnnl::convolution_backward_data::primitive_desc(
        dnnl::convolution_backward_data::desc(alg, x_md, w_md, y_md, strides, pad, pad), attr,
        c.engine, fpd);
    auto wpd = dnnl::convolution_backward_weights::primitive_desc(
        dnnl::convolution_backward_weights::desc(alg, x_md, w_md, b_md, y_md, strides, pad, pad),
        attr, c.engine, fpd);
    auto e = std::make_unique<Entry>();
    e->g = g;
    e->fwd = dnnl::convolution_forward(fpd);
    e->bwd_data = dnnl::convolution_backward_data(dpd);
    e->bwd_weights = dnnl::convolution_backward_weights(wpd);
    auto mem = [&](const md& d) { return dnnl::memory(d, c.engine, nullptr); };
    e->x = mem(x_md);
    e->w = mem(w_md);
    e->b = mem(b_md);
    e->y = mem(y_md);
    e->dx = mem(x_md);
    e->dw = mem(w_md);
    e->db = mem(b_md);
    std::size_t bytes =
        std::max({fpd.scratchpad_desc().get_size(), dpd.scratchpad_desc().get_size(),
                  wpd.scratchpad_desc().get_size()});
    e->scratch = dnnl::memory(md({static_cast<index_t>(bytes / sizeof(float) + 1)}, f32, tag::x),
                              c.engine, nullptr);
    e->scratch_floats = static_cast<index_t>(bytes / sizeof(float) + 16);
    c.entries.push_back(std::move(e));
    return *c.entries.back();
  }

  // Workspace: the scratchpad, then room for gradients that must be added rather than
  // written (dx, dw, db), 16-float aligned.
  static index_t round16(index_t n) { return (n + 15) / 16 * 16; }
  static index_t workspace(const ConvGeometry& g) {
    if (g.n == 0) return 0;
    return round16(entry(g).scratch_floats) + round16(g.in_size()) + round16(g.weight_size()) +
           round16(g.o);
  }

  static void forward(const ConvGeometry& g, const float* x, const float* w, const float* b,
                      float* y, float* work) {
    if (g.n == 0) return;
    Entry& e = entry(g);
    e.x.set_data_handle(const_cast<float*>(x));
    e.w.set_data_handle(const_cast<float*>(w));
    e.y.set_data_handle(y);
    e.scratch.set_data_handle(work);
    if (b) {
      e.b.set_data_handle(const_cast<float*>(b));
    } else {  // oneDNN always adds the bias given: a zero one from the workspace
      float* zb =
          work + round16(e.scratch_floats) + round16(g.in_size()) + round16(g.weight_size());
      std::fill(zb, zb + g.o, 0.f);
      e.b.set_data_handle(zb);
    }
    e.fwd.execute(context().stream, {{DNNL_ARG_SRC, e.x},
                                     {DNNL_ARG_WEIGHTS, e.w},
                                     {DNNL_ARG_BIAS, e.b},
                                     {DNNL_ARG_DST, e.y},
                                     {DNNL_ARG_SCRATCHPAD, e.scratch}});
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
    e.y.set_data_handle(const_cast<float*>(dy));
    e.w.set_data_handle(const_cast<float*>(w));
    e.x.set_data_handle(const_cast<float*>(x));
    if (dw || db) {
      e.dw.set_data_handle(dw && !acc_dw ? dw : tdw);
      e.db.set_data_handle(db && !acc_db ? db : tdb);
      e.bwd_weights.execute(s, {{DNNL_ARG_SRC, e.x},
                                {DNNL_ARG_DIFF_DST, e.y},
                                {DNNL_ARG_DIFF_WEIGHTS, e.dw},
                                {DNNL_ARG_DIFF_BIAS, e.db},
                                {DNNL_ARG_SCRATCHPAD, e.scratch}});
      s.wait();
      if (dw && acc_dw) add(dw, tdw, g.weight_size());
      if (db && acc_db) add(db, tdb, g.o);
    }
    if (dx) {
      e.dx.set_data_handle(acc_dx ? tdx : dx);
      e.bwd_data.execute(s, {{DNNL_ARG_DIFF_DST, e.y},
                             {DNNL_ARG_WEIGHTS, e.w},
                             {DNNL_ARG_DIFF_SRC, e.dx},
                             {DNNL_ARG_SCRATCHPAD, e.scratch}});
      s.wait();
      if (acc_dx) add(dx, tdx, g.in_size());
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
    static const HostConvFns fns{"onednn", &workspace, &forward, &backward};
    onednn_conv_fns() = &fns;
    return true;
  }
};

// Registration when this header is part of the program (before main).
inline const bool dnnl_conv_registered = DnnlConv::register_engine();

}  // namespace siam::detail
