// mnist_siamese: train a Siamese network that maps 28x28 digit images to points in the plane,
// so that images of one class land close together and images of different classes at least a
// margin apart (Hadsell, Chopra and LeCun, "Dimensionality reduction by learning an invariant
// mapping", 2006). Then measure the embedding and draw it. See docs/mnist_siamese.md.
//
//   mnist_siamese [--data DIR] [--out DIR] [--iterations N] ...   train, evaluate, write figures
//   mnist_siamese query --model FILE [--index I] ...              nearest neighbours of one image
//   mnist_siamese index --model FILE --out index.bin [--exact]    a search index of the test set
//   mnist_siamese query --model FILE --index-file index.bin ...   nearest neighbours from it
//
// Exit codes: 0 success, 1 an error during the run (one line "error: ..." on stderr),
// 2 a bad option (one line naming it; nothing is loaded or written), 130 interrupted.
#include <siam/siamese.hpp>  // the CPU backend
#if defined(SIAM_EXAMPLE_HAS_DNNL)
#include <siam/backend/conv_dnnl.hpp>  // --conv-engine onednn
#endif

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <string>

#include "index.hpp"
#include "interop.hpp"
#include "options.hpp"
#include "run.hpp"
#if defined(SIAM_EXAMPLE_HAS_MPI)
#include "distributed.hpp"
#endif

namespace mnist_siamese {
#if defined(SIAM_EXAMPLE_HAS_CUDA)
// Defined in the CUDA translation unit run_gpu.cu.
int run_gpu(const Options& o);
std::string gpu_unavailable_reason();  // empty when a device is present
constexpr bool kHaveCuda = true;
#else
constexpr bool kHaveCuda = false;
#endif
#if defined(SIAM_EXAMPLE_HAS_DNNL)
constexpr bool kHaveDnnl = true;
#else
constexpr bool kHaveDnnl = false;
#endif

namespace {

// CLI11 would wrap "-1" around to 2^64 - 1 for an unsigned option.
const CLI::Validator non_negative(
    [](const std::string& v) {
      return v.starts_with('-') ? "must be a non-negative integer, got " + v : std::string();
    },
    "", "non-negative");

void add_data_options(CLI::App& app, Options& o) {
  app.add_option("--data", o.data,
                 "Directory with MNIST-style IDX files (raw or .gz), or an image folder "
                 "(DIR/train/<class>/<file>, DIR/test/<class>/<file>, PNG or JPEG); "
                 "default: synthetic digits");
  app.add_option("--image-size", o.image_size, "Image folder: side of the grey square images")
      ->capture_default_str();
  app.add_option("--channels", o.channels, "Image folder: 1 (grey) or 3 (colour)")
      ->capture_default_str();
  app.add_flag("--augment", o.augment,
               "Image folder: augment the training images (random resized crop, flip, "
               "brightness/contrast jitter)");
  app.add_option("--loader-threads", o.loader_threads,
                 "Image folder: threads decoding the training images ahead of the step")
      ->capture_default_str();
  app.add_option("--on-bad-image", o.on_bad_image,
                 "Image folder: fail on a bad file, or skip it (counted and listed)")
      ->capture_default_str();
  app.add_option("--out", o.out, "Output directory (created if missing)")->capture_default_str();
  app.add_option("--train-size", o.train_size, "Training images")->capture_default_str();
  app.add_option("--test-size", o.test_size, "Test images")->capture_default_str();
  app.add_option("--seed", o.seed, "Seed for initial weights, pairs, synthetic data and figures")
      ->capture_default_str()
      ->check(non_negative);
  app.add_option("--threads", o.threads, "CPU threads (default: all cores)");
  app.add_option("--class-names", o.class_names,
                 "Legend names: digits, fashion (Fashion-MNIST) or 10 comma-separated names")
      ->capture_default_str();
}

void add_train_options(CLI::App& app, Options& o, bool have_cuda) {
  app.add_option("--iterations", o.iterations, "Training iterations (0: only evaluate)")
      ->capture_default_str();
  app.add_option("--batch-pairs", o.batch_pairs, "Random pairs per iteration")
      ->capture_default_str();
  app.add_option(
         "--arch", o.arch,
         "Network: mlp (--layers), cnn (LeNet, 2-D output) or resnet (BatchNorm ResNet, 64-D)")
      ->capture_default_str();
  app.add_option("--layers", o.layers, "MLP layer sizes, input first (--arch mlp)")
      ->capture_default_str();
  app.add_option("--embedding-dim", o.embedding_dim,
                 "Embedding size for --arch cnn and resnet (0: 2 for cnn, 64 for resnet; "
                 "mlp: --layers' last)")
      ->capture_default_str();
  app.add_option("--loss", o.loss, siam::loss_kind_names())->capture_default_str();
  app.add_option("--margin", o.margin, "Loss margin (contrastive, triplet, batch-hard/all)")
      ->capture_default_str();
  app.add_flag("--soft-margin", o.soft_margin, "batch-hard/all: softplus instead of the hinge");
  app.add_option("--temperature", o.temperature, "ntxent temperature")->capture_default_str();
  app.add_option("--optimizer", o.optimizer, "adam, adamw or sgd")->capture_default_str();
  app.add_option("--lr", o.lr, "Learning rate")->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "adamw (decoupled) or sgd weight decay")
      ->capture_default_str();
  app.add_option("--momentum", o.momentum, "sgd momentum")->capture_default_str();
  app.add_option("--schedule", o.schedule,
                 "Learning rate: constant, cosine, step, or a spec such as exp:gamma=0.999")
      ->capture_default_str();
  app.add_option("--warmup", o.warmup, "Iterations of linear learning-rate warm-up")
      ->capture_default_str();
  app.add_option("--beta1", o.beta1, "Adam beta1")->capture_default_str();
  app.add_option("--beta2", o.beta2, "Adam beta2")->capture_default_str();
  app.add_option("--device", o.device,
                 have_cuda ? "auto, cpu or gpu (auto: gpu when one is present)"
                           : "auto, cpu or gpu (this build has no CUDA backend: auto is cpu)")
      ->capture_default_str();
  app.add_flag("--graph", o.graph,
               "Capture the training step once and replay it: one CUDA graph launch per step "
               "on the GPU (NaN steps are skipped on the device and reported)");
  app.add_option("--matmul-precision", o.matmul_precision,
                 "FP32 GEMMs: highest (FP32), high (TF32) or medium (BF16) inputs, FP32 "
                 "accumulation, weights and optimizer state; tensor cores on the GPU, an "
                 "emulation on the CPU (to check results)")
      ->capture_default_str();
  app.add_option("--conv-engine", o.conv_engine,
                 kHaveDnnl ? "CPU convolutions: im2col (+ GEMM), onednn (oneDNN's direct "
                             "kernels) or auto (onednn for --arch resnet, else im2col)"
                           : "CPU convolutions: im2col, onednn or auto (this build has no "
                             "oneDNN: auto is im2col)")
      ->capture_default_str();
  app.add_option("--eval-every", o.eval_every, "Embed the test set every N iterations")
      ->capture_default_str();
  app.add_flag("--frames", o.frames, "Write embedding_NNNN.png at every evaluation");
  app.add_option("--checkpoint-every", o.checkpoint_every,
                 "Write <out>/checkpoint.siam every N iterations (0: off)")
      ->capture_default_str();
  app.add_option("--resume", o.resume, "Continue from a checkpoint up to --iterations");
  app.add_flag("--allow-settings-change", o.allow_settings_change,
               "With --resume: accept a checkpoint written under other settings");
  app.add_option("--on-nan", o.on_nan,
                 "NaN/Inf in the loss or a gradient: stop (save the last good model, exit 1) "
                 "or skip the batch")
      ->capture_default_str();
}

void add_query_options(CLI::App& query, Options& o) {
  add_data_options(query, o);
  query.add_option("--model", o.model, "Model file (model.siam or checkpoint.siam)")->required();
  query
      .add_option("--layers", o.layers,
                  "MLP layer sizes, for a weights-only model file of an earlier version")
      ->capture_default_str();
  query.add_option("--index", o.index,
                   "Test image to query (default: the one of the training run's retrieval.png)");
  query.add_option("--image", o.images, "PNG image(s) to query instead of a test image");
  query.add_option("--invert", o.invert, "--image ink: auto, yes or no (white on black: no)")
      ->capture_default_str();
  query.add_option("--index-file", o.index_file,
                   "Search this index (written by `index`) instead of embedding every test image");
  query.add_option("--k", o.k, "With --index-file: neighbours to print")->capture_default_str();
  query.add_option("--ef", o.ef, "With an HNSW --index-file: search candidate list")
      ->capture_default_str();
  query.add_option("--metric", o.metric, "With --index-file: l2 or inner_product (must match it)")
      ->capture_default_str();
}

void add_index_options(CLI::App& index, Options& o) {
  add_data_options(index, o);
  index.remove_option(index.get_option("--out"));
  index.add_option("--out", o.out, "Index file to write")->required();
  index.add_option("--model", o.model, "Model file (model.siam or checkpoint.siam)")->required();
  index
      .add_option("--layers", o.layers,
                  "MLP layer sizes, for a weights-only model file of an earlier version")
      ->capture_default_str();
  index.add_flag("--exact", o.exact, "An exact (flat) index instead of HNSW");
  index.add_option("--metric", o.metric, "l2 or inner_product")->capture_default_str();
  index.add_option("--M", o.hnsw_m, "HNSW links per node")->capture_default_str();
  index.add_option("--ef-construction", o.ef_construction, "HNSW candidate list while building")
      ->capture_default_str();
}

int bad_option(const std::string& line) {
  std::fprintf(stderr, "error: %s\n", line.c_str());
  return 2;
}

int dispatch(Options o, bool is_query) {
  if (o.threads > 0) siam::set_num_threads(o.threads);
  o.threads = siam::num_threads();
  if (!is_query) {  // the CPU convolution engine of this run (--conv-engine)
    if (o.conv_engine == "auto")
      o.conv_engine = kHaveDnnl && o.arch == "resnet" ? "onednn" : "im2col";
    siam::set_conv_engine(o.conv_engine == "onednn" ? siam::ConvEngine::onednn
                                                    : siam::ConvEngine::im2col);
  }
#if defined(SIAM_EXAMPLE_HAS_MPI)
  if (!is_query) {  // under mpirun with several ranks: data-parallel (distributed.hpp)
#if defined(SIAM_EXAMPLE_HAS_CUDA)
    if (auto status = run_if_distributed(o, &gpu_unavailable_reason)) return *status;
#else
    if (auto status = run_if_distributed(o, nullptr)) return *status;
#endif
  }
#endif
  if (is_query && !o.index_file.empty()) return query_index(o);
#if defined(SIAM_EXAMPLE_HAS_PNG)
  if (is_query && !o.images.empty()) return query_images<siam::Cpu>(o);
#endif
  if (is_query) return query<siam::Cpu>(o);
#if defined(SIAM_EXAMPLE_HAS_CUDA)
  if (o.device != "cpu") {
    const std::string why = gpu_unavailable_reason();
    if (why.empty()) return run_gpu(o);
    if (o.device == "gpu") return bad_option("--device gpu: " + why);
    std::printf("no usable CUDA device, --device auto runs on the CPU (%s)\n", why.c_str());
  }
#endif
  return run<siam::Cpu>(o);
}

}  // namespace
}  // namespace mnist_siamese

int main(int argc, char** argv) {
  using namespace mnist_siamese;
  Options o;
  CLI::App app{"Train a Siamese network that embeds 28x28 digit images in 2-D (contrastive loss)"};
  add_data_options(app, o);
  add_train_options(app, o, kHaveCuda);
  CLI::App* q = app.add_subcommand("query", "Nearest test images of one test image under a model");
  add_query_options(*q, o);
  CLI::App* ex = app.add_subcommand("export", "Write the model as ONNX and/or safetensors");
  ex->add_option("--model", o.model, "Model file (model.siam)")->required();
  ex->add_option("--onnx", o.onnx, "ONNX file to write");
  ex->add_option("--safetensors", o.safetensors, "safetensors file to write");
  CLI::App* ix = app.add_subcommand("index", "Embed the test images and write a search index");
  add_index_options(*ix, o);
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return bad_option(std::string(e.what()) + " (see --help)");
  }
  if (ex->parsed()) {
    if (auto problem = check_export_options(o)) return bad_option(*problem);
    try {
      return export_model(o);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 1;
    }
  }
  if (ix->parsed()) {
    if (auto problem = check_index_options(o)) return bad_option(*problem);
    try {
      if (o.threads > 0) siam::set_num_threads(o.threads);
      o.threads = siam::num_threads();
      return build_index(o);
    } catch (const std::exception& e) {
      std::fflush(stdout);
      std::fprintf(stderr, "error: %s\n", e.what());
      return 1;
    }
  }
  const bool is_query = q->parsed();
  if (is_query)
    if (auto problem = check_image_options(o)) return bad_option(*problem);
  if (auto problem =
          is_query ? check_query_options(o) : check_train_options(o, kHaveCuda, kHaveDnnl))
    return bad_option(*problem);
  if (is_query && !o.index_file.empty())
    if (auto problem = check_index_query_options(o)) return bad_option(*problem);
  try {
    return dispatch(o, is_query);
  } catch (const std::exception& e) {  // siam::error and anything else: one line, no trace
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
