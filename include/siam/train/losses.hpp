// The library's losses as a trainer calls them: a function of the network's output on
// the stacked batch, the batch itself and the tape. A user's own loss is any callable of
// that form (std::function), built from the public ops.
#pragma once

#include <functional>
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

/// Contrastive loss of stacked pairs (PairBatches).
template <class T, class B>
LossFn<T, B> contrastive(ContrastiveOptions opt = {}) {
  return [opt](Var<T, B> f, const Batch<T, B>& b, Tape<T, B>& t) {
    return contrastive_loss_stacked(f, t.constant(b.targets), opt);
  };
}
/// Triplet loss of stacked triplets (TripletBatches).
template <class T, class B>
LossFn<T, B> triplet(TripletOptions opt = {}) {
  return
      [opt](Var<T, B> f, const Batch<T, B>&, Tape<T, B>&) { return triplet_loss_stacked(f, opt); };
}
/// Batch-hard triplet loss of a labelled batch (PKBatches). `stats`, when given, receives
/// each step's mining statistics.
template <class T, class B>
LossFn<T, B> batch_hard(MiningOptions opt = {}, MiningStats* stats = nullptr) {
  return [opt, stats](Var<T, B> f, const Batch<T, B>& b, Tape<T, B>&) {
    return batch_hard_triplet_loss(f, b.labels, opt, stats);
  };
}
/// Batch-all triplet loss of a labelled batch (PKBatches).
template <class T, class B>
LossFn<T, B> batch_all(MiningOptions opt = {}, MiningStats* stats = nullptr) {
  return [opt, stats](Var<T, B> f, const Batch<T, B>& b, Tape<T, B>&) {
    return batch_all_triplet_loss(f, b.labels, opt, stats);
  };
}
/// NT-Xent of stacked positive pairs (PositivePairBatches).
template <class T, class B>
LossFn<T, B> ntxent(NTXentOptions opt = {}) {
  return
      [opt](Var<T, B> f, const Batch<T, B>&, Tape<T, B>&) { return ntxent_loss_stacked(f, opt); };
}

}  // namespace losses
}  // namespace siam
