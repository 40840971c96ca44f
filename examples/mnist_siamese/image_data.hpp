// --data DIR as an image-folder tree (siam/data/image_folder.hpp): DIR/train/<class>/<file>
// and DIR/test/<class>/<file>, PNG or JPEG of any size, colour or grey. The example's
// networks take grey --image-size x --image-size inputs, so each image is read once,
// made grey, its shorter side resized to --image-size (antialiased bilinear) and centre
// cropped. Bad files fail with one line naming the file, or (--on-bad-image skip) are
// skipped, counted and listed.
#pragma once

#include <siam/data/dataset.hpp>
#include <siam/data/image_folder.hpp>
#include <siam/data/transforms.hpp>
#if defined(SIAM_EXAMPLE_HAS_PNG)
#include <siam/data/png.hpp>
#endif
#if defined(SIAM_EXAMPLE_HAS_JPEG)
#include <siam/data/jpeg.hpp>
#endif

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "options.hpp"

namespace mnist_siamese {

/// True when `dir` holds train/ and test/ folders and no IDX file: an image-folder tree.
inline bool is_image_folder(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir / "train", ec) || !fs::is_directory(dir / "test", ec)) return false;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().filename().string().find("idx") != std::string::npos) return false;
  return true;
}

struct FolderData {
  siam::data::Dataset train, test;
  std::vector<std::string> classes;
  std::vector<siam::data::SkippedFile> skipped;
};

/// Reads up to `train_size` / `test_size` images of each split (the first ones of a seeded
/// shuffle when there are more) as grey `o.image_size` squares in [0, 1].
inline FolderData load_image_folder(const Options& o, std::size_t train_size,
                                    std::size_t test_size) {
  siam::data::ImageFolderOptions opt;
#if defined(SIAM_EXAMPLE_HAS_PNG)
  opt.codecs.push_back(siam::data::png_codec());
#endif
#if defined(SIAM_EXAMPLE_HAS_JPEG)
  opt.codecs.push_back(siam::data::jpeg_codec());
#endif
  if (opt.codecs.empty())
    throw siam::io_error("--data " + o.data +
                         ": an image folder, but this build reads neither PNG nor JPEG "
                         "(libpng / libturbojpeg not found)");
  opt.channels = 1;
  opt.on_bad =
      o.on_bad_image == "skip" ? siam::data::OnBadImage::skip : siam::data::OnBadImage::fail;
  FolderData out;
  const auto size = static_cast<std::size_t>(o.image_size);
  siam::data::TransformSpec spec;
  spec.size = size;
  for (const char* split : {"train", "test"}) {
    opt.split = split;
    opt.min_per_class = split == std::string("train") ? 2 : 1;
    const siam::data::ImageFolder folder(o.data, opt);
    out.skipped.insert(out.skipped.end(), folder.skipped().begin(), folder.skipped().end());
    out.classes = folder.classes();
    if (out.classes.size() > 10)
      throw siam::value_error("--data " + o.data + ": " + std::to_string(out.classes.size()) +
                              " classes; this example's figures show at most 10");
    std::vector<std::size_t> order(folder.size());
    for (std::size_t i = 0; i < order.size(); ++i)
      order[i] = i;
    const std::size_t want = split == std::string("train") ? train_size : test_size;
    if (order.size() > want) {
      siam::Rng rng(o.seed);
      for (std::size_t i = 0; i < want; ++i)
        std::swap(order[i], order[i + rng.below(order.size() - i)]);
      order.resize(want);
      std::sort(order.begin(), order.end());
    }
    auto& d = split == std::string("train") ? out.train : out.test;
    d.rows = d.cols = size;
    d.images.resize(order.size() * size * size);
    d.labels.resize(order.size());
    siam::Rng unused(0);
    for (std::size_t k = 0; k < order.size(); ++k) {
      siam::data::apply_transform(folder.load(order[k]), spec, unused, d.image(k));
      d.labels[k] = folder.label(order[k]);
    }
  }
  return out;
}

}  // namespace mnist_siamese
