// Command-line options of mnist_siamese: one struct and the checks that run before any work
// (the CLI11 wiring is in main.cpp). Every check yields one line naming the option and its value,
// so a typo costs nothing: no data is loaded and --out is not created.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <siam/backend/precision.hpp>
#include <siam/train/loss_kinds.hpp>

namespace mnist_siamese {

struct Options {
  // Data (shared by training and `query`).
  std::string data;           // directory of IDX files or an image folder; empty: synthetic digits
  long long image_size = 28;  // an image folder's images: grey squares of this side
  int channels = 1;           // an image folder's: 1 grey, 3 colour
  bool augment = false;       // an image folder's training images: random crop, flip, jitter
  int loader_threads = 2;     // an image folder's training images: decoding threads
  std::string on_bad_image = "fail";  // fail or skip (counted and listed)
  std::string out = "out";
  long long train_size = 5000, test_size = 5000;
  std::uint64_t seed = 0;
  int threads = 0;  // 0: every core; run() and query() see the number in use
  std::string class_names = "digits";
  // Training. Signed types so that "-1" parses and is rejected with our own message.
  long long iterations = 3000, batch_pairs = 180, eval_every = 100, checkpoint_every = 0;
  double margin = 0.3, lr = 1e-4, beta1 = 0.9, beta2 = 0.99;
  std::string layers = "784,1024,1024,2";  // the MLP (--arch mlp)
  std::string arch = "mlp";                // mlp, cnn or resnet
  long long embedding_dim = 0;  // 0: the architecture's (mlp: --layers' last, cnn 2, resnet 64)
  std::string loss = "contrastive";  // contrastive, triplet, batch-hard, batch-all, ntxent
  bool soft_margin = false;
  double temperature = 0.1;
  std::string optimizer = "adam";  // adam, adamw, sgd
  double weight_decay = 0, momentum = 0.9;
  std::string schedule = "constant";  // constant, cosine, step, or a full spec
  long long warmup = 0;
  bool allow_settings_change = false;  // --resume under other settings
  std::string device = "auto";
  bool graph = false;                        // capture the step once, replay it (CUDA graph on gpu)
  std::string matmul_precision = "highest";  // highest, high (TF32), medium (BF16; CPU: emulated)
  std::string conv_engine = "auto";          // CPU convolutions: auto, im2col, onednn
  bool frames = false;
  std::string resume;
  std::string on_nan = "stop";
  // query
  std::string model;
  long long index = -1;  // -1: the test image the training run's retrieval.png shows
  // interop (interop.hpp): query --image, export
  std::vector<std::string> images;
  std::string invert = "auto";
  std::string onnx, safetensors;
  // index (index.hpp): --out is the index file; query --index-file searches it
  std::string index_file;
  bool exact = false;         // a flat (exact) index instead of HNSW
  std::string metric = "l2";  // l2 or inner_product
  long long k = 9;            // neighbours a query prints
  long long ef = 64;          // HNSW search candidate list
  long long hnsw_m = 16, ef_construction = 200;
};

namespace detail {
inline std::string show(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}
}  // namespace detail

/// The ten legend names for --class-names, or nullopt if the value is malformed.
inline std::optional<std::vector<std::string>> parse_class_names(const std::string& v) {
  if (v == "digits") return std::vector<std::string>{};  // plots' default "0".."9"
  if (v == "fashion")
    return std::vector<std::string>{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  std::vector<std::string> names;
  std::stringstream s(v);
  for (std::string name; std::getline(s, name, ',');)
    names.push_back(name);
  if (names.size() != 10) return std::nullopt;
  return names;
}

/// The layer sizes of --layers ("784,1024,1024,2"), or nullopt if malformed.
inline std::optional<std::vector<long long>> parse_layers(const std::string& v) {
  std::vector<long long> out;
  std::stringstream s(v);
  for (std::string item; std::getline(s, item, ',');) {
    std::size_t used = 0;
    long long n = 0;
    try {
      n = std::stoll(item, &used);
    } catch (const std::exception&) {
      return std::nullopt;
    }
    if (used != item.size() || n <= 0 || n > (1LL << 24)) return std::nullopt;
    out.push_back(n);
  }
  if (out.size() < 2) return std::nullopt;
  return out;
}

/// The first problem with the options shared by training and `query`, as one line.
inline std::optional<std::string> check_data_options(const Options& o) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!o.data.empty() && !fs::is_directory(o.data, ec))
    return "--data " + o.data + ": not a directory";
  if (o.train_size <= 0) return "--train-size " + std::to_string(o.train_size) + ": must be > 0";
  if (o.image_size < 8 || o.image_size > 256)
    return "--image-size " + std::to_string(o.image_size) + ": must be in [8, 256]";
  if (o.channels != 1 && o.channels != 3)
    return "--channels " + std::to_string(o.channels) + ": must be 1 (grey) or 3 (colour)";
  if (o.loader_threads < 1 || o.loader_threads > 64)
    return "--loader-threads " + std::to_string(o.loader_threads) + ": must be in [1, 64]";
  if (o.on_bad_image != "fail" && o.on_bad_image != "skip")
    return "--on-bad-image " + o.on_bad_image + ": must be fail or skip";
  // Retrieval shows 9 neighbours of a test image and precision@9 needs 9 others.
  if (o.test_size < 10)
    return "--test-size " + std::to_string(o.test_size) + ": must be at least 10";
  if (o.threads < 0)
    return "--threads " + std::to_string(o.threads) + ": must be >= 1 (0: all cores)";
  if (o.out.empty()) return "--out: must not be empty";
  if (fs::exists(o.out, ec) && !fs::is_directory(o.out, ec))
    return "--out " + o.out + ": exists and is not a directory";
  if (!parse_class_names(o.class_names))
    return "--class-names " + o.class_names +
           ": expected digits, fashion or 10 comma-separated names";
  return std::nullopt;
}

/// The first problem with a training run's options, as one line naming option and value.
inline std::optional<std::string> check_train_options(const Options& o, bool have_cuda,
                                                      bool have_dnnl = false) {
  using detail::show;
  if (auto e = check_data_options(o)) return e;
  if (o.iterations < 0) return "--iterations " + std::to_string(o.iterations) + ": must be >= 0";
  if (o.batch_pairs <= 0) return "--batch-pairs " + std::to_string(o.batch_pairs) + ": must be > 0";
  if (o.batch_pairs > (1LL << 20))
    return "--batch-pairs " + std::to_string(o.batch_pairs) + ": at most 1048576";
  if (o.arch != "mlp" && o.arch != "cnn" && o.arch != "resnet")
    return "--arch " + o.arch + ": must be mlp, cnn or resnet";
  const auto layers = parse_layers(o.layers);
  if (!layers)
    return "--layers " + o.layers + ": expected at least two positive sizes separated by commas";
  if (o.arch == "mlp" && layers->front() != o.channels * o.image_size * o.image_size)
    return "--layers " + o.layers + ": the input size must be " +
           std::to_string(o.channels * o.image_size * o.image_size) + " (" +
           (o.channels == 3 ? "3 x " : "") + std::to_string(o.image_size) + "x" +
           std::to_string(o.image_size) + " images)";
  if (o.arch == "cnn" && o.image_size < 16)
    return "--image-size " + std::to_string(o.image_size) +
           ": --arch cnn needs images of at least 16x16";
  if (o.embedding_dim < 0 || o.embedding_dim > 4096)
    return "--embedding-dim " + std::to_string(o.embedding_dim) +
           ": must be in [1, 4096] (0: " + "the architecture's default)";
  if (o.arch == "mlp" && o.embedding_dim > 0 && o.embedding_dim != layers->back())
    return "--embedding-dim " + std::to_string(o.embedding_dim) + ": for --arch mlp the " +
           "embedding is --layers' last size (" + std::to_string(layers->back()) + ")";
  const siam::LossKind* kind = nullptr;
  for (const auto& k : siam::loss_kinds)
    if (o.loss == k.name) kind = &k;
  if (!kind) return "--loss " + o.loss + ": must be " + siam::loss_kind_names();
  if (o.batch_pairs < static_cast<long long>(kind->min_batch_pairs))
    return "--batch-pairs " + std::to_string(o.batch_pairs) + ": " + o.loss + " needs at least " +
           std::to_string(kind->min_batch_pairs) + " (" +
           std::to_string(2 * kind->min_batch_pairs) + " images per step)";
  if (o.optimizer != "adam" && o.optimizer != "adamw" && o.optimizer != "sgd")
    return "--optimizer " + o.optimizer + ": must be adam, adamw or sgd";
  if (!(o.weight_decay >= 0) || !std::isfinite(o.weight_decay))
    return "--weight-decay " + show(o.weight_decay) + ": must be >= 0";
  if (!(o.temperature > 0) || !std::isfinite(o.temperature))
    return "--temperature " + show(o.temperature) + ": must be > 0";
  if (o.warmup < 0) return "--warmup " + std::to_string(o.warmup) + ": must be >= 0";
  try {
    siam::check_margin(*kind, o.margin);  // the library's rule for this loss
  } catch (const siam::value_error&) {
    return "--margin " + show(o.margin) + ": must be " +
           (kind->margin == siam::LossKind::Margin::positive ? "> 0" : ">= 0") + " for --loss " +
           o.loss;
  }
  if (!(o.momentum >= 0 && o.momentum < 1))
    return "--momentum " + show(o.momentum) + ": must be in [0, 1)";
  if (!(o.lr > 0) || !std::isfinite(o.lr)) return "--lr " + show(o.lr) + ": must be > 0";
  if (!(o.beta1 >= 0 && o.beta1 < 1)) return "--beta1 " + show(o.beta1) + ": must be in [0, 1)";
  if (!(o.beta2 >= 0 && o.beta2 < 1)) return "--beta2 " + show(o.beta2) + ": must be in [0, 1)";
  if (o.eval_every <= 0) return "--eval-every " + std::to_string(o.eval_every) + ": must be > 0";
  if (o.checkpoint_every < 0)
    return "--checkpoint-every " + std::to_string(o.checkpoint_every) + ": must be >= 0";
  if (o.device != "auto" && o.device != "cpu" && o.device != "gpu")
    return "--device " + o.device + ": must be auto, cpu or gpu";
  if (o.device == "gpu" && !have_cuda) return "--device gpu: this build has no CUDA backend";
  if (o.on_nan != "stop" && o.on_nan != "skip")
    return "--on-nan " + o.on_nan + ": must be stop or skip";
  try {
    (void)siam::parse_matmul_precision(o.matmul_precision);
  } catch (const siam::value_error&) {
    return "--matmul-precision " + o.matmul_precision + ": must be highest, high or medium";
  }
  if (o.conv_engine != "auto" && o.conv_engine != "im2col" && o.conv_engine != "onednn")
    return "--conv-engine " + o.conv_engine + ": must be auto, im2col or onednn";
  if (o.conv_engine == "onednn" && !have_dnnl)
    return "--conv-engine onednn: this build has no oneDNN (install libdnnl-dev and rebuild)";
  if (o.graph && o.optimizer != "adam" && o.optimizer != "adamw")
    return "--graph: replays Adam and AdamW only (got --optimizer " + o.optimizer + ")";
  std::error_code ec;
  if (!o.resume.empty() && !std::filesystem::is_regular_file(o.resume, ec))
    return "--resume " + o.resume + ": no such file";
  return std::nullopt;
}

inline std::optional<std::string> check_query_options(const Options& o) {
  if (auto e = check_data_options(o)) return e;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(o.model, ec))
    return "--model " + o.model + ": no such file";
  if (o.index < -1 || o.index >= o.test_size)
    return "--index " + std::to_string(o.index) + ": must be in [0, " +
           std::to_string(o.test_size) + ") (--test-size)";
  return std::nullopt;
}

}  // namespace mnist_siamese
