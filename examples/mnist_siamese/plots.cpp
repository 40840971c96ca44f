// Figure writers of the mnist_siamese example; see plots.hpp.
#include "plots.hpp"

#include <siam/error.hpp>

#include <plplot/plstream.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <tuple>
#include <utility>

namespace plots {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Colours (PLplot cmap0 indices). Index 0 is the page background.

enum Colour : PLINT {
  kWhite = 0,
  kBlack = 1,
  kGray = 2,
  kLightGray = 3,
  kRawLoss = 4,
  kSmoothLoss = 5,
  kGreen = 6,
  kRed = 7,
  kClass0 = 8,  // kClass0 .. kClass0 + 9: one colour per class
  kPixel = 18,  // set to each pixel's colour in turn when a colour image is drawn
};
constexpr int kNumClassColours = 10;

// clang-format off
constexpr std::array<std::array<PLINT, 3>, 19> kPalette = {{
    {255, 255, 255}, {0, 0, 0}, {120, 120, 120}, {236, 236, 236},
    {166, 196, 232}, {18, 64, 150}, {0, 128, 0}, {200, 20, 20},
    // "tab10" qualitative palette: 10 colours that are easy to tell apart.
    {31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189},
    {140, 86, 75}, {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207},
    {0, 0, 0},  // kPixel
}};
// clang-format on

// ---------------------------------------------------------------------------------------------
// PLplot error handling. PLplot has global state and reports errors through two process-wide
// hooks: plabort() (operation skipped, we record the message and fail the write afterwards)
// and plexit() (fatal; would call exit(), we throw instead, which unwinds through PLplot's C
// frames). Everything runs under g_mutex.

std::mutex g_mutex;
std::string g_abort_messages;  // guarded by g_mutex
// Per-stream error slots PLplot writes into (static: a stream abandoned after a fatal error
// must not point into a dead stack frame).
PLINT g_error_code = 0;
std::array<char, 4096> g_error_text{};

struct PlplotFatal : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int on_plexit(const char* message) {
  throw PlplotFatal(message != nullptr ? message : "");
}

void on_plabort(const char* message) {
  if (!g_abort_messages.empty()) g_abort_messages += "; ";
  g_abort_messages += message != nullptr ? message : "(no message)";
}

// Installs the handlers for the duration of one write, then restores PLplot's defaults.
class HandlerScope {
 public:
  HandlerScope() {
    g_abort_messages.clear();
    ::plsexit(on_plexit);
    ::plsabort(on_plabort);
  }
  ~HandlerScope() {
    ::plsexit(nullptr);
    ::plsabort(nullptr);
  }
  HandlerScope(const HandlerScope&) = delete;
  HandlerScope& operator=(const HandlerScope&) = delete;
};

// Without the pngcairo driver PLplot would prompt on stdin for another device.
void require_pngcairo() {
  static bool available = false;
  if (available) return;
  int count = 256;
  std::vector<const char*> menu(static_cast<std::size_t>(count), nullptr);
  std::vector<const char*> names(static_cast<std::size_t>(count), nullptr);
  const char** menu_ptr = menu.data();
  const char** names_ptr = names.data();
  ::plgDevs(&menu_ptr, &names_ptr, &count);
  for (int i = 0; i < count; ++i) {
    if (names[static_cast<std::size_t>(i)] != nullptr &&
        std::string_view(names[static_cast<std::size_t>(i)]) == "pngcairo") {
      available = true;
      return;
    }
  }
  throw siam::io_error(
      "plots: PLplot's \"pngcairo\" output driver is not available (install the cairo driver, "
      "e.g. the Debian package plplot-driver-cairo)");
}

// ---------------------------------------------------------------------------------------------
// Files.

std::string quoted(const fs::path& p) {
  return std::string("\"") + p.string() + "\"";
}

// "#" starts a PLplot text escape sequence; "##" prints a literal "#".
std::string escape_text(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    out += c;
    if (c == '#') out += '#';
  }
  return out;
}

// Checks the complete PNG: signature, IHDR first, IEND last.
bool looks_like_complete_png(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return false;
  const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  static constexpr unsigned char kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  static constexpr unsigned char kIend[12] = {0,   0,   0,    0,    'I',  'E',
                                              'N', 'D', 0xae, 0x42, 0x60, 0x82};
  if (data.size() < 8 + 25 + 12) return false;
  if (std::memcmp(data.data(), kSignature, 8) != 0) return false;
  if (data.compare(12, 4, "IHDR") != 0) return false;
  return std::memcmp(data.data() + data.size() - 12, kIend, 12) == 0;
}

class Canvas;
using DrawFn = std::function<void(Canvas&)>;

// ---------------------------------------------------------------------------------------------
// A page of width x height pixels. Layout helpers take pixel coordinates with the origin at the
// top-left corner (y grows downwards) and convert to PLplot's normalised coordinates.

class Canvas {
 public:
  Canvas(plstream& s, int width, int height) : s_(s), w_(width), h_(height) {}

  plstream& s() { return s_; }

  // Sets PLplot's character height from a nominal size in pixels (the page is set to kDpi).
  void text_height(double px) { s_.schr(px * 25.4 / kDpi, 1.0); }

  // Viewport covering the pixel box with top-left (x, y), size w x h.
  void viewport(double x, double y, double w, double h) {
    s_.vpor(x / w_, (x + w) / w_, 1.0 - (y + h) / h_, 1.0 - y / h_);
  }

  // Whole page as the window, in pixels (origin bottom-left, as PLplot wants it).
  void page() {
    s_.vpor(0.0, 1.0, 0.0, 1.0);
    s_.wind(0.0, w_, 0.0, h_);
  }

  // Text whose vertical centre is at y (top-down pixels); just: 0 left, 0.5 centred, 1 right.
  void text(double x, double y, double just, std::string_view str, double px, PLINT colour) {
    page();
    text_height(px);
    s_.col0(colour);
    s_.ptex(x, h_ - y, 1.0, 0.0, just, escape_text(str).c_str());
  }

  void fill_rect(double x, double y, double w, double h, PLINT colour) {
    page();
    s_.col0(colour);
    const PLFLT xs[4] = {x, x + w, x + w, x};
    const PLFLT ys[4] = {h_ - y, h_ - y, h_ - y - h, h_ - y - h};
    s_.fill(4, xs, ys);
  }

  void frame_rect(double x, double y, double w, double h, PLINT colour, double line_width) {
    page();
    s_.col0(colour);
    s_.width(line_width);
    const PLFLT xs[5] = {x, x + w, x + w, x, x};
    const PLFLT ys[5] = {h_ - y, h_ - y, h_ - y - h, h_ - y - h, h_ - y};
    s_.line(5, xs, ys);
    s_.width(1.0);
  }

  // Draws img as large as fits into the box (aspect ratio kept, centred), with a thin frame.
  // Returns the pixel box actually used: {x, y, w, h}.
  std::array<double, 4> image(const Image& img, double x, double y, double w, double h) {
    const double scale = std::min(w / img.cols, h / img.rows);
    const double iw = img.cols * scale, ih = img.rows * scale;
    const double ix = x + (w - iw) / 2, iy = y + (h - ih) / 2;
    if (img.channels == 3) {
      colour_image(img, ix, iy, iw, ih);
      return {ix, iy, iw, ih};
    }

    // PLplot indexes images [x][y] with y upwards: column c, row r (from the top) goes to
    // data[c][rows - 1 - r]. A dimension of 1 is doubled because PLplot needs at least 2.
    const int rep_x = img.cols == 1 ? 2 : 1, rep_y = img.rows == 1 ? 2 : 1;
    const int nx = img.cols * rep_x, ny = img.rows * rep_y;
    std::vector<PLFLT> store(static_cast<std::size_t>(nx) * static_cast<std::size_t>(ny));
    std::vector<PLFLT*> columns(static_cast<std::size_t>(nx));
    for (int i = 0; i < nx; ++i) {
      columns[static_cast<std::size_t>(i)] =
          store.data() + static_cast<std::size_t>(i) * static_cast<std::size_t>(ny);
    }
    for (int j = 0; j < ny; ++j) {
      const int r = img.rows - 1 - j / rep_y;
      for (int i = 0; i < nx; ++i) {
        const int c = i / rep_x;
        float v = img.pixels[static_cast<std::size_t>(r) * static_cast<std::size_t>(img.cols) +
                             static_cast<std::size_t>(c)];
        if (!(v >= 0.0f)) v = 0.0f;  // also NaN
        if (v > 1.0f) v = 1.0f;
        columns[static_cast<std::size_t>(i)][j] = v;
      }
    }
    viewport(ix, iy, iw, ih);
    s_.wind(0.0, nx, 0.0, ny);
    // plimagefr puts data[0][0] at (xmin, ymin) and data[nx-1][ny-1] at (xmax, ymax) and draws
    // each value as a cell extending up and right from there: with xmax = nx - 1 the cells are
    // unit squares exactly covering the window [0, nx] x [0, ny].
    s_.imagefr(columns.data(), nx, ny, 0.0, nx - 1.0, 0.0, ny - 1.0, 0.0, 1.0, 0.0, 1.0, nullptr,
               nullptr);
    frame_rect(ix, iy, iw, ih, kGray, 1.0);
    return {ix, iy, iw, ih};
  }

  static constexpr double kDpi = 90.0;

 private:
  // A colour image (three planes) as one filled cell per pixel, each in its own colour.
  void colour_image(const Image& img, double ix, double iy, double iw, double ih) {
    viewport(ix, iy, iw, ih);
    s_.wind(0.0, img.cols, 0.0, img.rows);
    const std::size_t plane =
        static_cast<std::size_t>(img.rows) * static_cast<std::size_t>(img.cols);
    auto level = [](float v) {
      if (!(v >= 0.0f)) v = 0.0f;  // also NaN
      return static_cast<PLINT>(std::lround(255.0f * std::min(v, 1.0f)));
    };
    for (int r = 0; r < img.rows; ++r)
      for (int c = 0; c < img.cols; ++c) {
        const std::size_t k = static_cast<std::size_t>(r) * static_cast<std::size_t>(img.cols) +
                              static_cast<std::size_t>(c);
        s_.scol0(kPixel, level(img.pixels[k]), level(img.pixels[plane + k]),
                 level(img.pixels[2 * plane + k]));
        s_.col0(kPixel);
        const PLFLT y0 = img.rows - 1 - r;
        const PLFLT xs[4] = {PLFLT(c), PLFLT(c + 1), PLFLT(c + 1), PLFLT(c)};
        const PLFLT ys[4] = {y0, y0, y0 + 1, y0 + 1};
        s_.fill(4, xs, ys);
      }
    frame_rect(ix, iy, iw, ih, kGray, 1.0);
  }

 private:
  plstream& s_;
  double w_, h_;
};

// Renders one figure into png atomically (see plots.hpp). draw() does the plotting.
void render(const char* who, const fs::path& png, int width, int height, const DrawFn& draw) {
  if (png.empty() || !png.has_filename()) {
    throw siam::value_error(std::string(who) + ": output path " + quoted(png) +
                            " does not name a file");
  }
  const fs::path tmp = fs::path(png.string() + ".tmp-" + std::to_string(::getpid()));
  const auto fail = [&](const std::string& why) -> siam::io_error {
    std::error_code ec;
    fs::remove(tmp, ec);
    return siam::io_error(std::string(who) + ": cannot write " + quoted(png) + ": " + why);
  };

  const std::lock_guard<std::mutex> lock(g_mutex);

  // Probe the directory before PLplot touches it (PLplot retries and then exits on open failure).
  {
    errno = 0;
    std::FILE* probe = std::fopen(tmp.c_str(), "wb");
    if (probe == nullptr) {
      const int err = errno;
      throw siam::io_error(std::string(who) + ": cannot write " + quoted(png) +
                           ": cannot create temporary file " + quoted(tmp) + ": " +
                           (err != 0 ? std::strerror(err) : "unknown error"));
    }
    std::fclose(probe);
  }

  HandlerScope handlers;
  plstream* stream = nullptr;
  try {
    require_pngcairo();
    stream = new plstream();
    plstream& s = *stream;
    s.sError(&g_error_code, g_error_text.data());  // abort messages go here, not to stderr
    s.sdev("pngcairo");
    s.sfnam(tmp.c_str());
    s.spage(Canvas::kDpi, Canvas::kDpi, width, height, 0, 0);
    std::array<PLINT, kPalette.size()> r{}, g{}, b{};
    for (std::size_t i = 0; i < kPalette.size(); ++i) {
      r[i] = kPalette[i][0];
      g[i] = kPalette[i][1];
      b[i] = kPalette[i][2];
    }
    s.scmap0(r.data(), g.data(), b.data(), static_cast<PLINT>(kPalette.size()));
    s.scolbg(255, 255, 255);
    s.init();
    s.scmap0(r.data(), g.data(), b.data(), static_cast<PLINT>(kPalette.size()));
    // cmap1: linear gray ramp, 0 -> black, 1 -> white.
    const PLFLT pos[2] = {0.0, 1.0}, lo_hi[2] = {0.0, 1.0};
    s.scmap1n(256);
    s.scmap1l(true, 2, pos, lo_hi, lo_hi, lo_hi, nullptr);
    s.adv(0);
    s.col0(kBlack);

    Canvas canvas(s, width, height);
    draw(canvas);

    if (!g_abort_messages.empty()) throw fail("PLplot reported: " + g_abort_messages);
    delete stream;  // ends the page: pngcairo writes and closes the file here
    stream = nullptr;
    if (!g_abort_messages.empty()) throw fail("PLplot reported: " + g_abort_messages);
    if (!looks_like_complete_png(tmp)) throw fail("PLplot did not produce a complete PNG");
    std::error_code ec;
    fs::rename(tmp, png, ec);
    if (ec) throw fail("cannot rename " + quoted(tmp) + " onto it: " + ec.message());
  } catch (const PlplotFatal& e) {
    // PLplot's state after a fatal error is unknown: the stream is deliberately not ended.
    throw fail(std::string("PLplot fatal error: ") + e.what());
  } catch (...) {
    delete stream;
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

// ---------------------------------------------------------------------------------------------
// Argument checks.

void check_image(const char* who, const Image& img, const std::string& what) {
  if (img.pixels == nullptr) throw siam::value_error(std::string(who) + ": " + what + " is null");
  if (img.channels != 1 && img.channels != 3)
    throw siam::value_error(std::string(who) + ": " + what + " has " +
                            std::to_string(img.channels) + " channels (1 grey or 3 colour)");
  if (img.rows < 1 || img.cols < 1) {
    throw siam::value_error(std::string(who) + ": " + what + " has invalid size " +
                            std::to_string(img.rows) + "x" + std::to_string(img.cols));
  }
}

void check_images(const char* who, const std::vector<Image>& images, const std::string& what) {
  for (std::size_t i = 0; i < images.size(); ++i) {
    check_image(who, images[i], what + "[" + std::to_string(i) + "]");
  }
}

std::string format_distance(double v) {
  char buf[64];
  const double a = std::abs(v);
  std::snprintf(buf, sizeof buf, a == 0.0 || (a >= 0.01 && a < 1000.0) ? "%.3f" : "%.3g", v);
  return buf;
}

// Expands [lo, hi] by a relative margin; degenerate or non-finite ranges become sensible.
std::pair<double, double> padded(double lo, double hi, double margin) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {0.0, 1.0};
  if (hi - lo <= 1e-12 * std::max({1.0, std::abs(lo), std::abs(hi)})) {
    const double d = std::max(0.5, std::abs(lo) * 0.1);
    return {lo - d, hi + d};
  }
  const double d = (hi - lo) * margin;
  return {lo - d, hi + d};
}

// Axes box with light grid, numeric labels, and axis titles.
void draw_axes(Canvas& c, double x0, double x1, double y0, double y1, const char* xlabel,
               const char* ylabel) {
  plstream& s = c.s();
  s.wind(x0, x1, y0, y1);
  s.col0(kLightGray);
  s.width(1.0);
  s.box("g", 0.0, 0, "g", 0.0, 0);
  s.col0(kBlack);
  c.text_height(12);
  s.box("bcnst", 0.0, 0, "bcnstv", 0.0, 0);
  c.text_height(15);
  s.mtex("b", 3.0, 0.5, 0.5, xlabel);
  s.mtex("l", 4.6, 0.5, 0.5, ylabel);
}

}  // namespace

// -----------------------------------------------------------------------------------------------

void write_tile(const fs::path& png, const std::vector<Image>& images, int grid_cols,
                const std::string& title) {
  const char* who = "plots::write_tile";
  if (images.empty()) throw siam::value_error(std::string(who) + ": no images");
  if (grid_cols < 1) {
    throw siam::value_error(std::string(who) + ": grid_cols must be >= 1, got " +
                            std::to_string(grid_cols));
  }
  check_images(who, images, "images");

  const int n = static_cast<int>(images.size());
  const int ncols = std::min(grid_cols, n);
  const int nrows = (n + ncols - 1) / ncols;
  double aspect = 1.0;  // cell height / width: from the tallest image, within limits
  for (const Image& img : images) {
    aspect = std::max(aspect, double(img.rows) / img.cols);
  }
  aspect = std::min(aspect, 1.5);
  const double cell = std::clamp(840.0 / ncols, 40.0, 220.0);
  const double cell_h = cell * aspect;
  const double margin = 24, title_h = 64;
  const double grid_w = ncols * cell;
  const int width = static_cast<int>(std::max(2 * margin + grid_w, 480.0));
  const int height = static_cast<int>(title_h + nrows * cell_h + margin);

  render(who, png, width, height, [&](Canvas& c) {
    c.text(width / 2.0, title_h / 2.0, 0.5, title, 20, kBlack);
    const double x_start = (width - grid_w) / 2;
    const double gap = std::max(3.0, cell * 0.05);
    for (int i = 0; i < n; ++i) {
      const double x = x_start + (i % ncols) * cell, y = title_h + (i / ncols) * cell_h;
      c.image(images[static_cast<std::size_t>(i)], x + gap / 2, y + gap / 2, cell - gap,
              cell_h - gap);
    }
  });
}

void write_pairs(const fs::path& png, const std::vector<Image>& first,
                 const std::vector<Image>& second, const std::vector<std::string>& captions) {
  const char* who = "plots::write_pairs";
  if (first.size() != second.size()) {
    throw siam::value_error(std::string(who) + ": " + std::to_string(first.size()) +
                            " first images but " + std::to_string(second.size()) +
                            " second images");
  }
  if (first.empty()) throw siam::value_error(std::string(who) + ": no pairs");
  if (!captions.empty() && captions.size() != first.size()) {
    throw siam::value_error(std::string(who) + ": " + std::to_string(captions.size()) +
                            " captions for " + std::to_string(first.size()) + " pairs");
  }
  check_images(who, first, "first");
  check_images(who, second, "second");

  const int n = static_cast<int>(first.size());
  const int per_row = std::min(n, 5);
  const int nrows = (n + per_row - 1) / per_row;
  const double img = 100, inner_gap = 6, pad = 10, caption_h = captions.empty() ? 0 : 30;
  const double card_w = 2 * img + inner_gap + 2 * pad, card_h = img + 2 * pad + caption_h;
  const double card_gap = 22, margin = 24, title_h = 64;
  const double grid_w = per_row * card_w + (per_row - 1) * card_gap;
  const int width = static_cast<int>(std::max(2 * margin + grid_w, 480.0));
  const int height = static_cast<int>(title_h + nrows * card_h + (nrows - 1) * card_gap + margin);

  render(who, png, width, height, [&](Canvas& c) {
    c.text(width / 2.0, title_h / 2.0, 0.5, "Example pairs", 20, kBlack);
    const double x_start = (width - grid_w) / 2;
    for (int i = 0; i < n; ++i) {
      const auto k = static_cast<std::size_t>(i);
      const double x = x_start + (i % per_row) * (card_w + card_gap);
      const double y = title_h + (i / per_row) * (card_h + card_gap);
      c.fill_rect(x, y, card_w, card_h, kLightGray);
      c.image(first[k], x + pad, y + pad, img, img);
      c.image(second[k], x + pad + img + inner_gap, y + pad, img, img);
      if (!captions.empty()) {
        const std::string& cap = captions[k];
        const PLINT colour = cap == "similar" ? kGreen : cap == "dissimilar" ? kRed : kBlack;
        c.text(x + card_w / 2, y + pad + img + caption_h / 2 + 2, 0.5, cap, 15, colour);
      }
    }
  });
}

void write_loss(const fs::path& png, const std::vector<float>& loss, std::size_t smooth_window) {
  const char* who = "plots::write_loss";
  const std::size_t n = loss.size();
  const std::size_t window = std::max<std::size_t>(1, smooth_window);

  // Centred moving average over the finite values in [i - window/2, i + window - window/2),
  // the window shrinking at both ends of the series.
  std::vector<PLFLT> smooth(n, std::nan(""));
  {
    std::vector<double> sum(n + 1, 0.0);
    std::vector<std::size_t> cnt(n + 1, 0);
    for (std::size_t i = 0; i < n; ++i) {
      const bool ok = std::isfinite(loss[i]);
      sum[i + 1] = sum[i] + (ok ? loss[i] : 0.0);
      cnt[i + 1] = cnt[i] + (ok ? 1 : 0);
    }
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t lo = i >= window / 2 ? i - window / 2 : 0;
      const std::size_t hi = std::min(n, i + (window - window / 2));
      if (cnt[hi] > cnt[lo]) smooth[i] = (sum[hi] - sum[lo]) / double(cnt[hi] - cnt[lo]);
    }
  }
  double lo = INFINITY, hi = -INFINITY;
  for (float v : loss) {
    if (std::isfinite(v)) {
      lo = std::min(lo, double(v));
      hi = std::max(hi, double(v));
    }
  }
  const bool have_data = lo <= hi;

  const int width = 900, height = 600;
  render(who, png, width, height, [&](Canvas& c) {
    plstream& s = c.s();
    c.text(width / 2.0, 30, 0.5, "Training progress", 20, kBlack);
    const double left = 100, right = 30, top = 60, bottom = 80;
    c.viewport(left, top, width - left - right, height - top - bottom);
    double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
    if (have_data) {
      x0 = n > 1 ? 1.0 : 0.0;
      x1 = n > 1 ? double(n) : 2.0;
      std::tie(y0, y1) = padded(lo, hi, 0.05);
      if (lo >= 0 && lo <= 0.5 * hi) y0 = 0;  // non-negative loss: show the axis from 0
    }
    draw_axes(c, x0, x1, y0, y1, "Iteration", "Loss");
    if (!have_data) {
      c.text_height(16);
      s.col0(kGray);
      s.ptex(0.5, 0.5, 1, 0, 0.5, "no loss values yet");
      return;
    }

    // Draws the finite runs of ys as lines (and isolated points as dots).
    const auto draw_series = [&](const std::vector<PLFLT>& ys, PLINT colour, double line_width) {
      s.col0(colour);
      s.width(line_width);
      std::vector<PLFLT> xs_run, ys_run;
      const auto flush = [&] {
        if (xs_run.size() == 1) {
          s.ssym(0, 0.6);
          s.poin(1, xs_run.data(), ys_run.data(), 17);
        } else if (xs_run.size() > 1) {
          s.line(static_cast<PLINT>(xs_run.size()), xs_run.data(), ys_run.data());
        }
        xs_run.clear();
        ys_run.clear();
      };
      for (std::size_t i = 0; i < ys.size(); ++i) {
        if (std::isfinite(ys[i])) {
          xs_run.push_back(double(i + 1));
          ys_run.push_back(ys[i]);
        } else {
          flush();
        }
      }
      flush();
      s.width(1.0);
    };
    const std::vector<PLFLT> raw(loss.begin(), loss.end());
    draw_series(raw, kRawLoss, 1.0);
    draw_series(smooth, kSmoothLoss, 2.5);

    // Legend (top right, inside the plot).
    const std::string smooth_label = std::string("moving average (") + std::to_string(window) +
                                     (window == 1 ? " iteration)" : " iterations)");
    const char* texts[2] = {"loss per iteration", smooth_label.c_str()};
    const PLINT opts[2] = {PL_LEGEND_LINE, PL_LEGEND_LINE};
    const PLINT text_colours[2] = {kBlack, kBlack};
    const PLINT line_colours[2] = {kRawLoss, kSmoothLoss};
    const PLINT line_styles[2] = {1, 1};
    const PLFLT line_widths[2] = {1.5, 2.5};
    PLFLT legend_w = 0, legend_h = 0;
    c.text_height(13);
    s.legend(&legend_w, &legend_h, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX,
             PL_POSITION_TOP | PL_POSITION_RIGHT | PL_POSITION_INSIDE, 0.02, 0.03, 0.08, kWhite,
             kGray, 1, 0, 0, 2, opts, 1.0, 1.0, 2.0, 0.0, text_colours, texts, nullptr, nullptr,
             nullptr, nullptr, line_colours, line_styles, line_widths, nullptr, nullptr, nullptr,
             nullptr);
  });
}

void write_embedding(const fs::path& png, const float* xy, const std::int64_t* labels,
                     std::size_t n, const std::string& title,
                     const std::vector<std::string>& class_names) {
  const char* who = "plots::write_embedding";
  if (n > 0 && (xy == nullptr || labels == nullptr)) {
    throw siam::value_error(std::string(who) + ": xy or labels is null for " + std::to_string(n) +
                            " points");
  }
  if (class_names.size() > kNumClassColours) {
    throw siam::value_error(std::string(who) + ": at most " + std::to_string(kNumClassColours) +
                            " classes are supported, got " + std::to_string(class_names.size()));
  }
  std::vector<std::string> names = class_names;
  if (names.empty()) {
    for (int k = 0; k < kNumClassColours; ++k)
      names.push_back(std::to_string(k));
  }
  const std::size_t num_classes = names.size();

  std::vector<std::vector<PLFLT>> xs(num_classes), ys(num_classes);
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  for (std::size_t i = 0; i < n; ++i) {
    if (labels[i] < 0 || static_cast<std::uint64_t>(labels[i]) >= num_classes) {
      throw siam::value_error(std::string(who) + ": label " + std::to_string(labels[i]) +
                              " of point " + std::to_string(i) + " is not < number of classes " +
                              std::to_string(num_classes));
    }
    const double x = xy[2 * i], y = xy[2 * i + 1];
    if (!std::isfinite(x) || !std::isfinite(y)) continue;
    xs[static_cast<std::size_t>(labels[i])].push_back(x);
    ys[static_cast<std::size_t>(labels[i])].push_back(y);
    xlo = std::min(xlo, x);
    xhi = std::max(xhi, x);
    ylo = std::min(ylo, y);
    yhi = std::max(yhi, y);
  }
  const bool have_points = xlo <= xhi;

  const int width = 960, height = 760;
  render(who, png, width, height, [&](Canvas& c) {
    plstream& s = c.s();
    c.text(width / 2.0, 30, 0.5, title, 20, kBlack);
    const double left = 90, right = 190, top = 60, bottom = 80;
    const double pw = width - left - right, ph = height - top - bottom;
    c.viewport(left, top, pw, ph);

    // Equal scale on both axes: widen the range that needs fewer pixels per unit.
    auto [x0, x1] = have_points ? padded(xlo, xhi, 0.04) : std::pair{-1.0, 1.0};
    auto [y0, y1] = have_points ? padded(ylo, yhi, 0.04) : std::pair{-1.0, 1.0};
    const double units_per_px = std::max((x1 - x0) / pw, (y1 - y0) / ph);
    const double xc = (x0 + x1) / 2, yc = (y0 + y1) / 2;
    x0 = xc - units_per_px * pw / 2;
    x1 = xc + units_per_px * pw / 2;
    y0 = yc - units_per_px * ph / 2;
    y1 = yc + units_per_px * ph / 2;
    draw_axes(c, x0, x1, y0, y1, "embedding dimension 1", "embedding dimension 2");

    // One call per class; small filled circles, slightly smaller when there are many points.
    const double symbol_scale = n > 20000 ? 0.45 : n > 2000 ? 0.6 : 0.8;
    s.ssym(0, symbol_scale);
    for (std::size_t k = 0; k < num_classes; ++k) {
      if (xs[k].empty()) continue;
      s.col0(kClass0 + static_cast<PLINT>(k));
      s.poin(static_cast<PLINT>(xs[k].size()), xs[k].data(), ys[k].data(), 17);
    }
    if (!have_points) {
      c.text_height(16);
      s.col0(kGray);
      s.ptex((x0 + x1) / 2, (y0 + y1) / 2, 1, 0, 0.5, "no points");
    }

    // Legend: outside the plot, right, one entry per class.
    std::vector<std::string> escaped;
    for (const std::string& name : names)
      escaped.push_back(escape_text(name));
    std::vector<const char*> texts, symbols;
    std::vector<PLINT> opts, text_colours, symbol_colours, symbol_numbers;
    std::vector<PLFLT> symbol_scales;
    for (std::size_t k = 0; k < num_classes; ++k) {
      texts.push_back(escaped[k].c_str());
      symbols.push_back("\u25CF");  // BLACK CIRCLE, matches the plpoin dots
      opts.push_back(PL_LEGEND_SYMBOL);
      text_colours.push_back(kBlack);
      symbol_colours.push_back(kClass0 + static_cast<PLINT>(k));
      symbol_numbers.push_back(1);
      symbol_scales.push_back(1.4);
    }
    PLFLT legend_w = 0, legend_h = 0;
    c.text_height(14);
    s.legend(&legend_w, &legend_h, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX,
             PL_POSITION_RIGHT | PL_POSITION_OUTSIDE, 0.03, 0.0, 0.05, kWhite, kGray, 1, 0, 0,
             static_cast<PLINT>(num_classes), opts.data(), 1.0, 1.0, 2.2, 0.0, text_colours.data(),
             texts.data(), nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
             symbol_colours.data(), symbol_scales.data(), symbol_numbers.data(), symbols.data());
  });
}

void write_retrieval(const fs::path& png, Image query, const std::vector<Image>& neighbours,
                     const std::vector<float>& distances, const std::string& title,
                     const std::vector<int>& neighbour_labels, int query_label,
                     const std::vector<std::string>& label_names) {
  const char* who = "plots::write_retrieval";
  const auto label_text = [&](int l) {  // a class name when there is one, else the number
    return l >= 0 && static_cast<std::size_t>(l) < label_names.size()
               ? label_names[static_cast<std::size_t>(l)]
               : "label " + std::to_string(l);
  };
  check_image(who, query, "query");
  if (neighbours.empty()) throw siam::value_error(std::string(who) + ": no neighbours");
  if (distances.size() != neighbours.size()) {
    throw siam::value_error(std::string(who) + ": " + std::to_string(distances.size()) +
                            " distances for " + std::to_string(neighbours.size()) + " neighbours");
  }
  if (!neighbour_labels.empty() && neighbour_labels.size() != neighbours.size()) {
    throw siam::value_error(std::string(who) + ": " + std::to_string(neighbour_labels.size()) +
                            " labels for " + std::to_string(neighbours.size()) + " neighbours");
  }
  check_images(who, neighbours, "neighbours");

  const int k = static_cast<int>(neighbours.size());
  const int gcols = static_cast<int>(std::ceil(std::sqrt(double(k))));
  const int grows = (k + gcols - 1) / gcols;
  const double title_h = 64, header_h = 34, margin = 24, caption_h = 26;
  const double left_w = 400;                                   // query panel
  const double cell = std::clamp(600.0 / gcols, 60.0, 200.0);  // neighbour cell (image+caption)
  const double grid_w = gcols * cell, grid_h = grows * (cell + caption_h);
  const int width = static_cast<int>(margin + left_w + 2 * margin + grid_w + margin);
  const int height = static_cast<int>(title_h + header_h + std::max(grid_h, left_w) + margin);

  render(who, png, width, height, [&](Canvas& c) {
    c.text(width / 2.0, title_h / 2.0, 0.5, title, 20, kBlack);
    const double body_y = title_h + header_h;

    // Query panel.
    std::string query_caption = "query";
    if (query_label >= 0) query_caption += "  (" + label_text(query_label) + ")";
    const double qsize = left_w - 2 * caption_h;
    const double qy = body_y + std::max(0.0, (grid_h - qsize) / 2);  // centred on the grid
    c.text(margin + left_w / 2, qy - header_h / 2, 0.5, query_caption, 16, kBlack);
    c.image(query, margin + (left_w - qsize) / 2, qy, qsize, qsize);

    // Separator.
    const double sep_x = margin + left_w + margin;
    c.page();
    c.s().col0(kLightGray);
    c.s().width(2.0);
    c.s().join(sep_x, height - title_h, sep_x, margin);
    c.s().width(1.0);

    // Neighbours.
    const double gx = sep_x + margin;
    c.text(gx + grid_w / 2, title_h + header_h / 2, 0.5,
           std::to_string(k) + (k == 1 ? " nearest neighbour" : " nearest neighbours"), 16, kBlack);
    const bool have_labels = !neighbour_labels.empty();
    for (int i = 0; i < k; ++i) {
      const auto j = static_cast<std::size_t>(i);
      const double x = gx + (i % gcols) * cell, y = body_y + (i / gcols) * (cell + caption_h);
      const double gap = std::max(4.0, cell * 0.06);
      c.image(neighbours[j], x + gap / 2, y, cell - gap, cell - gap);
      std::string caption =
          std::string("#") + std::to_string(i + 1) + "  d = " + format_distance(distances[j]);
      PLINT colour = kBlack;
      if (have_labels) {
        caption += "  " + label_text(neighbour_labels[j]);
        if (query_label >= 0) colour = neighbour_labels[j] == query_label ? kGreen : kRed;
      }
      c.text(x + cell / 2, y + cell - gap + caption_h / 2, 0.5, caption, cell >= 150 ? 13 : 10,
             colour);
    }
  });
}

}  // namespace plots
