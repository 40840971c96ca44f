// Where a trainer's batches come from. A batch is ONE stacked tensor that the network
// runs in one forward pass (the Siamese branches share their weights, so pairs are rows
// 0..n-1 and n..2n-1, triplets three blocks of n), plus what the loss reads besides the
// embeddings: pair labels on the backend, class labels on the host.
//
// The library's sources draw from an ImageSet, a labelled data set uploaded to the
// backend once; each owns its random generator, whose state a checkpoint stores. A user's
// own source derives from BatchSource.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "siam/data/dataset.hpp"
#include "siam/data/pairs.hpp"
#include "siam/data/pk_sampler.hpp"
#include "siam/data/triplets.hpp"
#include "siam/random.hpp"
#include "siam/tensor.hpp"

namespace siam {

template <class T, class B>
struct Batch {
  Tensor<T, B> inputs;               ///< [rows x example shape], stacked branches
  Tensor<T, B> targets;              ///< pair labels [n] (1 = similar) where the source has them
  std::vector<std::int64_t> labels;  ///< class label of each input row (host), or empty
};

/// How a batch's rows are stacked, for cutting it into independent parts (data-parallel
/// training): `blocks` blocks of `items` rows each, item i's rows being i, items + i, ...
/// ([first; second] pairs: 2 x n, triplets: 3 x n). Pair targets hold one value per item;
/// labels, when present, one per row.
struct BatchLayout {
  std::size_t blocks = 0, items = 0;
};

template <class T, class B>
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  /// Fills `batch`, reusing its buffers (a steady state allocates nothing).
  virtual void next(Batch<T, B>& batch) = 0;
  /// The generator a checkpoint saves and restores (bit-identical resume).
  virtual Rng& rng() = 0;
  /// The source's kind and settings, e.g. "pairs n=180" (recorded in checkpoints).
  virtual std::string describe() const = 0;
  /// The stacked layout of the batches next() fills, or none when the rows cannot be cut
  /// into independent items (P x K batches, a user's source that does not say).
  virtual std::optional<BatchLayout> layout() const { return std::nullopt; }

 protected:
  BatchSource() = default;
  BatchSource(const BatchSource&) = default;
  BatchSource& operator=(const BatchSource&) = default;
};

/// A labelled image set on the backend: images [N x example shape], labels on the host.
template <class T, class B>
class ImageSet {
 public:
  /// Uploads `d` (validated) with each image of shape `example` (default: [pixels]).
  explicit ImageSet(const data::Dataset& d, Shape example = Shape{})
      : ImageSet((d.validate(), std::span<const float>(d.images)), d.labels,
                 example.size() ? example : Shape{static_cast<index_t>(d.pixels())}) {}
  /// Any data: `images` holds labels.size() examples of shape `example`, one after another.
  ImageSet(std::span<const float> images, std::vector<std::int64_t> labels, Shape example)
      : labels_(std::move(labels)), example_(example) {
    const index_t n = static_cast<index_t>(labels_.size()), px = example.size();
    if (px == 0 || static_cast<index_t>(images.size()) != n * px)
      throw shape_error("ImageSet: " + std::to_string(images.size()) + " values for " +
                        std::to_string(n) + " examples of shape " + example.str());
    if constexpr (std::is_same_v<T, float>) {
      images_ = Tensor<T, B>::from(Shape{n, px}, images);
    } else {
      const std::vector<T> host(images.begin(), images.end());
      images_ = Tensor<T, B>::from(Shape{n, px}, std::span<const T>(host));
    }
  }
  index_t size() const { return images_.rows(); }
  index_t pixels() const { return images_.cols(); }
  Shape example_shape() const { return example_; }
  const Tensor<T, B>& images() const { return images_; }
  const std::vector<std::int64_t>& labels() const { return labels_; }
  /// [n x example shape].
  Shape batch_shape(index_t n) const {
    const Shape s = example_;
    switch (s.rank()) {
      case 1:
        return Shape{n, s[0]};
      case 2:
        return Shape{n, s[0], s[1]};
      default:
        return Shape{n, s[0], s[1], s[2]};
    }
  }
  /// inputs = the images at `rows`, in order.
  void gather(const std::vector<std::uint32_t>& rows, Tensor<T, B>& inputs) const {
    const auto n = static_cast<index_t>(rows.size());
    inputs.resize(batch_shape(n));
    B::gather_rows(inputs.data(), images_.data(), rows.data(), n, pixels());
  }

 private:
  Tensor<T, B> images_;
  std::vector<std::int64_t> labels_;
  Shape example_;
};

namespace detail {
/// rows = the index blocks one after another (the stacked-branch layout); capacity reused.
inline void stack_blocks(std::vector<std::uint32_t>& rows,
                         std::initializer_list<const std::vector<std::uint32_t>*> blocks) {
  rows.clear();
  for (const auto* b : blocks)
    rows.insert(rows.end(), b->begin(), b->end());
}

template <class T, class B>
void upload_pair_labels(const std::vector<float>& host, std::vector<T>& cast, Tensor<T, B>& out) {
  out.resize(Shape{static_cast<index_t>(host.size())});
  if constexpr (std::is_same_v<T, float>) {
    B::from_host(out.data(), host.data(), out.size());
  } else {
    cast.assign(host.begin(), host.end());
    B::from_host(out.data(), cast.data(), out.size());
  }
}
}  // namespace detail

/// n balanced random pairs per batch (data::PairSampler): rows 0..n-1 the first images,
/// n..2n-1 the second ones; targets the pair labels (1 = same class). The contrastive
/// loss's source.
template <class T, class B>
class PairBatches final : public BatchSource<T, B> {
 public:
  PairBatches(const ImageSet<T, B>& set, std::size_t n_pairs, std::uint64_t seed)
      : set_(set), sampler_(set.labels()), n_(n_pairs), rng_(seed) {
    if (n_pairs == 0) throw value_error("PairBatches: the number of pairs must be > 0");
  }
  void next(Batch<T, B>& b) override {
    sampler_.sample(rng_, n_, first_, second_, similar_);
    detail::stack_blocks(rows_, {&first_, &second_});
    set_.gather(rows_, b.inputs);
    detail::upload_pair_labels(similar_, cast_, b.targets);
    b.labels.clear();
  }
  Rng& rng() override { return rng_; }
  std::string describe() const override { return "pairs n=" + std::to_string(n_); }
  std::optional<BatchLayout> layout() const override { return BatchLayout{2, n_}; }
  const std::vector<std::uint32_t>& last_first() const { return first_; }
  const std::vector<std::uint32_t>& last_second() const { return second_; }

 private:
  const ImageSet<T, B>& set_;
  data::PairSampler sampler_;
  std::size_t n_;
  Rng rng_;
  std::vector<std::uint32_t> first_, second_, rows_;
  std::vector<float> similar_;
  std::vector<T> cast_;
};

/// n positive pairs per batch (two images of one class), stacked as [first; second]:
/// NT-Xent's source (each image's partner is its positive, the rest its negatives).
template <class T, class B>
class PositivePairBatches final : public BatchSource<T, B> {
 public:
  PositivePairBatches(const ImageSet<T, B>& set, std::size_t n_pairs, std::uint64_t seed)
      : set_(set), sampler_(set.labels()), n_(n_pairs), rng_(seed) {
    if (n_pairs == 0) throw value_error("PositivePairBatches: the number of pairs must be > 0");
  }
  void next(Batch<T, B>& b) override {
    sampler_.sample_positive(rng_, n_, first_, second_);
    detail::stack_blocks(rows_, {&first_, &second_});
    set_.gather(rows_, b.inputs);
    b.labels.resize(2 * n_);
    for (std::size_t i = 0; i < 2 * n_; ++i)
      b.labels[i] = set_.labels()[rows_[i]];
  }
  Rng& rng() override { return rng_; }
  std::string describe() const override { return "positive-pairs n=" + std::to_string(n_); }
  std::optional<BatchLayout> layout() const override { return BatchLayout{2, n_}; }

 private:
  const ImageSet<T, B>& set_;
  data::PairSampler sampler_;
  std::size_t n_;
  Rng rng_;
  std::vector<std::uint32_t> first_, second_, rows_;
};

/// n random triplets per batch (data::TripletSampler): anchors, positives, negatives as
/// three blocks of n rows.
template <class T, class B>
class TripletBatches final : public BatchSource<T, B> {
 public:
  TripletBatches(const ImageSet<T, B>& set, std::size_t n, std::uint64_t seed)
      : set_(set), sampler_(set.labels()), n_(n), rng_(seed) {
    if (n == 0) throw value_error("TripletBatches: the number of triplets must be > 0");
  }
  void next(Batch<T, B>& b) override {
    sampler_.sample(rng_, n_, a_, p_, q_);
    detail::stack_blocks(rows_, {&a_, &p_, &q_});
    set_.gather(rows_, b.inputs);
    b.labels.clear();
  }
  Rng& rng() override { return rng_; }
  std::string describe() const override { return "triplets n=" + std::to_string(n_); }
  std::optional<BatchLayout> layout() const override { return BatchLayout{3, n_}; }

 private:
  const ImageSet<T, B>& set_;
  data::TripletSampler sampler_;
  std::size_t n_;
  Rng rng_;
  std::vector<std::uint32_t> a_, p_, q_, rows_;
};

/// P x K batches (data::PKSampler) with their class labels: the mining losses' source.
template <class T, class B>
class PKBatches final : public BatchSource<T, B> {
 public:
  PKBatches(const ImageSet<T, B>& set, std::size_t p, std::size_t k, std::uint64_t seed,
            bool with_replacement = false)
      : set_(set), sampler_(set.labels(), p, k, with_replacement), p_(p), k_(k), rng_(seed) {}
  void next(Batch<T, B>& b) override {
    sampler_.sample(rng_, rows_, b.labels);
    set_.gather(rows_, b.inputs);
  }
  Rng& rng() override { return rng_; }
  std::string describe() const override {
    return "pk p=" + std::to_string(p_) + " k=" + std::to_string(k_);
  }

 private:
  const ImageSet<T, B>& set_;
  data::PKSampler sampler_;
  std::size_t p_, k_;
  Rng rng_;
  std::vector<std::uint32_t> rows_;
};

/// part = items [begin, end) of `full`, a batch stacked as `layout` says: each block's rows
/// [begin, end), the targets [begin, end) (when full has one per item) and the labels of
/// the rows kept (when full has them). Reuses part's buffers. Throws shape_error when full
/// does not have the layout's rows, or the range is not inside [0, items].
template <class T, class B>
void slice_batch(const Batch<T, B>& full, BatchLayout layout, std::size_t begin, std::size_t end,
                 Batch<T, B>& part) {
  const auto rows = static_cast<std::size_t>(full.inputs.rows());
  if (layout.blocks == 0 || rows != layout.blocks * layout.items)
    throw shape_error("slice_batch: a batch of " + std::to_string(rows) + " rows is not " +
                      std::to_string(layout.blocks) + " blocks of " + std::to_string(layout.items) +
                      " items");
  if (begin > end || end > layout.items)
    throw shape_error("slice_batch: items [" + std::to_string(begin) + ", " + std::to_string(end) +
                      ") are not inside [0, " + std::to_string(layout.items) + ")");
  const std::size_t m = end - begin;
  const auto cols = static_cast<std::size_t>(full.inputs.cols());
  part.inputs.resize(full.inputs.shape().with_rows(static_cast<index_t>(layout.blocks * m)));
  if (m > 0)
    for (std::size_t k = 0; k < layout.blocks; ++k)
      B::copy(part.inputs.data() + k * m * cols,
              full.inputs.data() + (k * layout.items + begin) * cols,
              static_cast<index_t>(m * cols));
  if (static_cast<std::size_t>(full.targets.size()) == layout.items) {
    part.targets.resize(Shape{static_cast<index_t>(m)});
    if (m > 0) B::copy(part.targets.data(), full.targets.data() + begin, static_cast<index_t>(m));
  } else {
    part.targets.resize(full.targets.shape());
    if (full.targets.size() > 0)
      B::copy(part.targets.data(), full.targets.data(), full.targets.size());
  }
  part.labels.clear();
  if (full.labels.size() == rows)
    for (std::size_t k = 0; k < layout.blocks; ++k)
      part.labels.insert(
          part.labels.end(),
          full.labels.begin() + static_cast<std::ptrdiff_t>(k * layout.items + begin),
          full.labels.begin() + static_cast<std::ptrdiff_t>(k * layout.items + end));
  else
    part.labels = full.labels;
}

}  // namespace siam
