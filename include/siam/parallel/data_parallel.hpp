// Data-parallel training over a Communicator, independent of any trainer.
//
// Every rank holds the same network and optimizer and draws the same global batch of pairs
// (the same sampler and Rng on every rank, so the pair stream does not depend on the rank
// count); rank r computes the gradient of its own contiguous slice of that batch
// (shard()), the gradients are summed across ranks, and every rank applies the identical
// optimizer step. The loss must be a SUM over pairs (Reduction::sum) so that the sum of the
// slices' gradients is the gradient of the whole batch.
//
//   parallel::DataParallel<float, CpuBackend> dp(comm, params, {}, settings_string);
//   for (...) {                               // (the constructor broadcast rank 0's weights)
//     sampler.sample(rng, n, first, second, similar);        // the same n pairs everywhere
//     dp.step(n, [&](std::size_t b, std::size_t e) {         // pairs [b, e) of this batch
//       ... forward and backward on those pairs ...
//       return loss;                                         // Var<T, B> holding the loss
//     });                                    // gradients and loss are now global sums
//     adam.step();
//   }
//
// Two ways to sum:
//  * default: one forward/backward per rank; its gradients are packed into one flat,
//    pre-allocated buffer (with the loss as its last element), all-reduced in one call (or
//    in buckets of options.bucket_bytes) and unpacked. Equal to the one-process step up to
//    floating-point reassociation of the sum over ranks.
//  * deterministic: the global batch is cut into options.blocks fixed blocks; each block's
//    gradient is computed on its own by whichever rank owns it, all blocks' gradients are
//    gathered on every rank and added in block order. The result is bit-identical for any
//    number of ranks (up to options.blocks). Its cost: blocks smaller than a rank's slice
//    (less efficient GEMMs), and an all-gather of blocks x parameters values instead of an
//    all-reduce of the parameters (about blocks/2 times the traffic, and blocks x the
//    gradient memory); see docs/distributed.md.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "siam/autodiff/tape.hpp"
#include "siam/parallel/communicator.hpp"

namespace siam::parallel {

/// A half-open range of pairs of a global batch.
struct PairRange {
  std::size_t begin = 0, end = 0;
  std::size_t size() const { return end - begin; }
  bool empty() const { return begin == end; }
};

/// Part `part` of `parts` of n items: contiguous, sizes differ by at most one, in order.
/// Throws value_error unless 0 <= part < parts.
inline PairRange shard(std::size_t n, int part, int parts) {
  if (parts <= 0 || part < 0 || part >= parts)
    throw value_error("shard: part " + std::to_string(part) + " is not in [0, " +
                      std::to_string(parts) + ")");
  const auto p = static_cast<std::size_t>(part), k = static_cast<std::size_t>(parts);
  return {n * p / k, n * (p + 1) / k};
}

/// 64-bit FNV-1a of a string (a settings fingerprint that is the same on every machine).
inline std::uint64_t fingerprint(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const char ch : s) {
    h ^= static_cast<unsigned char>(ch);
    h *= 0x100000001b3ULL;
  }
  return h;
}

/// Start-up check that every rank runs the same settings and the same network. Every
/// rank gathers (fingerprint(settings), parameter tensors, parameter values) from all
/// ranks; on any difference every rank throws the same comm_error naming both values and
/// both ranks.
inline void handshake(Communicator& comm, std::string_view settings, std::uint64_t tensors,
                      std::uint64_t values) {
  const std::uint64_t mine[3] = {fingerprint(settings), tensors, values};
  std::vector<std::uint64_t> all(3 * static_cast<std::size_t>(comm.size()));
  comm.all_gather_host(mine, sizeof mine, all.data());
  static const char* what[3] = {"settings fingerprint", "parameter tensor count",
                                "parameter count"};
  for (int r = 1; r < comm.size(); ++r)
    for (int k = 0; k < 3; ++k) {
      const auto a = all[static_cast<std::size_t>(k)],
                 b = all[3 * static_cast<std::size_t>(r) + static_cast<std::size_t>(k)];
      if (a != b) {
        char ha[32], hb[32];
        std::snprintf(ha, sizeof ha, k == 0 ? "0x%016llx" : "%llu",
                      static_cast<unsigned long long>(a));
        std::snprintf(hb, sizeof hb, k == 0 ? "0x%016llx" : "%llu",
                      static_cast<unsigned long long>(b));
        throw comm_error(std::string("handshake: ") + what[k] + " " + ha +
                         " on rank 0 differs from " + hb + " on rank " + std::to_string(r) +
                         " (the ranks run different settings, code or networks)");
      }
    }
}

/// Runs f() on `root` only (writing a checkpoint, a figure), then tells every rank whether
/// it succeeded: on failure the root rethrows f's exception and every other rank throws
/// comm_error with its message, so no rank runs on past a failed write or waits for it.
template <class F>
void on_root(Communicator& comm, F&& f, int root = 0) {
  char msg[512] = {};
  if (comm.rank() == root) {
    try {
      f();
    } catch (const std::exception& e) {
      std::snprintf(msg, sizeof msg, "%s", e.what());
      if (msg[0] == '\0') msg[0] = '?';
      comm.broadcast_host(msg, sizeof msg, root);
      throw;
    }
  }
  comm.broadcast_host(msg, sizeof msg, root);
  if (msg[0] != '\0')
    throw comm_error("rank " + std::to_string(root) + " failed (seen on " + comm.where() +
                     "): " + std::string(msg, strnlen(msg, sizeof msg)));
}

struct DataParallelOptions {
  /// Bit-identical results for any number of ranks (see the top of this file).
  bool deterministic = false;
  /// Deterministic mode: the number of fixed blocks the global batch is cut into; runs
  /// with 1..blocks ranks give identical bits.
  std::size_t blocks = 8;
  /// Default mode: 0 sums all gradients in one call; otherwise in buckets of about this
  /// many bytes, filled from the last parameter backwards (as DDP does).
  std::size_t bucket_bytes = 0;
};

template <class T, class B>
class DataParallel {
 public:
  /// Checks the options, runs handshake(settings, parameters) and broadcasts rank 0's
  /// parameter values to every rank. Allocates every buffer a step needs.
  /// Throws value_error for bad options (blocks == 0, or fewer blocks than ranks in
  /// deterministic mode), comm_error for a handshake mismatch.
  DataParallel(Communicator& comm, std::vector<Parameter<T, B>*> params,
               DataParallelOptions opt = {}, std::string_view settings = {})
      : comm_(comm), params_(std::move(params)), opt_(opt) {
    if (opt_.deterministic && opt_.blocks == 0)
      throw value_error("DataParallel: deterministic mode needs blocks >= 1");
    if (opt_.deterministic && opt_.blocks < static_cast<std::size_t>(comm_.size()))
      throw value_error("DataParallel: " + std::to_string(opt_.blocks) +
                        " deterministic blocks cannot be shared by " +
                        std::to_string(comm_.size()) + " ranks (need blocks >= ranks)");
    for (auto* p : params_) {
      if (!p) throw value_error("DataParallel: null parameter");
      offsets_.push_back(values_);
      values_ += static_cast<std::size_t>(p->value.size());
    }
    handshake(comm_, settings, params_.size(), values_);
    stage_ = comm_.size() > 1 && (comm_.memory() == Memory::host) != B::is_host;
    broadcast_parameters();

    stride_ = values_ + 1;  // gradients, then the loss
    if (opt_.deterministic) {
      slots_ = (opt_.blocks + static_cast<std::size_t>(comm_.size()) - 1) /
               static_cast<std::size_t>(comm_.size());
      local_ = Tensor<T, B>(Shape{static_cast<index_t>(slots_ * stride_)});
      if (comm_.size() > 1)
        gathered_ = Tensor<T, B>(
            Shape{static_cast<index_t>(slots_ * stride_ * static_cast<std::size_t>(comm_.size()))});
    } else {
      local_ = Tensor<T, B>(Shape{static_cast<index_t>(stride_)});
      make_buckets();
    }
    if (stage_) host_.resize(std::max(local_.size(), gathered_.size()));
    loss_ = Tensor<T, B>(Shape{1});
  }

  /// Sets every parameter to rank 0's values (the constructor does this once; call it
  /// again after loading a checkpoint on rank 0 only).
  void broadcast_parameters() {
    if (comm_.size() == 1) return;
    for (auto* p : params_)
      transfer(p->value.data(), static_cast<std::size_t>(p->value.size()),
               [&](T* d, std::size_t n) { comm_.broadcast(std::span<T>(d, n), 0); });
  }

  /// The pairs [begin, end) of a global batch of n that this rank computes in the
  /// default mode.
  PairRange my_pairs(std::size_t n) const { return shard(n, comm_.rank(), comm_.size()); }

  /// One data-parallel gradient computation on a global batch of `global_pairs` pairs.
  /// compute(begin, end) runs forward and backward on pairs [begin, end) of the global
  /// batch (the parameters' gradients are zeroed before each call) and returns the loss
  /// Var (sum over those pairs). It is not called for an empty range. Afterwards every
  /// parameter's gradient and loss() hold the sums over the whole global batch, identical
  /// on every rank.
  template <class F>
  void step(std::size_t global_pairs, F&& compute) {
    if (opt_.deterministic)
      step_deterministic(global_pairs, compute);
    else
      step_default(global_pairs, compute);
  }

  /// The global batch's loss of the last step (synchronises a device backend).
  double loss() const { return static_cast<double>(loss_.item()); }
  const Tensor<T, B>& loss_tensor() const { return loss_; }

  Communicator& communicator() { return comm_; }
  const DataParallelOptions& options() const { return opt_; }
  /// Number of scalar parameters (the gradient values summed per step).
  std::size_t parameter_count() const { return values_; }
  std::size_t bucket_count() const { return buckets_.size(); }

 private:
  template <class F>
  void step_default(std::size_t n, F& compute) {
    const PairRange mine = my_pairs(n);
    if (comm_.size() == 1) {  // nothing to sum
      run_block(mine, compute, nullptr);
      return;
    }
    T* flat = local_.data();
    run_block(mine, compute, flat);
    for (const auto& b : buckets_)
      transfer(flat + b.begin, b.end - b.begin,
               [&](T* d, std::size_t m) { comm_.all_reduce_sum(std::span<T>(d, m)); });
    unpack(flat);
  }

  template <class F>
  void step_deterministic(std::size_t n, F& compute) {
    const std::size_t blocks = opt_.blocks;
    const int ranks = comm_.size();
    const PairRange mine = shard(blocks, comm_.rank(), ranks);
    T* local = local_.data();
    for (std::size_t k = mine.begin; k < mine.end; ++k)
      run_block(shard(n, static_cast<int>(k), static_cast<int>(blocks)), compute,
                local + (k - mine.begin) * stride_);
    const T* all = local;
    if (ranks > 1) {
      transfer(local, local_.size(), [&](T* d, std::size_t m) {
        // (staging: the gathered values land in host_ after the local ones are read)
        comm_.all_gather(std::span<const T>(d, m),
                         stage_ ? std::span<T>(host_.data(), host_.size())
                                : std::span<T>(gathered_.data(), gathered_.size()));
      });
      if (stage_) B::from_host(gathered_.data(), host_.data(), gathered_.size());
      all = gathered_.data();
    }
    // Block k lives in slot k - first block of its owner, in the owner's section.
    auto block = [&](std::size_t k) {
      int owner = 0;
      while (shard(blocks, owner, ranks).end <= k)
        ++owner;
      const std::size_t slot = k - shard(blocks, owner, ranks).begin;
      return all + (static_cast<std::size_t>(owner) * slots_ + slot) * stride_;
    };
    for (std::size_t i = 0; i < params_.size(); ++i) {
      auto& g = params_[i]->gradient();
      const Shape s = g.shape();
      g = view_of(block(0) + offsets_[i], s);
      for (std::size_t k = 1; k < blocks; ++k)
        g += view_of(block(k) + offsets_[i], s);
    }
    loss_ = view_of(block(0) + values_, Shape{1});
    for (std::size_t k = 1; k < blocks; ++k)
      loss_ += view_of(block(k) + values_, Shape{1});
  }

  // Computes one range's gradients and loss; with `out`, packs them there (zeros for an
  // empty range). Without `out` (one rank), leaves them in the parameters and loss_.
  template <class F>
  void run_block(PairRange r, F& compute, T* out) {
    for (auto* p : params_)
      p->zero_grad();
    if (r.empty()) {
      if (out)
        fill_zero(out, stride_);
      else
        loss_.fill(T(0));
      if (!out)
        for (auto* p : params_)
          (void)p->gradient();
      return;
    }
    auto loss = compute(r.begin, r.end);
    static_assert(std::is_same_v<decltype(loss), Var<T, B>>,
                  "DataParallel::step: compute(begin, end) must return the loss as a Var<T, B>");
    if (loss.shape().size() != 1)
      throw shape_error("DataParallel::step: the loss must be a scalar, got " + loss.shape().str());
    if (!out) {
      B::copy(loss_.data(), loss.value().data(), 1);
      for (auto* p : params_)
        (void)p->gradient();  // materialise zeros for parameters the loss does not use
      return;
    }
    for (std::size_t i = 0; i < params_.size(); ++i) {
      auto& g = params_[i]->gradient();
      B::copy(out + offsets_[i], g.data(), g.size());
    }
    B::copy(out + values_, loss.value().data(), 1);
  }

  void unpack(const T* flat) {
    for (std::size_t i = 0; i < params_.size(); ++i) {
      auto& g = params_[i]->gradient();
      B::copy(g.data(), flat + offsets_[i], g.size());
    }
    B::copy(loss_.data(), flat + values_, 1);
  }

  // Buckets over the flat buffer, from its end (the last layers' gradients) backwards, at
  // parameter boundaries; the loss rides in the last bucket.
  void make_buckets() {
    buckets_.clear();
    if (opt_.bucket_bytes == 0 || params_.empty()) {
      buckets_.push_back({0, stride_});
      return;
    }
    std::size_t end = stride_, i = params_.size();
    while (i > 0) {
      std::size_t begin = end;
      do {
        --i;
        begin = offsets_[i];
      } while (i > 0 && (end - begin) * sizeof(T) < opt_.bucket_bytes);
      buckets_.push_back({begin, end});
      end = begin;
    }
  }

  // Runs op on n values at d, through host memory when the communicator cannot reach the
  // backend's memory.
  template <class Op>
  void transfer(T* d, std::size_t n, Op&& op) {
    if (!stage_) return op(d, n);
    scratch_.resize(n);
    B::to_host(scratch_.data(), d, static_cast<index_t>(n));
    op(scratch_.data(), n);
    B::from_host(d, scratch_.data(), static_cast<index_t>(n));
  }

  static View<T, B> view_of(const T* p, Shape s) { return View<T, B>(const_cast<T*>(p), s); }
  static void fill_zero(T* p, std::size_t n) {
    const Shape s{static_cast<index_t>(n)};
    View<T, B>(p, s) = Constant<T, B>{s, T(0)};
  }

  struct Bucket {
    std::size_t begin, end;
  };

  Communicator& comm_;
  std::vector<Parameter<T, B>*> params_;
  DataParallelOptions opt_;
  std::vector<std::size_t> offsets_;
  std::size_t values_ = 0, stride_ = 0, slots_ = 0;
  bool stage_ = false;
  std::vector<Bucket> buckets_;
  Tensor<T, B> local_, gathered_, loss_;
  std::vector<T> host_, scratch_;
};

}  // namespace siam::parallel
