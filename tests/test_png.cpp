// PNG reading: every colour type and bit depth decodes to the same grey values, the ink
// polarity is detected, images are prepared like the training data, hostile files fail.
#include <doctest/doctest.h>

#include <algorithm>

#include <siam/data/png.hpp>
#include <siam/data/synthetic_digits.hpp>
#include <siam/presets/mnist_digit.hpp>

#include "support/png_writer.hpp"

using siam::presets::Invert;

namespace {

// Synthetic digit 3 of a small set, as 8-bit samples (white ink on black).
std::vector<unsigned> digit_bytes() {
  const auto d = siam::data::synthetic_digits(5, 42);
  std::vector<unsigned> v;
  for (std::size_t i = 0; i < 784; ++i)
    v.push_back(static_cast<unsigned>(std::lround(d.image(3)[i] * 255.0f)));
  return v;
}

std::vector<float> as_floats(const std::vector<unsigned>& v) {
  std::vector<float> f;
  for (auto x : v)
    f.push_back(static_cast<float>(x) / 255.0f);
  return f;
}

siam::data::GrayImage decode(const std::vector<unsigned char>& png) {
  return siam::data::read_png_gray(png.data(), png.size(), "test.png");
}

}  // namespace

TEST_CASE("every colour type and bit depth gives the same grey values") {
  const auto g = digit_bytes();
  const auto want = as_floats(g);
  std::vector<unsigned> rgb, rgba, ga, g16, inv;
  for (auto v : g) {
    rgb.insert(rgb.end(), {v, v, v});
    rgba.insert(rgba.end(), {v, v, v, 255});
    ga.insert(ga.end(), {v, 255});
    g16.push_back(v * 257);
    inv.push_back(255 - v);
  }
  std::vector<png_color> palette(256);
  for (int i = 0; i < 256; ++i)
    palette[i] = {static_cast<png_byte>(i), static_cast<png_byte>(i), static_cast<png_byte>(i)};
  const std::vector<std::pair<const char*, std::vector<unsigned char>>> files = {
      {"gray8", test_png::encode(28, 28, PNG_COLOR_TYPE_GRAY, 8, g)},
      {"gray8 interlaced", test_png::encode(28, 28, PNG_COLOR_TYPE_GRAY, 8, g, {}, true)},
      {"gray+alpha", test_png::encode(28, 28, PNG_COLOR_TYPE_GRAY_ALPHA, 8, ga)},
      {"rgb8", test_png::encode(28, 28, PNG_COLOR_TYPE_RGB, 8, rgb)},
      {"rgba8", test_png::encode(28, 28, PNG_COLOR_TYPE_RGBA, 8, rgba)},
      {"gray16", test_png::encode(28, 28, PNG_COLOR_TYPE_GRAY, 16, g16)},
      {"palette", test_png::encode(28, 28, PNG_COLOR_TYPE_PALETTE, 8, g, palette)},
  };
  for (const auto& [name, bytes] : files) {
    CAPTURE(name);
    const auto img = decode(bytes);
    REQUIRE(img.rows == 28);
    REQUIRE(img.cols == 28);
    CHECK(img.pixels == want);
    bool inverted = true;
    CHECK(siam::presets::prepare_digit(img, Invert::automatic, &inverted) == want);
    CHECK_FALSE(inverted);
  }
  // Black ink on white: detected and inverted back exactly; forced flags obey.
  const auto img = decode(test_png::encode(28, 28, PNG_COLOR_TYPE_GRAY, 8, inv));
  bool inverted = false;
  CHECK(siam::presets::prepare_digit(img, Invert::automatic, &inverted) == want);
  CHECK(inverted);
  CHECK(siam::presets::prepare_digit(img, Invert::yes) == want);
  CHECK(siam::presets::prepare_digit(img, Invert::no) == as_floats(inv));
}

TEST_CASE("1-bit grey, RGB colour weights and transparency") {
  // 1-bit: a 4 x 8 checker of 0/1 becomes 0.0/1.0.
  std::vector<unsigned> bits;
  for (int i = 0; i < 32; ++i)
    bits.push_back(static_cast<unsigned>((i + i / 8) % 2));
  const auto b = decode(test_png::encode(4, 8, PNG_COLOR_TYPE_GRAY, 1, bits));
  REQUIRE(b.pixels.size() == 32);
  for (int i = 0; i < 32; ++i)
    CHECK(b.pixels[i] == static_cast<float>(bits[i]));
  // Pure red: libpng's Rec. 709 luma weight of red (0.2126 * 255 = 54.2).
  const auto red = decode(test_png::encode(1, 1, PNG_COLOR_TYPE_RGB, 8, {255, 0, 0}));
  CHECK(red.pixels[0] * 255.0f == doctest::Approx(54).epsilon(0.02));
  // Dark ink on a transparent background: the background becomes white (light ink: black).
  const auto dark =
      decode(test_png::encode(1, 3, PNG_COLOR_TYPE_GRAY_ALPHA, 8, {0, 255, 0, 0, 255, 0}));
  CHECK(dark.pixels == std::vector<float>{0.0f, 1.0f, 1.0f});
  const auto light =
      decode(test_png::encode(1, 3, PNG_COLOR_TYPE_GRAY_ALPHA, 8, {255, 255, 255, 0, 0, 0}));
  CHECK(light.pixels == std::vector<float>{1.0f, 0.0f, 0.0f});
}

TEST_CASE("other sizes are prepared like MNIST: ink in a 20 x 20 box, centred by mass") {
  // A 3 x 2 white block in a 100 x 60 black image: scaled to 20 x 13 (aspect kept), centred.
  siam::data::GrayImage img{100, 60, std::vector<float>(6000, 0.0f)};
  for (int r = 10; r < 40; ++r)
    for (int c = 5; c < 25; ++c)
      img.pixels[r * 60 + c] = 1.0f;
  const auto x = siam::presets::prepare_digit(img, Invert::no);
  REQUIRE(x.size() == 784);
  int r0 = 28, r1 = -1, c0 = 28, c1 = -1;
  double mass = 0, mr = 0, mc = 0;
  for (int r = 0; r < 28; ++r)
    for (int c = 0; c < 28; ++c)
      if (const float v = x[r * 28 + c]; v > 0) {
        r0 = std::min(r0, r), r1 = std::max(r1, r), c0 = std::min(c0, c), c1 = std::max(c1, c);
        mass += v, mr += v * (r + 0.5), mc += v * (c + 0.5);
        CHECK(v == 1.0f);  // a solid block stays solid: area averages of ones
      }
  CHECK(r1 - r0 + 1 == 20);
  CHECK(c1 - c0 + 1 == 13);
  CHECK(mr / mass == doctest::Approx(14).epsilon(0.05));
  CHECK(mc / mass == doctest::Approx(14).epsilon(0.05));
  // A 2x-upscaled digit is prepared exactly as the digit itself (here in a 30 x 30 frame, so
  // that it is prepared too): the same ink box, and the area average of a pixel-doubled
  // image is the image's own. The two differ only by float round-off in the area sums;
  // after the quantisation to k / 255 the bytes are identical (seen at -O0, -O1 and -O3
  // -march=native).
  const auto g = as_floats(digit_bytes());
  siam::data::GrayImage big{56, 56, std::vector<float>(56 * 56)};
  siam::data::GrayImage framed{30, 30, std::vector<float>(30 * 30, 0.0f)};
  for (int r = 0; r < 56; ++r)
    for (int c = 0; c < 56; ++c)
      big.pixels[r * 56 + c] = g[(r / 2) * 28 + c / 2];
  for (int r = 0; r < 28; ++r)
    for (int c = 0; c < 28; ++c)
      framed.pixels[(r + 1) * 30 + c + 2] = g[r * 28 + c];
  const auto y = siam::presets::prepare_digit(big, Invert::automatic);
  const auto y1 = siam::presets::prepare_digit(framed, Invert::automatic);
  CHECK(std::count_if(y1.begin(), y1.end(), [](float v) { return v > 0; }) > 50);  // a digit
  CHECK(y == y1);
  // A blank image stays blank; an empty one is an error.
  CHECK(siam::presets::prepare_digit({40, 40, std::vector<float>(1600, 0.0f)}) ==
        std::vector<float>(784, 0.0f));
  CHECK_THROWS_AS(siam::presets::prepare_digit({}), siam::value_error);
}

TEST_CASE("hostile files are refused with io_error before any large allocation") {
  const auto valid = test_png::encode(28, 28, PNG_COLOR_TYPE_GRAY, 8, digit_bytes());
  for (const auto& [name, bytes] : test_png::hostile(valid)) {
    CAPTURE(name);
    std::string message;
    try {
      (void)siam::data::read_png_gray(bytes.data(), bytes.size(), name);
    } catch (const siam::io_error& e) {
      message = e.what();
    }
    CHECK(message.find(name) != std::string::npos);
    if (name == "huge.png") CHECK(message.find("100000 x 100000") != std::string::npos);
    if (name == "empty.png") CHECK(message.find("empty") != std::string::npos);
    if (name == "bomb.png") CHECK(message.find("4000 x 4000") != std::string::npos);
  }
  CHECK_THROWS_AS(siam::data::read_png_gray(std::filesystem::path("no/such/file.png")),
                  siam::io_error);
}
