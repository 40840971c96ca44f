// The general training loop: any network, any loss (the library's or a callable of the
// user's), any optimizer and learning-rate schedule, any batch source. Per step:
//   batch = source.next();  lr = schedule(step);  tape.reset();  zero_grad();
//   loss = loss_fn(net(batch.inputs), batch);  backward;  [NaN/Inf check];  [clip];  step
// The network runs once on the stacked batch (Siamese branches share weights). The tape,
// batch and probe buffers are reused, so a steady-state step allocates nothing on the CPU
// backend (for the library's sources, losses without mining, and every optimizer).
// Graph stepping lives in train/graph_step.hpp, checkpoints in train/checkpoint.hpp.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "siam/io/model_file.hpp"
#include "siam/nn/layers.hpp"
#include "siam/optim/clip.hpp"
#include "siam/optim/optimizer.hpp"
#include "siam/optim/schedule.hpp"
#include "siam/train/batches.hpp"
#include "siam/train/checkpoint.hpp"
#include "siam/train/graph_step.hpp"
#include "siam/train/losses.hpp"

namespace siam {

/// What a step does when the loss or a gradient holds NaN or Inf (TrainerOptions::check_finite).
enum class NonFinite {
  stop,  ///< throw numeric_error naming the iteration and the tensor; the model is untouched
  skip,  ///< leave the model untouched, use up the iteration and go on (step() returns NaN)
};

struct TrainerOptions {
  /// Check the loss and every gradient for NaN/Inf before each update (see `on_non_finite`;
  /// the model is left untouched either way). One extra read of the gradients.
  bool check_finite = true;
  /// Clip the gradients to this global L2 norm before each update (0: no clipping).
  double clip_norm = 0;
  /// Sets the optimizer's learning rate before each step (none: the optimizer's own).
  std::optional<optim::Schedule> schedule;
  /// The run's settings as "key=value" lines, recorded in checkpoints; resuming under other
  /// settings is an error naming the first difference (see load_checkpoint).
  std::string settings;
  /// Graph mode: capture the step's device work once (forward, loss, backward, finite check,
  /// update) and replay it every iteration: one CUDA graph launch per step on the GPU, a
  /// plain re-run on the CPU (train/graph_step.hpp). The batch is still drawn and uploaded
  /// eagerly before each replay, and the update's learning rate and bias corrections are
  /// uploaded with it. Needs an optimizer with a replayable update (Adam, AdamW), no clipping
  /// and the default gradient step. The finite check moves to the device: a step whose loss
  /// or gradients hold NaN/Inf is skipped there, and so is every later one; the host learns
  /// of it at the next step() or check_replayed() (after `graph_check_every` step_async() at
  /// the latest), with the model as it was before it.
  bool graph = false;
  long long graph_check_every = 100;
  /// NaN/Inf in a step: stop (throw numeric_error) or skip the update. In graph mode the
  /// steps queued after a bad one are skipped with it (step() checks every step, so then only
  /// the bad one is).
  NonFinite on_non_finite = NonFinite::stop;
  /// With NonFinite::skip: throw numeric_error once more than this many steps in a row were
  /// skipped (0: no limit).
  long long max_skips_in_a_row = 0;
};

template <class T, class B>
class Trainer {
 public:
  /// Holds references to net, optimizer and source: they must outlive the trainer.
  Trainer(nn::Layer<T, B>& net, optim::Optimizer<T, B>& opt, BatchSource<T, B>& source,
          LossFn<T, B> loss, TrainerOptions options = {})
      : net_(net),
        opt_(opt),
        source_(source),
        loss_fn_(std::move(loss)),
        options_(std::move(options)),
        params_(net.parameters()),
        checkpointed_(siam::checkpoint_tensors(net)),
        optimizer_settings_(opt.describe()),
        graph_(
            [this] {
              const View<T, B> l = forward_backward(batch_).value();
              loss_data_ = l.data();
              return l;
            },
            [this] {
              compute_probe();
              return probe_.view();
            }) {
    if (!loss_fn_) throw value_error("Trainer: no loss function");
    if (options_.clip_norm < 0 || !std::isfinite(options_.clip_norm))
      throw value_error("Trainer: clip_norm must be >= 0, got " +
                        std::to_string(options_.clip_norm));
    if (options_.max_skips_in_a_row < 0)
      throw value_error("Trainer: max_skips_in_a_row must be >= 0, got " +
                        std::to_string(options_.max_skips_in_a_row));
  }
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// One iteration; returns the batch loss, or NaN for a step skipped for NaN/Inf (on a
  /// device backend this reads one value back; use step_async() and last_loss() to read it
  /// only now and then).
  double step() {
    step_async();
    check_replayed();
    return last_skipped_ ? std::nan("") : last_loss();
  }

  /// One iteration without reading the loss back to the host.
  void step_async() {
    if (options_.graph) return graph_step();
    last_skipped_ = false;
    source_.next(batch_);
    if (options_.schedule) opt_.set_lr(options_.schedule->lr_at(iteration_));
    loss_data_ =
        (gradient_step_ ? gradient_step_(batch_) : forward_backward(batch_).value()).data();
    if (options_.check_finite && !finite_step()) {
      skipped(non_finite_reason());  // throws unless the step is to be skipped
      ++iteration_;                  // a skipped batch uses up its iteration
      return;
    }
    if (options_.clip_norm > 0) optim::clip_grad_norm(params_, options_.clip_norm, clip_);
    opt_.step();
    ++iteration_;
    skips_in_a_row_ = 0;
  }

  /// Zeroes the gradients and runs forward, loss and backward of `batch` on this trainer's
  /// tape (the network once on the stacked rows); with `scale` != 1 the loss is multiplied
  /// by it first (so are the gradients). Returns the loss, valid until the next call.
  /// Throws shape_error unless the loss has one element.
  Var<T, B> forward_backward(const Batch<T, B>& batch, T scale = T(1)) {
    tape_.reset();
    opt_.zero_grad();
    net_.set_training(true);  // batch statistics, dropout on (embed() switches them off)
    Var<T, B> f = net_.forward(tape_.constant(batch.inputs));
    loss_ = loss_fn_(f, batch, tape_);
    if (loss_.shape().size() != 1)
      throw shape_error("Trainer: the loss must have one element, got " + loss_.shape().str());
    if (scale != T(1)) loss_ = loss_ * scale;
    tape_.backward(loss_);
    return loss_;
  }

  /// How a step turns the batch into gradients: it must leave every parameter's gradient
  /// for the whole batch and return the batch's loss (a view of one element that stays
  /// valid until the next step). The default is forward_backward(batch); data-parallel training
  /// (parallel/trainer.hpp) computes a slice and sums the gradients across processes.
  using GradientStep = std::function<View<T, B>(const Batch<T, B>& batch)>;
  /// Replaces the gradient computation of every following step (an empty function restores
  /// the default).
  void set_gradient_step(GradientStep f) { gradient_step_ = std::move(f); }

  /// Throws numeric_error naming the iteration and the tensor if the last step's loss or a
  /// gradient holds NaN or Inf (whatever on_non_finite says). In graph mode the check runs on
  /// the device; this reads its verdict (check_replayed()).
  void check_finite() {
    if (options_.graph) return check_replayed();
    if (!loss_data_ || finite_step()) return;  // no step yet, or all finite
    throw numeric_error(non_finite_reason());
  }

  /// Graph mode: reads the device's verdict (one value back). If replayed steps were skipped
  /// for NaN/Inf, takes them back (the optimizer's count and the iteration) and then stops or
  /// skips as on_non_finite says, naming the first such iteration. Does nothing in eager mode.
  void check_replayed() {
    if (!options_.graph || !options_.check_finite) return;
    const long long skipped_steps = graph_.settle(opt_);
    if (skipped_steps == 0) {
      skips_in_a_row_ = 0;
      return;
    }
    const long long bad = iteration_ - skipped_steps + 1;
    iteration_ = bad - 1;
    skipped("iteration " + std::to_string(bad) +
            ": the loss or a gradient holds NaN or Inf (graph mode: that step and the ones "
            "queued after it were skipped; the model is as it was before it)");
    ++iteration_;  // skipped, not stopped: the bad batch is used up
  }

  /// Graph mode: device operations in the captured step (0 before the first capture and on
  /// the CPU, which replays without recording).
  std::size_t graph_nodes() const { return graph_.nodes(); }
  /// Graph mode: how many times the step was captured (more than once only when the batch's
  /// or a parameter's buffer moved).
  int graph_captures() const { return graph_.captures(); }

  /// With NonFinite::skip: whether the last step was skipped, why (the message a stop would
  /// have thrown), and how many steps were skipped in all.
  bool last_skipped() const { return last_skipped_; }
  const std::string& last_skip_reason() const { return last_skip_reason_; }
  long long skipped_steps() const { return skipped_total_; }

  /// The settings a checkpoint records: the caller's, then the source, optimizer, schedule,
  /// clipping, and the loss with its parameters (losses::describe).
  std::string settings() const {
    std::string s = options_.settings;
    if (!s.empty() && s.back() != '\n') s += '\n';
    s += "source=" + source_.describe() + "\n";
    s += "optimizer=" + optimizer_settings_ + "\n";  // as constructed (a schedule moves lr)
    s += "schedule=" + (options_.schedule ? options_.schedule->describe() : std::string("none")) +
         "\n";
    s += "clip_norm=" + std::to_string(options_.clip_norm) + "\n";
    s += "loss=" + losses::describe(loss_fn_) + "\n";
    return s;
  }

  /// The run's counters: the source's generator, the optimizer's step count, the iteration
  /// and the layers' random streams (settles graph mode's replays first).
  TrainingState state() {
    check_replayed();
    TrainingState s;
    s.rng = source_.rng().state();
    s.optimizer_steps = opt_.steps();
    s.iteration = iteration_;
    for (const std::uint64_t* c : net_.streams())
      s.streams.push_back(*c);
    return s;
  }
  /// Sets the counters state() returns. Throws value_error when `s` holds another number of
  /// random stream words than the network has (nn::Layer::streams).
  void restore(const TrainingState& s) {
    const auto streams = net_.streams();
    if (s.streams.size() != streams.size())
      throw value_error("Trainer::restore: " + std::to_string(s.streams.size()) +
                        " random stream words for a network with " +
                        std::to_string(streams.size()));
    source_.rng().set_state(s.rng);
    opt_.set_steps(s.optimizer_steps);
    for (std::size_t i = 0; i < streams.size(); ++i)
      *streams[i] = s.streams[i];
    set_iteration(s.iteration);
  }
  /// What a checkpoint stores of the network: parameters, then buffers.
  const std::vector<Parameter<T, B>*>& checkpoint_tensors() const { return checkpointed_; }

  /// Everything needed to continue a run exactly (train/checkpoint.hpp): weights and buffers
  /// (BatchNorm's running statistics), optimizer state, the counters of state() (Dropout's
  /// step among them), the caller's loss history and the settings, plus any `extra` records
  /// (a model description). Written atomically.
  void save_checkpoint(const std::filesystem::path& path, const std::vector<float>& losses,
                       std::vector<io::Record> extra = {}) {
    write_checkpoint(path, checkpointed_, opt_, state(), losses, settings(), std::move(extra));
  }

  /// Restores a checkpoint written by save_checkpoint and returns its loss history.
  /// Throws io_error for a corrupt or mismatched file, and value_error when it was written
  /// under other settings (naming the first that differs) unless `allow_other_settings`.
  std::vector<float> load_checkpoint(const std::filesystem::path& path,
                                     bool allow_other_settings = false) {
    auto c = read_checkpoint(path, checkpointed_, opt_, net_.streams().size(), settings(),
                             allow_other_settings);
    restore(c.state);
    return std::move(c.losses);
  }

  /// The loss of the last step (synchronises a device backend).
  double last_loss() const {
    return loss_data_ ? static_cast<double>(loss_view().item()) : std::nan("");
  }
  long long iteration() const { return iteration_; }
  void set_iteration(long long it) {
    iteration_ = it;
    graph_.invalidate();
  }
  const Batch<T, B>& last_batch() const { return batch_; }
  Tape<T, B>& tape() { return tape_; }
  BatchSource<T, B>& source() { return source_; }
  optim::Optimizer<T, B>& optimizer() { return opt_; }
  nn::Layer<T, B>& network() { return net_; }
  const std::vector<Parameter<T, B>*>& parameters() const { return params_; }
  const TrainerOptions& options() const { return options_; }

 private:
  View<T, B> loss_view() const { return View<T, B>(loss_data_, Shape{1}); }

  // probe_ = sum of (x * 0) over the loss and every gradient: 0 when all are finite, NaN
  // otherwise. One scalar, so a device backend synchronises once to read it.
  void compute_probe() {
    probe_ = sum_all(loss_view() * T(0));
    for (auto* p : params_)
      probe_ += sum_all(p->gradient() * T(0));
  }
  bool finite_step() {
    compute_probe();
    return std::isfinite(static_cast<double>(probe_.item()));
  }

  // The message naming what is not finite: the input batch, the loss or the first gradient
  // (only built once the probe has found NaN or Inf).
  std::string non_finite_reason() {
    const std::string at = "iteration " + std::to_string(iteration_ + 1) + ": ";
    if (auto input = input_reason()) return at + *input;  // the data's fault, not the model's
    const double l = last_loss();
    if (!std::isfinite(l)) return at + "the loss is " + std::to_string(l);
    for (std::size_t i = 0; i < params_.size(); ++i) {
      probe_ = sum_all(params_[i]->gradient() * T(0));
      if (!std::isfinite(static_cast<double>(probe_.item())))
        return at + "the gradient of parameter " + std::to_string(i) + " (" + params_[i]->name +
               ", " + params_[i]->value.shape().str() + ") holds NaN or Inf";
    }
    return at + "the loss or a gradient holds NaN or Inf";
  }

  // The row and column of the first non-finite value of the last batch's input, if any.
  std::optional<std::string> input_reason() const {
    const Tensor<T, B>& x = batch_.inputs;
    if (x.size() == 0 || x.shape().rank() == 0) return std::nullopt;
    const std::vector<T> host = x.to_vector();
    const index_t cols = x.size() / x.shape()[0];
    for (std::size_t i = 0; i < host.size(); ++i) {
      const double v = static_cast<double>(host[i]);
      if (std::isfinite(v)) continue;
      const auto k = static_cast<index_t>(i);
      return std::string("the input batch holds ") + (std::isnan(v) ? "NaN" : "Inf") + " at row " +
             std::to_string(k / cols) + ", column " + std::to_string(k % cols);
    }
    return std::nullopt;
  }

  // A step that found NaN/Inf (the model untouched): throws under NonFinite::stop, or past
  // max_skips_in_a_row; records the skip otherwise (the caller then uses up the iteration).
  void skipped(const std::string& why) {
    if (options_.on_non_finite == NonFinite::stop) throw numeric_error(why);
    ++skips_in_a_row_;
    if (options_.max_skips_in_a_row > 0 && skips_in_a_row_ > options_.max_skips_in_a_row)
      throw numeric_error(why + " (" + std::to_string(skips_in_a_row_) +
                          " steps in a row skipped)");
    ++skipped_total_;
    last_skipped_ = true;
    last_skip_reason_ = why;
  }

  void graph_step() {
    if (options_.graph_check_every < 1)
      throw value_error("Trainer: graph_check_every must be >= 1, got " +
                        std::to_string(options_.graph_check_every));
    if (options_.clip_norm > 0 || gradient_step_)
      throw value_error(
          "Trainer: graph mode cannot replay gradient clipping or a custom gradient step");
    (void)GraphStep<T, B>::check(opt_);
    last_skipped_ = false;
    source_.next(batch_);
    if (options_.schedule) opt_.set_lr(options_.schedule->lr_at(iteration_));
    if (graph_.moved(batch_, params_)) {
      check_replayed();  // settle the replays of the old graph first
      graph_.reset();
    }
    graph_.step(batch_, params_, opt_, options_.check_finite);
    ++iteration_;
    if (options_.check_finite && graph_.due(options_.graph_check_every)) check_replayed();
  }

  nn::Layer<T, B>& net_;
  optim::Optimizer<T, B>& opt_;
  BatchSource<T, B>& source_;
  LossFn<T, B> loss_fn_;
  TrainerOptions options_;
  std::vector<Parameter<T, B>*> params_;
  std::vector<Parameter<T, B>*> checkpointed_;  // parameters, then buffers
  std::string optimizer_settings_;
  Batch<T, B> batch_;
  Tape<T, B> tape_;
  Var<T, B> loss_;
  T* loss_data_ = nullptr;  // the last step's loss (one element), until the next step
  GradientStep gradient_step_;
  Tensor<T, B> probe_{Shape{1}};
  optim::ClipWorkspace<T, B> clip_;
  long long iteration_ = 0;
  GraphStep<T, B> graph_;
  long long skips_in_a_row_ = 0, skipped_total_ = 0;
  bool last_skipped_ = false;
  std::string last_skip_reason_;
};

}  // namespace siam
