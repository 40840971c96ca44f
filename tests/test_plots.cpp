// Tests of the PLplot figure writers of examples/mnist_siamese (plots.hpp).
// Built with a doctest main provided elsewhere; link with plots.cpp and
// `pkg-config --libs plplot-c++ plplot`.
#include <doctest/doctest.h>

#include <siam/error.hpp>

#include "../examples/mnist_siamese/plots.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

// A fresh directory under the system temp dir, removed with its contents at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path =
        fs::temp_directory_path() / (std::string("siam_test_plots_") + std::to_string(::getpid()) +
                                     "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

struct PngInfo {
  bool valid = false;
  std::uint32_t width = 0, height = 0;
};

std::uint32_t be32(const std::string& s, std::size_t at) {
  std::uint32_t v = 0;
  for (std::size_t i = 0; i < 4; ++i)
    v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}

// Reads the PNG signature and the IHDR chunk (must come first) by hand.
PngInfo read_png_header(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::string head(24, '\0');
  if (!in.read(head.data(), 24)) return {};
  const std::string signature = "\x89PNG\r\n\x1a\n";
  if (head.compare(0, 8, signature) != 0) return {};
  if (be32(head, 8) != 13 || head.compare(12, 4, "IHDR") != 0) return {};
  return {true, be32(head, 16), be32(head, 20)};
}

// Names of all entries of dir.
std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  return names;
}

bool has_temp_files(const fs::path& dir) {
  for (const std::string& name : listing(dir)) {
    if (name.find(".tmp") != std::string::npos) return true;
  }
  return false;
}

// An asymmetric "L" plus a dot in the top-right corner, on a rows x cols canvas.
std::vector<float> l_shape(int rows = 28, int cols = 28) {
  std::vector<float> img(static_cast<std::size_t>(rows * cols), 0.0f);
  const auto at = [&](int r, int c) -> float& {
    return img[static_cast<std::size_t>(r * cols + c)];
  };
  const int bottom = std::max(0, rows * 7 / 8 - 1);
  for (int r = rows / 8; r <= bottom; ++r)
    at(r, cols / 5) = 1.0f;
  for (int c = cols / 5; c < cols * 3 / 4; ++c)
    at(bottom, c) = 1.0f;
  at(0, cols - 1) = 0.5f;
  return img;
}

std::vector<float> noise(std::mt19937& rng, int rows = 28, int cols = 28) {
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> img(static_cast<std::size_t>(rows * cols));
  for (float& v : img)
    v = u(rng);
  return img;
}

void check_png(const fs::path& file, std::uint32_t min_w = 200, std::uint32_t min_h = 150) {
  INFO("file: ", file.string());
  REQUIRE(fs::is_regular_file(file));
  const PngInfo info = read_png_header(file);
  CHECK(info.valid);
  CHECK(info.width >= min_w);
  CHECK(info.height >= min_h);
  CHECK(info.width <= 4000);
  CHECK(info.height <= 4000);
  CHECK_FALSE(has_temp_files(file.parent_path()));
}

}  // namespace

TEST_CASE("plots: write_tile writes a PNG of a 3x3 grid") {
  TempDir dir;
  std::mt19937 rng(7);
  std::vector<std::vector<float>> store;
  for (int i = 0; i < 8; ++i)
    store.push_back(noise(rng));
  store.push_back(l_shape());
  std::vector<plots::Image> images;
  for (const auto& s : store)
    images.push_back(plots::Image{s.data()});

  const fs::path png = dir.path / "samples.png";
  plots::write_tile(png, images, 3, "Training samples #1");
  check_png(png);
  CHECK(listing(dir.path) == std::vector<std::string>{"samples.png"});

  SUBCASE("overwrites an existing figure") {
    const auto before = fs::file_size(png);
    plots::write_tile(png, {images[8]}, 3, "one image");
    check_png(png);
    CHECK(fs::file_size(png) != before);
  }
  SUBCASE("other image sizes, incomplete last row") {
    const std::vector<float> wide = l_shape(10, 20), tall = l_shape(40, 12), line = l_shape(1, 9);
    const std::vector<plots::Image> mixed = {
        {wide.data(), 10, 20}, {tall.data(), 40, 12}, {line.data(), 1, 9}, {wide.data(), 10, 20}};
    plots::write_tile(png, mixed, 3, "mixed sizes");
    check_png(png);
  }
  SUBCASE("pixels outside [0,1] and NaN are tolerated") {
    std::vector<float> odd = l_shape();
    odd[0] = -3.0f;
    odd[1] = 7.0f;
    odd[2] = std::numeric_limits<float>::quiet_NaN();
    plots::write_tile(png, {plots::Image{odd.data()}}, 1, "odd values");
    check_png(png);
  }
}

TEST_CASE("plots: write_tile rejects bad arguments without leaving files") {
  TempDir dir;
  const std::vector<float> img = l_shape();
  const fs::path png = dir.path / "samples.png";
  CHECK_THROWS_AS(plots::write_tile(png, {}, 3, "t"), siam::value_error);
  CHECK_THROWS_AS(plots::write_tile(png, {plots::Image{img.data()}}, 0, "t"), siam::value_error);
  CHECK_THROWS_AS(plots::write_tile(png, {plots::Image{nullptr}}, 3, "t"), siam::value_error);
  CHECK_THROWS_AS(plots::write_tile(png, {plots::Image{img.data(), 0, 28}}, 3, "t"),
                  siam::value_error);
  CHECK(listing(dir.path).empty());
}

TEST_CASE("plots: write_pairs writes 10 captioned pairs") {
  TempDir dir;
  std::mt19937 rng(11);
  std::vector<std::vector<float>> store;
  for (int i = 0; i < 20; ++i)
    store.push_back(i % 3 == 0 ? l_shape() : noise(rng));
  std::vector<plots::Image> first, second;
  std::vector<std::string> captions;
  for (int i = 0; i < 10; ++i) {
    first.push_back({store[static_cast<std::size_t>(2 * i)].data()});
    second.push_back({store[static_cast<std::size_t>(2 * i + 1)].data()});
    captions.push_back(i % 2 == 0 ? "similar" : "dissimilar");
  }
  const fs::path png = dir.path / "pairs.png";
  plots::write_pairs(png, first, second, captions);
  check_png(png, 600, 200);

  plots::write_pairs(png, {first[0]}, {second[0]}, {});  // captions are optional
  check_png(png);

  CHECK_THROWS_AS(plots::write_pairs(png, first, {second[0]}, captions), siam::value_error);
  CHECK_THROWS_AS(plots::write_pairs(png, first, second, {"similar"}), siam::value_error);
  CHECK_THROWS_AS(plots::write_pairs(png, {}, {}, {}), siam::value_error);
  CHECK(listing(dir.path) == std::vector<std::string>{"pairs.png"});
}

TEST_CASE("plots: write_loss") {
  TempDir dir;
  const fs::path png = dir.path / "loss.png";

  SUBCASE("a noisy decreasing curve") {
    std::mt19937 rng(3);
    std::normal_distribution<float> n(0.0f, 0.02f);
    std::vector<float> loss;
    for (int i = 0; i < 2000; ++i)
      loss.push_back(0.3f * std::exp(static_cast<float>(-i) / 500.0f) + 0.05f + n(rng));
    plots::write_loss(png, loss, 50);
    check_png(png);
    const PngInfo info = read_png_header(png);
    CHECK(info.width == 900);
    CHECK(info.height == 600);
  }
  SUBCASE("empty loss gives a valid (empty) figure") {
    plots::write_loss(png, {}, 50);
    check_png(png);
  }
  SUBCASE("single value, window 0, window larger than the series") {
    plots::write_loss(png, {0.5f}, 0);
    check_png(png);
    plots::write_loss(png, {0.5f, 0.4f, 0.45f}, 1000);
    check_png(png);
  }
  SUBCASE("constant and non-finite values") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    plots::write_loss(png, {1.0f, 1.0f, 1.0f, 1.0f}, 2);
    check_png(png);
    plots::write_loss(png, {1.0f, nan, 0.8f, inf, 0.7f, 0.6f, nan}, 3);
    check_png(png);
    plots::write_loss(png, {nan, nan}, 3);
    check_png(png);
  }
  CHECK(listing(dir.path) == std::vector<std::string>{"loss.png"});
}

TEST_CASE("plots: write_embedding") {
  TempDir dir;
  const fs::path png = dir.path / "embedding.png";
  const std::vector<std::string> names = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};

  SUBCASE("5000 points in 10 classes, quickly") {
    std::mt19937 rng(5);
    std::normal_distribution<float> n(0.0f, 0.5f);
    const std::size_t count = 5000;
    std::vector<float> xy;
    std::vector<std::int64_t> labels;
    for (std::size_t i = 0; i < count; ++i) {
      const auto k = static_cast<std::uint8_t>(i % 10);
      xy.push_back(3.0f * std::cos(0.628f * static_cast<float>(k)) + n(rng));
      xy.push_back(3.0f * std::sin(0.628f * static_cast<float>(k)) + n(rng));
      labels.push_back(k);
    }
    const auto t0 = std::chrono::steady_clock::now();
    plots::write_embedding(png, xy.data(), labels.data(), count, "Test embedding, iteration 3000",
                           names);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    MESSAGE("write_embedding, 5000 points: ", seconds, " s");
    CHECK(seconds < 5.0);  // typically ~0.1 s; generous bound for loaded machines
    check_png(png, 600, 400);
  }
  SUBCASE("zero points gives a valid (empty) figure") {
    plots::write_embedding(png, nullptr, nullptr, 0, "empty", names);
    check_png(png);
  }
  SUBCASE("default class names, one point, identical points, non-finite points") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const std::vector<float> one = {0.5f, -0.5f};
    const std::vector<std::int64_t> l1 = {9};
    plots::write_embedding(png, one.data(), l1.data(), 1, "one point", {});
    check_png(png);
    const std::vector<float> same = {1, 1, 1, 1, nan, 2, 3, nan};
    const std::vector<std::int64_t> l4 = {0, 1, 2, 3};
    plots::write_embedding(png, same.data(), l4.data(), 4, "same #points", {"a", "b", "c", "d"});
    check_png(png);
  }
  SUBCASE("bad arguments") {
    const std::vector<float> xy = {0, 0, 1, 1};
    const std::vector<std::int64_t> bad = {0, 3};
    CHECK_THROWS_AS(plots::write_embedding(png, xy.data(), bad.data(), 2, "t", {"a", "b", "c"}),
                    siam::value_error);
    const std::vector<std::int64_t> ten = {0, 10};
    CHECK_THROWS_AS(plots::write_embedding(png, xy.data(), ten.data(), 2, "t", {}),
                    siam::value_error);
    CHECK_THROWS_AS(plots::write_embedding(png, nullptr, ten.data(), 2, "t", {}),
                    siam::value_error);
    const std::vector<std::int64_t> negative = {0, -1};
    CHECK_THROWS_AS(plots::write_embedding(png, xy.data(), negative.data(), 2, "t", {}),
                    siam::value_error);
    const std::vector<std::string> eleven(11, "x");
    CHECK_THROWS_AS(plots::write_embedding(png, nullptr, nullptr, 0, "t", eleven),
                    siam::value_error);
    CHECK(listing(dir.path).empty());
  }
}

TEST_CASE("plots: write_retrieval") {
  TempDir dir;
  std::mt19937 rng(13);
  const std::vector<float> query = l_shape();
  std::vector<std::vector<float>> store;
  for (int i = 0; i < 9; ++i)
    store.push_back(i % 2 == 0 ? l_shape() : noise(rng));
  std::vector<plots::Image> neighbours;
  std::vector<float> distances;
  for (int i = 0; i < 9; ++i) {
    neighbours.push_back({store[static_cast<std::size_t>(i)].data()});
    distances.push_back(0.1f * static_cast<float>(i + 1));
  }
  const fs::path png = dir.path / "retrieval.png";

  plots::write_retrieval(png, {query.data()}, neighbours, distances, "Retrieval");
  check_png(png, 600, 300);
  const std::vector<int> labels = {3, 3, 5, 3, 8, 3, 3, 1, 3};
  plots::write_retrieval(png, {query.data()}, neighbours, distances, "Retrieval, labels", labels,
                         3);
  check_png(png, 600, 300);
  plots::write_retrieval(png, {query.data()}, {neighbours[0]}, {0.0f}, "one neighbour");
  check_png(png);

  CHECK_THROWS_AS(plots::write_retrieval(png, {query.data()}, {}, {}, "t"), siam::value_error);
  CHECK_THROWS_AS(plots::write_retrieval(png, {query.data()}, neighbours, {0.1f}, "t"),
                  siam::value_error);
  CHECK_THROWS_AS(plots::write_retrieval(png, {query.data()}, neighbours, distances, "t", {1, 2}),
                  siam::value_error);
  CHECK_THROWS_AS(plots::write_retrieval(png, {nullptr}, neighbours, distances, "t"),
                  siam::value_error);
  CHECK(listing(dir.path) == std::vector<std::string>{"retrieval.png"});
}

TEST_CASE("plots: unwritable destinations throw io_error and leave nothing behind") {
  TempDir dir;
  const fs::path regular = dir.path / "not_a_directory";
  std::ofstream(regular) << "x";
  const std::vector<float> img = l_shape();
  const std::vector<float> xy = {0, 0};
  const std::vector<std::int64_t> labels = {0};

  const std::vector<fs::path> targets = {regular / "x.png", dir.path / "missing" / "x.png"};
  for (const fs::path& png : targets) {
    INFO("target: ", png.string());
    const auto expect_io_error = [&](auto&& write) {
      try {
        write();
        FAIL("no exception");
      } catch (const siam::io_error& e) {
        CHECK(std::string(e.what()).find(png.string()) != std::string::npos);
      }
    };
    expect_io_error([&] { plots::write_tile(png, {plots::Image{img.data()}}, 1, "t"); });
    expect_io_error([&] { plots::write_pairs(png, {{img.data()}}, {{img.data()}}, {"similar"}); });
    expect_io_error([&] { plots::write_loss(png, {1.0f, 0.5f}, 2); });
    expect_io_error([&] { plots::write_loss(png, {}, 2); });
    expect_io_error([&] { plots::write_embedding(png, xy.data(), labels.data(), 1, "t", {}); });
    expect_io_error([&] { plots::write_embedding(png, nullptr, nullptr, 0, "t", {}); });
    expect_io_error(
        [&] { plots::write_retrieval(png, {img.data()}, {{img.data()}}, {0.5f}, "t"); });
  }
  // Only the regular file is left; it is unchanged.
  CHECK(listing(dir.path) == std::vector<std::string>{"not_a_directory"});
  std::ifstream in(regular);
  CHECK(std::string(std::istreambuf_iterator<char>(in), {}) == "x");

  // The writers still work after the failures.
  plots::write_loss(dir.path / "loss.png", {1.0f, 0.5f}, 2);
  check_png(dir.path / "loss.png");
}

TEST_CASE("plots: a path that is a directory is rejected cleanly") {
  TempDir dir;
  fs::create_directories(dir.path / "loss.png");
  CHECK_THROWS_AS(plots::write_loss(dir.path / "loss.png", {1.0f}, 1), siam::io_error);
  CHECK_FALSE(has_temp_files(dir.path));
  CHECK_THROWS_AS(plots::write_loss(dir.path / "", {1.0f}, 1), siam::value_error);
}
