// Batch sources that stream from an image folder on disk (siam/data/image_folder.hpp)
// through the threaded loader (siam/data/loader.hpp) instead of an ImageSet in memory:
// balanced pairs (the contrastive loss), triplets (the triplet loss) and P x K batches (the
// mining losses). Batches are
// identical for any number of worker threads, and restoring rng() (a checkpoint) replays
// the same batches. folder_source_factory hands them to a streaming SiameseTrainer.
#pragma once

#include <concepts>
#include <cstdint>
#include <memory>
#include <memory_resource>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "siam/data/loader.hpp"
#include "siam/data/pairs.hpp"
#include "siam/data/pk_sampler.hpp"
#include "siam/data/triplets.hpp"
#include "siam/random.hpp"
#include "siam/tensor.hpp"
#include "siam/train/batches.hpp"
#include "siam/train/siamese_trainer.hpp"

namespace siam {

namespace detail {
/// A device backend with page-locked host memory (the CUDA backend): the loader's batches
/// live there and go to the device by DMA straight from their slot, without staging.
template <class B>
concept PinnedUploads = requires(float* d, const float* s) {
  { B::pinned_host_memory() } -> std::convertible_to<std::pmr::memory_resource*>;
  B::from_pinned_host(d, s, index_t{1});
  B::wait_pinned_uploads();
};

/// inputs = [rows x example] from the host batch (example: [C, S, S] or [C S S]).
template <class T, class B>
void upload_host_batch(const data::HostBatch& hb, const Shape& example, std::vector<T>& cast,
                       Tensor<T, B>& inputs) {
  const auto n = static_cast<index_t>(hb.plan.images.size());
  inputs.resize(example.rank() == 1 ? Shape{n, example[0]}
                                    : Shape{n, example[0], example[1], example[2]});
  if constexpr (std::is_same_v<T, float> && PinnedUploads<B>) {
    if (hb.inputs.get_allocator().resource()->is_equal(*B::pinned_host_memory())) {
      // the slot stays the loader's until next_batch() has waited for this copy
      B::from_pinned_host(inputs.data(), hb.inputs.data(), inputs.size());
      return;
    }
  }
  if constexpr (std::is_same_v<T, float>) {
    B::from_host(inputs.data(), hb.inputs.data(), inputs.size());
  } else {
    cast.assign(hb.inputs.begin(), hb.inputs.end());
    B::from_host(inputs.data(), cast.data(), inputs.size());
  }
}

/// The loader's next batch. The previous batch's slot goes back to the loader here, so a
/// DMA still reading it (upload_host_batch on a PinnedUploads backend) is waited for first.
template <class B>
const data::HostBatch& next_batch(data::ImageLoader& loader, Rng& rng) {
  if constexpr (PinnedUploads<B>) B::wait_pinned_uploads();
  return loader.next(rng);
}

/// `o` with the batch's block count (pairs 2, triplets 3) for per-rank reading, and on a
/// PinnedUploads backend page-locked batches unless the caller chose their memory.
template <class B>
data::LoaderOptions loader_options(data::LoaderOptions o, std::size_t blocks) {
  o.blocks = blocks;
  if constexpr (PinnedUploads<B>)
    if (o.memory == nullptr) o.memory = B::pinned_host_memory();
  return o;
}

inline Shape folder_example_shape(const data::ImageLoader& loader, bool flat) {
  const auto c = static_cast<index_t>(loader.channels());
  const auto s = static_cast<index_t>(loader.spec().size);
  return flat ? Shape{c * s * s} : Shape{c, s, s};
}
}  // namespace detail

/// n balanced pairs per batch from an image folder: rows 0..n-1 the first images,
/// n..2n-1 the second ones, targets the pair labels (1 = same class). Examples are
/// [channels, size, size], or [channels x size x size] when `flat` (an MLP's input).
template <class T, class B>
class FolderPairBatches final : public BatchSource<T, B> {
 public:
  /// Throws value_error as PairSampler does (fewer than 2 classes, a class with one image).
  FolderPairBatches(const data::ImageFolder& folder, const data::TransformSpec& spec,
                    std::size_t n_pairs, std::uint64_t seed, data::LoaderOptions options = {},
                    bool flat = false)
      : labels_(folder.labels()),
        sampler_(labels_),
        n_(n_pairs),
        rng_(seed),
        loader_(
            folder, spec, [this](Rng& r, data::BatchPlan& p) { plan(r, p); },
            detail::loader_options<B>(options, 2)),
        example_(detail::folder_example_shape(loader_, flat)) {
    if (n_pairs == 0) throw value_error("FolderPairBatches: the number of pairs must be > 0");
  }
  void next(Batch<T, B>& b) override {
    const auto& hb = detail::next_batch<B>(loader_, rng_);
    detail::upload_host_batch(hb, example_, cast_, b.inputs);
    detail::upload_pair_labels(hb.plan.targets, cast_, b.targets);
    b.labels.clear();
  }
  Rng& rng() override { return rng_; }
  std::string describe() const override { return "folder-pairs n=" + std::to_string(n_); }
  std::optional<BatchLayout> layout() const override { return BatchLayout{2, n_}; }
  Shape example_shape() const { return example_; }
  const data::ImageLoader& loader() const { return loader_; }

 private:
  void plan(Rng& r, data::BatchPlan& p) {  // called by the loader, one batch at a time
    sampler_.sample(r, n_, first_, second_, p.targets);
    p.images = first_;
    p.images.insert(p.images.end(), second_.begin(), second_.end());
  }
  std::vector<std::int64_t> labels_;
  data::PairSampler sampler_;
  std::size_t n_;
  Rng rng_;
  std::vector<std::uint32_t> first_, second_;
  std::vector<T> cast_;
  data::ImageLoader loader_;  // last: its workers stop before the members they use go
  Shape example_;
};

/// n random triplets per batch from an image folder (data::TripletSampler): rows 0..n-1 the
/// anchors, n..2n-1 the positives, 2n..3n-1 the negatives, as TripletBatches lays them out.
template <class T, class B>
class FolderTripletBatches final : public BatchSource<T, B> {
 public:
  /// Throws value_error as TripletSampler does (fewer than 2 classes, none with 2 images).
  FolderTripletBatches(const data::ImageFolder& folder, const data::TransformSpec& spec,
                       std::size_t n_triplets, std::uint64_t seed, data::LoaderOptions options = {},
                       bool flat = false)
      : labels_(folder.labels()),
        sampler_(labels_),
        n_(n_triplets),
        rng_(seed),
        loader_(
            folder, spec, [this](Rng& r, data::BatchPlan& p) { plan(r, p); },
            detail::loader_options<B>(options, 3)),
        example_(detail::folder_example_shape(loader_, flat)) {
    if (n_triplets == 0)
      throw value_error("FolderTripletBatches: the number of triplets must be > 0");
  }
  void next(Batch<T, B>& b) override {
    const auto& hb = detail::next_batch<B>(loader_, rng_);
    detail::upload_host_batch(hb, example_, cast_, b.inputs);
    b.labels.clear();
  }
  Rng& rng() override { return rng_; }
  std::string describe() const override { return "folder-triplets n=" + std::to_string(n_); }
  std::optional<BatchLayout> layout() const override { return BatchLayout{3, n_}; }
  Shape example_shape() const { return example_; }
  const data::ImageLoader& loader() const { return loader_; }

 private:
  void plan(Rng& r, data::BatchPlan& p) {  // called by the loader, one batch at a time
    sampler_.sample(r, n_, a_, p_, q_);
    p.images = a_;
    p.images.insert(p.images.end(), p_.begin(), p_.end());
    p.images.insert(p.images.end(), q_.begin(), q_.end());
  }
  std::vector<std::int64_t> labels_;
  data::TripletSampler sampler_;
  std::size_t n_;
  Rng rng_;
  std::vector<std::uint32_t> a_, p_, q_;
  std::vector<T> cast_;
  data::ImageLoader loader_;  // last: its workers stop before the members they use go
  Shape example_;
};

/// P x K batches from an image folder, with their class labels: the mining losses' source.
template <class T, class B>
class FolderPKBatches final : public BatchSource<T, B> {
 public:
  /// Throws value_error as PKSampler does.
  FolderPKBatches(const data::ImageFolder& folder, const data::TransformSpec& spec, std::size_t p,
                  std::size_t k, std::uint64_t seed, data::LoaderOptions options = {},
                  bool flat = false, bool with_replacement = false)
      : labels_(folder.labels()),
        sampler_(std::span<const std::int64_t>(labels_), p, k, with_replacement),
        p_(p),
        k_(k),
        rng_(seed),
        loader_(
            folder, spec,
            [this](Rng& r, data::BatchPlan& pl) { sampler_.sample(r, pl.images, pl.labels); },
            detail::loader_options<B>(options, options.blocks)),
        example_(detail::folder_example_shape(loader_, flat)) {}
  void next(Batch<T, B>& b) override {
    const auto& hb = detail::next_batch<B>(loader_, rng_);
    detail::upload_host_batch(hb, example_, cast_, b.inputs);
    b.labels = hb.plan.labels;
  }
  Rng& rng() override { return rng_; }
  std::string describe() const override {
    return "folder-pk p=" + std::to_string(p_) + " k=" + std::to_string(k_);
  }
  Shape example_shape() const { return example_; }
  const data::ImageLoader& loader() const { return loader_; }

 private:
  std::vector<std::int64_t> labels_;
  data::PKSampler sampler_;
  std::size_t p_, k_;
  Rng rng_;
  std::vector<T> cast_;
  data::ImageLoader loader_;
  Shape example_;
};

/// Seconds the loader of a folder source has waited for its batches (ImageLoader::
/// wait_seconds), or nullopt for a source that is not one of the folder sources.
template <class T, class B>
std::optional<double> folder_wait_seconds(const BatchSource<T, B>& source) {
  if (const auto* s = dynamic_cast<const FolderPairBatches<T, B>*>(&source))
    return s->loader().wait_seconds();
  if (const auto* s = dynamic_cast<const FolderTripletBatches<T, B>*>(&source))
    return s->loader().wait_seconds();
  if (const auto* s = dynamic_cast<const FolderPKBatches<T, B>*>(&source))
    return s->loader().wait_seconds();
  return std::nullopt;
}

/// A SiameseTrainer source factory reading `folder` through the loader: pairs, triplets and
/// P x K batches, the examples as the network reads them (flat for a rank-1 input). The
/// folder is shared with every source made. Throws value_error for the ntxent loss (it
/// needs two views of an image) and for examples that do not fit the network's input.
template <class T, class B>
SourceFactory<T, B> folder_source_factory(std::shared_ptr<const data::ImageFolder> folder,
                                          data::TransformSpec spec,
                                          data::LoaderOptions options = {}) {
  if (!folder) throw value_error("folder_source_factory: no image folder");
  return [folder, spec = std::move(spec),
          options](const SourceRequest& r) -> std::unique_ptr<BatchSource<T, B>> {
    using K = SourceRequest::Kind;
    const bool flat = r.input_shape.rank() == 1;
    std::unique_ptr<BatchSource<T, B>> source;
    Shape example;
    auto keep = [&](auto made) {
      example = made->example_shape();
      source = std::move(made);
    };
    switch (r.kind) {
      case K::pairs:
        keep(std::make_unique<FolderPairBatches<T, B>>(*folder, spec, r.n, r.seed, options, flat));
        break;
      case K::triplets:
        keep(std::make_unique<FolderTripletBatches<T, B>>(*folder, spec, r.n, r.seed, options,
                                                          flat));
        break;
      case K::pk:
        keep(std::make_unique<FolderPKBatches<T, B>>(*folder, spec, r.p, r.k, r.seed, options,
                                                     flat));
        break;
      case K::positive_pairs:
        throw value_error("the " + r.loss +
                          " loss cannot train from an image folder: it needs two augmented "
                          "views of each image, and folder sources serve pairs (contrastive), "
                          "triplets (triplet) and P x K batches (batch-hard, batch-all)");
    }
    if (example != r.input_shape)
      throw value_error("image folder " + folder->root().string() + ": examples of shape " +
                        example.str() + " for a network whose input is " + r.input_shape.str());
    return source;
  };
}

}  // namespace siam
