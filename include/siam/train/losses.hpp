// The library's losses as a trainer calls them: a function of the network's output on
// the stacked batch, the batch itself and the tape. A user's own loss is any callable of
// that form (std::function), built from the public ops.
#pragma once

#include <functional>
#include <sstream>
#include <string>

#include "siam/loss/contrastive.hpp"
#include "siam/loss/mining.hpp"
#include "siam/loss/ntxent.hpp"
#include "siam/loss/triplet.hpp"
#include "siam/train/batches.hpp"

namespace siam {

template <class T, class B>
using LossFn =
    std::function<Var<T, B>(Var<T, B> embeddings, const Batch<T, B>& batch, Tape<T, B>& tape)>;

namespace losses {

namespace detail {
inline std::string loss_number(double v) {
  std::ostringstream o;
  o.precision(17);
  o << v;
  return o.str();
}
inline const char* distance_name(Distance d) {
  return d == Distance::squared ? "squared" : "euclidean";
}
inline const char* reduction_name(Reduction r) {
  return r == Reduction::mean ? "mean" : "sum";
}

// The losses below as named callables, so that a trainer holding one in a LossFn can say
// which loss it is and with what parameters (its checkpoint records this).
template <class T, class B>
struct Contrastive {
  ContrastiveOptions opt;
  Var<T, B> operator()(Var<T, B> f, const Batch<T, B>& b, Tape<T, B>& t) const {
    return contrastive_loss_stacked(f, t.constant(b.targets), opt);
  }
  std::string describe() const {
    return std::string("contrastive margin=") + loss_number(opt.margin) +
           " reduction=" + reduction_name(opt.reduction) + (opt.squared ? " squared" : "");
  }
};
template <class T, class B>
struct Triplet {
  TripletOptions opt;
  Var<T, B> operator()(Var<T, B> f, const Batch<T, B>&, Tape<T, B>&) const {
    return triplet_loss_stacked(f, opt);
  }
  std::string describe() const {
    return std::string("triplet margin=") + loss_number(opt.margin) +
           " distance=" + distance_name(opt.distance) +
           " reduction=" + reduction_name(opt.reduction);
  }
};
template <class T, class B, bool Hard>
struct Mined {
  MiningOptions opt;
  MiningStats* stats;
  Var<T, B> operator()(Var<T, B> f, const Batch<T, B>& b, Tape<T, B>&) const {
    if constexpr (Hard)
      return batch_hard_triplet_loss(f, b.labels, opt, stats);
    else
      return batch_all_triplet_loss(f, b.labels, opt, stats);
  }
  std::string describe() const {
    return std::string(Hard ? "batch_hard" : "batch_all") +
           (opt.soft ? std::string(" soft") : " margin=" + loss_number(opt.margin)) +
           " distance=" + distance_name(opt.distance) +
           (opt.skip_invalid_anchors ? " skip_invalid_anchors" : "");
  }
};
template <class T, class B>
struct NTXent {
  NTXentOptions opt;
  Var<T, B> operator()(Var<T, B> f, const Batch<T, B>&, Tape<T, B>&) const {
    return ntxent_loss_stacked(f, opt);
  }
  std::string describe() const { return "ntxent temperature=" + loss_number(opt.temperature); }
};
}  // namespace detail

/// Contrastive loss of stacked pairs (PairBatches).
template <class T, class B>
LossFn<T, B> contrastive(ContrastiveOptions opt = {}) {
  return detail::Contrastive<T, B>{opt};
}
/// Triplet loss of stacked triplets (TripletBatches).
template <class T, class B>
LossFn<T, B> triplet(TripletOptions opt = {}) {
  return detail::Triplet<T, B>{opt};
}
/// Batch-hard triplet loss of a labelled batch (PKBatches). `stats`, when given, receives
/// each step's mining statistics.
template <class T, class B>
LossFn<T, B> batch_hard(MiningOptions opt = {}, MiningStats* stats = nullptr) {
  return detail::Mined<T, B, true>{opt, stats};
}
/// Batch-all triplet loss of a labelled batch (PKBatches).
template <class T, class B>
LossFn<T, B> batch_all(MiningOptions opt = {}, MiningStats* stats = nullptr) {
  return detail::Mined<T, B, false>{opt, stats};
}
/// NT-Xent of stacked positive pairs (PositivePairBatches).
template <class T, class B>
LossFn<T, B> ntxent(NTXentOptions opt = {}) {
  return detail::NTXent<T, B>{opt};
}

/// The loss and its parameters, as a checkpoint records them ("contrastive margin=0.3
/// reduction=sum", ...), for a loss made by the functions above; "custom" for any other.
template <class T, class B>
std::string describe(const LossFn<T, B>& loss) {
  if (auto* l = loss.template target<detail::Contrastive<T, B>>()) return l->describe();
  if (auto* l = loss.template target<detail::Triplet<T, B>>()) return l->describe();
  if (auto* l = loss.template target<detail::Mined<T, B, true>>()) return l->describe();
  if (auto* l = loss.template target<detail::Mined<T, B, false>>()) return l->describe();
  if (auto* l = loss.template target<detail::NTXent<T, B>>()) return l->describe();
  return "custom";
}

}  // namespace losses
}  // namespace siam
