// The work of mnist_siamese, templated on the backend: loading data, the training run, the
// final evaluation and figures, and the `query` subcommand. Free of CLI11 and of the CPU
// backend's header (Eigen), so a CUDA translation unit can instantiate run<siam::Cuda> and
// query<siam::Cuda> by including <siam/backend/cuda.hpp> and this file.
#pragma once

#include <siam/data/dataset.hpp>
#include <siam/data/idx.hpp>
#include <siam/data/pairs.hpp>
#include <siam/data/synthetic_digits.hpp>
#include <siam/io/model_file.hpp>
#include <siam/metrics.hpp>
#include <siam/nn/resnet.hpp>
#include <siam/parallel/trainer.hpp>
#include <siam/presets/lenet.hpp>
#include <siam/presets/mnist.hpp>
#include <siam/train/folder_batches.hpp>
#include <siam/train/siamese_trainer.hpp>

#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "image_data.hpp"
#include "options.hpp"
#include "outputs.hpp"
#include "plots.hpp"
#include "progress.hpp"

namespace mnist_siamese {

// The classic network of the paper's MNIST experiment: 784 -> 1024 -> 1024 -> 2.
inline const std::vector<siam::index_t> kLayers{784, 1024, 1024, 2};
// The synthetic test set must not share images with the training set.
inline constexpr std::uint64_t kSyntheticTestSeedOffset = 1000003;
// --on-nan skip gives up when no batch at all trains any more, and stops repeating itself.
inline constexpr int kMaxConsecutiveSkips = 25;
inline constexpr long long kMaxSkipWarnings = 10;
// A streamed image folder: batches the loader's workers prepare ahead of the step, and
// training images decoded at a time for the final kNN embedding.
inline constexpr std::size_t kLoaderQueue = 4;
inline constexpr std::size_t kEmbedBlock = 1000;

inline volatile std::sig_atomic_t g_interrupted = 0;

inline void on_signal(int sig) {
  g_interrupted = 1;
  std::signal(sig, SIG_DFL);  // a second Ctrl-C ends the program at once
}

struct Data {
  // A colour image folder's images (channels 3) hold their channel planes one below the
  // other: rows = 3 x the side. A streamed training split has labels and no pixels.
  Dataset train, test;
  std::string source;
  std::vector<std::string> classes;              // an image folder's, sorted; else empty
  std::vector<siam::data::SkippedFile> skipped;  // --on-bad-image skip left these out
  int channels = 1;
  std::optional<FolderSplit> train_folder;  // set: the training images stay on disk
  std::optional<FolderSplit> test_folder;   // an image folder's test split (its codecs, transform)
};

/// The test split decoded into a Dataset (colour: planes stacked, see Data).
inline Dataset decode_split(const FolderSplit& split) {
  Dataset d = labels_of(split);
  d.rows *= split.channels;
  d.images = decode_all(split);
  return d;
}

inline Data load_data(const Options& o) {
  const auto ntrain = static_cast<std::size_t>(o.train_size);
  const auto ntest = static_cast<std::size_t>(o.test_size);
  Data d;
  const bool folder = !o.data.empty() && is_image_folder(o.data);
  if (!folder && (o.channels != 1 || o.augment || o.image_size != 28))
    throw siam::value_error(std::string(o.channels != 1 ? "--channels 3"
                                        : o.augment
                                            ? "--augment"
                                            : "--image-size " + std::to_string(o.image_size)) +
                            ": needs --data an image folder (IDX files and the synthetic digits "
                            "are grey 28x28 images, read whole)");
  if (o.data.empty()) {
    std::printf("data: no --data given, using built-in synthetic digits (seed %llu)\n",
                static_cast<unsigned long long>(o.seed));
    d.train = siam::data::synthetic_digits(ntrain, o.seed);
    d.test = siam::data::synthetic_digits(ntest, o.seed + kSyntheticTestSeedOffset);
    d.source = "synthetic digits";
  } else if (folder) {
    auto f = open_image_folder(o, ntrain, ntest);
    std::string names;
    for (const auto& c : f.classes)
      names += (names.empty() ? "" : ", ") + c;
    std::printf("data: image folder %s, classes (label order): %s\n", o.data.c_str(),
                names.c_str());
    if (!f.skipped.empty()) {
      std::printf("data: %zu bad file(s) skipped:\n", f.skipped.size());
      for (const auto& s : f.skipped)
        std::printf("  %s: %s\n", s.path.string().c_str(), s.reason.c_str());
    }
    d.train = labels_of(f.train);
    d.train.rows *= f.train.channels;
    d.test = decode_split(f.test);
    d.channels = o.channels;
    d.test_folder = f.test;
    d.train_folder = std::move(f.train);
    d.source =
        "image folder " + o.data + " (" + std::to_string(f.skipped.size()) + " bad files skipped)";
    d.classes = std::move(f.classes);
    d.skipped = std::move(f.skipped);
  } else {
    auto m = siam::presets::load_mnist_dir(o.data, ntrain, ntest);
    std::printf("data: %s (%s)\n", o.data.c_str(), m.note.c_str());
    d.train = std::move(m.train);
    d.test = std::move(m.test);
    d.source = "IDX files in " + o.data + " (" + m.note + ")";
  }
  std::printf("data: %zu training and %zu test images of %zux%zu pixels%s\n", d.train.size(),
              d.test.size(), d.train.rows / static_cast<std::size_t>(d.channels), d.train.cols,
              d.channels == 3 ? " in colour" : "");
  return d;
}

/// The names of the labels of `d`: an image folder's class names (also saved in model.siam,
/// siam::io::load_class_names), else --class-names.
inline std::vector<std::string> label_names(const Options& o, const Data& d) {
  return d.classes.empty() ? *parse_class_names(o.class_names) : d.classes;
}

inline std::string class_name(const std::vector<std::string>& names, std::int64_t label) {
  return names.empty() ? std::to_string(label) : names.at(static_cast<std::size_t>(label));
}

/// Zero-padded to the width of the last iteration, so the frames sort by name.
inline std::string frame_name(long long it, long long total) {
  const int width = std::max<int>(4, static_cast<int>(std::to_string(total).size()));
  char buf[64];
  std::snprintf(buf, sizeof buf, "embedding_%0*lld.png", width, it);
  return buf;
}

template <class Backend>
std::size_t parameter_count(siam::nn::Sequential<float, Backend>& net) {
  std::size_t n = 0;
  for (auto* p : net.parameters())
    n += static_cast<std::size_t>(p->value.size());
  return n;
}

/// Embeds every image of `set` with a bare network (no trainer): N x D, row-major.
/// A NaN or inf pixel is an error naming the image and pixel (a cheap scan of the input).
template <class Backend>
std::vector<float> embed(siam::nn::Sequential<float, Backend>& net, const Dataset& set) {
  return siam::embed_images(net, set, siam::EmbedOptions{.check_finite = true});
}

/// The output width of a network (the embedding's dimension).
template <class Backend>
std::size_t embedding_dim(siam::nn::Sequential<float, Backend>& net) {
  return static_cast<std::size_t>(net.output_shape(net.input_shape()).size());
}

inline siam::SiameseConfig make_config(const Options& o, const std::string& data_source) {
  siam::SiameseConfig cfg;
  const auto channels = static_cast<siam::index_t>(o.channels);
  if (o.arch == "cnn") {
    cfg.input_shape = siam::Shape{channels, o.image_size, o.image_size};
    cfg.network =
        siam::presets::lenet_specs(cfg.input_shape, o.embedding_dim > 0 ? o.embedding_dim : 2);
  } else if (o.arch == "resnet") {  // BatchNorm residual network, L2-normalised output
    cfg.input_shape = siam::Shape{channels, o.image_size, o.image_size};
    cfg.network =
        siam::nn::resnet_specs(cfg.input_shape, 32, o.embedding_dim > 0 ? o.embedding_dim : 64);
  } else {
    const auto sizes = *parse_layers(o.layers);
    cfg.layers.assign(sizes.begin(), sizes.end());
  }
  cfg.loss = o.loss;
  cfg.margin = o.margin;
  cfg.reduction = siam::Reduction::sum;
  cfg.soft_margin = o.soft_margin;
  cfg.temperature = o.temperature;
  cfg.optimizer = o.optimizer;
  cfg.adam = {o.lr, o.beta1, o.beta2, 1e-8};
  cfg.weight_decay = o.weight_decay;
  cfg.momentum = o.momentum;
  cfg.schedule = o.schedule;
  cfg.warmup = o.warmup;
  cfg.iterations = o.iterations;
  cfg.batch_pairs = static_cast<std::size_t>(o.batch_pairs);
  cfg.seed = o.seed;
  cfg.init = siam::nn::Init::he;
  cfg.check_finite = true;
  cfg.on_non_finite = o.on_nan == "skip" ? siam::NonFinite::skip : siam::NonFinite::stop;
  cfg.max_skips_in_a_row = kMaxConsecutiveSkips;
  cfg.graph = o.graph;
  cfg.data = data_source;
  return cfg;
}

template <class Backend>
void print_setup(const Options& o, const char* device, siam::SiameseTrainer<float, Backend>& t,
                 std::size_t params) {
  std::printf("device: %s (--device %s), %d threads, GEMM by %s\n", device, o.device.c_str(),
              o.threads, Backend::gemm_name());
  if (o.matmul_precision != "highest")
    std::printf("matmul precision: %s (%s)%s\n", o.matmul_precision.c_str(),
                o.matmul_precision == "high" ? "TF32" : "BF16",
                Backend::is_host ? ", emulated: GEMM inputs rounded, FP32 products" : "");
  if (o.graph) std::printf("graph mode: the step is captured once and replayed\n");
  if (Backend::is_host && o.arch != "mlp")
    std::printf("convolutions by %s\n", siam::conv_engine_name());
  std::printf("network: %s, %zu parameters, shared by both branches\n",
              t.network().describe().c_str(), params);
  const auto& c = t.config();
  std::string loss = c.loss;
  if (c.loss == "contrastive")
    loss += " loss (margin " + detail::show(c.margin) + ", summed)";
  else if (c.loss == "ntxent")
    loss += " loss (temperature " + detail::show(c.temperature) + ")";
  else
    loss += " loss (margin " + detail::show(c.margin) + (c.soft_margin ? ", soft" : "") + ")";
  std::printf("training: %lld iterations of %zu images (%s), %s, %s, seed %llu\n", o.iterations,
              t.last_batch_rows(), t.trainer_source().c_str(), loss.c_str(),
              t.optimizer().describe().c_str(), static_cast<unsigned long long>(o.seed));
  if (o.schedule != "constant" || o.warmup > 0)
    std::printf("learning rate: %s\n", c.make_schedule()->describe().c_str());
  if (t.streaming())
    std::printf(
        "data loading: training images streamed from disk, %d loader threads, %zu batches "
        "ahead, %s\n",
        o.loader_threads, kLoaderQueue,
        o.augment ? "augmented (random resized crop, flip, brightness/contrast jitter)"
                  : "centre crop, no augmentation");
}

inline void print_evaluation(const Evaluation& e, double margin) {
  std::printf("test pairs (%zu, fixed): mean contrastive loss %.5f per pair\n", e.pairs.n_pairs,
              e.pairs.mean_loss);
  std::printf(
      "  mean distance: similar %.4f, dissimilar %.4f; dissimilar pairs beyond the margin "
      "%.3g: %.1f%%\n",
      e.pairs.mean_similar_distance, e.pairs.mean_dissimilar_distance, margin,
      100 * e.pairs.dissimilar_beyond_margin);
  std::printf("kNN accuracy (test by nearest training embeddings): k=1 %.2f%%, k=5 %.2f%%\n",
              100 * e.knn1, 100 * e.knn5);
  std::printf("precision@9 (test against the other test images): %.2f%%\n", 100 * e.precision9);
}

struct RunTimes {
  long long first_iteration = 0, last_iteration = 0;
  double training_seconds = 0;  // inside trainer.step() only
  long long skipped = 0;
  double batch_wait_seconds = 0;  // inside training_seconds: the step waited for its batch
};

inline std::string metrics_json(const Options& o, const Data& d, const Evaluation& e,
                                const RunTimes& t, double wall_seconds, const std::string& device,
                                const char* gemm_provider_name, int ranks = 1) {
  const long long run = t.last_iteration - t.first_iteration;
  JsonObject j;
  j.add("data_source", d.source)
      .add("train_size", static_cast<long long>(d.train.size()))
      .add("test_size", static_cast<long long>(d.test.size()))
      .add("seed", o.seed)
      .add("iterations", t.last_iteration)
      .add("iterations_this_run", run)
      .add("resumed_from_iteration", t.first_iteration)
      .add("skipped_batches", t.skipped)
      .add("batch_pairs", o.batch_pairs)
      .add("margin", o.margin)
      .add("lr", o.lr)
      .add("beta1", o.beta1)
      .add("beta2", o.beta2)
      .add("device", device)
      .add("gemm_provider", std::string(gemm_provider_name))
      .add("matmul_precision", o.matmul_precision)
      .add("conv_engine", device == "cpu" ? o.conv_engine : std::string("cudnn"))
      .add("graph", static_cast<long long>(o.graph))
      .add("arch", o.arch)
      .add("layers", o.arch == "mlp" ? o.layers : std::string(o.arch == "cnn" ? "lenet" : "resnet"))
      .add("loss", o.loss)
      .add("optimizer", o.optimizer)
      .add("weight_decay", o.weight_decay)
      .add("schedule", o.schedule)
      .add("warmup", o.warmup)
      .add("threads", static_cast<long long>(o.threads))
      .add("ranks", static_cast<long long>(ranks))
      .add("test_pairs", static_cast<long long>(e.pairs.n_pairs))
      .add("test_pair_loss", e.pairs.mean_loss)
      .add("mean_similar_distance", e.pairs.mean_similar_distance)
      .add("mean_dissimilar_distance", e.pairs.mean_dissimilar_distance)
      .add("dissimilar_beyond_margin", e.pairs.dissimilar_beyond_margin)
      .add("knn_accuracy_k1", e.knn1)
      .add("knn_accuracy_k5", e.knn5)
      .add("precision_at_9", e.precision9)
      .add("precision_at_1", e.precision1)
      .add("r_precision", e.r_precision)
      .add("map_at_r", e.map_at_r)
      .add("ms_per_iteration", run > 0 ? 1000 * t.training_seconds / static_cast<double>(run) : NAN)
      .add("training_seconds", t.training_seconds)
      .add("batch_wait_seconds", t.batch_wait_seconds)
      .add("batch_wait_fraction",
           t.training_seconds > 0 ? t.batch_wait_seconds / t.training_seconds : 0.0)
      .add("wall_seconds", wall_seconds);
  if (!d.classes.empty()) j.add("classes", d.classes);
  if (!d.source.starts_with("image folder")) return j.str();
  std::vector<std::string> files;
  for (const auto& s : d.skipped)
    files.push_back(s.path.string());
  j.add_object(
      "skipped_images",
      JsonObject().add("count", static_cast<long long>(d.skipped.size())).add("files", files));
  return j.str();
}

/// One training run: set-up, the loop, the final evaluation and figures. The members are what
/// the phases share; each phase is one method.
template <class Backend>
class TrainingRun {
 public:
  /// Loads the data and builds the trainer; writes nothing, so a failure here leaves no files.
  /// With `dist`, trains data-parallel over `comm` (every rank runs this; rank 0 alone
  /// evaluates and writes files).
  explicit TrainingRun(const Options& o, siam::parallel::Communicator& comm,
                       std::optional<siam::parallel::DataParallelOptions> dist = std::nullopt)
      : o_(o),
        class_names_(*parse_class_names(o.class_names)),
        data_(load_data(o)),
        trainer_(make_trainer(o, data_)),
        out_(o.out),
        dim_(embedding_dim(trainer_.network())),
        comm_(comm),
        root_(comm.rank() == 0) {
    if (dist)
      dp_ = std::make_unique<siam::parallel::DataParallelTrainer<float, Backend>>(
          trainer_.trainer(), comm, siam::parallel::options_for(trainer_.config(), *dist));
    if (!data_.classes.empty()) class_names_ = data_.classes;  // the folder's names
    print_setup(o, Backend::name, trainer_, parameter_count(trainer_.network()));
    if (dp_) print_ranks();
    if (!o.resume.empty()) {
      losses_ = dp_ ? dp_->load_checkpoint(o.resume, o.allow_settings_change)
                    : trainer_.load_checkpoint(o.resume, o.allow_settings_change);
      std::printf("resumed from %s at iteration %lld\n", o.resume.c_str(), trainer_.iteration());
    }
    test_pairs_ = fixed_test_pairs(data_.test);
    times_.first_iteration = last_good_ = trainer_.iteration();
  }

  int run() {
    if (root_) {
      fs::create_directories(out_);
      Pictures pictures = train_pictures();
      write_samples(out_ / "samples.png", data_.train.size(), pictures, o_.seed);
      write_pair_examples(out_ / "pairs.png", data_.train.labels, pictures, o_.seed);
    }
    // The trainer holds the training images from here on (and embeds them for kNN at the
    // end): the host copy goes, the labels stay.
    std::vector<float>().swap(data_.train.images);
    Progress progress(times_.first_iteration, std::max(o_.iterations, times_.first_iteration),
                      static_cast<std::size_t>(o_.batch_pairs), ::isatty(::fileno(stdout)) != 0);
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    int status = 0;
    try {
      status = train(progress);
    } catch (...) {
      progress.finish();
      throw;
    }
    progress.finish();
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
    if (status != 0) return status;
    times_.last_iteration = trainer_.iteration();
    if (const auto w = siam::folder_wait_seconds(trainer_.source())) times_.batch_wait_seconds = *w;
    save_progress();
    write_results();
    return 0;
  }

 private:
  /// A streamed image folder's trainer reads the training split through the loader; any
  /// other data is uploaded to the trainer whole.
  static siam::SiameseTrainer<float, Backend> make_trainer(const Options& o, const Data& d) {
    if (!d.train_folder) return {d.train, make_config(o, d.source)};
    auto spec = d.train_folder->spec;
    spec.augment = o.augment;
    siam::data::LoaderOptions lo;
    lo.threads = static_cast<std::size_t>(o.loader_threads);
    lo.queue = kLoaderQueue;
    return {d.train.labels, make_config(o, d.source),
            siam::folder_source_factory<float, Backend>(d.train_folder->folder, spec, lo)};
  }

  /// The training images for the figures: in memory, or decoded on demand from the folder.
  Pictures train_pictures() const {
    if (!data_.train_folder) return Pictures(data_.train);
    const FolderSplit& f = *data_.train_folder;
    const int side = static_cast<int>(f.spec.size);
    return Pictures(side, side, data_.channels,
                    [&f](std::size_t i, float* out) { f.decode(i, out); });
  }

  /// The training images' embeddings (kNN): a streamed folder's decoded a block at a time.
  std::vector<float> embed_training_set() {
    if (!data_.train_folder) return trainer_.embed_training_set();
    const FolderSplit& f = *data_.train_folder;
    std::vector<float> emb;
    emb.reserve(f.size() * dim_);
    Dataset block = labels_of(f);
    block.rows *= f.channels;
    for (std::size_t first = 0; first < f.size(); first += kEmbedBlock) {
      const std::size_t n = std::min(kEmbedBlock, f.size() - first);
      block.labels.resize(n);
      block.images.resize(n * f.example());
      for (std::size_t i = 0; i < n; ++i)
        f.decode(first + i, block.image(i));
      const auto e = trainer_.embed(block);
      emb.insert(emb.end(), e.begin(), e.end());
    }
    return emb;
  }

  /// The loop; returns 0, or the exit code of a run that had to stop.
  int train(Progress& progress) {
    evaluate_test(progress, trainer_.iteration());
    while (trainer_.iteration() < o_.iterations) {
      if (dp_ ? siam::parallel::any_rank(comm_, g_interrupted != 0) : g_interrupted != 0)
        return interrupted(progress);
      const auto t0 = Clock::now();
      double loss = NAN;  // stays NaN for a skipped batch (--on-nan skip: the trainer skips)
      try {
        loss = trainer_.step();
      } catch (const siam::numeric_error& e) {
        return numeric_failure(progress, e);
      }
      if (trainer_.trainer().last_skipped())
        skipped(progress, trainer_.trainer().last_skip_reason());
      else
        last_good_ = trainer_.iteration();
      times_.training_seconds += seconds_since(t0);
      losses_.push_back(static_cast<float>(loss));
      const long long it = trainer_.iteration();
      progress.step(it, loss);
      if (it % o_.eval_every == 0 || it == o_.iterations) evaluate_test(progress, it);
      if (o_.checkpoint_every > 0 && (it % o_.checkpoint_every == 0 || it == o_.iterations))
        save_checkpoint(out_ / "checkpoint.siam");
    }
    return 0;
  }

  /// The trainer throws before the update (--on-nan stop, or too many batches skipped in a
  /// row), so the model is still the last good one. Returns the exit code.
  int numeric_failure(Progress& progress, const siam::numeric_error& e) {
    progress.finish();
    save_progress();
    std::fprintf(stderr, "error: %s; the last good model (after iteration %lld) is in %s\n",
                 e.what(), last_good_, (out_ / "model.siam").string().c_str());
    return 1;
  }
  /// --on-nan skip: the trainer left the model untouched and used up the iteration.
  void skipped(Progress& progress, const std::string& why) {
    ++times_.skipped;
    if (times_.skipped <= kMaxSkipWarnings)
      progress.note("warning: " + why + "; batch skipped (--on-nan skip)" +
                    (times_.skipped == kMaxSkipWarnings ? "; further warnings suppressed" : ""));
  }

  /// Ctrl-C or SIGTERM: keep everything needed to continue later.
  int interrupted(Progress& progress) {
    progress.finish();
    const fs::path checkpoint = out_ / "checkpoint.siam";
    save_checkpoint(checkpoint);
    save_progress();
    std::fprintf(stderr, "interrupted after iteration %lld: saved %s (continue with --resume)\n",
                 trainer_.iteration(), checkpoint.string().c_str());
    return 130;
  }

  /// The held-out pair loss (cheap: one forward pass over the test set), and a frame.
  void evaluate_test(Progress& progress, long long it) {
    if (!root_) return;
    const auto emb = trainer_.embed(data_.test);
    const auto& labels = data_.test.labels;
    const auto st =
        siam::metrics::pair_stats(emb.data(), labels.data(), labels.size(), dim_, test_pairs_.first,
                                  test_pairs_.second, test_pairs_.similar, o_.margin);
    progress.eval(it, st.mean_loss);
    if (o_.frames && dim_ == 2)
      plots::write_embedding(out_ / frame_name(it, o_.iterations), emb.data(), labels.data(),
                             labels.size(), "Test embedding, iteration " + std::to_string(it),
                             class_names_);
  }

  /// Everything a stopped run must not lose: the model and the loss history.
  void save_progress() {
    if (!root_) return;
    siam::io::save_model(out_ / "model.siam", trainer_.network(), data_.classes);
    write_text(out_ / "loss.csv", loss_csv(losses_));
    plots::write_loss(out_ / "loss.png", losses_, 50);
  }

  void write_results() {
    if (!root_) return;
    const auto test_emb = trainer_.embed(data_.test);
    const auto train_emb = embed_training_set();
    const auto& labels = data_.test.labels;
    const Evaluation ev =
        evaluate(train_emb, data_.train, test_emb, data_.test, dim_, test_pairs_, o_.margin);
    if (dim_ == 2)
      plots::write_embedding(out_ / "embedding.png", test_emb.data(), labels.data(), labels.size(),
                             "Test embedding, iteration " + std::to_string(times_.last_iteration),
                             class_names_);
    else
      std::printf("embedding.png: skipped (the embedding has %zu dimensions, the figure 2)\n",
                  dim_);
    write_text(out_ / "embedding.csv", embedding_csv(test_emb, data_.test, dim_));
    const Retrieval r = retrieve(test_emb, labels.size(), dim_, pick_query(o_.seed, labels.size()));
    write_retrieval(out_ / "retrieval.png", data_.test, r,
                    class_name(class_names_, labels[r.query]), class_names_, data_.channels);
    const double wall = seconds_since(wall_start_);
    write_text(out_ / "metrics.json", metrics_json(o_, data_, ev, times_, wall, Backend::name,
                                                   Backend::gemm_name(), comm_.size()));
    print_evaluation(ev, o_.margin);
    print_summary(wall);
  }

  void print_summary(double wall) const {
    const long long run = times_.last_iteration - times_.first_iteration;
    if (times_.skipped > 0) std::printf("skipped batches (NaN/Inf): %lld\n", times_.skipped);
    std::printf("time: %.2f ms/iteration, training %.1f s, wall %.1f s\n",
                run > 0 ? 1000 * times_.training_seconds / static_cast<double>(run) : 0.0,
                times_.training_seconds, wall);
    std::printf(
        "outputs in %s: samples.png pairs.png loss.png embedding.png retrieval.png%s "
        "loss.csv embedding.csv metrics.json model.siam%s\n",
        out_.string().c_str(), o_.frames ? " embedding_*.png" : "",
        o_.checkpoint_every > 0 ? " checkpoint.siam" : "");
  }

  /// A checkpoint: written by rank 0 alone when data-parallel (every rank learns the outcome).
  void save_checkpoint(const fs::path& path) {
    if (dp_)
      dp_->save_checkpoint(path, losses_, siam::io::model_records(trainer_.network()));
    else
      trainer_.save_checkpoint(path, losses_);
  }

  void print_ranks() const {
    const auto& d = dp_->options().sum;
    const std::string how = d.deterministic
                                ? "deterministic, " + std::to_string(d.blocks) + " blocks"
                                : "gradients summed by one all-reduce";
    std::printf("data-parallel: %d rank%s (%s), %s\n", comm_.size(), comm_.size() == 1 ? "" : "s",
                comm_.name().c_str(), how.c_str());
  }

  Clock::time_point wall_start_ = Clock::now();  // first member: the wall time includes loading
  const Options& o_;
  std::vector<std::string> class_names_;
  Data data_;
  siam::SiameseTrainer<float, Backend> trainer_;
  fs::path out_;
  std::size_t dim_;  // the embedding's dimension
  TestPairs test_pairs_;
  std::vector<float> losses_;  // one entry per iteration, NaN for a skipped batch
  RunTimes times_;
  long long last_good_ = 0;  // the model is the one after this iteration
  siam::parallel::Communicator& comm_;
  bool root_;                                                                // writes the files
  std::unique_ptr<siam::parallel::DataParallelTrainer<float, Backend>> dp_;  // null: one process
};

/// Trains, evaluates and writes every output. Templated on the backend so that a GPU build
/// only has to instantiate it with another one.
template <class Backend>
int run(const Options& o) {
  Backend::set_matmul_precision(siam::parse_matmul_precision(o.matmul_precision));
  siam::parallel::LocalCommunicator one;
  return TrainingRun<Backend>(o, one).run();
}
/// The same on every rank of `comm`, data-parallel (see distributed.hpp).
template <class Backend>
int run(const Options& o, siam::parallel::Communicator& comm,
        siam::parallel::DataParallelOptions d) {
  Backend::set_matmul_precision(siam::parse_matmul_precision(o.matmul_precision));
  return TrainingRun<Backend>(o, comm, d).run();
}

/// The network of a model file: self-describing files (model.siam, checkpoint.siam) carry
/// their architecture; weights-only files of an earlier version load into the MLP of --layers.
template <class Backend>
siam::nn::Sequential<float, Backend> load_query_model(const Options& o) {
  if (siam::io::is_model_file(fs::path(o.model)))
    return siam::io::load_model<float, Backend>(o.model);
  const auto sizes = parse_layers(o.layers);
  if (!sizes) throw siam::value_error("--layers " + o.layers + ": malformed");
  siam::Rng rng(0);  // the initial weights are overwritten by the model's
  auto net =
      siam::nn::mlp<float, Backend>(std::vector<siam::index_t>(sizes->begin(), sizes->end()), rng);
  siam::io::load_model(o.model, net.parameters());
  return net;
}

/// The options `index` and `query` read data with for a trained `net`: an image folder is
/// read at the model's own input shape (a [C x S x S] input sets --channels and --image-size,
/// so they need not be repeated), and a model whose input cannot take the data's images ends
/// in one line naming both, instead of a shape error deep in the network.
template <class Backend>
Options with_model_input(Options o, siam::nn::Sequential<float, Backend>& net) {
  const siam::Shape in = net.input_shape();
  const bool folder = !o.data.empty() && is_image_folder(o.data);
  if (folder && in.rank() == 3 && in[1] == in[2] && (in[0] == 1 || in[0] == 3)) {
    o.channels = static_cast<int>(in[0]);
    o.image_size = in[1];
  }
  const long long values = o.channels * o.image_size * o.image_size;
  if (in.size() != values)
    throw siam::value_error(
        "--model " + o.model + " takes inputs of " + in.str() + " values, and --data " +
        (o.data.empty() ? std::string("(synthetic digits)") : o.data) + " gives images of " +
        std::to_string(o.channels) + " x " + std::to_string(o.image_size) + " x " +
        std::to_string(o.image_size) +
        (folder ? " (give the --channels and --image-size the model was trained with)"
                : " (grey 28x28: the model was trained on other images)"));
  return o;
}

/// `query`: loads a model and shows the nearest test images of one test image.
template <class Backend>
int query(const Options& opt) {
  auto net = load_query_model<Backend>(opt);
  const Options o = with_model_input(opt, net);
  const Data data = load_data(o);
  std::printf("model: %s, %s\n", o.model.c_str(), net.describe().c_str());
  const auto class_names = label_names(o, data);
  const std::size_t dim = embedding_dim(net);

  const auto emb = embed(net, data.test);
  const std::size_t q =
      o.index >= 0 ? static_cast<std::size_t>(o.index) : pick_query(o.seed, data.test.size());
  const Retrieval r = retrieve(emb, data.test.size(), dim, q);
  const fs::path out = o.out;
  fs::create_directories(out);
  const auto& labels = data.test.labels;
  write_retrieval(out / "retrieval.png", data.test, r, class_name(class_names, labels[q]),
                  class_names, data.channels);

  std::printf("test image %zu (label %s) at (%.4f, %.4f%s); nearest test images:\n", q,
              class_name(class_names, labels[q]).c_str(), emb[q * dim], emb[q * dim + 1],
              dim > 2 ? ", ..." : "");
  for (std::size_t k = 0; k < r.neighbours.size(); ++k)
    std::printf("  #%zu  image %5u  label %-12s distance %.5f\n", k + 1, r.neighbours[k],
                class_name(class_names, labels[r.neighbours[k]]).c_str(),
                static_cast<double>(r.distances[k]));
  std::printf("wrote %s\n", (out / "retrieval.png").string().c_str());
  return 0;
}

}  // namespace mnist_siamese
