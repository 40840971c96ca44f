// A streaming loader over an image folder: N worker threads read, decode and transform the
// images of upcoming batches into a bounded ring of ready batches while the consumer (the
// training step) works on the current one. Images stay on disk; memory is the ring's
// `queue` batches of rows x channels x size x size floats plus one decoded image per worker.
//
// Which images a batch holds is decided by a planner (a sampler), called for one batch at a
// time in batch order with the source's generator, so the sequence of plans does not depend
// on the threads. Each image's random transform draws from transform_rng(batch key, row,
// image), the batch key being the next draw of that generator after the plan: batches are
// identical for any number of threads, and a generator restored from a checkpoint restarts
// the pipeline at the same batch. Without augmentation the transform draws nothing, so no
// key is drawn either: the generator then advances exactly as the planner alone advances it
// (as an in-memory source with the same sampler does), and an image of the output size
// arrives as its 8-bit samples k / 255.
//
// A worker's error (a file turned unreadable or corrupt after the scan) is rethrown by the
// consumer's next() for the batch that needed the file, naming it; the destructor stops
// and joins the workers whatever state they are in.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory_resource>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "siam/data/image_folder.hpp"
#include "siam/data/transforms.hpp"
#include "siam/error.hpp"
#include "siam/random.hpp"

namespace siam::data {

struct LoaderOptions {
  std::size_t threads = 2;  ///< worker threads (>= 1)
  std::size_t queue = 4;    ///< batches planned and filled ahead of the consumer (>= 1)
  /// Data-parallel ranks: the batch (`blocks` blocks of equal size, e.g. 2 for pairs
  /// [first; second]) is planned whole on every rank, as DataParallelTrainer expects, but
  /// only the items of part `part` of `parts` (dist's shard(): contiguous, in order) are
  /// read and decoded; the other rows stay zero. parts = 1: every row.
  std::size_t part = 0, parts = 1, blocks = 1;
  /// Where the ready batches' pixels live (HostBatch::inputs); null: the default heap. A
  /// trainer on a GPU backend sets page-locked (pinned) host memory here, so the upload of
  /// each batch is a direct DMA (train/folder_batches.hpp). Must outlive the loader.
  std::pmr::memory_resource* memory = nullptr;
};

/// Which images a batch holds (rows in order) and what the loss reads besides them.
struct BatchPlan {
  std::vector<std::uint32_t> images;  ///< image index of each row
  std::vector<std::int64_t> labels;   ///< per row, or empty
  std::vector<float> targets;         ///< e.g. pair labels, or empty
};

/// A filled batch on the host.
struct HostBatch {
  BatchPlan plan;
  /// plan.images.size() x example_size() values, in LoaderOptions::memory
  std::pmr::vector<float> inputs;
};

/// Fills `plan` for the next batch, drawing from `rng` (called under the loader's lock,
/// one batch at a time, in order).
using BatchPlanner = std::function<void(Rng& rng, BatchPlan& plan)>;

class ImageLoader {
 public:
  /// Throws value_error for 0 threads or a 0-batch queue. `folder` must outlive the loader.
  ImageLoader(const ImageFolder& folder, TransformSpec spec, BatchPlanner planner,
              LoaderOptions options = {})
      : folder_(folder), spec_(std::move(spec)), planner_(std::move(planner)), opt_(options) {
    if (opt_.threads == 0 || opt_.queue == 0)
      throw value_error("ImageLoader: threads (" + std::to_string(opt_.threads) + ") and queue (" +
                        std::to_string(opt_.queue) + ") must be >= 1");
    if (opt_.parts == 0 || opt_.part >= opt_.parts || opt_.blocks == 0)
      throw value_error("ImageLoader: part " + std::to_string(opt_.part) + " of " +
                        std::to_string(opt_.parts) + " parts, " + std::to_string(opt_.blocks) +
                        " blocks (need part < parts, blocks >= 1)");
    std::pmr::memory_resource* memory =
        opt_.memory ? opt_.memory : std::pmr::get_default_resource();
    slots_.reserve(opt_.queue);
    for (std::size_t i = 0; i < opt_.queue; ++i)
      slots_.emplace_back(memory);
  }
  ~ImageLoader() { stop(); }
  ImageLoader(const ImageLoader&) = delete;
  ImageLoader& operator=(const ImageLoader&) = delete;

  /// Samples per example: channels x size x size (channels of the folder's first image
  /// when the folder keeps each file's own).
  std::size_t example_size() const { return channels() * spec_.size * spec_.size; }
  std::size_t channels() const {
    if (folder_.options().channels) return folder_.options().channels;
    if (!first_channels_) first_channels_ = folder_.load(0).channels;
    return first_channels_;
  }
  const TransformSpec& spec() const { return spec_; }
  /// Seconds next() has spent waiting for its batch to be read and decoded (the time a
  /// training step stood idle for want of data), summed over every call so far.
  double wait_seconds() const {
    std::lock_guard lk(m_);
    return wait_seconds_;
  }

  /// The next batch, planned from `rng`'s current state; advances `rng` past it. The
  /// reference stays valid until the next call. Rethrows a worker's error naming the file.
  const HostBatch& next(Rng& rng) {
    const auto t0 = std::chrono::steady_clock::now();
    std::unique_lock lk(m_);
    if (holding_) {  // the previous batch is given back to the ring
      holding_ = false;
      ++consumed_;
      work_cv_.notify_all();
    }
    // Planning happens under the lock, so once planned_ passes consumed_ the slot's
    // starting state is known: a different one means rng was set (a checkpoint restored).
    if (!workers_.empty()) ready_cv_.wait(lk, [&] { return planned_ > consumed_; });
    if (workers_.empty() || !same(slot(consumed_).before, rng.state())) {
      lk.unlock();
      restart(rng.state());
      lk.lock();
    }
    Slot& s = slot(consumed_);
    ready_cv_.wait(lk, [&] { return s.ready; });
    wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s.error) {
      const auto e = s.error;
      lk.unlock();
      stop();  // the next call restarts from rng, which stays at this batch
      std::rethrow_exception(e);
    }
    rng.set_state(s.after);
    holding_ = true;
    return s.batch;
  }

 private:
  struct Slot {
    // The batch's vector is built on the resource (assigning one later would keep the
    // default: polymorphic allocators do not propagate).
    explicit Slot(std::pmr::memory_resource* memory)
        : batch{BatchPlan{}, std::pmr::vector<float>(memory)} {}
    bool ready = false;
    Rng::State before{}, after{};
    std::uint64_t key = 0;
    HostBatch batch;
    std::exception_ptr error;
  };

  static bool same(const Rng::State& a, const Rng::State& b) {
    for (int i = 0; i < 4; ++i)
      if (a.s[i] != b.s[i]) return false;
    return a.has_spare == b.has_spare && (!a.has_spare || a.spare == b.spare);
  }
  Slot& slot(std::uint64_t b) { return slots_[b % slots_.size()]; }

  void stop() {
    {
      std::lock_guard lk(m_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (auto& t : workers_)
      t.join();
    workers_.clear();
  }

  void restart(const Rng::State& state) {
    stop();
    std::lock_guard lk(m_);
    stop_ = false;
    holding_ = false;
    consumed_ = planned_ = 0;
    plan_rng_.set_state(state);
    for (auto& s : slots_) {
      s.ready = false;
      s.error = nullptr;
    }
    const std::size_t n = example_size();
    for (std::size_t t = 0; t < opt_.threads; ++t)
      workers_.emplace_back([this, n] { work(n); });
  }

  void work(std::size_t example) {
    std::unique_lock lk(m_);
    for (;;) {
      work_cv_.wait(lk, [&] { return stop_ || planned_ < consumed_ + slots_.size(); });
      if (stop_) return;
      const std::uint64_t b = planned_++;
      Slot& s = slot(b);
      s.ready = false;
      s.error = nullptr;
      s.before = plan_rng_.state();
      try {
        s.batch.plan.images.clear();
        s.batch.plan.labels.clear();
        s.batch.plan.targets.clear();
        planner_(plan_rng_, s.batch.plan);
        s.key = spec_.augment ? plan_rng_.next_u64() : 0;
      } catch (...) {
        s.error = std::current_exception();
      }
      s.after = plan_rng_.state();
      ready_cv_.notify_all();  // the consumer may wait for the plan
      if (!s.error) {
        lk.unlock();
        try {
          fill(s, example);
        } catch (...) {
          s.error = std::current_exception();
        }
        lk.lock();
      }
      s.ready = true;
      ready_cv_.notify_all();
    }
  }

  void fill(Slot& s, std::size_t example) const {
    const auto& rows = s.batch.plan.images;
    s.batch.inputs.resize(rows.size() * example);
    if (rows.size() % opt_.blocks != 0)
      throw value_error("ImageLoader: a batch of " + std::to_string(rows.size()) + " rows is not " +
                        std::to_string(opt_.blocks) + " equal blocks");
    const std::size_t items = rows.size() / opt_.blocks;
    const std::size_t lo = items * opt_.part / opt_.parts,
                      hi = items * (opt_.part + 1) / opt_.parts;
    for (std::size_t r = 0; r < rows.size(); ++r) {
      if (r % items < lo || r % items >= hi) {  // another rank's item: not read
        std::fill_n(s.batch.inputs.data() + r * example, example, 0.0f);
        continue;
      }
      const Image img =
          folder_.load(rows[r], spec_.decode_shrink && !spec_.augment ? spec_.size : 0);
      if (img.channels * spec_.size * spec_.size != example)
        throw io_error(folder_.path(rows[r]).string() + ": " + std::to_string(img.channels) +
                       " channels where the batch has " +
                       std::to_string(example / (spec_.size * spec_.size)) +
                       " (set ImageFolderOptions::channels)");
      Rng rng = transform_rng(s.key, r, rows[r]);
      try {
        apply_transform(img, spec_, rng, s.batch.inputs.data() + r * example);
      } catch (const value_error& e) {
        throw value_error(folder_.path(rows[r]).string() + ": " + e.what());
      }
    }
  }

  const ImageFolder& folder_;
  TransformSpec spec_;
  BatchPlanner planner_;
  LoaderOptions opt_;
  mutable std::size_t first_channels_ = 0;

  mutable std::mutex m_;
  std::condition_variable work_cv_, ready_cv_;
  std::vector<Slot> slots_;
  std::vector<std::thread> workers_;
  Rng plan_rng_;
  std::uint64_t planned_ = 0, consumed_ = 0;
  bool stop_ = false, holding_ = false;
  double wait_seconds_ = 0;
};

}  // namespace siam::data
