// The interop subcommands of mnist_siamese:
//   export  --model FILE --onnx OUT [--safetensors OUT]   the model for other runtimes
//   query   --model FILE --image PNG [--image PNG ...]    nearest test images of your images
// See docs/deploy.md. ONNX needs a build with libonnx (SIAM_EXAMPLE_HAS_ONNX), --image one
// with libpng (SIAM_EXAMPLE_HAS_PNG); without them the options fail with one line.
#pragma once

#include <siam/io/model_file.hpp>
#include <siam/io/safetensors.hpp>
#if defined(SIAM_EXAMPLE_HAS_ONNX)
#include <siam/io/onnx.hpp>
#endif
#if defined(SIAM_EXAMPLE_HAS_PNG)
#include <siam/data/png.hpp>
#include <siam/presets/mnist_digit.hpp>
#endif

#include <cstdio>
#include <string>
#include <vector>

#include "run.hpp"

namespace mnist_siamese {

inline constexpr bool kHaveOnnx =
#if defined(SIAM_EXAMPLE_HAS_ONNX)
    true;
#else
    false;
#endif
inline constexpr bool kHavePng =
#if defined(SIAM_EXAMPLE_HAS_PNG)
    true;
#else
    false;
#endif

/// The first problem with `export`'s options, as one line.
inline std::optional<std::string> check_export_options(const Options& o) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(o.model, ec))
    return "--model " + o.model + ": no such file";
  if (o.onnx.empty() && o.safetensors.empty())
    return "export: give --onnx FILE and/or --safetensors FILE";
  if (!o.onnx.empty() && !kHaveOnnx)
    return "--onnx: this build has no ONNX export (libonnx-dev and libprotobuf-dev not found)";
  return std::nullopt;
}

/// The first problem with `query --image`'s options, as one line.
inline std::optional<std::string> check_image_options(const Options& o) {
  if (o.invert != "auto" && o.invert != "yes" && o.invert != "no")
    return "--invert " + o.invert + ": must be auto, yes or no";
  if (o.images.empty()) return std::nullopt;
  if (!kHavePng) return "--image: this build has no PNG support (libpng not found)";
  if (o.index >= 0) return "--image and --index: give one or the other";
  std::error_code ec;
  for (const auto& f : o.images)
    if (!std::filesystem::is_regular_file(f, ec)) return "--image " + f + ": no such file";
  return std::nullopt;
}

inline siam::nn::Sequential<float, siam::Cpu> load_network(const Options& o) {
  return load_query_model<siam::Cpu>(o);  // the file's architecture (or --layers, format 1)
}

inline int export_model(const Options& o) {
  auto net = load_network(o);
  std::printf("model: %s, %s\n", o.model.c_str(), net.describe().c_str());
#if defined(SIAM_EXAMPLE_HAS_ONNX)
  if (!o.onnx.empty()) {
    siam::io::OnnxOptions options;
    options.metadata["model_file"] = std::filesystem::path(o.model).filename().string();
    siam::io::export_onnx(net, o.onnx, options);
    std::printf(
        "wrote %s (ONNX opset %lld, input 'images' [batch, %s], output 'embedding' "
        "[batch, %zu])\n",
        o.onnx.c_str(), static_cast<long long>(options.opset),
        net.input_shape().str().substr(1, net.input_shape().str().size() - 2).c_str(),
        embedding_dim(net));
  }
#endif
  if (!o.safetensors.empty()) {
    siam::io::save_safetensors(o.safetensors, net);
    std::printf("wrote %s (safetensors, PyTorch names and layout)\n", o.safetensors.c_str());
  }
  return 0;
}

#if defined(SIAM_EXAMPLE_HAS_PNG)
/// The images of `query --image`, read as the network reads the test images: through an
/// image folder's codecs (PNG or JPEG) and evaluation transform (shorter side to the model's
/// size, centre crop, its channels) when the data is a folder; else as MNIST digits (grey
/// PNG, cropped, scaled and centred to 28 x 28, inverted to white on black if needed).
struct QueryImages {
  Dataset set;                   // one row per file (colour: planes stacked, see Data)
  std::vector<std::string> how;  // how each file was read, for the printout
  int channels = 1;

  plots::Image image(std::size_t i) const { return image_of(set, i, channels); }  // views set
};

inline QueryImages read_query_images(const Options& o, const Data& data) {
  QueryImages q;
  if (data.test_folder) {
    const FolderSplit& split = *data.test_folder;
    q.channels = static_cast<int>(split.channels);
    q.set.rows = split.spec.size * split.channels;
    q.set.cols = split.spec.size;
    q.set.images.resize(o.images.size() * split.example());
    for (std::size_t i = 0; i < o.images.size(); ++i) {
      split.decode_file(o.images[i], q.set.images.data() + i * split.example());
      q.set.labels.push_back(0);
      q.how.push_back("read as the folder's test images");
    }
    return q;
  }
  const auto invert = o.invert == "yes"  ? siam::presets::Invert::yes
                      : o.invert == "no" ? siam::presets::Invert::no
                                         : siam::presets::Invert::automatic;
  q.set.images.clear();
  for (const auto& f : o.images) {
    bool inverted = false;
    const auto x = siam::presets::prepare_digit(siam::data::read_png_gray(f), invert, &inverted);
    q.set.images.insert(q.set.images.end(), x.begin(), x.end());
    q.set.labels.push_back(0);
    q.how.push_back(inverted ? "inverted to white on black" : "white on black");
  }
  return q;
}

/// `query --image`: the model, the data and every image are read and checked before
/// anything is written, so a bad file costs one error line and leaves no output.
template <class Backend>
int query_images(const Options& opt) {
  auto net = load_network(opt);
  const Options o = with_model_input(opt, net);
  const Data data = load_data(o);
  const QueryImages queries = read_query_images(o, data);
  const auto class_names = label_names(o, data);
  std::printf("model: %s, %s\n", o.model.c_str(), net.describe().c_str());
  auto emb = embed(net, data.test);
  const auto qemb = embed(net, queries.set);
  const std::size_t kDim = embedding_dim(net);
  const std::size_t n = data.test.size();
  const fs::path out = o.out;
  fs::create_directories(out);
  for (std::size_t k = 0; k < queries.set.size(); ++k) {
    // The query's embedding as one more row; its neighbours are the test images.
    emb.resize(n * kDim);
    emb.insert(emb.end(), qemb.begin() + static_cast<long>(k * kDim),
               qemb.begin() + static_cast<long>((k + 1) * kDim));
    Retrieval r = retrieve(emb, n + 1, kDim, n);
    std::vector<plots::Image> images;
    std::vector<int> labels;
    for (const std::uint32_t j : r.neighbours) {
      images.push_back(image_of(data.test, j, data.channels));
      labels.push_back(static_cast<int>(data.test.labels[j]));
    }
    const fs::path png =
        out / (k == 0 ? "retrieval.png" : "retrieval_" + std::to_string(k) + ".png");
    plots::write_retrieval(png, queries.image(k), images, r.distances,
                           "Nearest test images to " + fs::path(o.images[k]).filename().string(),
                           labels);
    std::printf("image %s (%s) at (%.4f, %.4f); nearest test images:\n", o.images[k].c_str(),
                queries.how[k].c_str(), qemb[k * kDim], qemb[k * kDim + 1]);
    for (std::size_t i = 0; i < r.neighbours.size(); ++i)
      std::printf("  #%zu  image %5u  label %-12s distance %.5f\n", i + 1, r.neighbours[i],
                  class_name(class_names, data.test.labels[r.neighbours[i]]).c_str(),
                  static_cast<double>(r.distances[i]));
    std::printf("wrote %s\n", png.string().c_str());
  }
  return 0;
}
#endif

}  // namespace mnist_siamese
