// Tests of the data layer: IDX reading/writing and its rejection of malformed files,
// the MNIST directory loader, the synthetic digit generator and the pair sampler.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "siam/data/dataset.hpp"
#include "siam/data/idx.hpp"
#include "siam/data/pairs.hpp"
#include "siam/data/pk_sampler.hpp"
#include "siam/data/synthetic_digits.hpp"
#include "siam/data/triplets.hpp"
#include "siam/error.hpp"
#include "siam/io/gzip.hpp"
#include "siam/metrics.hpp"
#include "siam/presets/mnist.hpp"
#include "siam/random.hpp"

namespace fs = std::filesystem;
using siam::data::Dataset;

namespace {

// A fresh directory under the system temp dir, removed with its contents at scope end.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    path = fs::temp_directory_path() /
           ("siam_test_data_" + std::to_string(stamp) + "_" + std::to_string(++counter));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path operator/(const std::string& name) const { return path / name; }
};

using Bytes = std::vector<std::uint8_t>;

void put32(Bytes& b, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8)
    b.push_back(static_cast<std::uint8_t>(v >> s));
}

Bytes image_header(std::uint32_t count, std::uint32_t rows, std::uint32_t cols,
                   std::uint32_t magic = 0x803) {
  Bytes b;
  put32(b, magic);
  put32(b, count);
  put32(b, rows);
  put32(b, cols);
  return b;
}

Bytes label_header(std::uint32_t count, std::uint32_t magic = 0x801) {
  Bytes b;
  put32(b, magic);
  put32(b, count);
  return b;
}

void write_bytes(const fs::path& p, const Bytes& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

Bytes read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

Bytes gzip(const Bytes& raw) {
  return siam::data::detail::gzip_bytes(raw, "test");
}

// A small data set whose pixels are exact multiples of 1/255 (so it round-trips).
Dataset small_dataset(std::size_t n, std::size_t rows = 4, std::size_t cols = 3) {
  Dataset ds;
  ds.rows = rows;
  ds.cols = cols;
  for (std::size_t i = 0; i < n; ++i) {
    ds.labels.push_back(static_cast<std::int64_t>(i % 10));
    for (std::size_t p = 0; p < rows * cols; ++p)
      ds.images.push_back(static_cast<float>((i * 37 + p * 11) % 256) / 255.0f);
  }
  return ds;
}

// The message of the E that f throws; fails the test on no or another exception.
template <class E, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("unexpected exception type: " << e.what());
  }
  FAIL("no exception thrown");
  return {};
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Checks that reading the image file p fails with io_error naming p and `problem`.
void expect_image_error(const fs::path& p, const std::string& problem) {
  const std::string msg = message_of<siam::io_error>([&] { (void)siam::data::read_idx_images(p); });
  INFO("message: " << msg);
  CHECK(contains(msg, p.string()));
  CHECK(contains(msg, problem));
}

void expect_label_error(const fs::path& p, const std::string& problem) {
  const std::string msg = message_of<siam::io_error>([&] { (void)siam::data::read_idx_labels(p); });
  INFO("message: " << msg);
  CHECK(contains(msg, p.string()));
  CHECK(contains(msg, problem));
}

}  // namespace

TEST_CASE("Dataset: accessors, slice and class counts") {
  const Dataset ds = small_dataset(12);
  CHECK(ds.size() == 12);
  CHECK(ds.pixels() == 12);
  CHECK(ds.image(2) == ds.images.data() + 24);
  CHECK_THROWS_AS((void)ds.image(12), siam::value_error);

  const Dataset s = ds.slice(3, 4);
  CHECK(s.size() == 4);
  CHECK(s.labels[0] == 3);
  CHECK(s.images[0] == ds.images[3 * 12]);
  CHECK(ds.slice(12, 0).size() == 0);
  CHECK_THROWS_AS((void)ds.slice(10, 3), siam::value_error);
  CHECK_THROWS_AS((void)ds.slice(13, 0), siam::value_error);

  const auto counts = ds.class_counts(10);
  CHECK(counts[0] == 2);
  CHECK(counts[1] == 2);
  CHECK(counts[2] == 1);
  CHECK_THROWS_AS((void)ds.class_counts(5), siam::value_error);

  Dataset bad = ds;
  bad.images.pop_back();
  CHECK_THROWS_AS(bad.validate(), siam::value_error);
}

TEST_CASE("IDX: round trip, raw and gzip") {
  TempDir dir;
  const Dataset ds = small_dataset(25, 5, 7);
  for (const bool gz : {false, true}) {
    CAPTURE(gz);
    const auto im = dir / (gz ? "im.idx.gz" : "im.idx"), lb = dir / (gz ? "lb.idx.gz" : "lb.idx");
    siam::data::write_idx(im, lb, ds, gz);
    CHECK_FALSE(fs::exists(fs::path(im.string() + ".tmp")));  // renamed into place
    const Bytes raw = read_bytes(im);
    CHECK(siam::data::detail::is_gzip(raw) == gz);
    const Dataset back = siam::data::read_idx(im, lb);
    CHECK(back.rows == 5);
    CHECK(back.cols == 7);
    CHECK(back.labels == ds.labels);
    CHECK(back.images == ds.images);  // exact: pixels are k / 255

    const Dataset head = siam::data::read_idx(im, lb, 9, 10);  // prefix only
    CHECK(head.size() == 10);
    CHECK(head.images == ds.slice(0, 10).images);
  }
}

TEST_CASE("IDX: in-memory parsing matches file parsing") {
  Bytes b = image_header(2, 2, 2);
  for (std::uint8_t v : {0, 51, 102, 255, 255, 0, 1, 2})
    b.push_back(v);
  for (const bool gz : {false, true}) {
    const auto im = siam::data::read_idx_images_bytes(gz ? gzip(b) : b, "mem");
    CHECK(im.count == 2);
    CHECK(im.rows == 2);
    CHECK(im.cols == 2);
    REQUIRE(im.pixels.size() == 8);
    CHECK(im.pixels[1] == doctest::Approx(0.2));
    CHECK(im.pixels[3] == 1.0f);
  }
  Bytes l = label_header(3);
  for (std::uint8_t v : {7, 0, 9})
    l.push_back(v);
  CHECK(siam::data::read_idx_labels_bytes(l, "mem") == Bytes{7, 0, 9});
  CHECK(siam::data::read_idx_labels_bytes(gzip(l), "mem") == Bytes{7, 0, 9});
}

TEST_CASE("IDX: malformed files are rejected with a message naming file and problem") {
  TempDir dir;
  const Bytes body(2 * 3 * 3, 128);

  SUBCASE("empty file") {
    write_bytes(dir / "e", {});
    expect_image_error(dir / "e", "empty file");
    expect_label_error(dir / "e", "empty file");
  }
  SUBCASE("truncated header") {
    Bytes b = image_header(2, 3, 3);
    b.resize(10);
    write_bytes(dir / "h", b);
    expect_image_error(dir / "h", "truncated header");
    write_bytes(dir / "hl", {0, 0, 8, 1, 0});
    expect_label_error(dir / "hl", "truncated header");
  }
  SUBCASE("truncated body") {
    Bytes b = image_header(2, 3, 3);
    b.insert(b.end(), body.begin(), body.end() - 1);
    write_bytes(dir / "b", b);
    expect_image_error(dir / "b", "truncated body");
    Bytes l = label_header(5);
    l.push_back(1);
    write_bytes(dir / "bl", l);
    expect_label_error(dir / "bl", "truncated body");
  }
  SUBCASE("trailing garbage") {
    Bytes b = image_header(2, 3, 3);
    b.insert(b.end(), body.begin(), body.end());
    b.push_back(0);
    write_bytes(dir / "t", b);
    expect_image_error(dir / "t", "trailing garbage");
    write_bytes(dir / "t.gz", gzip(b));
    expect_image_error(dir / "t.gz", "trailing garbage");
  }
  SUBCASE("wrong magic") {
    Bytes b = image_header(2, 3, 3, 0x12345678);
    b.insert(b.end(), body.begin(), body.end());
    write_bytes(dir / "m", b);
    expect_image_error(dir / "m", "wrong magic 0x12345678");
    Bytes l = label_header(8);
    l.insert(l.end(), 8, 3);  // 16 bytes: long enough for an image header
    write_bytes(dir / "labels-as-images", l);
    expect_image_error(dir / "labels-as-images", "this is a label file");
    write_bytes(dir / "images-as-labels", b);
    expect_label_error(dir / "images-as-labels", "wrong magic");
  }
  SUBCASE("zero dimensions") {
    write_bytes(dir / "z", image_header(2, 0, 3));
    expect_image_error(dir / "z", "zero dimension");
    write_bytes(dir / "zc", image_header(0, 28, 28));
    expect_image_error(dir / "zc", "zero dimension");
    write_bytes(dir / "zl", label_header(0));
    expect_label_error(dir / "zl", "zero labels");
  }
  SUBCASE("image size overflowing 32 bits") {
    write_bytes(dir / "o32", image_header(1, 65536, 65536));
    expect_image_error(dir / "o32", "overflows 32 bits");
  }
  SUBCASE("total size overflowing 64 bits") {
    write_bytes(dir / "o64", image_header(0xffffffffu, 0xffffffffu, 0xffffffffu));
    expect_image_error(dir / "o64", "overflow a 64-bit");
  }
  SUBCASE("absurd side") {
    write_bytes(dir / "side", image_header(1, 100000, 1));
    expect_image_error(dir / "side", "absurd image size");
  }
  SUBCASE("labels outside 0..9") {
    Bytes l = label_header(4);
    for (std::uint8_t v : {1, 2, 12, 3})
      l.push_back(v);
    write_bytes(dir / "l", l);
    expect_label_error(dir / "l", "label 12 at index 2 exceeds the maximum label 9");
    CHECK(siam::data::read_idx_labels(dir / "l", 12).size() == 4);  // a wider range is allowed
  }
  SUBCASE("image and label counts differ") {
    const Dataset ds = small_dataset(3);
    siam::data::write_idx(dir / "im", dir / "lb", ds, false);
    Bytes l = label_header(2);
    l.push_back(0);
    l.push_back(1);
    write_bytes(dir / "lb2", l);
    const std::string msg =
        message_of<siam::io_error>([&] { (void)siam::data::read_idx(dir / "im", dir / "lb2"); });
    CHECK(contains(msg, (dir / "im").string()));
    CHECK(contains(msg, (dir / "lb2").string()));
    CHECK(contains(msg, "count mismatch"));
  }
  SUBCASE("corrupt gzip: bad checksum") {
    Bytes b = image_header(1, 2, 2);
    b.insert(b.end(), 4, 9);
    Bytes g = gzip(b);
    g[g.size() - 8] ^= 0xff;  // CRC-32 of the trailer
    write_bytes(dir / "crc.gz", g);
    expect_image_error(dir / "crc.gz", "corrupt gzip");
  }
  SUBCASE("corrupt gzip: invalid deflate block") {
    // A valid gzip header followed by a final block of the reserved type 3.
    write_bytes(dir / "blk.gz", {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0x07, 0, 0, 0, 0});
    expect_image_error(dir / "blk.gz", "corrupt gzip");
  }
  SUBCASE("corrupt gzip: garbage after the stream") {
    Bytes b = image_header(1, 2, 2);
    b.insert(b.end(), 4, 9);
    Bytes g = gzip(b);
    g.push_back(42);
    write_bytes(dir / "after.gz", g);
    expect_image_error(dir / "after.gz", "trailing garbage after the gzip stream");
  }
  SUBCASE("gzip ending early") {
    Bytes b = image_header(50, 28, 28);
    for (std::size_t i = 0; i < 50 * 28 * 28; ++i)
      b.push_back(static_cast<std::uint8_t>(i * 7));
    Bytes g = gzip(b);
    g.resize(g.size() / 2);
    write_bytes(dir / "cut.gz", g);
    expect_image_error(dir / "cut.gz", "ends early");
    Bytes g2 = gzip(b);
    g2.resize(g2.size() - 3);  // only the trailer is cut: the data is all there, unverified
    write_bytes(dir / "cut2.gz", g2);
    expect_image_error(dir / "cut2.gz", "ends early");
  }
  SUBCASE("missing file") {
    expect_image_error(dir / "nothing-here", "cannot open");
  }
}

TEST_CASE("IDX: a header claiming 4e9 images in a tiny file fails fast without allocating") {
  // 4e9 images of 28 x 28 would be 12.5 TB of floats: an attempt to allocate them
  // would throw bad_alloc (or exhaust memory), not io_error, and not within a second.
  Bytes b = image_header(4000000000u, 28, 28);
  b.resize(100, 7);
  const auto start = std::chrono::steady_clock::now();
  std::string msg =
      message_of<siam::io_error>([&] { (void)siam::data::read_idx_images_bytes(b, "huge.idx"); });
  CHECK(contains(msg, "huge.idx"));
  CHECK(contains(msg, "truncated body"));
  CHECK(contains(msg, "4000000000 images"));
  // The same through gzip: inflation stops with the real data.
  msg = message_of<siam::io_error>(
      [&] { (void)siam::data::read_idx_images_bytes(gzip(b), "huge.idx.gz"); });
  CHECK(contains(msg, "huge.idx.gz"));
  CHECK(contains(msg, "truncated body"));
  Bytes l = label_header(4000000000u);
  l.resize(100, 1);
  msg = message_of<siam::io_error>(
      [&] { (void)siam::data::read_idx_labels_bytes(gzip(l), "huge-labels.gz"); });
  CHECK(contains(msg, "truncated body"));
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(secs < 1.0);
}

TEST_CASE("load_mnist_dir: split, missing files and sizes") {
  TempDir dir;
  const Dataset t10k = small_dataset(30, 28, 28);

  SUBCASE("missing directory") {
    const std::string msg = message_of<siam::io_error>(
        [&] { (void)siam::presets::load_mnist_dir(dir / "absent", 5, 5); });
    CHECK(contains(msg, (dir / "absent").string()));
    CHECK(contains(msg, "does not exist"));
    CHECK(contains(msg, "t10k-images-idx3-ubyte"));
  }
  SUBCASE("directory without the files") {
    const std::string msg =
        message_of<siam::io_error>([&] { (void)siam::presets::load_mnist_dir(dir.path, 5, 5); });
    CHECK(contains(msg, dir.path.string()));
    CHECK(contains(msg, "missing t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]"));
    CHECK(contains(msg, "train-images-idx3-ubyte"));
  }
  SUBCASE("half a train pair") {
    siam::data::write_idx(dir / "t10k-images-idx3-ubyte.gz", dir / "t10k-labels-idx1-ubyte.gz",
                          t10k, true);
    siam::data::write_idx(dir / "train-images-idx3-ubyte", dir / "unrelated", t10k, false);
    const std::string msg =
        message_of<siam::io_error>([&] { (void)siam::presets::load_mnist_dir(dir.path, 5, 5); });
    CHECK(contains(msg, "missing train-labels-idx1-ubyte[.gz]"));
  }
  SUBCASE("only t10k: split into train and test") {
    siam::data::write_idx(dir / "t10k-images-idx3-ubyte.gz", dir / "t10k-labels-idx1-ubyte.gz",
                          t10k, true);
    const auto m = siam::presets::load_mnist_dir(dir.path, 20, 10);
    CHECK(m.train.size() == 20);
    CHECK(m.test.size() == 10);
    CHECK(m.train.images == t10k.slice(0, 20).images);
    CHECK(m.test.labels == t10k.slice(20, 10).labels);
    CHECK(m.note == "only t10k files found: images 0..19 train, 20..29 test");

    const std::string msg = message_of<siam::value_error>(
        [&] { (void)siam::presets::load_mnist_dir(dir.path, 20, 11); });
    CHECK(contains(msg, "train_size 20 + test_size 11 = 31 exceeds its 30 images"));
    CHECK_THROWS_AS((void)siam::presets::load_mnist_dir(dir.path, 0, 5), siam::value_error);
  }
  SUBCASE("train and t10k") {
    const Dataset train = small_dataset(40, 28, 28).slice(5, 35);
    siam::data::write_idx(dir / "t10k-images-idx3-ubyte", dir / "t10k-labels-idx1-ubyte", t10k,
                          false);
    siam::data::write_idx(dir / "train-images-idx3-ubyte.gz", dir / "train-labels-idx1-ubyte.gz",
                          train, true);
    const auto m = siam::presets::load_mnist_dir(dir.path, 30, 25);
    CHECK(m.train.labels == train.slice(0, 30).labels);
    CHECK(m.train.images == train.slice(0, 30).images);
    CHECK(m.test.images == t10k.slice(0, 25).images);
    CHECK(contains(m.note, "train: images 0..29 of train-images-idx3-ubyte.gz"));
    const std::string msg = message_of<siam::value_error>(
        [&] { (void)siam::presets::load_mnist_dir(dir.path, 36, 5); });
    CHECK(contains(msg, "train_size 36 exceeds the 35 images"));
  }
}

TEST_CASE("real MNIST t10k (when SIAM_MNIST_DIR is set)") {
  const char* env = std::getenv("SIAM_MNIST_DIR");
  if (env == nullptr || *env == '\0') {
    MESSAGE("SIAM_MNIST_DIR not set: real MNIST check skipped");
    return;
  }
  const fs::path dir(env);
  const auto im = siam::presets::detail::find_idx(dir, "t10k-images-idx3-ubyte");
  const auto lb = siam::presets::detail::find_idx(dir, "t10k-labels-idx1-ubyte");
  if (!im || !lb) {
    MESSAGE("SIAM_MNIST_DIR=" << dir.string() << " has no t10k files: check skipped");
    return;
  }
  const Dataset ds = siam::data::read_idx(*im, *lb);
  CHECK(ds.size() == 10000);
  CHECK(ds.rows == 28);
  CHECK(ds.cols == 28);
  const std::vector<std::size_t> expected{980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009};
  CHECK(ds.class_counts(10) == expected);
  const auto m = siam::presets::load_mnist_dir(dir);
  CHECK(m.train.size() == 5000);
  CHECK(m.test.size() == 5000);
  MESSAGE("load_mnist_dir: " << m.note);
}

TEST_CASE("synthetic digits: shape, range, determinism, balance") {
  const Dataset a = siam::data::synthetic_digits(1005, 7);
  CHECK(a.rows == 28);
  CHECK(a.cols == 28);
  CHECK(a.size() == 1005);
  CHECK(a.images.size() == 1005 * 784);
  bool in_range = true;
  for (const float v : a.images)
    in_range = in_range && v >= 0.0f && v <= 1.0f;
  CHECK(in_range);

  const auto counts = a.class_counts(10);
  for (std::size_t c = 0; c < 10; ++c)
    CHECK(counts[c] == (c < 5 ? 101 : 100));  // i % 10

  const Dataset b = siam::data::synthetic_digits(1005, 7);
  CHECK(a.labels == b.labels);
  CHECK(a.images == b.images);  // bit-identical
  const Dataset c = siam::data::synthetic_digits(1005, 8);
  CHECK(a.labels != c.labels);
  CHECK(a.images != c.images);

  // Every image has ink, not too much of it, and its centre of mass near the centre.
  for (std::size_t i = 0; i < a.size(); ++i) {
    double mass = 0.0, mx = 0.0, my = 0.0;
    float peak = 0.0f;
    for (std::size_t y = 0; y < 28; ++y)
      for (std::size_t x = 0; x < 28; ++x) {
        const float v = a.image(i)[y * 28 + x];
        mass += v;
        mx += v * (x + 0.5);
        my += v * (y + 0.5);
        peak = std::max(peak, v);
      }
    if (peak < 0.99f || mass < 20.0 || mass > 300.0 || std::abs(mx / mass - 14.0) > 3.0 ||
        std::abs(my / mass - 14.0) > 3.0) {
      FAIL_CHECK("image " << i << " (label " << int(a.labels[i]) << "): peak " << peak << ", mass "
                          << mass << ", centre " << mx / mass << ", " << my / mass);
    }
  }
  // Pixels are k / 255 like MNIST bytes, so the set survives an IDX round trip exactly.
  TempDir dir;
  siam::data::write_idx(dir / "im.gz", dir / "lb.gz", a, true);
  const Dataset back = siam::data::read_idx(dir / "im.gz", dir / "lb.gz");
  CHECK(back.images == a.images);
  CHECK(back.labels == a.labels);

  CHECK_THROWS_AS((void)siam::data::synthetic_digits(0, 1), siam::value_error);
  siam::Rng rng(1);
  std::vector<float> img(784);
  CHECK_THROWS_AS(siam::data::render_digit(10, rng, img.data()), siam::value_error);
}

TEST_CASE("synthetic digits: classes are distinct (1-NN on raw pixels)") {
  // Handwriting variation makes classes overlap, but a 1-NN on pixels must do far
  // better than the 10 % of chance; MNIST itself gives about 88 % at this size.
  const Dataset train = siam::data::synthetic_digits(1000, 1);
  const Dataset test = siam::data::synthetic_digits(300, 2);
  const double acc =
      siam::metrics::knn_accuracy(train.images.data(), train.labels.data(), train.size(),
                                  test.images.data(), test.labels.data(), test.size(), 784, 1);
  MESSAGE("1-NN pixel accuracy on synthetic digits: " << acc);
  CHECK(acc > 0.7);
}

TEST_CASE("PairSampler: balance, validity, reproducibility") {
  const Dataset ds = siam::data::synthetic_digits(200, 3);
  const siam::data::PairSampler sampler(ds.labels);
  CHECK(sampler.num_classes() == 10);
  CHECK(sampler.class_indices(4).size() == 20);
  for (const std::uint32_t i : sampler.class_indices(4))
    CHECK(ds.labels[i] == 4);
  CHECK_THROWS_AS((void)sampler.class_indices(10), siam::value_error);

  siam::Rng rng(42);
  std::vector<std::uint32_t> first, second;
  std::vector<float> similar;
  std::size_t n_similar = 0, total = 0;
  std::vector<std::size_t> class_seen(10, 0);
  const std::size_t batches = 100, n = 1000;
  for (std::size_t b = 0; b < batches; ++b) {
    sampler.sample(rng, n, first, second, similar);
    REQUIRE(first.size() == n);
    REQUIRE(second.size() == n);
    REQUIRE(similar.size() == n);
    for (std::size_t p = 0; p < n; ++p) {
      const auto la = ds.labels[first[p]], lb = ds.labels[second[p]];
      ++class_seen[la];
      if (similar[p] == 1.0f) {
        ++n_similar;
        if (first[p] == second[p] || la != lb) FAIL_CHECK("bad similar pair " << p);
      } else {
        if (similar[p] != 0.0f || la == lb) FAIL_CHECK("bad dissimilar pair " << p);
      }
    }
    total += n;
  }
  // n_similar ~ Binomial(1e5, 0.5): sd = sqrt(1e5) / 2 ~ 158. Allow 5 sd (+-791): a
  // correct sampler passes for practically every seed (and the seed is fixed anyway).
  const double frac = static_cast<double>(n_similar) / static_cast<double>(total);
  CHECK(frac > 0.5 - 0.00791);
  CHECK(frac < 0.5 + 0.00791);
  // The first image's class is uniform: ~10000 each (sd ~95), so 9000 is ~10 sd away.
  for (const std::size_t s : class_seen)
    CHECK(s > 9000);

  // Capacity is reused: the same n does not reallocate.
  const auto* p1 = first.data();
  const auto* p3 = similar.data();
  sampler.sample(rng, n, first, second, similar);
  CHECK(first.data() == p1);
  CHECK(similar.data() == p3);

  // Reproducible for a seed.
  siam::Rng r1(9), r2(9);
  std::vector<std::uint32_t> f1, s1, f2, s2;
  std::vector<float> y1, y2;
  sampler.sample(r1, 500, f1, s1, y1);
  sampler.sample(r2, 500, f2, s2, y2);
  CHECK(f1 == f2);
  CHECK(s1 == s2);
  CHECK(y1 == y2);
}

TEST_CASE("PairSampler: classes come from the labels; errors name real labels") {
  std::vector<std::uint8_t> labels{0, 0, 1, 2, 2};
  std::string msg = message_of<siam::value_error>([&] { siam::data::PairSampler s(labels); });
  CHECK(contains(msg, "class 1 has 1 image"));
  CHECK_THROWS_AS(siam::data::PairSampler({0, 0, 0}), siam::value_error);
  // three classes with arbitrary label values
  const std::vector<int> odd{-5, 40, 40, 7, -5, 7, 40};
  siam::data::PairSampler s(odd);
  CHECK(s.num_classes() == 3);
  CHECK(s.class_label(0) == -5);
  CHECK(s.class_label(2) == 40);
  CHECK(s.class_indices(2) == std::vector<std::uint32_t>{1, 2, 6});
  msg = message_of<siam::value_error>([] { siam::data::PairSampler p({3, 3, 9}); });
  CHECK(contains(msg, "class 9 has 1 image"));
  CHECK_NOTHROW(siam::data::PairSampler({0, 1, 1, 0}));
  siam::Rng rng(5);
  std::vector<std::uint32_t> a, b;
  s.sample_positive(rng, 50, a, b);
  for (std::size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i] != b[i]);
    CHECK(odd[a[i]] == odd[b[i]]);
  }
}

TEST_CASE("PKSampler: P distinct classes of K distinct images, reproducible; errors") {
  std::vector<int> labels;
  for (int c = 0; c < 6; ++c)
    for (int i = 0; i < 5 + c; ++i)
      labels.push_back(10 * c);
  siam::data::PKSampler pk(labels, 4, 3);
  siam::Rng r1(9), r2(9);
  std::vector<std::uint32_t> rows, rows2;
  std::vector<std::int64_t> lab, lab2;
  for (int step = 0; step < 20; ++step) {
    pk.sample(r1, rows, lab);
    pk.sample(r2, rows2, lab2);
    CHECK(rows == rows2);
    REQUIRE(rows.size() == 12);
    std::vector<std::int64_t> classes;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      CHECK(labels[rows[i]] == lab[i]);
      if (i % 3 == 0) classes.push_back(lab[i]);
      if (i % 3 != 0) CHECK(lab[i] == lab[i - 1]);
    }
    std::sort(classes.begin(), classes.end());
    CHECK(std::unique(classes.begin(), classes.end()) == classes.end());  // distinct classes
    std::vector<std::uint32_t> sorted(rows);
    std::sort(sorted.begin(), sorted.end());
    CHECK(std::unique(sorted.begin(), sorted.end()) == sorted.end());  // distinct images
  }
  std::string msg = message_of<siam::value_error>([&] { siam::data::PKSampler p(labels, 4, 6); });
  CHECK(contains(msg, "class 0 has 5 image(s), fewer than K = 6"));
  CHECK_NOTHROW(siam::data::PKSampler(labels, 4, 6, true));
  CHECK_THROWS_AS(siam::data::PKSampler(labels, 7, 2), siam::value_error);
  CHECK_THROWS_AS(siam::data::PKSampler(labels, 1, 2), siam::value_error);
}

TEST_CASE("Dataset labels and P x K sampling with 10,000 classes") {
  // 10,000 classes of 3 images each, labels spread over 64 bits' worth of room (the largest
  // is 9999 * 1000003, past 32 bits), rows interleaved so classes are not contiguous.
  constexpr std::int64_t classes = 10000, per_class = 3;
  Dataset ds;
  ds.rows = ds.cols = 1;
  for (std::int64_t i = 0; i < per_class; ++i)
    for (std::int64_t c = 0; c < classes; ++c) {
      ds.labels.push_back(c * 1000003);
      ds.images.push_back(0.5f);
    }
  ds.validate();
  const Dataset tail = ds.slice(ds.size() - 2, 2);
  CHECK(tail.labels ==
        std::vector<std::int64_t>{9998 * std::int64_t{1000003}, 9999 * std::int64_t{1000003}});

  siam::data::PKSampler pk(ds.labels, 50, per_class);
  CHECK(pk.num_classes() == static_cast<std::size_t>(classes));
  CHECK(pk.batch_size() == 150);
  siam::Rng rng(4);
  std::vector<std::uint32_t> rows;
  std::vector<std::int64_t> lab;
  std::vector<char> seen(static_cast<std::size_t>(classes), 0);
  for (int step = 0; step < 1000; ++step) {
    pk.sample(rng, rows, lab);
    REQUIRE(rows.size() == 150);
    std::vector<std::int64_t> batch_classes;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      REQUIRE(ds.labels[rows[i]] == lab[i]);  // the label of the row drawn
      if (i % per_class == 0) batch_classes.push_back(lab[i]);
      seen[static_cast<std::size_t>(lab[i] / 1000003)] = 1;
    }
    std::sort(batch_classes.begin(), batch_classes.end());
    REQUIRE(std::unique(batch_classes.begin(), batch_classes.end()) == batch_classes.end());
    std::vector<std::uint32_t> sorted(rows);
    std::sort(sorted.begin(), sorted.end());
    REQUIRE(std::unique(sorted.begin(), sorted.end()) == sorted.end());  // K distinct images
  }
  // 50,000 class draws from 10,000 classes: each is missed with probability
  // (1 - 1/200)^1000 < 0.007, so far more than 9,000 classes appear (the seed is fixed).
  CHECK(std::count(seen.begin(), seen.end(), 1) > 9000);
}

TEST_CASE("IDX labels: one byte on disk, int64 in memory; wider labels are refused") {
  TempDir dir;
  Dataset ds = small_dataset(3, 2, 2);
  ds.labels = {0, 255, 7};
  siam::data::write_idx(dir / "im", dir / "lb", ds, false);
  const Bytes raw = read_bytes(dir / "lb");
  REQUIRE(raw.size() == 8 + 3);
  CHECK(raw[9] == 255);
  CHECK(siam::data::read_idx(dir / "im", dir / "lb", 255).labels == ds.labels);
  for (const std::int64_t bad : {std::int64_t{256}, std::int64_t{-1}}) {
    ds.labels[1] = bad;
    const std::string msg = message_of<siam::value_error>(
        [&] { siam::data::write_idx(dir / "im2", dir / "lb2", ds, false); });
    CHECK(contains(msg, "label " + std::to_string(bad) + " of image 1"));
    CHECK_FALSE(fs::exists(dir / "im2"));  // checked before either file is written
    CHECK_FALSE(fs::exists(dir / "lb2"));
  }
}

TEST_CASE("TripletSampler: valid triplets, reproducible; errors") {
  const std::vector<std::uint8_t> labels{1, 1, 2, 3, 3, 3, 2};
  siam::data::TripletSampler ts(labels);
  siam::Rng rng(3);
  std::vector<std::uint32_t> a, p, n;
  ts.sample(rng, 200, a, p, n);
  for (std::size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i] != p[i]);
    CHECK(labels[a[i]] == labels[p[i]]);
    CHECK(labels[a[i]] != labels[n[i]]);
  }
  CHECK_THROWS_AS(siam::data::TripletSampler(std::vector<int>{1, 1, 1}), siam::value_error);
  CHECK_THROWS_AS(siam::data::TripletSampler(std::vector<int>{1, 2, 3}), siam::value_error);
}

TEST_CASE("io/gzip: round trip, concatenated members, errors headed by the caller's names") {
  std::vector<std::uint8_t> raw(200000);
  for (std::size_t i = 0; i < raw.size(); ++i)
    raw[i] = static_cast<std::uint8_t>((i * 7919) >> 5);
  const auto gz = siam::io::gzip_bytes(raw, "mem");
  CHECK(siam::io::is_gzip(gz));
  CHECK_FALSE(siam::io::is_gzip(raw));
  CHECK(siam::io::gzip_bytes(raw, "mem") == gz);  // deterministic
  std::vector<std::uint8_t> two = gz;
  two.insert(two.end(), gz.begin(), gz.end());
  siam::io::GzipReader reader(two, "two.gz", "unpack");
  std::vector<std::uint8_t> out;
  reader.read(out, 3 * raw.size());
  CHECK(reader.finished());
  CHECK(out.size() == 2 * raw.size());
  CHECK(std::equal(raw.begin(), raw.end(), out.begin()));
  CHECK(std::equal(raw.begin(), raw.end(), out.begin() + static_cast<std::ptrdiff_t>(raw.size())));
  const auto half = static_cast<std::ptrdiff_t>(gz.size() / 2);
  const std::vector<std::uint8_t> cut(gz.begin(), gz.begin() + half);
  siam::io::GzipReader short_reader(cut, "cut.gz", "unpack");
  std::vector<std::uint8_t> part;
  CHECK_THROWS_WITH_AS(short_reader.read(part, raw.size()),
                       doctest::Contains("unpack: cut.gz: gzip stream ends early"), siam::io_error);
}
