// The general training loop: any network, any loss (the library's or a callable of the
// user's), any optimizer and learning-rate schedule, any batch source. Per step:
//   batch = source.next();  lr = schedule(step);  tape.reset();  zero_grad();
//   loss = loss_fn(net(batch.inputs), batch);  backward;  [NaN/Inf check];  [clip];  step
// The network runs once on the stacked batch (Siamese branches share weights). The tape,
// batch and probe buffers are reused, so a steady-state step allocates nothing on the CPU
// backend (for the library's sources, losses without mining, and every optimizer).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "siam/io/model_file.hpp"
#include "siam/nn/layers.hpp"
#include "siam/optim/clip.hpp"
#include "siam/optim/optimizer.hpp"
#include "siam/optim/schedule.hpp"
#include "siam/train/batches.hpp"
#include "siam/train/losses.hpp"

namespace siam {

struct TrainerOptions {
  /// Check the loss and every gradient for NaN/Inf before each update (throws
  /// numeric_error and leaves the model untouched). One extra read of the gradients.
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
  /// plain re-run on the CPU. The batch is still drawn and uploaded eagerly before each
  /// replay, and the update's learning rate and bias corrections are uploaded with it.
  /// Needs an optimizer with a replayable update (Adam, AdamW), no clipping and the default
  /// gradient step. The finite check moves to the device: a step whose loss or gradients
  /// hold NaN/Inf is skipped there, and so is every later one; the host learns of it at the
  /// next step() or check_replayed() (after `graph_check_every` step_async() at the latest)
  /// and throws numeric_error naming the iteration, with the model as it was before it.
  bool graph = false;
  long long graph_check_every = 100;
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
        optimizer_settings_(opt.describe()) {
    if (!loss_fn_) throw value_error("Trainer: no loss function");
    if (options_.clip_norm < 0 || !std::isfinite(options_.clip_norm))
      throw value_error("Trainer: clip_norm must be >= 0, got " +
                        std::to_string(options_.clip_norm));
  }
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// One iteration; returns the batch loss (on a device backend this reads one value back;
  /// use step_async() and last_loss() to read it only now and then).
  double step() {
    step_async();
    check_replayed();
    return last_loss();
  }

  /// One iteration without reading the loss back to the host.
  void step_async() {
    if (options_.graph) return graph_step();
    source_.next(batch_);
    if (options_.schedule) opt_.set_lr(options_.schedule->lr_at(iteration_));
    loss_data_ =
        (gradient_step_ ? gradient_step_(batch_) : forward_backward(batch_).value()).data();
    if (options_.check_finite) check_finite();
    if (options_.clip_norm > 0) optim::clip_grad_norm(params_, options_.clip_norm, clip_);
    opt_.step();
    ++iteration_;
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

  /// Throws numeric_error naming the iteration and the tensor if the loss or a gradient
  /// holds NaN or Inf (x * 0 is NaN exactly for non-finite x, so one sum per tensor tells).
  /// In graph mode the check runs on the device; this reads its verdict (check_replayed()).
  void check_finite() {
    if (options_.graph) return check_replayed();
    if (!loss_data_) return;  // no step yet
    compute_probe();
    if (std::isfinite(static_cast<double>(probe_.item()))) return;
    const std::string at = "iteration " + std::to_string(iteration_ + 1) + ": ";
    check_input(at);  // a NaN image is the data's fault, not the loss's or a weight's
    const double l = last_loss();
    if (!std::isfinite(l)) throw numeric_error(at + "the loss is " + std::to_string(l));
    for (std::size_t i = 0; i < params_.size(); ++i) {
      probe_ = sum_all(params_[i]->gradient() * T(0));
      if (!std::isfinite(static_cast<double>(probe_.item())))
        throw numeric_error(at + "the gradient of parameter " + std::to_string(i) + " (" +
                            params_[i]->name + ", " + params_[i]->value.shape().str() +
                            ") holds NaN or Inf");
    }
  }

  /// Throws numeric_error naming the row and column of the first non-finite value of the
  /// last batch's input (only called once the probe has found NaN or Inf).
  void check_input(const std::string& at) {
    const Tensor<T, B>& x = batch_.inputs;
    if (x.size() == 0 || x.shape().rank() == 0) return;
    const std::vector<T> host = x.to_vector();
    const index_t cols = x.size() / x.shape()[0];
    for (std::size_t i = 0; i < host.size(); ++i) {
      const double v = static_cast<double>(host[i]);
      if (std::isfinite(v)) continue;
      const auto k = static_cast<index_t>(i);
      throw numeric_error(at + "the input batch holds " + (std::isnan(v) ? "NaN" : "Inf") +
                          " at row " + std::to_string(k / cols) + ", column " +
                          std::to_string(k % cols));
    }
  }

  /// Graph mode: throws numeric_error if a replayed step was skipped for NaN/Inf (naming
  /// the first such iteration; the optimizer's step count is set back to the updates that
  /// were applied). Reads one value back from the device. Does nothing in eager mode.
  void check_replayed() {
    if (!options_.graph || !options_.check_finite || !replay_state_ready_) return;
    const auto applied = static_cast<long long>(applied_.item());
    if (applied == replayed_) {
      if (replayed_ >= kRebase) {  // settled: count afresh, far below float's exact 2^24
        applied_.fill(T(0));
        replayed_ = 0;
      }
      return;
    }
    const long long bad = iteration_ - replayed_ + applied + 1;
    opt_.set_steps(opt_.steps() - (replayed_ - applied));
    iteration_ = bad - 1;
    replayed_ = applied;
    ok_.fill(T(1));  // the next step updates again (the caller chose to go on)
    throw numeric_error("iteration " + std::to_string(bad) +
                        ": the loss or a gradient holds NaN or Inf (graph mode: that step and "
                        "the ones queued after it were skipped; the model is as it was before it)");
  }

  /// Graph mode: device operations in the captured step (0 before the first capture and on
  /// the CPU, which replays without recording).
  std::size_t graph_nodes() const { return graph_.nodes(); }
  /// Graph mode: how many times the step was captured (more than once only when the batch's
  /// or a parameter's buffer moved).
  int graph_captures() const { return captures_; }

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

  /// Everything needed to continue a run exactly: weights, optimizer state and step count,
  /// the source's generator, the iteration, the caller's loss history and the settings,
  /// plus any `extra` records (a model description). Written atomically.
  void save_checkpoint(const std::filesystem::path& path, const std::vector<float>& losses,
                       std::vector<io::Record> extra = {}) {
    check_replayed();
    auto records = std::move(extra);
    for (auto& r : io::parameter_records(params_))
      records.push_back(std::move(r));
    const auto state = opt_.state_tensors();
    for (std::size_t i = 0; i < state.size(); ++i)
      records.push_back(io::tensor_record("optim/" + std::to_string(i), *state[i]));
    const auto st = source_.rng().state();
    std::uint64_t spare_bits;
    std::memcpy(&spare_bits, &st.spare, sizeof spare_bits);
    const std::uint64_t counters[8] = {st.s[0],
                                       st.s[1],
                                       st.s[2],
                                       st.s[3],
                                       spare_bits,
                                       st.has_spare ? 1u : 0u,
                                       static_cast<std::uint64_t>(opt_.steps()),
                                       static_cast<std::uint64_t>(iteration_)};
    records.push_back(io::make_record("state", {8}, counters, 8));
    records.push_back(io::make_record("losses", {static_cast<std::int64_t>(losses.size())},
                                      losses.data(), losses.size()));
    records.push_back(io::make_text_record("settings", settings()));
    io::save_archive(path, records);
  }

  /// Restores a checkpoint written by save_checkpoint and returns its loss history.
  /// Throws io_error for a corrupt or mismatched file, and value_error when it was written
  /// under other settings (naming the first that differs) unless `allow_other_settings`.
  std::vector<float> load_checkpoint(const std::filesystem::path& path,
                                     bool allow_other_settings = false) {
    const auto records = io::load_archive(path);
    const std::string file = path.string();
    auto find = [&](const std::string& name) -> const io::Record& {
      for (const auto& r : records)
        if (r.name == name) return r;
      throw io_error(file + ": not a checkpoint of this trainer (no '" + name + "' record)");
    };
    const auto& set = find("settings");
    if (set.type != io::ArrayType::text) throw io_error(file + ": malformed settings record");
    if (!allow_other_settings) check_settings(file, set.text(), settings());
    io::load_parameters(records, params_, file);
    const auto state = opt_.state_tensors();
    for (std::size_t i = 0; i < state.size(); ++i)
      io::load_tensor(find("optim/" + std::to_string(i)), *state[i], file);
    const auto& st = find("state");
    if (st.type != io::ArrayType::u64 || st.count() != 8)
      throw io_error(file + ": malformed state record");
    const auto c = st.template as<std::uint64_t>();
    Rng::State rs{{c[0], c[1], c[2], c[3]}, 0.0, c[5] != 0};
    std::memcpy(&rs.spare, &c[4], sizeof rs.spare);
    source_.rng().set_state(rs);
    opt_.set_steps(static_cast<long long>(c[6]));
    iteration_ = static_cast<long long>(c[7]);
    replay_state_ready_ = false;
    const auto& l = find("losses");
    if (l.type != io::ArrayType::f32) throw io_error(file + ": malformed loss history");
    return l.template as<float>();
  }

  /// The loss of the last step (synchronises a device backend).
  double last_loss() const {
    return loss_data_ ? static_cast<double>(loss_view().item()) : std::nan("");
  }
  long long iteration() const { return iteration_; }
  void set_iteration(long long it) {
    iteration_ = it;
    replay_state_ready_ = false;
  }
  const Batch<T, B>& last_batch() const { return batch_; }
  Tape<T, B>& tape() { return tape_; }
  BatchSource<T, B>& source() { return source_; }
  optim::Optimizer<T, B>& optimizer() { return opt_; }
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

  // Graph mode. The first step runs the work eagerly (so every buffer it needs exists), the
  // second captures it; later steps replay. A step recaptures only when the batch's or a
  // parameter's buffer moved (the captured work reads them by address). Per step: draw the batch,
  // upload the optimizer's two scalar rows, replay. With the finite check the work computes ok =
  // finite(probe) * ok (sticky), picks the apply or skip row by it and counts applied steps, all on
  // the device.
  void graph_step() {
    if (options_.graph_check_every < 1)
      throw value_error("Trainer: graph_check_every must be >= 1, got " +
                        std::to_string(options_.graph_check_every));
    if (options_.clip_norm > 0 || gradient_step_)
      throw value_error(
          "Trainer: graph mode cannot replay gradient clipping or a custom gradient step");
    const std::size_t k = opt_.replay_scalars();
    if (k == 0)
      throw value_error("Trainer: graph mode needs an optimizer with a replayable update; " +
                        optimizer_settings_ + " has none");
    source_.next(batch_);
    if (options_.schedule) opt_.set_lr(options_.schedule->lr_at(iteration_));
    if (graph_.captured() && buffers_moved()) {
      check_replayed();  // settle the replays of the old graph first
      graph_.reset();
      warm_ = false;
    }
    if (!replay_state_ready_) init_replay_state();
    host_scalars_.resize(2 * k);
    opt_.next_scalars(host_scalars_.data(), host_scalars_.data() + k);
    scalars_.resize(Shape{static_cast<index_t>(2 * k)});
    B::from_host(scalars_.data(), host_scalars_.data(), scalars_.size());
    const auto rows = static_cast<index_t>(k);
    try {
      run_or_replay(rows);
    } catch (...) {
      opt_.set_steps(opt_.steps() - 1);  // next_scalars() counted a step that did not happen
      throw;
    }
    ++iteration_;
    ++replayed_;
    // At least every kRebase steps whatever graph_check_every says: the device counts in T.
    if (options_.check_finite &&
        (replayed_ % options_.graph_check_every == 0 || replayed_ >= kRebase))
      check_replayed();
  }

  void run_or_replay(index_t rows) {
    if (!warm_) {
      replay_work(rows);
      warm_ = true;
    } else {
      if (!graph_.captured()) {
        graph_.capture([this, rows] { replay_work(rows); });
        captured_.clear();
        captured_.push_back(batch_.inputs.data());
        captured_.push_back(batch_.targets.data());
        captured_shapes_ = {batch_.inputs.shape(), batch_.targets.shape()};
        for (auto* p : params_) {
          captured_.push_back(p->value.data());
          captured_.push_back(p->grad.data());
        }
        ++captures_;
      }
      graph_.replay();
    }
  }

  // Whether a buffer the captured work reads by address was replaced since the capture: the
  // batch's (a new shape), or a parameter's (`p.value = other` instead of an in-place write).
  bool buffers_moved() const {
    if (captured_.size() != 2 + 2 * params_.size()) return true;
    if (captured_[0] != batch_.inputs.data() || captured_[1] != batch_.targets.data()) return true;
    // A smaller batch may keep the buffer (a shrinking resize does not move it): the captured
    // work would still run over the old shape.
    if (captured_shapes_.size() != 2 || !(captured_shapes_[0] == batch_.inputs.shape()) ||
        !(captured_shapes_[1] == batch_.targets.shape()))
      return true;
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (captured_[2 + 2 * i] != params_[i]->value.data() ||
          captured_[3 + 2 * i] != params_[i]->grad.data())
        return true;
    return false;
  }

  void init_replay_state() {
    if (ok_.size() == 0) {
      ok_ = Tensor<T, B>(Shape{1});
      applied_ = Tensor<T, B>(Shape{1});
    }
    ok_.fill(T(1));
    applied_.fill(T(0));
    replayed_ = 0;
    replay_state_ready_ = true;
  }

  // What the graph holds: forward, loss, backward, finite check and update, reading the batch
  // and the scalar rows from their fixed buffers.
  void replay_work(index_t rows) {
    loss_data_ = forward_backward(batch_).value().data();
    const View<T, B> apply(scalars_.data(), Shape{rows});
    if (!options_.check_finite) return opt_.step_from(apply);
    const View<T, B> skip(scalars_.data() + rows, Shape{rows});
    compute_probe();
    ok_ = finite(probe_) * ok_;
    applied_ += ok_;
    coefficients_.resize(Shape{rows});
    const auto ok = broadcast_scalar(ok_.view(), Shape{rows});
    coefficients_ = apply * ok + skip * (T(1) - ok);  // exact: ok is 0 or 1
    opt_.step_from(coefficients_.view());
  }

  // Settings are "key=value" lines; the first line that differs is named.
  static void check_settings(const std::string& file, const std::string& saved,
                             const std::string& now) {
    if (saved == now) return;
    std::istringstream a(saved), b(now);
    std::string la, lb;
    while (true) {
      const bool ga = static_cast<bool>(std::getline(a, la));
      const bool gb = static_cast<bool>(std::getline(b, lb));
      if (!ga && !gb) return;
      if (!ga) la.clear();
      if (!gb) lb.clear();
      if (la != lb) {
        const auto key = (la.empty() ? lb : la).substr(0, (la.empty() ? lb : la).find('='));
        throw value_error(file + ": the checkpoint was written with " +
                          (la.empty() ? "no " + key : la) + ", this run has " +
                          (lb.empty() ? "no " + key : lb) +
                          " (resume with the same settings, or override explicitly)");
      }
    }
  }

  nn::Layer<T, B>& net_;
  optim::Optimizer<T, B>& opt_;
  BatchSource<T, B>& source_;
  LossFn<T, B> loss_fn_;
  TrainerOptions options_;
  std::vector<Parameter<T, B>*> params_;
  std::string optimizer_settings_;
  Batch<T, B> batch_;
  Tape<T, B> tape_;
  Var<T, B> loss_;
  T* loss_data_ = nullptr;  // the last step's loss (one element), until the next step
  GradientStep gradient_step_;
  Tensor<T, B> probe_{Shape{1}};
  optim::ClipWorkspace<T, B> clip_;
  long long iteration_ = 0;
  // graph mode
  typename B::StepGraph graph_;
  std::vector<Shape> captured_shapes_;  // the batch's shapes at the capture
  std::vector<T> host_scalars_;
  Tensor<T, B> scalars_;       // [apply row, skip row], uploaded before each replay
  Tensor<T, B> coefficients_;  // the row the device picked
  Tensor<T, B> ok_;            // 1 until a replayed step saw NaN/Inf, then 0 (sticky)
  Tensor<T, B> applied_;       // replayed steps that updated the model
  long long replayed_ = 0;     // steps since applied_ was last zeroed (iteration_ counts them too)
  static constexpr long long kRebase = 1LL << 20;  // applied_ is zeroed past this many
  std::vector<const T*> captured_;  // what the capture read by address (buffers_moved())
  int captures_ = 0;
  bool warm_ = false, replay_state_ready_ = false;
};

}  // namespace siam
