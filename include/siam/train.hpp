// The Siamese training loop as a reusable component: a shared network, fresh random
// balanced pairs every step, both branches run as ONE stacked batch (rows 0..N-1 are
// the first images, N..2N-1 the second), contrastive loss on the two halves, Adam.
// The tape, batch and label buffers are reused, so a steady-state step allocates
// nothing on the CPU backend.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "siam/autodiff/ops.hpp"
#include "siam/data/dataset.hpp"
#include "siam/data/pairs.hpp"
#include "siam/io/model_file.hpp"
#include "siam/loss/contrastive.hpp"
#include "siam/nn/layers.hpp"
#include "siam/optim/adam.hpp"

namespace siam {

struct SiameseConfig {
  std::vector<index_t> layers{784, 1024, 1024, 2};  ///< input, hidden..., embedding
  double margin = 0.3;
  Reduction reduction = Reduction::sum;
  optim::AdamOptions adam{1e-4, 0.9, 0.99, 1e-8};
  std::size_t batch_pairs = 180;
  std::uint64_t seed = 0;
  nn::Init init = nn::Init::he;
  /// Check the loss and every gradient for NaN/Inf before each update (throws
  /// numeric_error and leaves the model untouched). One extra read of the gradients.
  bool check_finite = true;

  /// Throws value_error naming the first bad setting.
  void validate() const {
    if (layers.size() < 2) throw value_error("layers: need at least input and output sizes");
    for (index_t l : layers)
      if (l <= 0) throw value_error("layers: sizes must be positive, got " + std::to_string(l));
    if (!(margin > 0)) throw value_error("margin must be > 0, got " + std::to_string(margin));
    if (batch_pairs == 0) throw value_error("batch_pairs must be > 0");
    if (!(adam.lr > 0))
      throw value_error("learning rate must be > 0, got " + std::to_string(adam.lr));
  }
};

template <class T, class B>
class SiameseTrainer {
 public:
  /// Uploads `train` to the backend once. Throws value_error for a bad config or a data
  /// set whose image size does not match the input layer; PairSampler's errors for
  /// classes with fewer than two images.
  SiameseTrainer(const data::Dataset& train, SiameseConfig cfg)
      : cfg_((cfg.validate(), cfg)),
        init_rng_(cfg.seed),
        pair_rng_(cfg.seed ^ 0x5eed5eed5eedULL),
        net_(nn::mlp<T, B>(cfg.layers, init_rng_, cfg.init)),
        params_(net_.parameters()),
        adam_(params_, cfg.adam),
        sampler_(train.labels),
        pixels_(static_cast<index_t>(train.pixels())) {
    train.validate();
    if (pixels_ != cfg_.layers.front())
      throw value_error("SiameseTrainer: images have " + std::to_string(pixels_) +
                        " pixels but the network's input size is " +
                        std::to_string(cfg_.layers.front()));
    images_ = upload(train);
    const auto n = static_cast<index_t>(cfg_.batch_pairs);
    batch_ = Tensor<T, B>::uninitialized(Shape{2 * n, pixels_});
    labels_ = Tensor<T, B>::uninitialized(Shape{n});
    host_labels_.resize(cfg_.batch_pairs);
    rows_.resize(2 * cfg_.batch_pairs);
  }

  /// One iteration; returns the batch loss (on a device backend this reads one value
  /// back; use step_async() and last_loss() to read it only now and then).
  double step() {
    step_async();
    return last_loss();
  }

  /// One iteration without reading the loss back to the host.
  void step_async() {
    const std::size_t n = cfg_.batch_pairs;
    sampler_.sample(pair_rng_, n, first_, second_, host_labels_);
    for (std::size_t i = 0; i < n; ++i) {
      rows_[i] = first_[i];
      rows_[n + i] = second_[i];
    }
    B::gather_rows(batch_.data(), images_.data(), rows_.data(), batch_.rows(), pixels_);
    copy_labels();
    tape_.reset();
    adam_.zero_grad();
    Var<T, B> f = net_.forward(tape_.constant(batch_));
    loss_ =
        contrastive_loss_stacked(f, tape_.constant(labels_), {cfg_.margin, cfg_.reduction, false});
    tape_.backward(loss_);
    if (cfg_.check_finite) check_finite();
    adam_.step();
    ++iteration_;
  }

  /// Throws numeric_error naming the iteration and the tensor if the loss or a gradient
  /// holds NaN or Inf (x * 0 is NaN exactly for non-finite x, so one sum per tensor tells).
  void check_finite() {
    // All probes accumulate into one scalar so a device backend synchronises once.
    finite_probe_ = sum_all(loss_.value() * T(0));
    for (auto* p : params_)
      finite_probe_ += sum_all(p->gradient() * T(0));
    if (std::isfinite(static_cast<double>(finite_probe_.item()))) return;
    const std::string at = "iteration " + std::to_string(iteration_ + 1) + ": ";
    const double l = last_loss();
    if (!std::isfinite(l)) throw numeric_error(at + "the loss is " + std::to_string(l));
    for (std::size_t i = 0; i < params_.size(); ++i) {
      finite_probe_ = sum_all(params_[i]->gradient() * T(0));
      if (!std::isfinite(static_cast<double>(finite_probe_.item())))
        throw numeric_error(at + "the gradient of " + params_[i]->name + " of layer " +
                            std::to_string(i / 2 + 1) + " holds NaN or Inf");
    }
  }

  /// Everything needed to continue a run exactly: weights, Adam moments and step count,
  /// the pair generator's state, the iteration and the caller's loss history.
  void save_checkpoint(const std::filesystem::path& path, const std::vector<float>& losses) {
    auto records = io::parameter_records(net_.parameters());
    for (std::size_t i = 0; i < adam_.first_moments().size(); ++i) {
      records.push_back(io::tensor_record("adam/m/" + std::to_string(i), adam_.first_moments()[i]));
      records.push_back(
          io::tensor_record("adam/v/" + std::to_string(i), adam_.second_moments()[i]));
    }
    const auto st = pair_rng_.state();
    std::uint64_t spare_bits;
    std::memcpy(&spare_bits, &st.spare, sizeof spare_bits);
    const std::uint64_t counters[8] = {st.s[0],
                                       st.s[1],
                                       st.s[2],
                                       st.s[3],
                                       spare_bits,
                                       st.has_spare ? 1u : 0u,
                                       static_cast<std::uint64_t>(adam_.steps()),
                                       static_cast<std::uint64_t>(iteration_)};
    records.push_back(io::make_record("state", {8}, counters, 8));
    records.push_back(io::make_record("losses", {static_cast<std::int64_t>(losses.size())},
                                      losses.data(), losses.size()));
    io::save_archive(path, records);
  }

  /// Restores a checkpoint written by save_checkpoint for the same configuration and
  /// returns its loss history. Throws io_error for a corrupt or mismatched file.
  std::vector<float> load_checkpoint(const std::filesystem::path& path) {
    const auto records = io::load_archive(path);
    const std::string file = path.string();
    io::load_parameters(records, net_.parameters(), file);
    auto find = [&](const std::string& name) -> const io::Record& {
      for (const auto& r : records)
        if (r.name == name) return r;
      throw io_error(file + ": not a checkpoint (no '" + name + "' record)");
    };
    for (std::size_t i = 0; i < adam_.first_moments().size(); ++i) {
      io::load_tensor(find("adam/m/" + std::to_string(i)), adam_.first_moments()[i], file);
      io::load_tensor(find("adam/v/" + std::to_string(i)), adam_.second_moments()[i], file);
    }
    const auto& st = find("state");
    if (st.type != io::ArrayType::u64 || st.count() != 8)
      throw io_error(file + ": malformed state record");
    const auto c = st.template as<std::uint64_t>();
    Rng::State rs{{c[0], c[1], c[2], c[3]}, 0.0, c[5] != 0};
    std::memcpy(&rs.spare, &c[4], sizeof rs.spare);
    pair_rng_.set_state(rs);
    adam_.set_steps(static_cast<long long>(c[6]));
    iteration_ = static_cast<long long>(c[7]);
    const auto& l = find("losses");
    if (l.type != io::ArrayType::f32) throw io_error(file + ": malformed loss history");
    return l.template as<float>();
  }

  /// The loss of the last step (synchronises a device backend).
  double last_loss() const { return static_cast<double>(loss_.value().item()); }

  /// Embeds every image of `set` (no gradients), `batch` images at a time; returns an
  /// N x D row-major host array.
  std::vector<float> embed(const data::Dataset& set, index_t batch = 1000) {
    set.validate();
    if (static_cast<index_t>(set.pixels()) != pixels_)
      throw value_error("embed: images have " + std::to_string(set.pixels()) +
                        " pixels, the network expects " + std::to_string(pixels_));
    const index_t n = static_cast<index_t>(set.size()), dim = cfg_.layers.back();
    std::vector<float> out(static_cast<std::size_t>(n * dim));
    Tensor<T, B> chunk;
    std::vector<T> host;
    NoGrad<T, B> ng(tape_);
    for (index_t b = 0; b < n; b += batch) {
      const index_t m = std::min(batch, n - b);
      host.assign(set.images.begin() + b * pixels_, set.images.begin() + (b + m) * pixels_);
      chunk.resize(Shape{m, pixels_});
      B::from_host(chunk.data(), host.data(), m * pixels_);
      tape_.reset();
      const auto e = net_.forward(tape_.constant(chunk)).value().to_vector();
      for (std::size_t i = 0; i < e.size(); ++i)
        out[static_cast<std::size_t>(b * dim) + i] = static_cast<float>(e[i]);
    }
    tape_.reset();
    return out;
  }

  nn::Sequential<T, B>& network() { return net_; }
  optim::Adam<T, B>& optimizer() { return adam_; }
  Rng& pair_rng() { return pair_rng_; }
  long long iteration() const { return iteration_; }
  void set_iteration(long long it) { iteration_ = it; }
  const SiameseConfig& config() const { return cfg_; }
  /// The pairs of the last step (indices into the training set, labels 1 = similar).
  const std::vector<std::uint32_t>& last_first() const { return first_; }
  const std::vector<std::uint32_t>& last_second() const { return second_; }

 private:
  Tensor<T, B> upload(const data::Dataset& d) {
    std::vector<T> host(d.images.begin(), d.images.end());
    return Tensor<T, B>::from(Shape{static_cast<index_t>(d.size()), pixels_},
                              std::span<const T>(host));
  }
  void copy_labels() {
    if constexpr (std::is_same_v<T, float>) {
      B::from_host(labels_.data(), host_labels_.data(), labels_.size());
    } else {
      host_cast_.assign(host_labels_.begin(), host_labels_.end());
      B::from_host(labels_.data(), host_cast_.data(), labels_.size());
    }
  }

  SiameseConfig cfg_;
  Rng init_rng_, pair_rng_;
  nn::Sequential<T, B> net_;
  std::vector<Parameter<T, B>*> params_;
  optim::Adam<T, B> adam_;
  data::PairSampler sampler_;
  index_t pixels_;
  Tensor<T, B> images_, batch_, labels_;
  std::vector<std::uint32_t> first_, second_, rows_;
  std::vector<float> host_labels_;
  std::vector<T> host_cast_;
  Tape<T, B> tape_;
  Var<T, B> loss_;
  Tensor<T, B> finite_probe_{Shape{1}};
  long long iteration_ = 0;
};

}  // namespace siam
