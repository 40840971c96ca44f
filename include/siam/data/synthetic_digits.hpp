// Synthetic handwritten digits, MNIST-like, for tests and demos without the real set.
//
// Each digit is a few strokes (polylines, elliptic arcs, cubic Beziers) in a unit
// box, with its shape parameters jittered per sample: loop sizes, stroke ends, bar
// lengths, and style variants (open or closed 4, 1 with or without a flag, 7 with or
// without a crossbar, ...). The skeleton is then bent by a smooth random displacement
// field (per-point jitter that keeps strokes smooth), stretched in x, slanted
// (shear, mostly to the right as in handwriting) and rotated. Rotation: with
// probability 0.9 the angle is normal with sd 6 degrees clipped to +-15, otherwise
// uniform in +-45 degrees; so a 6 and a 9 can occasionally be confused, as with real
// rotated digits. Like MNIST, the ink is scaled to fit a box of 17..20.5 pixels
// (aspect kept), its centre of mass is put near the centre of the 28 x 28 image
// (+-1 pixel) and strokes of 1.8..3.2 pixels width are rendered anti-aliased from
// the exact distance to each segment with a 1.5-pixel soft edge.
//
// Everything is drawn from siam::Rng, each sample from its own generator derived
// from (seed, index): the output is bit-identical for a seed and any number of
// threads. Pixels are quantised to k / 255, as MNIST's bytes, so a data set
// survives write_idx / read_idx exactly, and last-bit floating-point differences
// between builds (FMA contraction under -march=native, libm variants) would have to
// fall within ~1e-15 of a rounding boundary to change a pixel.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <string>
#include <vector>

#include "siam/data/dataset.hpp"
#include "siam/error.hpp"
#include "siam/random.hpp"

namespace siam::data {

namespace detail {

struct Pt {
  double x, y;
};
using Stroke = std::vector<Pt>;

inline double deg(double d) {
  return d * std::numbers::pi / 180.0;
}

// Appends points; the first point of a piece is skipped when it repeats the last one.
inline void add_point(Stroke& s, Pt p) {
  if (!s.empty() && std::abs(s.back().x - p.x) < 1e-9 && std::abs(s.back().y - p.y) < 1e-9) return;
  s.push_back(p);
}

// Straight piece, subdivided so that the displacement field can bend it.
inline void add_line(Stroke& s, Pt a, Pt b) {
  const int n = std::max(2, static_cast<int>(std::hypot(b.x - a.x, b.y - a.y) / 0.03));
  for (int i = 0; i <= n; ++i) {
    const double t = static_cast<double>(i) / n;
    add_point(s, {a.x + t * (b.x - a.x), a.y + t * (b.y - a.y)});
  }
}

// Elliptic arc (y points down: increasing angle turns clockwise on screen).
inline Pt arc_point(Pt c, double rx, double ry, double a_deg) {
  return {c.x + rx * std::cos(deg(a_deg)), c.y + ry * std::sin(deg(a_deg))};
}
inline void add_arc(Stroke& s, Pt c, double rx, double ry, double a0, double a1) {
  const int n = std::max(4, static_cast<int>(std::abs(a1 - a0) / 6.0));
  for (int i = 0; i <= n; ++i)
    add_point(s, arc_point(c, rx, ry, a0 + (a1 - a0) * i / n));
}

inline void add_bezier(Stroke& s, Pt p0, Pt p1, Pt p2, Pt p3) {
  const int n = 24;
  for (int i = 0; i <= n; ++i) {
    const double t = static_cast<double>(i) / n, u = 1.0 - t;
    const double a = u * u * u, b = 3 * u * u * t, c = 3 * u * t * t, d = t * t * t;
    add_point(
        s, {a * p0.x + b * p1.x + c * p2.x + d * p3.x, a * p0.y + b * p1.y + c * p2.y + d * p3.y});
  }
}

// The skeleton of one digit in the unit box (x right, y down), shape jittered.
// Every random draw is its own statement or sits in one braced list (sequenced left
// to right): draws in two arguments of one call would be made in an unspecified
// order, and the digits would then depend on the compiler.
inline std::vector<Stroke> digit_skeleton(int digit, Rng& rng) {
  const auto j = [&](double sd) { return sd * rng.normal(); };
  const auto u = [&](double lo, double hi) { return rng.uniform(lo, hi); };
  Stroke s, s2;  // s2: a second pen stroke, when the digit has one
  switch (digit) {
    case 0: {  // an ellipse, usually started at the top and drawn counterclockwise
      const double rx = u(0.22, 0.34), ry = 0.42 + j(0.02), a0 = u(-120, -60);
      const double overlap = u(-12, 25);
      add_arc(s, {0.5, 0.5}, rx, ry, a0, a0 - 360.0 - overlap);
      break;
    }
    case 1: {  // a vertical stroke, often with a flag, rarely with a base
      const Pt top{0.5 + j(0.03), 0.04 + j(0.02)}, bottom{0.5 + j(0.03), 0.96 + j(0.02)};
      if (rng.bernoulli(0.45)) {
        const Pt flag{top.x - u(0.12, 0.22), top.y + u(0.08, 0.18)};
        add_line(s, flag, top);
      }
      const Pt c1{top.x + j(0.03), 0.35}, c2{bottom.x + j(0.03), 0.65};
      add_bezier(s, top, c1, c2, bottom);
      if (rng.bernoulli(0.15)) {
        const double l = u(0.12, 0.2), r = u(0.12, 0.2);
        add_line(s2, {bottom.x - l, bottom.y}, {bottom.x + r, bottom.y});
      }
      break;
    }
    case 2: {  // top arc, a diagonal sweep to the lower left, a base line
      const Pt c{0.5 + j(0.02), 0.3 + j(0.02)};
      const double rx = u(0.23, 0.3), ry = u(0.18, 0.24), a0 = u(165, 205), a1 = u(5, 35);
      add_arc(s, c, rx, ry, a0, 360.0 + a1);
      const Pt p0 = s.back();
      const Pt t{-std::sin(deg(a1)) * rx, std::cos(deg(a1)) * ry};  // tangent at the arc end
      const Pt p2{0.35 + j(0.04), 0.75 + j(0.04)};
      const Pt p3{0.16 + j(0.03), 0.92 + j(0.02)};
      add_bezier(s, p0, {p0.x + 0.9 * t.x, p0.y + 0.9 * t.y}, p2, p3);
      const Pt end{0.86 + j(0.04), 0.92 + j(0.03)};
      add_line(s, p3, end);
      break;
    }
    case 3: {  // two arcs meeting in the middle, the lower one larger
      const Pt c1{0.48 + j(0.02), 0.27 + j(0.02)}, c2{0.48 + j(0.02), 0.7 + j(0.02)};
      const double r1x = u(0.2, 0.27), r1y = u(0.18, 0.22), r2x = u(0.25, 0.32),
                   r2y = u(0.21, 0.26);
      const double a0 = u(195, 225), a1 = u(95, 115), b0 = u(-125, -100), b1 = u(140, 170);
      add_arc(s, c1, r1x, r1y, a0, 360.0 + a1);
      add_arc(s, c2, r2x, r2y, b0, b1);
      break;
    }
    case 4: {
      const double bar = 0.62 + j(0.03), vx = 0.66 + j(0.03);
      if (rng.bernoulli(0.55)) {  // the open 4: an L then a long vertical
        const Pt a{0.28 + j(0.04), 0.02 + j(0.03)};
        const Pt corner{0.2 + j(0.03), bar};
        const Pt end{0.86 + j(0.03), bar + j(0.02)};
        add_line(s, a, corner);
        add_line(s, corner, end);
      } else {  // the closed 4: a diagonal from the top of the vertical
        const Pt a{vx + j(0.02), 0.0};
        const Pt corner{0.12 + j(0.03), bar};
        const Pt end{0.88 + j(0.03), bar + j(0.02)};
        add_line(s, a, corner);
        add_line(s, corner, end);
      }
      const Pt top{vx, j(0.03)}, bottom{vx + j(0.03), 1.0};
      add_line(s2, top, bottom);
      break;
    }
    case 5: {  // a short stem, a belly opening to the left, a bar
      const Pt c{0.47 + j(0.02), 0.67 + j(0.02)};
      const double rx = u(0.26, 0.32), ry = u(0.22, 0.27), a0 = u(-165, -140), a1 = u(130, 165);
      const Pt top{0.31 + j(0.03), 0.06 + j(0.02)};
      add_line(s, top, arc_point(c, rx, ry, a0));
      add_arc(s, c, rx, ry, a0, a1);
      const Pt end{0.82 + j(0.04), 0.05 + j(0.03)};
      add_line(s2, top, end);
      break;
    }
    case 6: {  // a stem curving down into a loop at the bottom
      const Pt c{0.5 + j(0.02), 0.7 + j(0.02)};
      const double rx = u(0.22, 0.29), ry = u(0.2, 0.26), sweep = u(320, 365);
      const Pt left = arc_point(c, rx, ry, 180.0);
      const Pt p0{0.66 + j(0.04), 0.02 + j(0.02)}, p1{0.42 + j(0.03), 0.08 + j(0.03)},
          p2{left.x + j(0.02), 0.35 + j(0.04)};
      add_bezier(s, p0, p1, p2, left);
      add_arc(s, c, rx, ry, 180.0, 180.0 - sweep);
      break;
    }
    case 7: {  // a bar and a long diagonal, sometimes crossed
      const Pt a{0.14 + j(0.03), 0.08 + j(0.03)}, b{0.86 + j(0.03), 0.06 + j(0.02)};
      add_line(s, a, b);
      const Pt e{0.42 + j(0.06), 0.98};
      const Pt p1{0.75 + j(0.03), 0.35 + j(0.04)}, p2{e.x + 0.08 + j(0.03), 0.7};
      add_bezier(s, b, p1, p2, e);
      if (rng.bernoulli(0.15)) {
        const Pt l{0.45 + j(0.02), 0.52 + j(0.02)}, r{0.8 + j(0.03), 0.5 + j(0.02)};
        add_line(s2, l, r);
      }
      break;
    }
    case 8: {  // two stacked loops, the lower one larger
      const Pt c1{0.5 + j(0.03), 0.27 + j(0.02)}, c2{0.5 + j(0.03), 0.7 + j(0.02)};
      const double r1x = u(0.16, 0.23), r1y = u(0.18, 0.23), r2x = u(0.21, 0.28),
                   r2y = u(0.22, 0.27), o1 = u(0, 20), o2 = u(0, 20);
      add_arc(s, c1, r1x, r1y, 90.0, 90.0 - 360.0 - o1);
      add_arc(s2, c2, r2x, r2y, -90.0, 270.0 + o2);
      break;
    }
    case 9: {  // a loop at the top and a tail down from its right side
      const Pt c{0.47 + j(0.02), 0.28 + j(0.02)};
      const double rx = u(0.2, 0.27), ry = u(0.18, 0.24), a0 = u(-10, 15), sweep = u(350, 380);
      add_arc(s, c, rx, ry, a0, a0 - sweep);
      const Pt p0 = arc_point(c, rx, ry, 0.0);
      const Pt e{p0.x - u(0.0, 0.15), 0.97 + j(0.02)};
      const Pt p1{p0.x + j(0.02), 0.5}, p2{e.x + u(0.0, 0.08), 0.8};
      add_bezier(s2, p0, p1, p2, e);
      break;
    }
    default:
      throw value_error("render_digit: digit " + std::to_string(digit) + " is not in 0..9");
  }
  std::vector<Stroke> strokes{std::move(s)};
  if (!s2.empty()) strokes.push_back(std::move(s2));
  return strokes;
}

// Murmur3's finaliser: decorrelates (seed, index) pairs before they seed an Rng
// (Rng's own seeding would give overlapping streams for seeds a fixed step apart).
inline std::uint64_t mix64(std::uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

inline double smoothstep01(double t) {
  t = std::clamp(t, 0.0, 1.0);
  return t * t * (3.0 - 2.0 * t);
}

}  // namespace detail

/// Side of the images render_digit draws.
inline constexpr std::size_t synthetic_side = 28;

/// Draws one handwritten-looking `digit` (0..9) into out[0 .. 28*28), row-major,
/// values in [0, 1], using only `rng`. Throws value_error if digit is not in 0..9.
inline void render_digit(int digit, Rng& rng, float* out) {
  using detail::Pt;
  constexpr int side = static_cast<int>(synthetic_side);
  std::vector<detail::Stroke> strokes = detail::digit_skeleton(digit, rng);

  // Smooth displacement field: per axis a broad bend and a faint wobble (plane waves).
  double amp[4], fx[4], fy[4], ph[4];
  for (int k = 0; k < 4; ++k) {
    const bool wobble = k % 2 == 1;
    amp[k] = rng.uniform(0.0, wobble ? 0.008 : 0.025);
    const double f = wobble ? rng.uniform(2.0, 3.0) : rng.uniform(0.4, 1.4);
    const double a = rng.uniform(0.0, 2.0 * std::numbers::pi);
    fx[k] = f * std::cos(a);
    fy[k] = f * std::sin(a);
    ph[k] = rng.uniform(0.0, 2.0 * std::numbers::pi);
  }
  const double stretch = rng.uniform(0.8, 1.15);
  const double shear = std::clamp(rng.normal(0.12, 0.15), -0.25, 0.5);
  const double angle =
      rng.bernoulli(0.9) ? std::clamp(rng.normal(0.0, 6.0), -15.0, 15.0) : rng.uniform(-45.0, 45.0);
  const double ca = std::cos(detail::deg(angle)), sa = std::sin(detail::deg(angle));
  const double half_width = rng.uniform(0.9, 1.6);
  const double box = rng.uniform(17.0, 20.5);
  const double shift_x = rng.uniform(-1.0, 1.0), shift_y = rng.uniform(-1.0, 1.0);

  double minx = 1e9, maxx = -1e9, miny = 1e9, maxy = -1e9;
  for (auto& s : strokes)
    for (Pt& p : s) {
      const double two_pi = 2.0 * std::numbers::pi;
      const double dx = amp[0] * std::sin(two_pi * (fx[0] * p.x + fy[0] * p.y) + ph[0]) +
                        amp[1] * std::sin(two_pi * (fx[1] * p.x + fy[1] * p.y) + ph[1]);
      const double dy = amp[2] * std::sin(two_pi * (fx[2] * p.x + fy[2] * p.y) + ph[2]) +
                        amp[3] * std::sin(two_pi * (fx[3] * p.x + fy[3] * p.y) + ph[3]);
      double x = (p.x + dx - 0.5) * stretch, y = p.y + dy - 0.5;
      x -= shear * y;  // top (y < 0) leans right for shear > 0
      p = {ca * x - sa * y, sa * x + ca * y};
      minx = std::min(minx, p.x);
      maxx = std::max(maxx, p.x);
      miny = std::min(miny, p.y);
      maxy = std::max(maxy, p.y);
    }

  // Fit the ink (skeleton plus stroke width) into the box, aspect kept.
  const double extent = std::max({maxx - minx, maxy - miny, 1e-6});
  const double scale = std::max(box - 2.0 * half_width, 4.0) / extent;
  double cx = 0.0, cy = 0.0, mass = 0.0;  // centre of mass of the skeleton, by length
  for (auto& s : strokes) {
    for (Pt& p : s)
      p = {p.x * scale, p.y * scale};
    for (std::size_t i = 1; i < s.size(); ++i) {
      const double len = std::hypot(s[i].x - s[i - 1].x, s[i].y - s[i - 1].y);
      cx += len * 0.5 * (s[i].x + s[i - 1].x);
      cy += len * 0.5 * (s[i].y + s[i - 1].y);
      mass += len;
    }
  }
  cx /= std::max(mass, 1e-9);
  cy /= std::max(mass, 1e-9);
  // Centre of mass to the image centre, then keep the ink inside the frame.
  const double margin = 1.1 * half_width + 0.75;  // the widest stroke's soft edge
  const auto place = [&](double lo, double hi, double c, double shift) {
    double off = side / 2.0 + shift - c;
    off = std::min(off, side - margin - hi * scale);
    off = std::max(off, margin - lo * scale);
    return off;
  };
  const double ox = place(minx, maxx, cx, shift_x), oy = place(miny, maxy, cy, shift_y);

  std::fill(out, out + side * side, 0.0f);
  for (auto& s : strokes) {
    const double hw = half_width * rng.uniform(0.9, 1.1);  // pressure differs per stroke
    const double reach = hw + 0.75;                        // soft edge: from hw - 0.75 to hw + 0.75
    for (std::size_t i = 0; i + 1 < std::max<std::size_t>(s.size(), 2); ++i) {
      const Pt a{s[i].x + ox, s[i].y + oy};
      const Pt b = s.size() > 1 ? Pt{s[i + 1].x + ox, s[i + 1].y + oy} : a;
      const int x0 = std::max(0, static_cast<int>(std::floor(std::min(a.x, b.x) - reach)));
      const int x1 = std::min(side - 1, static_cast<int>(std::ceil(std::max(a.x, b.x) + reach)));
      const int y0 = std::max(0, static_cast<int>(std::floor(std::min(a.y, b.y) - reach)));
      const int y1 = std::min(side - 1, static_cast<int>(std::ceil(std::max(a.y, b.y) + reach)));
      const double ex = b.x - a.x, ey = b.y - a.y, ee = ex * ex + ey * ey;
      for (int py = y0; py <= y1; ++py)
        for (int px = x0; px <= x1; ++px) {
          const double qx = px + 0.5 - a.x, qy = py + 0.5 - a.y;
          const double t = ee > 0.0 ? std::clamp((qx * ex + qy * ey) / ee, 0.0, 1.0) : 0.0;
          const double d = std::hypot(qx - t * ex, qy - t * ey);
          // Quantised to k / 255 like MNIST's bytes (and exactly what read_idx yields).
          const double cover = detail::smoothstep01((reach - d) / 1.5);
          const float v = static_cast<float>(std::lround(cover * 255.0)) / 255.0f;
          float& o = out[py * side + px];
          o = std::max(o, v);
        }
    }
  }
}

/// n synthetic 28 x 28 digits. Labels are balanced: label i % 10 for i < n, then
/// shuffled deterministically (so every class has floor(n/10) or ceil(n/10) images).
/// Deterministic for a seed; image i depends only on (seed, i, its label).
/// Throws value_error if n == 0.
inline Dataset synthetic_digits(std::size_t n, std::uint64_t seed) {
  if (n == 0) throw value_error("synthetic_digits: n must be > 0");
  Dataset ds;
  ds.rows = ds.cols = synthetic_side;
  ds.labels.resize(n);
  for (std::size_t i = 0; i < n; ++i)
    ds.labels[i] = static_cast<std::int64_t>(i % 10);
  Rng shuffle(detail::mix64(seed ^ 0x5ca1ab1e0ddba11ULL));
  for (std::size_t i = n - 1; i > 0; --i)  // Fisher-Yates
    std::swap(ds.labels[i], ds.labels[shuffle.below(i + 1)]);
  ds.images.resize(n * ds.pixels());
  const auto count = static_cast<std::ptrdiff_t>(n);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
  for (std::ptrdiff_t i = 0; i < count; ++i) {
    const auto k = static_cast<std::uint64_t>(i);
    Rng rng(detail::mix64(seed + detail::mix64(k + 0x9e3779b97f4a7c15ULL)));
    render_digit(static_cast<int>(ds.labels[static_cast<std::size_t>(i)]), rng,
                 ds.images.data() + static_cast<std::size_t>(i) * ds.pixels());
  }
  return ds;
}

}  // namespace siam::data
