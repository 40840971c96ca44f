// Real images: PNG and JPEG decoding (exact and within JPEG's quantisation error), hostile
// files, image folders built on the fly (labels, class names, splits, every kind of bad
// input), transforms against hand-computed values, and the streaming loader (identical
// batches for 1, 2 and 4 threads, errors rethrown naming the file, checkpoint replay).
// The PNG and JPEG cases need libpng / libturbojpeg (SIAM_TEST_PNG / SIAM_TEST_JPEG) and
// say so when they are skipped.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory_resource>
#include <siam/data/image_folder.hpp>
#include <siam/data/loader.hpp>
#include <siam/data/transforms.hpp>
#include <siam/siamese.hpp>
#include <siam/train/folder_batches.hpp>
#include <siam/train/siamese_trainer.hpp>
#include <string>
#include <vector>

#ifdef SIAM_TEST_PNG
#include <siam/data/png.hpp>

#include "support/png_writer.hpp"
#endif
#ifdef SIAM_TEST_JPEG
#include <siam/data/jpeg.hpp>
#endif

namespace fs = std::filesystem;
using siam::data::FloatImage;
using siam::data::Image;

namespace {

/// A fresh temporary folder, removed with its contents at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/siam_images_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path, ec);
  }
};

void write_bytes(const fs::path& p, const std::vector<unsigned char>& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const siam::error& e) {
    return e.what();
  }
  return "(no exception)";
}

/// A smooth test picture: channel c of pixel (r, x) as 8 bits.
unsigned sample(std::size_t r, std::size_t x, std::size_t c, unsigned salt = 0) {
  return static_cast<unsigned>((r * 7 + x * 5 + c * 60 + salt * 37) % 200 + 20);
}

/// A smooth picture for JPEG (no edges: its error stays near the quantisation step).
unsigned smooth(std::size_t r, std::size_t x, std::size_t c, unsigned salt = 0) {
  return static_cast<unsigned>(std::min<std::size_t>(30 + 2 * r + x + 25 * c + salt, 250));
}

FloatImage float_image(std::size_t rows, std::size_t cols, std::size_t ch,
                       const std::vector<float>& v) {
  return FloatImage{rows, cols, ch, v};
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Transforms (no codec needed)

TEST_CASE("resize: antialiased bilinear shrink, bilinear enlargement and area average by hand") {
  // 1 x 4 -> 1 x 2 bilinear (scale 2, triangle of half-width 2, PIL's windows, weights
  // renormalised at the edges): [(3a + 3b + c) / 7, (b + 3c + 3d) / 7].
  const auto row = float_image(1, 4, 1, {0.1f, 0.5f, 0.2f, 0.9f});
  auto out = siam::data::resize(row, 1, 2);
  CHECK(out.pixels[0] == doctest::Approx((3 * 0.1 + 3 * 0.5 + 0.2) / 7).epsilon(1e-6));
  CHECK(out.pixels[1] == doctest::Approx((0.5 + 3 * 0.2 + 3 * 0.9) / 7).epsilon(1e-6));
  // Enlargement 1 x 2 -> 1 x 4 is plain bilinear with half-pixel centres, edges clamped.
  out = siam::data::resize(float_image(1, 2, 1, {0.2f, 0.6f}), 1, 4);
  const std::vector<double> up = {0.2, 0.3, 0.5, 0.6};
  for (std::size_t i = 0; i < 4; ++i)
    CHECK(out.pixels[i] == doctest::Approx(up[i]).epsilon(1e-6));
  // Area 1 x 4 -> 1 x 2: pair averages; 1 x 3 -> 1 x 2: [(a + b/2), (b/2 + c)] / 1.5.
  out = siam::data::resize(row, 1, 2, siam::data::Filter::area);
  CHECK(out.pixels[0] == doctest::Approx(0.3).epsilon(1e-6));
  CHECK(out.pixels[1] == doctest::Approx(0.55).epsilon(1e-6));
  out =
      siam::data::resize(float_image(1, 3, 1, {0.3f, 0.6f, 0.9f}), 1, 2, siam::data::Filter::area);
  CHECK(out.pixels[0] == doctest::Approx((0.3 + 0.3) / 1.5).epsilon(1e-6));
  CHECK(out.pixels[1] == doctest::Approx((0.3 + 0.9) / 1.5).epsilon(1e-6));
  // Two dimensions, two channels: separable, channels independent; same size = identity.
  std::vector<float> v(3 * 5 * 2);
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<float>(i % 7) / 7.0f;
  const auto img = float_image(3, 5, 2, v);
  const auto same = siam::data::resize(img, 3, 5);
  for (std::size_t i = 0; i < v.size(); ++i)
    CHECK(same.pixels[i] == doctest::Approx(v[i]).epsilon(1e-6));
  const auto down = siam::data::resize(img, 1, 1, siam::data::Filter::area);
  for (std::size_t c = 0; c < 2; ++c) {
    double mean = 0;
    for (std::size_t i = 0; i < 15; ++i)
      mean += v[i * 2 + c] / 15.0;
    CHECK(down.pixels[c] == doctest::Approx(mean).epsilon(1e-6));
  }
  CHECK_THROWS_AS(siam::data::resize(img, 0, 4), siam::value_error);
  CHECK_THROWS_AS(siam::data::resize(FloatImage{}, 2, 2), siam::value_error);
}

TEST_CASE("resize of the shorter side, centre crop, flip, jitter, normalisation") {
  const auto img = float_image(30, 40, 1, std::vector<float>(1200, 0.5f));
  auto r = siam::data::resize_shorter(img, 24);
  CHECK(r.rows == 24);
  CHECK(r.cols == 32);
  r = siam::data::resize_shorter(float_image(41, 30, 1, std::vector<float>(1230, 0.5f)), 20);
  CHECK(r.cols == 20);
  CHECK(r.rows == 27);  // 20 * 41 / 30 = 27.33, rounded down as torchvision does
  // Centre crop of 1 x 5 to 1 x 2: margin 3, left = round-half-even(1.5) = 2.
  auto c = siam::data::center_crop(float_image(1, 5, 1, {0, 1, 2, 3, 4}), 1, 2);
  CHECK(c.pixels == std::vector<float>{2, 3});
  CHECK_THROWS_AS(siam::data::center_crop(img, 31, 10), siam::value_error);
  auto f = float_image(1, 3, 2, {1, 2, 3, 4, 5, 6});
  siam::data::hflip(f);
  CHECK(f.pixels == std::vector<float>{5, 6, 3, 4, 1, 2});
  auto b = float_image(1, 2, 1, {0.25f, 0.75f});
  siam::data::adjust_brightness(b, 1.5f);
  CHECK(b.pixels[0] == doctest::Approx(0.375));
  CHECK(b.pixels[1] == doctest::Approx(1.0));  // clamped
  // Contrast blends with the grey mean: RGB grey = 0.299 R + 0.587 G + 0.114 B.
  auto k = float_image(1, 2, 3, {1, 0, 0, 0, 0, 1});
  siam::data::adjust_contrast(k, 0.5f);
  const double m = (0.299 + 0.114) / 2;
  CHECK(k.pixels[0] == doctest::Approx(0.5 + 0.5 * m));
  CHECK(k.pixels[1] == doctest::Approx(0.5 * m));
  CHECK(k.pixels[5] == doctest::Approx(0.5 + 0.5 * m));
}

TEST_CASE("centre crop of an even margin") {
  // 1 x 6 -> 1 x 3: margin 3, left = round-half-even(1.5) = 2.
  const auto c = siam::data::center_crop(float_image(1, 6, 1, {0, 1, 2, 3, 4, 5}), 1, 3);
  CHECK(c.pixels == std::vector<float>{2, 3, 4});
  // 1 x 7 -> 1 x 2: margin 5, left = round-half-even(2.5) = 2.
  const auto d = siam::data::center_crop(float_image(1, 7, 1, {0, 1, 2, 3, 4, 5, 6}), 1, 2);
  CHECK(d.pixels == std::vector<float>{2, 3});
}

TEST_CASE("random resized crop: boxes inside the image, in range, a pure function of the seed") {
  for (std::uint64_t i = 0; i < 200; ++i) {
    auto rng = siam::data::transform_rng(7, 3, i);
    const auto b = siam::data::random_resized_crop_box(48, 64, rng, 0.25, 1.0);
    REQUIRE(b.height >= 1);
    REQUIRE(b.top + b.height <= 48);
    REQUIRE(b.left + b.width <= 64);
    const double frac = static_cast<double>(b.height * b.width) / (48.0 * 64.0);
    CHECK(frac >= 0.2);  // 0.25 less the rounding of the sides
    CHECK(frac <= 1.0);
    auto again = siam::data::transform_rng(7, 3, i);
    const auto b2 = siam::data::random_resized_crop_box(48, 64, again, 0.25, 1.0);
    CHECK(b2.top == b.top);
    CHECK(b2.width == b.width);
  }
  // Seeds differ by epoch and index.
  auto a = siam::data::transform_rng(7, 3, 1), b = siam::data::transform_rng(7, 4, 1),
       c = siam::data::transform_rng(7, 3, 2);
  const auto x = a.next_u64();
  CHECK(x != b.next_u64());
  CHECK(x != c.next_u64());
  // An impossible ratio falls back to the central box with the ratio clamped.
  auto rng = siam::data::transform_rng(1, 1, 1);
  const auto wide = siam::data::random_resized_crop_box(10, 100, rng, 1.0, 1.0, 1.0, 2.0);
  CHECK(wide.height == 10);
  CHECK(wide.width == 20);
  CHECK(wide.left == 40);
}

TEST_CASE("apply_transform: evaluation path and normalisation into channel planes") {
  Image img{2, 2, 3, {}};
  for (std::size_t i = 0; i < 12; ++i)
    img.pixels.push_back(static_cast<std::uint8_t>(i * 20));
  siam::data::TransformSpec spec;
  spec.size = 2;
  spec.mean = {0.5f};
  spec.std = {0.25f};
  siam::Rng rng(1);
  std::vector<float> out(12);
  siam::data::apply_transform(img, spec, rng, out.data());
  // Plane c holds channel c of the 4 pixels in order.
  for (std::size_t c = 0; c < 3; ++c)
    for (std::size_t p = 0; p < 4; ++p)
      CHECK(out[c * 4 + p] == doctest::Approx((img.pixels[p * 3 + c] / 255.0 - 0.5) / 0.25));
  spec.mean = {0.1f, 0.2f};
  CHECK_THROWS_AS(siam::data::apply_transform(img, spec, rng, out.data()), siam::value_error);
}

TEST_CASE("apply_transform from 8-bit samples equals the float path: resize, crop, flip, jitter") {
  // Odd sizes, 1, 2 (the generic channel loop) and 3 channels, shrink and enlargement.
  for (std::size_t ch : {1u, 2u, 3u})
    for (auto [rows, cols, size] :
         {std::array<std::size_t, 3>{30, 47, 12}, std::array<std::size_t, 3>{41, 29, 16},
          std::array<std::size_t, 3>{9, 7, 20}}) {
      CAPTURE(ch);
      CAPTURE(rows);
      CAPTURE(cols);
      Image img{rows, cols, ch, {}};
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t x = 0; x < cols; ++x)
          for (std::size_t c = 0; c < ch; ++c)
            img.pixels.push_back(static_cast<std::uint8_t>((r * 31 + x * 17 + c * 90) % 256));
      const auto f = siam::data::to_float(img);
      for (bool augment : {false, true}) {
        CAPTURE(augment);
        siam::data::TransformSpec spec;
        spec.size = size;
        spec.augment = augment;
        spec.crop_scale_lo = 0.3;
        std::vector<float> out(ch * size * size);
        siam::Rng rng(7), ref_rng(7);
        siam::data::apply_transform(img, spec, rng, out.data());
        FloatImage x;
        if (augment) {  // the same draws, in the same order, on the float helpers
          const auto b = siam::data::random_resized_crop_box(rows, cols, ref_rng, 0.3, 1.0);
          x = siam::data::resize(siam::data::crop(f, b.top, b.left, b.height, b.width), size, size);
          if (ref_rng.bernoulli(0.5)) siam::data::hflip(x);
          siam::data::adjust_brightness(x, static_cast<float>(ref_rng.uniform(0.8, 1.2)));
          siam::data::adjust_contrast(x, static_cast<float>(ref_rng.uniform(0.8, 1.2)));
        } else {
          x = siam::data::center_crop(siam::data::resize_shorter(f, size), size, size);
        }
        double worst = 0;
        for (std::size_t c = 0; c < ch; ++c)
          for (std::size_t i = 0; i < size * size; ++i)
            worst =
                std::max(worst, double(std::abs(out[c * size * size + i] - x.pixels[i * ch + c])));
        CHECK(worst < 1e-5);
      }
    }
}

// ---------------------------------------------------------------------------------------
// Decoding

#ifdef SIAM_TEST_PNG
namespace {
std::vector<unsigned char> png_of(std::size_t rows, std::size_t cols, std::size_t ch,
                                  unsigned salt = 0) {
  std::vector<unsigned> v;
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t x = 0; x < cols; ++x)
      for (std::size_t c = 0; c < ch; ++c)
        v.push_back(sample(r, x, c, salt));
  const int type = ch == 1   ? PNG_COLOR_TYPE_GRAY
                   : ch == 2 ? PNG_COLOR_TYPE_GRAY_ALPHA
                   : ch == 3 ? PNG_COLOR_TYPE_RGB
                             : PNG_COLOR_TYPE_RGBA;
  return test_png::encode(static_cast<int>(rows), static_cast<int>(cols), type, 8, v);
}
}  // namespace

TEST_CASE("PNG: byte-exact decode of grey, grey + alpha, RGB and RGBA, any size, any request") {
  for (std::size_t ch : {1u, 2u, 3u, 4u}) {
    CAPTURE(ch);
    const auto bytes = png_of(37, 53, ch);
    const auto img = siam::data::read_png(bytes.data(), bytes.size(), "a.png");
    REQUIRE(img.rows == 37);
    REQUIRE(img.cols == 53);
    REQUIRE(img.channels == ch);
    std::size_t wrong = 0;
    for (std::size_t r = 0; r < 37; ++r)
      for (std::size_t x = 0; x < 53; ++x)
        for (std::size_t c = 0; c < ch; ++c)
          wrong += img.at(r, x, c) != sample(r, x, c);
    CHECK(wrong == 0);
  }
  // Grey to RGB copies; RGBA to RGB drops alpha; grey to grey + alpha adds opaque alpha.
  auto grey = png_of(3, 4, 1);
  auto rgb = siam::data::read_png(grey.data(), grey.size(), "g.png", 3);
  REQUIRE(rgb.channels == 3);
  CHECK(rgb.at(2, 3, 0) == sample(2, 3, 0));
  CHECK(rgb.at(2, 3, 2) == sample(2, 3, 0));
  auto ga = siam::data::read_png(grey.data(), grey.size(), "g.png", 2);
  CHECK(ga.at(1, 1, 0) == sample(1, 1, 0));
  CHECK(ga.at(1, 1, 1) == 255);
  auto rgba = png_of(3, 4, 4);
  rgb = siam::data::read_png(rgba.data(), rgba.size(), "c.png", 3);
  CHECK(rgb.at(2, 1, 2) == sample(2, 1, 2));
  // RGB to grey: an exactly grey pixel stays itself.
  const auto g3 = test_png::encode(1, 1, PNG_COLOR_TYPE_RGB, 8, {90, 90, 90});
  CHECK(siam::data::read_png(g3.data(), g3.size(), "g3.png", 1).pixels[0] == 90);
  // The old grey reader still works on the same files.
  const auto gray = siam::data::read_png_gray(grey.data(), grey.size(), "g.png");
  CHECK(gray.pixels[5] == doctest::Approx(sample(1, 1, 0) / 255.0));
}

TEST_CASE("PNG: hostile files and the pixel limit give io_error naming the file") {
  const auto valid = png_of(28, 28, 1);
  for (const auto& [name, bytes] : test_png::hostile(valid)) {
    CAPTURE(name);
    const auto msg = message_of(
        [&, &b = bytes, &n = name] { (void)siam::data::read_png(b.data(), b.size(), n); });
    CHECK(msg.find(name) != std::string::npos);
    if (name == "huge.png") CHECK(msg.find("above the limit") != std::string::npos);
  }
  siam::data::DecodeLimits small;
  small.max_pixels = 28 * 27;
  const auto msg = message_of(
      [&] { (void)siam::data::read_png(valid.data(), valid.size(), "x.png", 1, small); });
  CHECK(msg.find("x.png") != std::string::npos);
  CHECK(msg.find("28 x 28") != std::string::npos);
  small.max_pixels = 28 * 28;
  CHECK(siam::data::read_png(valid.data(), valid.size(), "x.png", 1, small).rows == 28);
  CHECK_THROWS_AS(siam::data::read_png(valid.data(), valid.size(), "x.png", 5), siam::value_error);
}
#else
TEST_CASE("PNG cases skipped: libpng not found") {
  MESSAGE("skipped: siam::png not built");
}
#endif

#ifdef SIAM_TEST_JPEG
namespace {
std::vector<unsigned char> jpeg_of(std::size_t rows, std::size_t cols, std::size_t ch,
                                   unsigned salt = 0, int quality = 95, bool progressive = false) {
  std::vector<unsigned char> px;
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t x = 0; x < cols; ++x)
      for (std::size_t c = 0; c < ch; ++c)
        px.push_back(static_cast<unsigned char>(smooth(r, x, c, salt)));
  tjhandle h = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  const int rc =
      tjCompress2(h, px.data(), static_cast<int>(cols), 0, static_cast<int>(rows),
                  ch == 1 ? TJPF_GRAY : TJPF_RGB, &buf, &size, ch == 1 ? TJSAMP_GRAY : TJSAMP_444,
                  quality, progressive ? TJFLAG_PROGRESSIVE : 0);
  std::vector<unsigned char> out(buf, buf + (rc == 0 ? size : 0));
  tjFree(buf);
  tjDestroy(h);
  REQUIRE(rc == 0);
  return out;
}
}  // namespace

TEST_CASE("JPEG: grey and RGB decode within the quantisation error, baseline and progressive") {
  for (std::size_t ch : {1u, 3u})
    for (bool progressive : {false, true}) {
      CAPTURE(ch);
      CAPTURE(progressive);
      const auto bytes = jpeg_of(40, 56, ch, 0, 95, progressive);
      const auto img = siam::data::read_jpeg(bytes.data(), bytes.size(), "a.jpg");
      REQUIRE(img.rows == 40);
      REQUIRE(img.cols == 56);
      REQUIRE(img.channels == ch);
      double worst = 0, mean = 0;
      for (std::size_t r = 0; r < 40; ++r)
        for (std::size_t x = 0; x < 56; ++x)
          for (std::size_t c = 0; c < ch; ++c) {
            const double d = std::abs(double(img.at(r, x, c)) - double(smooth(r, x, c)));
            worst = std::max(worst, d);
            mean += d / (40.0 * 56.0 * double(ch));
          }
      CHECK(mean < 1.5);
      CHECK(worst <= 6.0);
    }
  // Requests: a grey file as RGB (copies), an RGB file as grey (luma), RGBA opaque.
  const auto grey = jpeg_of(8, 8, 1);
  const auto as_rgb = siam::data::read_jpeg(grey.data(), grey.size(), "g.jpg", 3);
  CHECK(as_rgb.channels == 3);
  CHECK(as_rgb.at(3, 4, 0) == as_rgb.at(3, 4, 2));
  const auto rgb = jpeg_of(8, 8, 3);
  CHECK(siam::data::read_jpeg(rgb.data(), rgb.size(), "c.jpg", 1).channels == 1);
  const auto rgba = siam::data::read_jpeg(rgb.data(), rgb.size(), "c.jpg", 4);
  CHECK(rgba.at(7, 7, 3) == 255);
  const auto ga = siam::data::read_jpeg(grey.data(), grey.size(), "g.jpg", 2);
  CHECK(ga.at(7, 7, 1) == 255);
  CHECK(ga.at(7, 7, 0) == siam::data::read_jpeg(grey.data(), grey.size(), "g.jpg").at(7, 7, 0));
}

TEST_CASE(
    "JPEG: truncated, corrupt, empty, non-JPEG and oversized files give io_error naming the file") {
  const auto valid = jpeg_of(64, 64, 3);
  auto read = [](const std::vector<unsigned char>& b, const std::string& n) {
    return message_of([&] { (void)siam::data::read_jpeg(b.data(), b.size(), n); });
  };
  const std::vector<unsigned char> truncated(valid.begin(),
                                             valid.begin() + static_cast<long>(valid.size() / 2));
  auto msg = read(truncated, "half.jpg");
  CHECK(msg.find("half.jpg") != std::string::npos);
  CHECK(msg.find("truncated or corrupt") != std::string::npos);
  CHECK(read({}, "zero.jpg").find("zero.jpg: empty file") != std::string::npos);
  CHECK(read({'h', 'i', '\n'}, "t.jpg").find("not a JPEG") != std::string::npos);
  CHECK(read({0xff, 0xd8, 0xff}, "head.jpg").find("head.jpg") != std::string::npos);
  // The frame header (SOF) patched to claim 60000 x 60000: refused before allocating.
  auto huge = valid;
  bool patched = false;
  for (std::size_t i = 2; i + 8 < huge.size(); ++i)
    if (huge[i] == 0xff && (huge[i + 1] == 0xc0 || huge[i + 1] == 0xc2)) {
      huge[i + 5] = huge[i + 7] = 0xea;  // 0xea60 = 60000
      huge[i + 6] = huge[i + 8] = 0x60;
      patched = true;
      break;
    }
  REQUIRE(patched);
  msg = read(huge, "huge.jpg");
  CHECK(msg.find("huge.jpg") != std::string::npos);
  CHECK(msg.find("60000 x 60000") != std::string::npos);
  CHECK(msg.find("above the limit") != std::string::npos);
  // Garbage in the entropy-coded data.
  auto corrupt = valid;
  for (std::size_t i = corrupt.size() / 2; i < corrupt.size() - 2; i += 3)
    corrupt[i] = 0xff;
  CHECK(read(corrupt, "bad.jpg").find("bad.jpg") != std::string::npos);
  CHECK_THROWS_AS(siam::data::read_jpeg(fs::path("no/such.jpg")), siam::io_error);
}
TEST_CASE("JPEG: DCT-scaled decode to the smallest size at least min_side, close to a resize") {
  const auto bytes = jpeg_of(64, 48, 3, 0, 95);
  auto decode = [&](std::size_t min_side) {
    siam::data::DecodeLimits lim;
    lim.min_side = min_side;
    return siam::data::read_jpeg(bytes.data(), bytes.size(), "s.jpg", 3, lim);
  };
  CHECK(decode(0).cols == 48);
  CHECK(decode(48).cols == 48);
  const auto r25 = decode(25);  // 5/8 where the library has it (30 x 40), else full size
  CHECK(r25.cols >= 25);
  CHECK(r25.rows * 48 == r25.cols * 64);
  CHECK(decode(24).rows == 32);
  CHECK(decode(24).cols == 24);
  CHECK(decode(12).cols == 12);
  CHECK(decode(1).cols == 6);  // 1/8 at most
  // The half-size decode against the full decode shrunk by an area average.
  const auto full = siam::data::to_float(decode(0));
  const auto half = decode(24);
  const auto ref = siam::data::resize(full, 32, 24, siam::data::Filter::area);
  double worst = 0;
  for (std::size_t i = 0; i < half.pixels.size(); ++i)
    worst = std::max(worst, std::abs(half.pixels[i] / 255.0 - ref.pixels[i]) * 255.0);
  CHECK(worst <= 3.0);
  // read_jpeg_into reuses the buffer it is given.
  Image img;
  siam::data::read_jpeg_into(img, bytes.data(), bytes.size(), "s.jpg", 1);
  const auto* data = img.pixels.data();
  siam::data::DecodeLimits lim;
  lim.min_side = 12;
  siam::data::read_jpeg_into(img, bytes.data(), bytes.size(), "s.jpg", 1, lim);
  CHECK(img.rows == 16);
  CHECK(img.pixels.data() == data);
}
#else
TEST_CASE("JPEG cases skipped: libturbojpeg not found") {
  MESSAGE("skipped: siam::jpeg not built");
}
#endif

// ---------------------------------------------------------------------------------------
// Image folders and the loader (PNG and JPEG files)

#if defined(SIAM_TEST_PNG) && defined(SIAM_TEST_JPEG)
namespace {
siam::data::ImageFolderOptions codecs(std::size_t channels = 3) {
  siam::data::ImageFolderOptions o;
  o.codecs = {siam::data::png_codec(), siam::data::jpeg_codec()};
  o.channels = channels;
  return o;
}

/// root/<class>/<i>.png or .jpg: `per_class` images per class, alternating formats.
void make_tree(const fs::path& root, const std::vector<std::string>& classes, std::size_t per_class,
               std::size_t side = 20) {
  unsigned salt = 0;
  for (const auto& c : classes)
    for (std::size_t i = 0; i < per_class; ++i, ++salt) {
      if (i % 2 == 0)
        write_bytes(root / c / (std::to_string(i) + ".png"), png_of(side, side + i, 3, salt));
      else
        write_bytes(root / c / (std::to_string(i) + ".jpg"), jpeg_of(side + i, side, 3, salt));
    }
}

// Three classes of 4 images (12 x 12), read with at least 2 a class, transformed to 8 x 8:
// the loaders' small test set.
struct SmallTree {
  TempDir dir;
  siam::data::ImageFolder folder;
  siam::data::TransformSpec spec;
  SmallTree() : folder(open(dir)) { spec.size = 8; }
  static siam::data::ImageFolder open(const TempDir& d) {
    make_tree(d.path, {"a", "b", "c"}, 4, 12);
    auto o = codecs();
    o.min_per_class = 2;
    return siam::data::ImageFolder(d.path, o);
  }
};
}  // namespace

TEST_CASE("image folder: sorted class names, int64 labels, PNG and JPEG, non-ASCII names") {
  TempDir t;
  make_tree(t.path, {"zebra", "ant", "caf\xc3\xa9"}, 3);
  write_bytes(t.path / "ant" / "\xe6\x97\xa5\xe6\x9c\xac.png", png_of(5, 6, 1));  // a grey one
  const siam::data::ImageFolder f(t.path, codecs());
  REQUIRE(f.classes() == std::vector<std::string>{"ant", "caf\xc3\xa9", "zebra"});
  REQUIRE(f.size() == 10);
  const auto labels = f.labels();
  CHECK(labels == std::vector<std::int64_t>{0, 0, 0, 0, 1, 1, 1, 2, 2, 2});
  CHECK(f.path(0).filename() == "0.png");
  CHECK(f.path(3).filename() == "\xe6\x97\xa5\xe6\x9c\xac.png");
  const auto grey = f.load(3);  // stored grey, requested as RGB
  CHECK(grey.channels == 3);
  CHECK(grey.rows == 5);
  const auto png = f.load(4), jpg = f.load(5);
  CHECK(png.cols == 20);
  CHECK(jpg.rows == 21);
  CHECK(png.at(1, 2, 0) == sample(1, 2, 0, 6));  // class café's first image: salt 6
  // min_side: the JPEG (21 x 20) shrinks in its DCT to a shorter side of at least 10; PNG
  // is read at full size.
  const auto small = f.load(5, 10);
  CHECK(small.cols == 10);
  CHECK(small.rows == 11);
  CHECK(f.load(4, 10).cols == 20);
  CHECK(f.skipped().empty());
}

TEST_CASE("image folder: train/ and test/ subfolders and a split file") {
  TempDir t;
  make_tree(t.path / "train", {"b", "a"}, 2);
  make_tree(t.path / "test", {"a", "c"}, 1);
  auto o = codecs();
  o.split = "test";
  // b has no test image: an empty class folder, named.
  CHECK(message_of([&] { siam::data::ImageFolder f(t.path, o); }).find("b: empty class folder") !=
        std::string::npos);
  o.on_bad = siam::data::OnBadImage::skip;
  const siam::data::ImageFolder test(t.path, o);
  CHECK(test.classes() == std::vector<std::string>{"a", "b", "c"});  // the union of both
  CHECK(test.labels() == std::vector<std::int64_t>{0, 2});
  CHECK(test.skipped().size() == 1);
  o.split = "train";
  const siam::data::ImageFolder train(t.path, o);
  CHECK(train.labels() == std::vector<std::int64_t>{0, 0, 1, 1});

  TempDir s;
  make_tree(s.path, {"x", "y"}, 3);
  std::ofstream(s.path / "split.txt") << "# split\ntrain x/0.png\ntrain x/1.jpg\ntest x/2.png\n"
                                         "train y/0.png\ntest  y/1.jpg\ntrain y/2.png\n";
  auto so = codecs();
  so.split = "train";
  so.split_file = s.path / "split.txt";
  const siam::data::ImageFolder tr(s.path, so);
  REQUIRE(tr.size() == 4);
  CHECK(tr.path(3).filename() == "2.png");
  so.split = "test";
  const siam::data::ImageFolder te(s.path, so);
  REQUIRE(te.size() == 2);
  CHECK(te.labels() == std::vector<std::int64_t>{0, 1});
}

TEST_CASE("image folder: every bad input fails naming the file, or is skipped and listed") {
  struct Case {
    std::string name;  // what the message must name
    std::string reason;
    std::function<void(const fs::path&)> make;
  };
  const bool root_reads_all = ::geteuid() == 0;
  std::vector<Case> cases = {
      {"trunc.png", "truncated",
       [](const fs::path& r) {
         auto b = png_of(20, 20, 3);
         b.resize(b.size() / 2);
         write_bytes(r / "a" / "trunc.png", b);
       }},
      {"trunc.jpg", "truncated or corrupt",
       [](const fs::path& r) {
         auto b = jpeg_of(20, 20, 3);
         b.resize(b.size() / 2);
         write_bytes(r / "a" / "trunc.jpg", b);
       }},
      {"zero.png", "empty file (0 bytes)",
       [](const fs::path& r) { write_bytes(r / "a" / "zero.png", {}); }},
      {"notes.txt", "not a PNG or JPEG image",
       [](const fs::path& r) {
         write_bytes(r / "a" / "notes.txt", {'h', 'e', 'l', 'l', 'o'});
       }},
      {"huge.png", "above the limit",
       [](const fs::path& r) {
         const auto h = test_png::hostile(png_of(4, 4, 1));
         for (const auto& [n, b] : h)
           if (n == "huge.png") write_bytes(r / "a" / "huge.png", b);
       }},
      {"\xc3\xa9t\xc3\xa9.jpg", "not a PNG or JPEG image",
       [](const fs::path& r) {
         write_bytes(r / "a" / "\xc3\xa9t\xc3\xa9.jpg", {'x', 'y'});
       }},
      {"loop", "symlink loop",
       [](const fs::path& r) { fs::create_symlink("loop", r / "a" / "loop"); }},
      {"up", "symlink loop",
       [](const fs::path& r) { fs::create_directory_symlink(".", r / "a" / "up"); }},
      {"empty", "empty class folder",
       [](const fs::path& r) { fs::create_directories(r / "empty"); }},
      {"lonely", "fewer than the 2",
       [](const fs::path& r) { write_bytes(r / "lonely" / "only.png", png_of(8, 8, 3)); }},
  };
  if (!root_reads_all)
    cases.push_back({"secret.png", "cannot open", [](const fs::path& r) {
                       write_bytes(r / "a" / "secret.png", png_of(8, 8, 3));
                       fs::permissions(r / "a" / "secret.png", fs::perms::none);
                     }});
  else
    MESSAGE("the unreadable-file case is skipped: running as root, permissions do not stop reads");
  for (const auto& c : cases) {
    CAPTURE(c.name);
    TempDir t;
    make_tree(t.path, {"a", "b"}, 2);
    c.make(t.path);
    auto o = codecs();
    o.min_per_class = 2;
    const auto msg = message_of([&] { siam::data::ImageFolder f(t.path, o); });
    CHECK(msg.find(c.name) != std::string::npos);
    CHECK(msg.find(c.reason) != std::string::npos);
    CHECK(msg.find('\n') == std::string::npos);
    o.on_bad = siam::data::OnBadImage::skip;
    const siam::data::ImageFolder f(t.path, o);
    CHECK(f.size() == 4);  // the good images of a and b
    REQUIRE(f.skipped().size() >= 1);
    CHECK(f.skipped()[0].path.string().find(c.name) != std::string::npos);
    CHECK(f.skipped()[0].reason.find(c.reason) != std::string::npos);
  }
  // No class folder at all; a root that is a file.
  TempDir e;
  CHECK(message_of([&] { siam::data::ImageFolder f(e.path, codecs()); }).find("no class folders") !=
        std::string::npos);
  write_bytes(e.path / "file.png", png_of(2, 2, 1));
  CHECK_THROWS_AS(siam::data::ImageFolder(e.path / "file.png", codecs()), siam::io_error);
}

namespace {
std::vector<std::vector<float>> draw(siam::BatchSource<float, siam::Cpu>& src, int n,
                                     std::vector<std::vector<float>>* targets = nullptr) {
  std::vector<std::vector<float>> out;
  siam::Batch<float, siam::Cpu> b;
  for (int i = 0; i < n; ++i) {
    src.next(b);
    out.emplace_back(b.inputs.data(), b.inputs.data() + b.inputs.size());
    if (targets) targets->emplace_back(b.targets.data(), b.targets.data() + b.targets.size());
  }
  return out;
}
}  // namespace

TEST_CASE("loader: identical batches for 1, 2 and 4 worker threads, pairs and P x K") {
  TempDir t;
  make_tree(t.path, {"a", "b", "c", "d"}, 5, 24);
  auto o = codecs();
  o.min_per_class = 2;
  const siam::data::ImageFolder f(t.path, o);
  siam::data::TransformSpec spec;
  spec.size = 16;
  spec.augment = true;
  std::vector<std::vector<std::vector<float>>> pairs, pk;
  for (std::size_t threads : {1u, 2u, 4u}) {
    CAPTURE(threads);
    siam::FolderPairBatches<float, siam::Cpu> src(f, spec, 6, 11, {threads, 3});
    std::vector<std::vector<float>> targets;
    pairs.push_back(draw(src, 5, &targets));
    CHECK(src.example_shape() == siam::Shape{3, 16, 16});
    for (const auto& tg : targets) {
      REQUIRE(tg.size() == 6);
      for (float v : tg)
        CHECK((v == 0.0f || v == 1.0f));
    }
    siam::FolderPKBatches<float, siam::Cpu> pks(f, spec, 2, 3, 5, {threads, 2});
    pk.push_back(draw(pks, 4));
    siam::Batch<float, siam::Cpu> b;
    pks.next(b);
    CHECK(b.inputs.shape() == siam::Shape{6, 3, 16, 16});
    REQUIRE(b.labels.size() == 6);
    CHECK(b.labels[0] == b.labels[2]);
    CHECK(b.labels[0] != b.labels[3]);
  }
  REQUIRE(pairs[0].size() == 5);
  CHECK(pairs[0][0].size() == 12 * 3 * 16 * 16);
  CHECK(pairs[0] == pairs[1]);
  CHECK(pairs[0] == pairs[2]);
  CHECK(pk[0] == pk[1]);
  CHECK(pk[0] == pk[2]);
  CHECK(pairs[0][0] != pairs[0][1]);  // batches differ from one another
}

TEST_CASE("loader: triplet batches hold anchors, positives of their class, negatives of another") {
  const SmallTree tree;
  const auto& f = tree.folder;
  const auto& spec = tree.spec;
  std::vector<std::vector<float>> by_threads;
  for (std::size_t threads : {1u, 3u}) {
    siam::FolderTripletBatches<float, siam::Cpu> src(f, spec, 5, 21, {threads, 2});
    CHECK(src.layout()->blocks == 3);
    siam::Batch<float, siam::Cpu> b;
    src.next(b);
    REQUIRE(b.inputs.shape() == siam::Shape{15, 3, 8, 8});
    by_threads.emplace_back(b.inputs.data(), b.inputs.data() + b.inputs.size());
  }
  CHECK(by_threads[0] == by_threads[1]);
  // The first batch's plan: the sampler's first draws from the seed. Each row is the
  // evaluation transform of its planned image (no randomness on that path).
  siam::Rng r(21);
  const siam::data::TripletSampler sampler(f.labels());
  std::vector<std::uint32_t> a, p, q;
  sampler.sample(r, 5, a, p, q);
  const auto labels = f.labels();
  const std::size_t example = 3 * 8 * 8;
  std::vector<float> want(example);
  siam::Rng unused(0);
  for (std::size_t i = 0; i < 5; ++i) {
    CHECK(labels[a[i]] == labels[p[i]]);
    CHECK(a[i] != p[i]);
    CHECK(labels[a[i]] != labels[q[i]]);
    for (std::size_t blk = 0; blk < 3; ++blk) {
      const auto img = (blk == 0 ? a : blk == 1 ? p : q)[i];
      siam::data::apply_transform(f.load(img, spec.size), spec, unused, want.data());
      const auto row = (blk * 5 + i) * example;
      CHECK(std::vector<float>(by_threads[0].begin() + long(row),
                               by_threads[0].begin() + long(row + example)) == want);
    }
  }
}

TEST_CASE("loader: data-parallel parts read only their items of the whole planned batch") {
  const SmallTree tree;
  const auto& f = tree.folder;
  const auto& spec = tree.spec;
  const std::size_t example = 3 * 8 * 8, n = 5;  // 5 pairs: parts of 2 and 3 items
  auto first = [&](siam::data::LoaderOptions lo) {
    siam::FolderPairBatches<float, siam::Cpu> src(f, spec, n, 9, lo);
    siam::Batch<float, siam::Cpu> b;
    src.next(b);
    return std::vector<float>(b.inputs.data(), b.inputs.data() + b.inputs.size());
  };
  const auto whole = first({2, 2});
  std::vector<float> merged(whole.size(), 0.0f);
  for (std::size_t part : {0u, 1u}) {
    CAPTURE(part);
    const auto mine = first({2, 2, part, 2});
    REQUIRE(mine.size() == whole.size());
    const std::size_t lo = n * part / 2, hi = n * (part + 1) / 2;
    for (std::size_t r = 0; r < 2 * n; ++r) {
      const bool own = r % n >= lo && r % n < hi;
      const auto begin = long(r * example), end = long((r + 1) * example);
      CHECK(std::vector<float>(mine.begin() + begin, mine.begin() + end) ==
            (own ? std::vector<float>(whole.begin() + begin, whole.begin() + end)
                 : std::vector<float>(example, 0.0f)));
      if (own) std::copy(mine.begin() + begin, mine.begin() + end, merged.begin() + begin);
    }
  }
  CHECK(merged == whole);  // the two parts cover the batch
  CHECK_THROWS_AS(first({2, 2, 2, 2}), siam::value_error);
}

namespace {
// Counts the bytes a loader takes from it (LoaderOptions::memory).
class CountingResource final : public std::pmr::memory_resource {
 public:
  std::size_t allocations = 0, live_bytes = 0;

 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    ++allocations;
    live_bytes += bytes;
    return std::pmr::new_delete_resource()->allocate(bytes, alignment);
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    live_bytes -= bytes;
    std::pmr::new_delete_resource()->deallocate(p, bytes, alignment);
  }
  bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override {
    return this == &o;
  }
};
}  // namespace

TEST_CASE("loader: the ready batches live in LoaderOptions::memory; the host backend keeps it") {
  static_assert(!siam::detail::PinnedUploads<siam::Cpu>);
  const SmallTree tree;
  const auto& f = tree.folder;
  const auto& spec = tree.spec;
  CountingResource counting;
  auto batches = [&](siam::data::LoaderOptions lo) {
    siam::FolderPairBatches<float, siam::Cpu> src(f, spec, 5, 9, lo);
    siam::Batch<float, siam::Cpu> b;
    std::vector<float> all;
    for (int i = 0; i < 3; ++i) {
      src.next(b);
      all.insert(all.end(), b.inputs.data(), b.inputs.data() + b.inputs.size());
    }
    return all;
  };
  siam::data::LoaderOptions lo{2, 3};
  const auto plain = batches(lo);
  CHECK(counting.allocations == 0);
  lo.memory = &counting;
  CHECK(siam::detail::loader_options<siam::Cpu>(lo, 2).memory == &counting);
  {
    siam::data::LoaderOptions unset{2, 3};
    CHECK(siam::detail::loader_options<siam::Cpu>(unset, 2).memory == nullptr);
  }
  CHECK(batches(lo) == plain);       // the same batches from the caller's memory
  CHECK(counting.allocations >= 3);  // one buffer per slot, at least
  CHECK(counting.live_bytes == 0);   // all given back when the loader is gone
  {                                  // a slot's batch holds its pixels there while the loader lives
    siam::data::ImageLoader loader(
        f, spec,
        [](siam::Rng&, siam::data::BatchPlan& p) {
          p.images = {0, 1, 2};
        },
        lo);
    siam::Rng rng(1);
    const auto& hb = loader.next(rng);
    CHECK(hb.inputs.get_allocator().resource() == &counting);
    CHECK(hb.inputs.size() == 3 * 3 * 8 * 8);
    CHECK(counting.live_bytes >= hb.inputs.size() * sizeof(float));
  }
  CHECK(counting.live_bytes == 0);
}

TEST_CASE("loader: a restored generator replays the same batches; pair targets follow the labels") {
  TempDir t;
  make_tree(t.path, {"a", "b", "c"}, 4, 16);
  const siam::data::ImageFolder f(t.path, codecs(1));
  siam::data::TransformSpec spec;
  spec.size = 8;
  siam::FolderPairBatches<float, siam::Cpu> src(f, spec, 4, 3, {2, 4}, true);
  CHECK(src.example_shape() == siam::Shape{64});
  siam::Batch<float, siam::Cpu> b;
  src.next(b);
  const auto saved = src.rng().state();
  const auto ahead = draw(src, 3);
  src.rng().set_state(saved);
  CHECK(draw(src, 3) == ahead);
  CHECK(b.inputs.shape() == siam::Shape{8, 64});
}

TEST_CASE("loader: a file gone bad after the scan is rethrown in the consumer naming it; no hang") {
  TempDir t;
  make_tree(t.path, {"a", "b"}, 3, 16);
  const siam::data::ImageFolder f(t.path, codecs());
  write_bytes(t.path / "b" / "1.jpg", {0xff, 0xd8, 0xff, 0x00});
  siam::data::TransformSpec spec;
  spec.size = 8;
  for (std::size_t threads : {1u, 3u}) {
    siam::FolderPairBatches<float, siam::Cpu> src(f, spec, 8, 1, {threads, 4});
    std::string msg;
    siam::Batch<float, siam::Cpu> b;
    for (int i = 0; i < 20 && msg.empty(); ++i)
      msg = message_of([&] { src.next(b); });
    CHECK(msg.find("1.jpg") != std::string::npos);
    CHECK(msg.find("JPEG") != std::string::npos);
    CHECK(message_of([&] { src.next(b); }).find("1.jpg") != std::string::npos);  // again
  }  // the destructor stops the workers (a hang would time the test out)
  CHECK_THROWS_AS(siam::data::ImageLoader(f, spec, {}, {0, 1}), siam::value_error);
}
TEST_CASE("the general trainer learns from a folder pair source (dark against light images)") {
  TempDir t;
  siam::Rng noise(9);
  for (int i = 0; i < 12; ++i)
    for (const auto& [cls, level] :
         {std::pair<const char*, unsigned>{"dark", 40}, {"light", 200}}) {
      std::vector<unsigned> v;
      for (int p = 0; p < 16 * 16; ++p)
        v.push_back(level + static_cast<unsigned>(noise.below(30)));
      write_bytes(t.path / cls / (std::to_string(i) + ".png"),
                  test_png::encode(16, 16, PNG_COLOR_TYPE_GRAY, 8, v));
    }
  const siam::data::ImageFolder f(t.path, codecs(1));
  siam::data::TransformSpec spec;
  spec.size = 8;
  spec.augment = true;
  siam::FolderPairBatches<float, siam::Cpu> source(f, spec, 16, 2, {2, 2}, true);
  siam::Rng rng(4);
  siam::nn::Sequential<float, siam::Cpu> net;
  net.add<siam::nn::Dense<float, siam::Cpu>>(64, 8, rng)
      .add<siam::nn::Tanh<float, siam::Cpu>>()
      .add<siam::nn::Dense<float, siam::Cpu>>(8, 2, rng);
  net.set_input_shape(siam::Shape{64});
  siam::optim::Adam<float, siam::Cpu> adam(net.parameters(), {0.02, 0.9, 0.999, 1e-8});
  siam::Trainer<float, siam::Cpu> trainer(net, adam, source,
                                          siam::losses::contrastive<float, siam::Cpu>(), {});
  std::vector<double> losses;
  for (int s = 0; s < 60; ++s)
    losses.push_back(trainer.step());
  double first = 0, last = 0;
  for (int s = 0; s < 10; ++s)
    first += losses[static_cast<std::size_t>(s)], last += losses[static_cast<std::size_t>(50 + s)];
  MESSAGE("mean loss of the first 10 steps " << first / 10 << ", of the last 10 " << last / 10);
  CHECK(std::isfinite(last));
  CHECK(last < 0.5 * first);
}

TEST_CASE("a streaming SiameseTrainer (folder source factory) trains as the in-memory one") {
  // The same grey 8x8 images as PNG files and as a Dataset (k / 255): with no augmentation
  // the folder sources draw what the in-memory sources draw, so every loss is identical.
  TempDir t;
  siam::data::Dataset set;
  set.rows = set.cols = 8;
  siam::Rng noise(5);
  const char* names[] = {"a", "b", "c"};
  for (std::int64_t c = 0; c < 3; ++c)
    for (int i = 0; i < 5; ++i) {
      std::vector<unsigned> v;
      for (int p = 0; p < 64; ++p) {
        v.push_back(static_cast<unsigned>(60 * c + noise.below(120)));
        set.images.push_back(static_cast<float>(v.back()) / 255.0f);
      }
      set.labels.push_back(c);
      write_bytes(t.path / names[c] / (std::to_string(i) + ".png"),
                  test_png::encode(8, 8, PNG_COLOR_TYPE_GRAY, 8, v));
    }
  auto o = codecs(1);
  o.min_per_class = 2;
  const auto folder = std::make_shared<const siam::data::ImageFolder>(t.path, o);
  REQUIRE(folder->labels() == set.labels);
  siam::data::TransformSpec spec;
  spec.size = 8;
  for (const char* loss : {"contrastive", "triplet", "batch-hard"}) {
    CAPTURE(loss);
    siam::SiameseConfig cfg;
    cfg.layers = {64, 16, 2};
    cfg.loss = loss;
    cfg.batch_pairs = 6;
    cfg.seed = 3;
    siam::SiameseTrainer<float, siam::Cpu> memory(set, cfg);
    for (std::size_t threads : {1u, 3u}) {
      CAPTURE(threads);
      siam::SiameseTrainer<float, siam::Cpu> streaming(
          set.labels, cfg,
          siam::folder_source_factory<float, siam::Cpu>(folder, spec, {threads, 2}));
      CHECK(streaming.streaming());
      siam::SiameseTrainer<float, siam::Cpu> again(set, cfg);
      for (int s = 0; s < 6; ++s)
        CHECK(streaming.step() == again.step());
      const auto wait = siam::folder_wait_seconds(streaming.source());
      REQUIRE(wait.has_value());
      CHECK(*wait >= 0);
      CHECK_THROWS_AS(streaming.embed_training_set(), siam::value_error);
    }
    CHECK_FALSE(siam::folder_wait_seconds(memory.source()).has_value());
  }
  siam::SiameseConfig nt;
  nt.layers = {64, 16, 2};
  nt.loss = "ntxent";
  nt.batch_pairs = 6;
  const auto msg = message_of([&] {
    siam::SiameseTrainer<float, siam::Cpu> s(
        set.labels, nt, siam::folder_source_factory<float, siam::Cpu>(folder, spec));
  });
  CHECK(msg.find("the ntxent loss cannot train from an image folder") != std::string::npos);
  siam::SiameseConfig wide;
  wide.layers = {100, 2};
  CHECK(message_of([&] {
          siam::SiameseTrainer<float, siam::Cpu> s(
              set.labels, wide, siam::folder_source_factory<float, siam::Cpu>(folder, spec));
        }).find("examples of shape") != std::string::npos);
}
#else
TEST_CASE("image folder and loader cases skipped: they need libpng and libturbojpeg") {
  MESSAGE("skipped: siam::png or siam::jpeg not built");
}
#endif
