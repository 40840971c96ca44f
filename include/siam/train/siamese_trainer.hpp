// SiameseTrainer: the general Trainer (train/trainer.hpp) configured from one plain struct,
// for the common case of training an embedding network on a labelled image set. It builds
// the network (an MLP of `layers`, or any architecture given as layer specs), the
// optimizer, the schedule, the batch source each loss needs and the loss itself:
//
//   loss         batch source (2 * batch_pairs images per step for every loss)
//   contrastive  batch_pairs balanced random pairs (the seed's setting)
//   triplet      (2 * batch_pairs) / 3 random triplets
//   batch-hard   P x K batches: P = min(classes, batch_pairs) classes, K = 2 batch_pairs / P
//   batch-all    the same
//   ntxent       batch_pairs positive pairs (two images of one class)
//
// The images come from a Dataset uploaded once, or (the streaming constructor) from a
// SourceFactory: a function that builds the batch source the loss asks for, e.g.
// folder_source_factory (train/folder_batches.hpp), which reads an image folder on disk
// through the threaded loader. A factory that cannot serve a loss throws value_error naming it.
//
// With the defaults it is the seed's run exactly: 784-1024-1024-2, He initialisation,
// contrastive loss (margin 0.3, summed), Adam (1e-4, 0.9, 0.99), 180 pairs per step.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "siam/inference.hpp"
#include "siam/optim/adam.hpp"
#include "siam/optim/adamw.hpp"
#include "siam/optim/sgd.hpp"
#include "siam/train/loss_kinds.hpp"
#include "siam/train/trainer.hpp"

namespace siam {

struct SiameseConfig {
  std::vector<index_t> layers{784, 1024, 1024, 2};  ///< input, hidden..., embedding (an MLP)
  /// When not empty: this architecture instead of the MLP of `layers` (see nn/registry.hpp),
  /// with `input_shape` the shape of one example.
  std::vector<nn::LayerSpec> network;
  Shape input_shape;
  std::string loss = "contrastive";      ///< a name of loss_kinds (train/loss_kinds.hpp)
  double margin = 0.3;                   ///< contrastive, triplet and the mining losses
  Reduction reduction = Reduction::sum;  ///< contrastive
  bool soft_margin = false;              ///< batch-hard / batch-all: softplus instead of the hinge
  double temperature = 0.1;              ///< ntxent
  std::string optimizer = "adam";        ///< adam, adamw, sgd
  optim::AdamOptions adam{1e-4, 0.9, 0.99, 1e-8};  ///< lr for every optimizer; betas for Adam(W)
  double weight_decay = 0;                         ///< adamw (decoupled) and sgd (L2)
  double momentum = 0.9;                           ///< sgd
  /// constant, cosine (to 0 at `iterations`), step (x0.1 every half of `iterations`), or a
  /// full spec for optim::Schedule::parse ("exp:gamma=0.999"); `warmup` steps of linear warm-up.
  std::string schedule = "constant";
  long long warmup = 0;
  long long iterations = 3000;  ///< the schedule's horizon
  std::size_t batch_pairs = 180;
  std::uint64_t seed = 0;
  nn::Init init = nn::Init::he;
  bool check_finite = true;
  /// NaN/Inf in a step: stop (numeric_error) or skip the update; with skip, stop once more
  /// than max_skips_in_a_row steps in a row were skipped (0: no limit). See TrainerOptions.
  NonFinite on_non_finite = NonFinite::stop;
  long long max_skips_in_a_row = 0;
  double clip_norm = 0;  ///< global gradient-norm clipping (0: off)
  /// Capture the step once and replay it (one CUDA graph launch per step on the GPU); see
  /// TrainerOptions::graph for what it needs and how the finite check changes.
  bool graph = false;
  std::string data;  ///< a description of the data, recorded in checkpoints

  /// Throws value_error naming the first bad setting.
  void validate() const {
    if (network.empty()) {
      if (layers.size() < 2) throw value_error("layers: need at least input and output sizes");
      for (index_t l : layers)
        if (l <= 0) throw value_error("layers: sizes must be positive, got " + std::to_string(l));
    } else if (input_shape.size() == 0) {
      throw value_error("network: an architecture needs its input_shape");
    }
    const LossKind& kind = loss_kind(loss);  // throws for an unknown name, listing the kinds
    check_margin(kind, margin);
    if (!(temperature > 0))
      throw value_error("temperature must be > 0, got " + std::to_string(temperature));
    if (optimizer != "adam" && optimizer != "adamw" && optimizer != "sgd")
      throw value_error("optimizer '" + optimizer + "': expected adam, adamw or sgd");
    if (batch_pairs < kind.min_batch_pairs)
      throw value_error("batch_pairs " + std::to_string(batch_pairs) + ": the " + loss +
                        " loss needs at least " + std::to_string(kind.min_batch_pairs));
    if (!(adam.lr > 0) || !std::isfinite(adam.lr))
      throw value_error("learning rate must be > 0, got " + std::to_string(adam.lr));
    if (!(weight_decay >= 0)) throw value_error("weight_decay must be >= 0");
    if (warmup < 0) throw value_error("warmup must be >= 0, got " + std::to_string(warmup));
    (void)make_schedule();  // throws for a bad schedule
  }

  /// The schedule, or none when the rate is constant without warm-up (the optimizer's own).
  std::optional<optim::Schedule> make_schedule() const {
    const double lr = adam.lr;
    const long long horizon = std::max<long long>(iterations, warmup + 1);
    if (schedule == "constant")
      return warmup > 0 ? std::optional<optim::Schedule>(optim::ConstantLR(lr, warmup))
                        : std::nullopt;
    if (schedule == "cosine") return optim::Schedule(optim::CosineLR(lr, horizon, 0, warmup));
    if (schedule == "step")
      return optim::Schedule(optim::StepLR(lr, std::max<long long>(1, horizon / 2), 0.1, warmup));
    return optim::Schedule::parse(schedule, lr);
  }

  /// The settings that make a run what it is, one "key=value" per line (checkpoints
  /// record them; resuming under others is an error).
  std::string settings() const {
    std::string s;
    auto add = [&s](const std::string& k, const std::string& v) { s += k + "=" + v + "\n"; };
    std::string arch;
    for (std::size_t i = 0; i < (network.empty() ? layers.size() : network.size()); ++i) {
      if (i) arch += network.empty() ? "," : "; ";
      arch += network.empty() ? std::to_string(layers[i]) : network[i].str();
    }
    add("network", arch);
    add("loss", loss);
    add("margin", std::to_string(margin));
    if (loss == "contrastive") add("reduction", reduction == Reduction::sum ? "sum" : "mean");
    if (loss == "batch-hard" || loss == "batch-all") add("soft_margin", soft_margin ? "1" : "0");
    if (loss == "ntxent") add("temperature", std::to_string(temperature));
    add("batch_pairs", std::to_string(batch_pairs));
    add("seed", std::to_string(seed));
    add("data", data);
    return s;
  }
};

/// What a SiameseTrainer asks its batch source factory for: the layout the loss reads.
struct SourceRequest {
  enum class Kind {
    pairs,           ///< n balanced pairs [first; second], pair labels as targets (contrastive)
    positive_pairs,  ///< n pairs of one class [first; second] (ntxent)
    triplets,        ///< n triplets [anchors; positives; negatives] (triplet)
    pk               ///< p classes x k images with their labels (batch-hard, batch-all)
  };
  Kind kind = Kind::pairs;
  std::string loss;          ///< the loss's name, for error messages
  std::size_t n = 0;         ///< pairs or triplets per batch
  std::size_t p = 0, k = 0;  ///< pk
  std::uint64_t seed = 0;    ///< the source's generator
  Shape input_shape;         ///< one example as the network reads it
};

/// Builds the batch source for a request; throws value_error for a kind it cannot serve.
template <class T, class B>
using SourceFactory = std::function<std::unique_ptr<BatchSource<T, B>>(const SourceRequest&)>;

template <class T, class B>
class SiameseTrainer {
 public:
  /// Uploads `train` to the backend once. Throws value_error for a bad config or a data
  /// set whose image size does not match the network's input, and the samplers' errors
  /// for label sets the loss cannot use (naming the class by its label and count).
  SiameseTrainer(const data::Dataset& train, SiameseConfig cfg)
      : cfg_((cfg.validate(), std::move(cfg))),
        init_rng_(cfg_.seed),
        net_(make_network()),
        params_(net_.parameters()),
        opt_(make_optimizer()),
        labels_(train.labels),
        set_(std::in_place, (check_input(train), train), net_.input_shape()),
        source_(make_source()),
        trainer_(
            net_, *opt_, *source_, make_loss(),
            TrainerOptions{cfg_.check_finite, cfg_.clip_norm, cfg_.make_schedule(), cfg_.settings(),
                           cfg_.graph, 100, cfg_.on_non_finite, cfg_.max_skips_in_a_row}) {}

  /// Streams the training images: `labels` are the training set's (every image's, in the
  /// order the factory's sources number them), `factory` builds the batch source the loss
  /// needs (see SourceRequest) and is kept for the trainer's lifetime. Throws value_error for
  /// a bad config, no labels, a factory that returns nothing, and the factory's errors (a
  /// loss it cannot serve, examples that do not fit the network's input).
  SiameseTrainer(std::vector<std::int64_t> labels, SiameseConfig cfg, SourceFactory<T, B> factory)
      : cfg_((cfg.validate(), std::move(cfg))),
        init_rng_(cfg_.seed),
        net_(make_network()),
        params_(net_.parameters()),
        opt_(make_optimizer()),
        labels_(std::move(labels)),
        factory_(std::move(factory)),
        source_(make_source()),
        trainer_(
            net_, *opt_, *source_, make_loss(),
            TrainerOptions{cfg_.check_finite, cfg_.clip_norm, cfg_.make_schedule(), cfg_.settings(),
                           cfg_.graph, 100, cfg_.on_non_finite, cfg_.max_skips_in_a_row}) {}

  double step() { return trainer_.step(); }
  void step_async() { trainer_.step_async(); }
  void check_finite() { trainer_.check_finite(); }
  double last_loss() const { return trainer_.last_loss(); }

  /// A checkpoint is also a self-describing model file (io::load_model reads it).
  void save_checkpoint(const std::filesystem::path& path, const std::vector<float>& losses) {
    trainer_.save_checkpoint(path, losses, io::model_records(net_));
  }
  /// See Trainer::load_checkpoint.
  std::vector<float> load_checkpoint(const std::filesystem::path& path,
                                     bool allow_other_settings = false) {
    return trainer_.load_checkpoint(path, allow_other_settings);
  }

  /// Embeds every image of `set` (no gradients), `batch` images at a time; returns an
  /// N x D row-major host array.
  std::vector<float> embed(const data::Dataset& set, index_t batch = 1000) {
    return embed_images(net_, set, batch);
  }
  /// Embeds the training set the trainer holds (in the order it was given), with no
  /// upload: the caller may drop its own copy of the training images once the trainer
  /// is built.
  /// Throws value_error for a streaming trainer, which holds no images.
  std::vector<float> embed_training_set(index_t batch = 1000) {
    if (!set_)
      throw value_error(
          "SiameseTrainer: a streaming trainer holds no training images (embed them in blocks "
          "with embed_images)");
    return embed_rows(net_, set_->images(), batch);
  }

  nn::Sequential<T, B>& network() { return net_; }
  optim::Optimizer<T, B>& optimizer() { return *opt_; }
  Trainer<T, B>& trainer() { return trainer_; }
  long long iteration() const { return trainer_.iteration(); }
  void set_iteration(long long it) { trainer_.set_iteration(it); }
  const SiameseConfig& config() const { return cfg_; }
  /// The last step's batch (see the top of this header for each loss's layout).
  const Batch<T, B>& last_batch() const { return trainer_.last_batch(); }
  /// Images per step.
  std::size_t last_batch_rows() const {
    return cfg_.loss == "triplet" ? 3 * (2 * cfg_.batch_pairs / 3)
           : cfg_.loss == "batch-hard" || cfg_.loss == "batch-all"
               ? pk_size().first * pk_size().second
               : 2 * cfg_.batch_pairs;
  }
  /// The batch source's description ("pairs n=180").
  std::string trainer_source() const { return source_->describe(); }
  /// The batch source itself (e.g. a folder source, for its loader's wait time).
  BatchSource<T, B>& source() { return *source_; }
  /// True when built from a SourceFactory (the images stay with the source).
  bool streaming() const { return !set_; }

 private:
  nn::Sequential<T, B> make_network() {
    if (cfg_.network.empty()) return nn::mlp<T, B>(cfg_.layers, init_rng_, cfg_.init);
    return nn::build<T, B>(cfg_.network, cfg_.input_shape, init_rng_);
  }
  std::unique_ptr<optim::Optimizer<T, B>> make_optimizer() {
    const auto& a = cfg_.adam;
    if (cfg_.optimizer == "adamw")
      return std::make_unique<optim::AdamW<T, B>>(
          params_, optim::AdamWOptions{a.lr, a.beta1, a.beta2, a.eps, cfg_.weight_decay});
    if (cfg_.optimizer == "sgd")
      return std::make_unique<optim::SGD<T, B>>(
          params_, optim::SGDOptions{a.lr, cfg_.momentum, 0, cfg_.weight_decay, false});
    return std::make_unique<optim::Adam<T, B>>(params_, a);
  }
  void check_input(const data::Dataset& train) const {
    train.validate();
    const auto px = static_cast<index_t>(train.pixels());
    if (px != net_.input_shape().size())
      throw value_error("SiameseTrainer: images have " + std::to_string(px) +
                        " pixels but the network's input size is " +
                        std::to_string(net_.input_shape().size()));
  }
  // The batch layout the loss reads, asked of the in-memory sources or of the factory.
  SourceRequest source_request() const {
    SourceRequest r;
    r.loss = cfg_.loss;
    r.seed = cfg_.seed ^ 0x5eed5eed5eedULL;
    r.n = cfg_.batch_pairs;
    r.input_shape = net_.input_shape();
    using K = SourceRequest::Kind;
    if (cfg_.loss == "contrastive") {
      r.kind = K::pairs;
    } else if (cfg_.loss == "ntxent") {
      r.kind = K::positive_pairs;
    } else if (cfg_.loss == "triplet") {
      r.kind = K::triplets;
      r.n = 2 * cfg_.batch_pairs / 3;
    } else {
      r.kind = K::pk;
      std::tie(r.p, r.k) = pk_size();
    }
    return r;
  }
  std::unique_ptr<BatchSource<T, B>> make_source() {
    if (factory_ && labels_.empty())
      throw value_error("SiameseTrainer: no training labels (an empty set)");
    const SourceRequest r = source_request();
    if (factory_) {
      auto source = factory_(r);
      if (!source)
        throw value_error("SiameseTrainer: the batch source factory gave no source for the " +
                          cfg_.loss + " loss");
      return source;
    }
    const auto& set = *set_;
    using K = SourceRequest::Kind;
    switch (r.kind) {
      case K::pairs:
        return std::make_unique<PairBatches<T, B>>(set, r.n, r.seed);
      case K::positive_pairs:
        return std::make_unique<PositivePairBatches<T, B>>(set, r.n, r.seed);
      case K::triplets:
        return std::make_unique<TripletBatches<T, B>>(set, r.n, r.seed);
      case K::pk:
        break;
    }
    return std::make_unique<PKBatches<T, B>>(set, r.p, r.k, r.seed);
  }
  // P classes of K images for the mining losses: all classes up to batch_pairs, K to fill
  // 2 * batch_pairs images.
  std::pair<std::size_t, std::size_t> pk_size() const {
    std::vector<std::int64_t> classes(labels_);
    std::sort(classes.begin(), classes.end());
    const auto count =
        static_cast<std::size_t>(std::unique(classes.begin(), classes.end()) - classes.begin());
    const std::size_t n = cfg_.batch_pairs;
    const std::size_t p = std::max<std::size_t>(2, std::min(count, n));
    return {p, std::max<std::size_t>(2, 2 * n / p)};
  }
  LossFn<T, B> make_loss() {
    if (cfg_.loss == "triplet")
      return losses::triplet<T, B>({cfg_.margin, Distance::euclidean, Reduction::mean});
    const MiningOptions mining{cfg_.margin, cfg_.soft_margin, Distance::euclidean, false};
    if (cfg_.loss == "batch-hard") return losses::batch_hard<T, B>(mining);
    if (cfg_.loss == "batch-all") return losses::batch_all<T, B>(mining);
    if (cfg_.loss == "ntxent") return losses::ntxent<T, B>({cfg_.temperature});
    // The seed's loss; labels come from the sampler, so the check would only cost time.
    return losses::contrastive<T, B>({cfg_.margin, cfg_.reduction, false, false});
  }

  SiameseConfig cfg_;
  Rng init_rng_;
  nn::Sequential<T, B> net_;
  std::vector<Parameter<T, B>*> params_;
  std::unique_ptr<optim::Optimizer<T, B>> opt_;
  std::vector<std::int64_t> labels_;  // the training set's
  SourceFactory<T, B> factory_;       // empty: the in-memory set_
  std::optional<ImageSet<T, B>> set_;
  std::unique_ptr<BatchSource<T, B>> source_;
  Trainer<T, B> trainer_;
};

}  // namespace siam
