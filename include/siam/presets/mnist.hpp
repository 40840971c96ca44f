// The standard MNIST directory layout (train-* and t10k-* IDX files, raw or gzip) and how
// siam's programs split it into a training and a test set: a convention of one data set
// (a preset), built on the generic IDX reader of data/idx.hpp.
#pragma once

#include <cstddef>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <system_error>

#include "siam/data/dataset.hpp"
#include "siam/data/idx.hpp"
#include "siam/error.hpp"

namespace siam::presets {

/// The standard MNIST split read from a directory; note says which files and
/// ranges were used.
struct MnistDir {
  data::Dataset train, test;
  std::string note;
};

namespace detail {
// base or base.gz in dir (the uncompressed one when both exist).
inline std::optional<std::filesystem::path> find_idx(const std::filesystem::path& dir,
                                                     const std::string& base) {
  std::error_code ec;
  for (const std::string& name : {base, base + ".gz"})
    if (std::filesystem::is_regular_file(dir / name, ec)) return dir / name;
  return std::nullopt;
}
}  // namespace detail

/// Loads MNIST from dir: train-{images-idx3,labels-idx1}-ubyte[.gz] and
/// t10k-{images-idx3,labels-idx1}-ubyte[.gz]. With both sets, train = first
/// train_size of train, test = first test_size of t10k. With only the t10k files,
/// train = t10k images [0, train_size) and test = the next test_size images; note
/// says so.
/// Throws io_error naming the directory and the files looked for when the directory
/// or the t10k files (or one half of the train pair) are missing, io_error for a
/// malformed file, and value_error (naming the sizes) when a size is zero or larger
/// than the files provide.
inline MnistDir load_mnist_dir(const std::filesystem::path& dir, std::size_t train_size = 5000,
                               std::size_t test_size = 5000) {
  const std::string tri = "train-images-idx3-ubyte", trl = "train-labels-idx1-ubyte",
                    tei = "t10k-images-idx3-ubyte", tel = "t10k-labels-idx1-ubyte";
  const std::string looked_for =
      "looked for " + tri + "[.gz], " + trl + "[.gz], " + tei + "[.gz], " + tel + "[.gz]";
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw io_error("load_mnist_dir: directory " + dir.string() + " does not exist (" + looked_for +
                   ")");
  if (train_size == 0 || test_size == 0)
    throw value_error("load_mnist_dir: train_size " + std::to_string(train_size) +
                      " and test_size " + std::to_string(test_size) + " must both be > 0");
  const auto p_tri = detail::find_idx(dir, tri), p_trl = detail::find_idx(dir, trl),
             p_tei = detail::find_idx(dir, tei), p_tel = detail::find_idx(dir, tel);
  std::string missing;
  const auto need = [&](const auto& p, const std::string& base) {
    if (!p) missing += (missing.empty() ? "" : ", ") + base + "[.gz]";
  };
  need(p_tei, tei);
  need(p_tel, tel);
  if (p_tri || p_trl) {  // half a train pair is a broken directory, not a t10k-only one
    need(p_tri, tri);
    need(p_trl, trl);
  }
  if (!missing.empty())
    throw io_error("load_mnist_dir: " + dir.string() + ": missing " + missing + " (" + looked_for +
                   ")");

  MnistDir out;
  const auto too_many = [](const std::string& what, std::size_t want, std::size_t have,
                           const std::filesystem::path& file) {
    throw value_error("load_mnist_dir: " + what + " " + std::to_string(want) + " exceeds the " +
                      std::to_string(have) + " images of " + file.string());
  };
  const auto range = [](std::size_t a, std::size_t n) {
    return std::to_string(a) + ".." + std::to_string(a + n - 1);
  };
  if (p_tri) {
    out.train = data::read_idx(*p_tri, *p_trl, 9, train_size);
    if (out.train.size() < train_size) too_many("train_size", train_size, out.train.size(), *p_tri);
    out.test = data::read_idx(*p_tei, *p_tel, 9, test_size);
    if (out.test.size() < test_size) too_many("test_size", test_size, out.test.size(), *p_tei);
    out.note = "train: images " + range(0, train_size) + " of " + p_tri->filename().string() +
               "; test: images " + range(0, test_size) + " of " + p_tei->filename().string();
    return out;
  }
  if (train_size > std::numeric_limits<std::size_t>::max() - test_size)
    throw value_error("load_mnist_dir: train_size " + std::to_string(train_size) + " + test_size " +
                      std::to_string(test_size) + " overflows");
  const std::size_t total = train_size + test_size;
  data::Dataset all = data::read_idx(*p_tei, *p_tel, 9, total);
  if (all.size() < total)
    throw value_error("load_mnist_dir: only t10k files found and train_size " +
                      std::to_string(train_size) + " + test_size " + std::to_string(test_size) +
                      " = " + std::to_string(total) + " exceeds its " + std::to_string(all.size()) +
                      " images (" + p_tei->string() + ")");
  out.train = all.slice(0, train_size);
  out.test = all.slice(train_size, test_size);
  out.note = "only t10k files found: images " + range(0, train_size) + " train, " +
             range(train_size, test_size) + " test";
  return out;
}

}  // namespace siam::presets
