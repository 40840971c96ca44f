// Data-parallel training with the library's trainer: DataParallel (parallel/data_parallel.hpp)
// wired into Trainer (train/trainer.hpp) and SiameseTrainer (train/siamese_trainer.hpp) through the
// trainer's generic gradient-step hook. The trainer itself knows nothing of processes.
//
//   siam::parallel::MpiEnvironment env(&argc, &argv);
//   siam::parallel::MpiCommunicator comm(env);
//   siam::SiameseTrainer<float, siam::Cpu> st(train, cfg);             // same on every rank
//   siam::parallel::DataParallelTrainer<float, siam::Cpu> dp(st.trainer(), comm,
//                                                        siam::parallel::options_for(cfg));
//   for (...) st.step();                       // every rank: the same global batch, its slice
//   dp.save_checkpoint(path, losses, siam::io::model_records(st.network()));  // rank 0 writes
//
// Each step every rank draws the WHOLE global batch from the source's generator (so the
// batch stream does not depend on the rank count and a checkpoint resumes with any number
// of ranks), cuts it into items with the source's layout() (pairs [first; second],
// triplets [anchor; positive; negative]), runs forward and backward on its own items
// only, and DataParallel sums the gradients and the loss across ranks; every rank then
// applies the same clipping and optimizer update. The loss must be a sum of independent
// per-item terms (Reduction::sum), or their mean (each slice's loss is then scaled by its
// share of the batch). Losses that couple the items of a batch (batch-hard and batch-all
// mining, NT-Xent) cannot be split this way; options_for refuses them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "siam/parallel/data_parallel.hpp"
#include "siam/train/siamese_trainer.hpp"

namespace siam::parallel {

struct DataParallelTrainerOptions {
  /// How gradients are summed (deterministic mode, blocks, buckets).
  DataParallelOptions sum;
  /// How the trainer's loss reduces over the items of a batch: sum (taken as is) or mean
  /// (each slice's loss is scaled by items in the slice / items in the batch).
  Reduction reduction = Reduction::sum;
};

/// The options for a SiameseTrainer built from `cfg`: the loss's reduction (contrastive:
/// cfg.reduction, triplet: mean). Throws value_error for a loss that couples the items of
/// a batch (batch-hard, batch-all, ntxent).
inline DataParallelTrainerOptions options_for(const SiameseConfig& cfg,
                                              DataParallelOptions sum = {}) {
  if (!loss_kind(cfg.loss).splits)
    throw value_error("data-parallel training: the " + cfg.loss +
                      " loss couples every example of a batch, so it cannot be split across "
                      "processes; use contrastive or triplet, or train in one process");
  return {sum, cfg.loss == "contrastive" ? cfg.reduction : Reduction::mean};
}

/// True on every rank when `flag` is true on any rank (one small host collective).
inline bool any_rank(Communicator& comm, bool flag) {
  const unsigned char mine = flag ? 1 : 0;
  std::vector<unsigned char> all(static_cast<std::size_t>(comm.size()));
  comm.all_gather_host(&mine, 1, all.data());
  for (unsigned char a : all)
    if (a) return true;
  return false;
}

template <class T, class B>
class DataParallelTrainer {
 public:
  /// Installs the data-parallel gradient step in `trainer` (which must outlive this object;
  /// the destructor restores the plain step). Runs the handshake (the trainer's settings,
  /// the data-parallel options and the parameter count must agree on every rank) and
  /// broadcasts rank 0's parameters. Throws value_error when the trainer's source has no
  /// stacked layout (or an empty one), comm_error for a handshake mismatch.
  DataParallelTrainer(Trainer<T, B>& trainer, Communicator& comm,
                      DataParallelTrainerOptions opt = {})
      : trainer_(trainer),
        comm_(comm),
        opt_(opt),
        layout_(checked_layout(trainer)),
        dp_(comm, trainer.parameters(), opt.sum, handshake_settings(trainer, opt)) {
    trainer_.set_gradient_step([this](const Batch<T, B>& b) { return step(b); });
  }
  ~DataParallelTrainer() { trainer_.set_gradient_step({}); }
  DataParallelTrainer(const DataParallelTrainer&) = delete;
  DataParallelTrainer& operator=(const DataParallelTrainer&) = delete;

  /// Trainer::save_checkpoint on rank 0 only (written atomically); every rank learns
  /// whether it worked (a failed write throws on every rank, see on_root).
  void save_checkpoint(const std::filesystem::path& path, const std::vector<float>& losses,
                       std::vector<io::Record> extra = {}) {
    on_root(comm_, [&] { trainer_.save_checkpoint(path, losses, std::move(extra)); });
  }

  /// Rank 0 reads the checkpoint (Trainer::load_checkpoint: the same errors, raised on every
  /// rank) and broadcasts weights, optimizer state, generator, counters and the loss
  /// history, so it resumes with any number of ranks, whichever wrote it. Only rank 0
  /// needs to see the file.
  std::vector<float> load_checkpoint(const std::filesystem::path& path,
                                     bool allow_other_settings = false) {
    std::vector<float> losses;
    on_root(comm_, [&] { losses = trainer_.load_checkpoint(path, allow_other_settings); });
    broadcast_state(losses);
    return losses;
  }

  int rank() const { return comm_.rank(); }
  int size() const { return comm_.size(); }
  bool is_root() const { return comm_.rank() == 0; }
  Communicator& communicator() { return comm_; }
  DataParallel<T, B>& data_parallel() { return dp_; }
  const DataParallelTrainerOptions& options() const { return opt_; }
  BatchLayout layout() const { return layout_; }

 private:
  static BatchLayout checked_layout(Trainer<T, B>& t) {
    const auto l = t.source().layout();
    if (!l)
      throw value_error("data-parallel training: the batch source '" + t.source().describe() +
                        "' does not say how its rows are stacked (layout()), so its batches "
                        "cannot be split across processes");
    if (l->blocks == 0 || l->items == 0)
      throw value_error("data-parallel training: the batch source '" + t.source().describe() +
                        "' has an empty layout");
    return *l;
  }
  static std::string handshake_settings(Trainer<T, B>& t, const DataParallelTrainerOptions& o) {
    return t.settings() + "dist.deterministic=" + std::to_string(o.sum.deterministic) +
           "\ndist.blocks=" + std::to_string(o.sum.blocks) +
           "\ndist.bucket_bytes=" + std::to_string(o.sum.bucket_bytes) +
           "\ndist.reduction=" + (o.reduction == Reduction::sum ? "sum" : "mean") + "\n";
  }

  // The trainer's gradient step: this rank's items of the global batch, summed over ranks.
  View<T, B> step(const Batch<T, B>& full) {
    const std::size_t n = layout_.items;
    dp_.step(n, [&](std::size_t begin, std::size_t end) {
      slice_batch(full, layout_, begin, end, part_);
      const T scale = opt_.reduction == Reduction::mean
                          ? static_cast<T>(end - begin) / static_cast<T>(n)
                          : T(1);
      return trainer_.forward_backward(part_, scale);
    });
    return View<T, B>(const_cast<T*>(dp_.loss_tensor().data()), Shape{1});
  }

  // After rank 0 loaded a checkpoint: everything it restored, to every rank.
  void broadcast_state(std::vector<float>& losses) {
    if (comm_.size() == 1) return;
    dp_.broadcast_parameters();
    std::vector<T> host;
    auto broadcast_tensor = [&](Tensor<T, B>& s) {
      host.resize(static_cast<std::size_t>(s.size()));
      B::to_host(host.data(), s.data(), s.size());
      comm_.broadcast_host(host.data(), host.size() * sizeof(T), 0);
      B::from_host(s.data(), host.data(), s.size());
    };
    for (Tensor<T, B>* s : trainer_.optimizer().state_tensors())
      broadcast_tensor(*s);
    for (Parameter<T, B>* b : trainer_.network().buffers())  // BatchNorm's statistics
      broadcast_tensor(b->value);
    TrainingState st = trainer_.state();
    std::uint64_t c[TrainingState::packed_words + 1];
    const auto words = st.pack();
    std::copy(words.begin(), words.end(), c);
    c[TrainingState::packed_words] = losses.size();
    comm_.broadcast_host(c, sizeof c, 0);
    TrainingState got = TrainingState::unpack(c);
    got.streams = std::move(st.streams);  // as many on every rank: the same network
    if (!got.streams.empty())
      comm_.broadcast_host(got.streams.data(), got.streams.size() * sizeof(std::uint64_t), 0);
    trainer_.restore(got);
    losses.resize(static_cast<std::size_t>(c[TrainingState::packed_words]));
    if (!losses.empty()) comm_.broadcast_host(losses.data(), losses.size() * sizeof(float), 0);
  }

  Trainer<T, B>& trainer_;
  Communicator& comm_;
  DataParallelTrainerOptions opt_;
  BatchLayout layout_;
  DataParallel<T, B> dp_;
  Batch<T, B> part_;
};

}  // namespace siam::parallel
