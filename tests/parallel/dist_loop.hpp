// A small data-parallel Siamese training loop over parallel::DataParallel, used by the
// distributed tests and the dist_train program: synthetic clustered data, the same global
// pair stream on every rank, contrastive loss (sum), Adam; checkpoints written by rank 0
// only and loadable with any number of ranks.
#pragma once

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "siam/data/dataset.hpp"
#include "siam/data/pairs.hpp"
#include "siam/io/archive.hpp"
#include "siam/io/model_file.hpp"
#include "siam/parallel/data_parallel.hpp"
#include "siam/siamese.hpp"
#include "siam/train/checkpoint.hpp"

namespace siam::disttest {

struct LoopConfig {
  // (From an array: GCC 12 warns falsely about an initializer list here.)
  static constexpr index_t default_layers[4] = {20, 32, 32, 3};
  std::vector<index_t> layers{std::begin(default_layers), std::end(default_layers)};
  std::size_t images = 400, classes = 4, pairs = 48;
  std::uint64_t seed = 7;
  double margin = 1.0, lr = 1e-2;
  parallel::DataParallelOptions dp{};

  /// Everything that must agree across ranks, as one string for the handshake.
  std::string settings() const {
    std::string s = "layers=";
    for (auto l : layers)
      s += std::to_string(l) + ",";
    return s + " images=" + std::to_string(images) + " classes=" + std::to_string(classes) +
           " pairs=" + std::to_string(pairs) + " seed=" + std::to_string(seed) +
           " margin=" + std::to_string(margin) + " lr=" + std::to_string(lr) +
           " deterministic=" + std::to_string(dp.deterministic) +
           " blocks=" + std::to_string(dp.blocks);
  }
};

/// Gaussian clusters: class c's images are centre_c + 0.3 noise (deterministic in seed).
inline data::Dataset clusters(std::size_t n, std::size_t pixels, std::size_t classes,
                              std::uint64_t seed) {
  data::Dataset d;
  d.rows = 1;
  d.cols = pixels;
  Rng rng(seed);
  std::vector<float> centre(classes * pixels);
  for (auto& v : centre)
    v = static_cast<float>(rng.uniform());
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t c = i % classes;
    d.labels.push_back(static_cast<std::uint8_t>(c));
    for (std::size_t j = 0; j < pixels; ++j)
      d.images.push_back(centre[c * pixels + j] + 0.3f * static_cast<float>(rng.normal()));
  }
  return d;
}

template <class T, class B = Cpu>
class Loop {
 public:
  Loop(parallel::Communicator& comm, const LoopConfig& cfg)
      : cfg_(cfg),
        comm_(comm),
        data_(clusters(cfg.images, static_cast<std::size_t>(cfg.layers.front()), cfg.classes,
                       cfg.seed + 1)),
        init_rng_(cfg.seed),
        pair_rng_(cfg.seed ^ 0x5eed),
        net_(nn::mlp<T, B>(cfg.layers, init_rng_)),
        params_(net_.parameters()),
        adam_(params_, {cfg.lr, 0.9, 0.99, 1e-8}),
        sampler_(data_.labels),
        dp_(comm, params_, cfg.dp, cfg.settings()) {
    std::vector<T> host(data_.images.begin(), data_.images.end());
    images_ = Tensor<T, B>::from(
        Shape{static_cast<index_t>(data_.size()), static_cast<index_t>(data_.pixels())},
        std::span<const T>(host));
  }

  /// One step on the next global batch; returns its loss (the same on every rank).
  double step() {
    const std::size_t n = cfg_.pairs;
    sampler_.sample(pair_rng_, n, first_, second_, similar_);
    dp_.step(n, [&](std::size_t b, std::size_t e) { return forward_backward(b, e); });
    adam_.step();
    ++iteration_;
    losses_.push_back(dp_.loss());
    return dp_.loss();
  }

  /// The global gradient and loss of the next batch, without stepping or advancing the
  /// pair stream (for gradient checks).
  double gradients_only() {
    Rng rng = pair_rng_;
    sampler_.sample(rng, cfg_.pairs, first_, second_, similar_);
    dp_.step(cfg_.pairs, [&](std::size_t b, std::size_t e) { return forward_backward(b, e); });
    return dp_.loss();
  }

  /// Plain single-process gradient of pairs [b, e) of the next batch (no communication).
  double gradients_of_range(std::size_t b, std::size_t e) {
    Rng rng = pair_rng_;
    sampler_.sample(rng, cfg_.pairs, first_, second_, similar_);
    for (auto* p : params_)
      p->zero_grad();
    return static_cast<double>(forward_backward(b, e).value().item());
  }

  /// Rank 0 writes weights, Adam state, the pair generator, iteration (TrainingState's
  /// packed words) and losses
  /// atomically; every rank learns whether it worked.
  void save(const std::filesystem::path& path) {
    parallel::on_root(comm_, [&] {
      auto records = io::parameter_records(params_);
      for (std::size_t i = 0; i < params_.size(); ++i) {
        records.push_back(
            io::tensor_record("adam/m/" + std::to_string(i), adam_.first_moments()[i]));
        records.push_back(
            io::tensor_record("adam/v/" + std::to_string(i), adam_.second_moments()[i]));
      }
      const auto c = training_state().pack();
      records.push_back(
          io::make_record("state", {TrainingState::packed_words}, c.data(), c.size()));
      records.push_back(io::make_record("losses", {static_cast<std::int64_t>(losses_.size())},
                                        losses_.data(), losses_.size()));
      io::save_archive(path, records);
    });
  }

  /// Rank 0 reads the checkpoint (whatever rank count wrote it) and sends it to the others.
  void load(const std::filesystem::path& path) {
    std::vector<std::uint64_t> c(TrainingState::packed_words);
    std::uint64_t nloss = 0;
    parallel::on_root(comm_, [&] {
      const auto records = io::load_archive(path);
      const std::string file = path.string();
      io::load_parameters(records, params_, file);
      auto find = [&](const std::string& name) -> const io::Record& {
        for (const auto& r : records)
          if (r.name == name) return r;
        throw io_error(file + ": not a checkpoint (no '" + name + "' record)");
      };
      for (std::size_t i = 0; i < params_.size(); ++i) {
        io::load_tensor(find("adam/m/" + std::to_string(i)), adam_.first_moments()[i], file);
        io::load_tensor(find("adam/v/" + std::to_string(i)), adam_.second_moments()[i], file);
      }
      const auto& st = find("state");
      if (st.type != io::ArrayType::u64 || st.count() != TrainingState::packed_words)
        throw io_error(file + ": malformed state record");
      c = st.template as<std::uint64_t>();
      losses_ = find("losses").template as<double>();
      nloss = losses_.size();
    });
    comm_.broadcast_host(c.data(), c.size() * sizeof(std::uint64_t));
    comm_.broadcast_host(&nloss, sizeof nloss);
    losses_.resize(nloss);
    comm_.broadcast_host(losses_.data(), nloss * sizeof(double));
    dp_.broadcast_parameters();
    if (comm_.size() > 1)
      for (std::size_t i = 0; i < params_.size(); ++i) {
        comm_.broadcast(
            std::span<T>(adam_.first_moments()[i].data(), adam_.first_moments()[i].size()));
        comm_.broadcast(
            std::span<T>(adam_.second_moments()[i].data(), adam_.second_moments()[i].size()));
      }
    const auto state = TrainingState::unpack(c.data());
    pair_rng_.set_state(state.rng);
    adam_.set_steps(state.optimizer_steps);
    iteration_ = state.iteration;
  }

  /// Every parameter value, in order (host copy).
  std::vector<T> weights() const {
    std::vector<T> w;
    for (auto* p : params_) {
      auto v = p->value.to_vector();
      w.insert(w.end(), v.begin(), v.end());
    }
    return w;
  }
  const std::vector<double>& losses() const { return losses_; }
  long long iteration() const { return iteration_; }
  parallel::DataParallel<T, B>& data_parallel() { return dp_; }
  std::vector<Parameter<T, B>*>& parameters() { return params_; }

 private:
  Var<T, B> forward_backward(std::size_t b, std::size_t e) {
    const auto n = static_cast<index_t>(e - b);
    rows_.resize(2 * (e - b));
    for (std::size_t i = b; i < e; ++i) {
      rows_[i - b] = first_[i];
      rows_[(e - b) + (i - b)] = second_[i];
    }
    const auto px = static_cast<index_t>(data_.pixels());
    batch_.resize(Shape{2 * n, px});
    B::gather_rows(batch_.data(), images_.data(), rows_.data(), 2 * n, px);
    labels_.resize(Shape{n});
    host_labels_.assign(similar_.begin() + static_cast<std::ptrdiff_t>(b),
                        similar_.begin() + static_cast<std::ptrdiff_t>(e));
    B::from_host(labels_.data(), host_labels_.data(), n);
    tape_.reset();
    Var<T, B> f = net_.forward(tape_.constant(batch_));
    Var<T, B> loss =
        contrastive_loss_stacked(f, tape_.constant(labels_), {cfg_.margin, Reduction::sum, false});
    tape_.backward(loss);
    return loss;
  }
  TrainingState training_state() const {
    TrainingState st;
    st.rng = pair_rng_.state();
    st.optimizer_steps = adam_.steps();
    st.iteration = iteration_;
    return st;
  }

  LoopConfig cfg_;
  parallel::Communicator& comm_;
  data::Dataset data_;
  Rng init_rng_, pair_rng_;
  nn::Sequential<T, B> net_;
  std::vector<Parameter<T, B>*> params_;
  optim::Adam<T, B> adam_;
  data::PairSampler sampler_;
  parallel::DataParallel<T, B> dp_;
  Tensor<T, B> images_, batch_, labels_;
  std::vector<std::uint32_t> first_, second_, rows_;
  std::vector<float> similar_;
  std::vector<T> host_labels_;
  std::vector<double> losses_;
  Tape<T, B> tape_;
  long long iteration_ = 0;
};

}  // namespace siam::disttest
