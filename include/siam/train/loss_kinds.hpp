// The loss kinds a SiameseTrainer builds by name, in one table that the trainer's
// configuration (SiameseConfig::validate), data-parallel training (parallel::options_for) and a
// command line (names, help, checks) all read, so a new kind is added in one place.
#pragma once

#include <array>
#include <cmath>
#include <string>
#include <string_view>

#include "siam/detail/format.hpp"
#include "siam/error.hpp"

namespace siam {

struct LossKind {
  const char* name;
  /// What the margin must be: > 0 (the contrastive loss pushes dissimilar pairs out to it),
  /// >= 0 (the triplet losses: 0 asks only for the right order), or unused (NT-Xent).
  enum class Margin { positive, non_negative, unused } margin;
  /// Whether the loss is a sum or mean of independent per-item terms, so a batch can be
  /// split across processes (parallel::options_for); the mining losses and NT-Xent couple every
  /// example of a batch.
  bool splits;
  /// A batch needs at least this many pairs (SiameseConfig::batch_pairs).
  std::size_t min_batch_pairs;
  const char* summary;
};

inline constexpr std::array<LossKind, 5> loss_kinds{{
    {"contrastive", LossKind::Margin::positive, true, 1,
     "pairs: similar ones pulled together, dissimilar ones pushed beyond the margin"},
    {"triplet", LossKind::Margin::non_negative, true, 2,
     "random triplets: the positive nearer than the negative by the margin"},
    {"batch-hard", LossKind::Margin::non_negative, false, 2,
     "P x K batches, the hardest positive and negative of each anchor"},
    {"batch-all", LossKind::Margin::non_negative, false, 2,
     "P x K batches, every valid triplet that violates the margin"},
    {"ntxent", LossKind::Margin::unused, false, 1,
     "positive pairs against the batch's other images (temperature-scaled softmax)"},
}};

/// "contrastive, triplet, batch-hard, batch-all or ntxent".
inline std::string loss_kind_names() {
  std::string s;
  for (std::size_t i = 0; i < loss_kinds.size(); ++i)
    s += std::string(i == 0 ? "" : i + 1 == loss_kinds.size() ? " or " : ", ") + loss_kinds[i].name;
  return s;
}

/// The kind named `name`; throws value_error listing the kinds for an unknown name.
inline const LossKind& loss_kind(std::string_view name) {
  for (const auto& k : loss_kinds)
    if (name == k.name) return k;
  throw value_error("loss '" + std::string(name) + "': expected " + loss_kind_names());
}

/// Throws value_error unless `margin` suits the loss kind (finite, and > 0 or >= 0 as the
/// kind needs).
inline void check_margin(const LossKind& k, double margin) {
  if (k.margin == LossKind::Margin::unused) return;
  const bool positive = k.margin == LossKind::Margin::positive;
  if (!std::isfinite(margin) || margin < 0 || (positive && margin == 0))
    throw value_error("margin must be " + std::string(positive ? "> 0" : ">= 0") + " for the " +
                      k.name + " loss, got " + siam::detail::fmt(margin));
}

}  // namespace siam
