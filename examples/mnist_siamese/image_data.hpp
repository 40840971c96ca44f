// --data DIR as an image-folder tree (siam/data/image_folder.hpp): DIR/train/<class>/<file>
// and DIR/test/<class>/<file>, PNG or JPEG of any size, colour or grey. Images are read as
// --channels samples per pixel (1 grey, 3 RGB), their shorter side resized to --image-size
// (antialiased bilinear) and centre cropped; an image of that size already arrives as its
// 8-bit samples k / 255, exactly as the IDX reader gives them.
//
// The training split stays on disk: the trainer streams it through the threaded loader
// (--loader-threads workers decode the next batches while the step runs; with --augment,
// random resized crops, flips and brightness/contrast jitter instead of the centre crop).
// The test split is decoded once into memory (--test-size images), and the training images'
// embeddings for kNN are computed in blocks. Bad files fail with one line naming the file,
// or (--on-bad-image skip) are skipped, counted and listed.
#pragma once

#include <siam/data/dataset.hpp>
#include <siam/data/image_folder.hpp>
#include <siam/data/transforms.hpp>
#include <siam/io/file.hpp>
#if defined(SIAM_EXAMPLE_HAS_PNG)
#include <siam/data/png.hpp>
#endif
#if defined(SIAM_EXAMPLE_HAS_JPEG)
#include <siam/data/jpeg.hpp>
#endif

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
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

/// One split of an image folder, read on demand.
struct FolderSplit {
  std::shared_ptr<const siam::data::ImageFolder> folder;
  siam::data::TransformSpec spec;  // the evaluation transform (no augmentation)
  std::size_t channels = 1;

  std::size_t size() const { return folder->size(); }
  /// Values per image: channels x size x size (channel planes).
  std::size_t example() const { return channels * spec.size * spec.size; }
  /// Decodes image i as the network reads it into out (example() values).
  void decode(std::size_t i, float* out) const {
    siam::Rng unused(0);  // the evaluation transform draws nothing
    siam::data::apply_transform(folder->load(i), spec, unused, out);
  }
  /// Decodes a file outside the folder exactly as decode() does the folder's own images
  /// (same codecs, channels and transform); io_error naming the file when it is not one.
  void decode_file(const std::filesystem::path& file, float* out) const {
    siam::Rng unused(0);
    const auto bytes = siam::io::read_file(file, "image");
    siam::data::apply_transform(folder->decode(bytes, file.string()), spec, unused, out);
  }
};

struct FolderData {
  FolderSplit train, test;
  std::vector<std::string> classes;
  std::vector<siam::data::SkippedFile> skipped;
};

/// Scans both splits, keeping up to `train_size` / `test_size` images of each (the first
/// ones of a seeded shuffle when there are more); nothing is decoded beyond the scan's check.
inline FolderData open_image_folder(const Options& o, std::size_t train_size,
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
  opt.channels = static_cast<std::size_t>(o.channels);
  opt.on_bad =
      o.on_bad_image == "skip" ? siam::data::OnBadImage::skip : siam::data::OnBadImage::fail;
  FolderData out;
  for (const char* split : {"train", "test"}) {
    const bool train = split == std::string("train");
    opt.split = split;
    opt.min_per_class = train ? 2 : 1;
    siam::data::ImageFolder folder(o.data, opt);
    out.skipped.insert(out.skipped.end(), folder.skipped().begin(), folder.skipped().end());
    out.classes = folder.classes();
    if (out.classes.size() > 10)
      throw siam::value_error("--data " + o.data + ": " + std::to_string(out.classes.size()) +
                              " classes; this example's figures show at most 10");
    const std::size_t want = train ? train_size : test_size;
    FolderSplit& s = train ? out.train : out.test;
    if (folder.size() > want) {
      std::vector<std::size_t> order(folder.size());
      for (std::size_t i = 0; i < order.size(); ++i)
        order[i] = i;
      siam::Rng rng(o.seed);
      for (std::size_t i = 0; i < want; ++i)
        std::swap(order[i], order[i + rng.below(order.size() - i)]);
      order.resize(want);
      std::sort(order.begin(), order.end());
      s.folder = std::make_shared<const siam::data::ImageFolder>(folder.subset(order));
    } else {
      s.folder = std::make_shared<const siam::data::ImageFolder>(std::move(folder));
    }
    s.spec.size = static_cast<std::size_t>(o.image_size);
    s.channels = static_cast<std::size_t>(o.channels);
  }
  return out;
}

/// Decodes every image of `split` (n x example() values, image after image).
inline std::vector<float> decode_all(const FolderSplit& split) {
  std::vector<float> out(split.size() * split.example());
  for (std::size_t i = 0; i < split.size(); ++i)
    split.decode(i, out.data() + i * split.example());
  return out;
}

/// A labels-only Dataset of `split` (rows = cols = the image size, no pixels).
inline siam::data::Dataset labels_of(const FolderSplit& split) {
  siam::data::Dataset d;
  d.rows = d.cols = split.spec.size;
  d.labels = split.folder->labels();
  return d;
}

}  // namespace mnist_siamese
