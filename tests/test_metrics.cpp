// Tests of siam::metrics on tiny 2-D embeddings whose answers are worked out by hand.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "siam/error.hpp"
#include "siam/metrics.hpp"

namespace m = siam::metrics;

namespace {

// Training set:   index  point    label
//                   0    (0, 0)     0
//                   1    (1, 0)     0
//                   2    (10, 0)    1
//                   3    (11, 0)    1
//                   4    (5, 5)     2
const std::vector<float> train{0, 0, 1, 0, 10, 0, 11, 0, 5, 5};
const std::vector<std::int64_t> train_labels{0, 0, 1, 1, 2};

// Test set:       q0 (0.4, 0) label 0, q1 (9, 0) label 1, q2 (5, 4) label 1, q3 (6, 0) label 1
const std::vector<float> test{0.4f, 0, 9, 0, 5, 4, 6, 0};
const std::vector<std::int64_t> test_labels{0, 1, 1, 1};

double knn(std::size_t k) {
  return m::knn_accuracy(train.data(), train_labels.data(), 5, test.data(), test_labels.data(), 4,
                         2, k);
}

}  // namespace

TEST_CASE("knn_accuracy with k = 1") {
  // q0 -> t0 (d 0.4): 0, right.   q1 -> t2 (d 1): 1, right.
  // q2 -> t4 (d 1): 2, wrong.     q3 (6,0): d = 6, 5, 4, 5, 5.10 -> t2: 1, right.
  CHECK(knn(1) == doctest::Approx(0.75));
}

TEST_CASE("knn_accuracy with k = 3: equal distances taken by smaller index") {
  // q2 (5,4): t4 at 1, t1 at sqrt(32) = 5.66, then t0 and t2 both at sqrt(41) = 6.40:
  // t0 (smaller index) is the third neighbour -> votes 0: 2, 2: 1 -> 0, wrong.
  // q0: t0, t1, t4 -> 0, right. q1 (9,0): t2 1, t3 2, t4 sqrt(41) -> 1, right.
  // q3 (6,0): t2 at 4, t1 and t3 at 5, t4 at 5.10 -> votes 1: 2, 0: 1 -> 1, right.
  CHECK(knn(3) == doctest::Approx(0.75));
}

TEST_CASE("knn_accuracy with k = 5: vote ties broken by summed distance") {
  // k = 5 = every training point votes: 0 and 1 get two votes each, 2 gets one.
  // q0: sums 0: 0.4 + 0.6 = 1.0, 1: 9.6 + 10.6 = 20.2 -> 0, right.
  // q1: sums 0: 9 + 8 = 17, 1: 1 + 2 = 3 -> 1, right.
  // q2 (label 1): sums 0: sqrt(41) + sqrt(32) = 12.06, 1: sqrt(41) + sqrt(52) = 13.61 -> 0, wrong.
  // q3 (label 1): sums 0: 6 + 5 = 11, 1: 4 + 5 = 9 -> 1, right.
  CHECK(knn(5) == doctest::Approx(0.75));
}

TEST_CASE("knn_accuracy: a complete tie goes to the smaller label") {
  // Points (-1,0) label 3 and (1,0) label 2, query (0,0), k = 2: one vote each, both
  // summed distances 1 -> label 2.
  const std::vector<float> tr{-1, 0, 1, 0}, te{0, 0};
  const std::vector<std::int64_t> lt{3, 2}, q2{2}, q3{3};
  CHECK(m::knn_accuracy(tr.data(), lt.data(), 2, te.data(), q2.data(), 1, 2, 2) == 1.0);
  CHECK(m::knn_accuracy(tr.data(), lt.data(), 2, te.data(), q3.data(), 1, 2, 2) == 0.0);
}

TEST_CASE("knn_accuracy: argument errors") {
  CHECK_THROWS_AS(knn(0), siam::value_error);
  CHECK_THROWS_AS(knn(6), siam::value_error);
  CHECK_THROWS_AS(m::knn_accuracy(train.data(), train_labels.data(), 5, test.data(),
                                  test_labels.data(), 0, 2, 1),
                  siam::value_error);
  CHECK_THROWS_AS(
      m::knn_accuracy(nullptr, train_labels.data(), 5, test.data(), test_labels.data(), 4, 2, 1),
      siam::value_error);
  std::vector<float> bad = test;
  bad[3] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(m::knn_accuracy(train.data(), train_labels.data(), 5, bad.data(),
                                  test_labels.data(), 4, 2, 1),
                  siam::numeric_error);
}

namespace {
// Points:  a0 (0,0) L0,  a1 (1,0) L0,  a2 (0,1) L1,  a3 (5,5) L1,  a4 (6,5) L1
const std::vector<float> pts{0, 0, 1, 0, 0, 1, 5, 5, 6, 5};
const std::vector<std::int64_t> pl{0, 0, 1, 1, 1};
}  // namespace

TEST_CASE("precision_at_k") {
  // k = 1: a0 -> a1 and a2 both at 1, a1 (smaller index): same (1).
  //        a1 -> a0: same (1). a2 -> a0 (1; a1 is at 1.41): differs (0).
  //        a3 -> a4: same (1). a4 -> a3: same (1). Mean 4/5.
  CHECK(m::precision_at_k(pts.data(), pl.data(), 5, 2, 1) == doctest::Approx(0.8));
  // k = 2: a0 -> a1, a2: 1/2.  a1 -> a0 (1), a2 (1.41): 1/2.  a2 -> a0, a1: 0.
  //        a3 -> a4 (1), then a1 and a2 both at sqrt(41): a1: 1/2.
  //        a4 -> a3 (1), a1 (sqrt(50)): 1/2.  Mean (0.5 * 4 + 0) / 5 = 0.4.
  CHECK(m::precision_at_k(pts.data(), pl.data(), 5, 2, 2) == doctest::Approx(0.4));
  // k = 4 (all others): a0: 1/4, a1: 1/4, a2: 2/4, a3: 2/4, a4: 2/4 -> 2 / 5.
  CHECK(m::precision_at_k(pts.data(), pl.data(), 5, 2, 4) == doctest::Approx(0.4));
  CHECK_THROWS_AS(m::precision_at_k(pts.data(), pl.data(), 5, 2, 5), siam::value_error);
  CHECK_THROWS_AS(m::precision_at_k(pts.data(), pl.data(), 5, 2, 0), siam::value_error);
  CHECK_THROWS_AS(m::precision_at_k(pts.data(), pl.data(), 1, 2, 1), siam::value_error);
}

TEST_CASE("nearest: distance order, ties by index, query exclusion") {
  using V = std::vector<std::uint32_t>;
  // From a3 (5,5): a4 at 1, a1 and a2 at sqrt(41), a0 at sqrt(50).
  CHECK(m::nearest(pts.data(), 5, 2, 3, 3) == V{4, 1, 2});
  CHECK(m::nearest(pts.data(), 5, 2, 3, 4) == V{4, 1, 2, 0});
  CHECK(m::nearest(pts.data(), 5, 2, 3, 3, false) == V{3, 4, 1});
  // From a0: a1, a2 at 1, a3 at sqrt(50), a4 at sqrt(61).
  CHECK(m::nearest(pts.data(), 5, 2, 0, 4) == V{1, 2, 3, 4});
  CHECK(m::nearest(pts.data(), 5, 2, 0, 5, false) == V{0, 1, 2, 3, 4});
  CHECK_THROWS_AS(m::nearest(pts.data(), 5, 2, 0, 5), siam::value_error);  // only 4 others
  CHECK_THROWS_AS(m::nearest(pts.data(), 5, 2, 5, 1), siam::value_error);  // no row 5
}

TEST_CASE("nearest_with_distances: the indices of nearest and their exact distances") {
  using V = std::vector<std::uint32_t>;
  // From a3 (5,5): a4 at 1, a1 and a2 at sqrt(41), a0 at sqrt(50).
  const auto r = m::nearest_with_distances(pts.data(), 5, 2, 3, 4);
  CHECK(r.indices == V{4, 1, 2, 0});
  CHECK(r.distances == std::vector<double>{1.0, std::sqrt(41.0), std::sqrt(41.0), std::sqrt(50.0)});
  const auto self = m::nearest_with_distances(pts.data(), 5, 2, 3, 2, false);
  CHECK(self.indices == V{3, 4});
  CHECK(self.distances == std::vector<double>{0.0, 1.0});
  CHECK_THROWS_AS(m::nearest_with_distances(pts.data(), 5, 2, 0, 5), siam::value_error);
}

TEST_CASE("pair_stats: exact values, the d = 0 guard and pairs beyond the margin") {
  // e0 (0,0) L0, e1 (3,4) L0, e2 (0,0) L0, e3 (0,1) L1, e4 (0,0) L2; margin 2.
  const std::vector<float> e{0, 0, 3, 4, 0, 0, 0, 1, 0, 0};
  const std::vector<std::int64_t> el{0, 0, 0, 1, 2};
  // pair     y   sum sq   d = sqrt(sum + 1e-6)    loss
  // (0,1)    1   25       5.0000001               0.5 * 25.000001         = 12.5000005
  // (0,2)    1   0        0.001 (guard)           0.5 * 1e-6              = 0.0000005
  // (0,3)    0   1        1.0000005               0.5 * (2 - 1.0000005)^2 = 0.4999995
  // (1,3)    0   18       4.2426408 >= margin     0
  // (2,4)    0   0        0.001                   0.5 * 1.999^2           = 1.9980005
  const std::vector<std::uint32_t> first{0, 0, 0, 1, 2}, second{1, 2, 3, 3, 4};
  const std::vector<float> y{1, 1, 0, 0, 0};
  const m::PairStats s = m::pair_stats(e.data(), el.data(), 5, 2, first, second, y, 2.0);
  CHECK(s.n_pairs == 5);
  // (12.5000005 + 0.0000005 + 0.4999995 + 0 + 1.9980005) / 5 = 14.998001 / 5
  CHECK(s.mean_loss == doctest::Approx(2.9996002).epsilon(1e-9));
  // (5.0000001 + 0.001) / 2
  CHECK(s.mean_similar_distance == doctest::Approx(2.50050005).epsilon(1e-9));
  // (1.0000005 + 4.2426408 + 0.001) / 3, with sqrt(18.000001) = 4.242640805
  CHECK(s.mean_dissimilar_distance == doctest::Approx(5.243641305 / 3).epsilon(1e-9));
  CHECK(s.dissimilar_beyond_margin == doctest::Approx(1.0 / 3.0));

  // Only dissimilar pairs: the similar mean is undefined (NaN); labels may be omitted.
  const std::vector<std::uint32_t> f2{1}, s2{3};
  const std::vector<float> y2{0};
  const m::PairStats t = m::pair_stats(e.data(), nullptr, 5, 2, f2, s2, y2, 5.0);
  CHECK(std::isnan(t.mean_similar_distance));
  CHECK(t.dissimilar_beyond_margin == 0.0);  // d = 4.24 < 5
  // 0.5 * (5 - sqrt(18.000001))^2
  const double gap = 5.0 - std::sqrt(18.000001);
  CHECK(t.mean_loss == doctest::Approx(0.5 * gap * gap).epsilon(1e-12));
}

TEST_CASE("pair_stats: argument errors") {
  const std::vector<float> e{0, 0, 1, 1};
  const std::vector<std::int64_t> el{0, 1};
  const std::vector<std::uint32_t> a{0}, b{1}, two{0, 1};
  const std::vector<float> y0{0}, y1{1}, yhalf{0.5f};
  CHECK_THROWS_AS(m::pair_stats(e.data(), el.data(), 2, 2, two, b, y0, 1.0), siam::shape_error);
  CHECK_THROWS_AS(m::pair_stats(e.data(), el.data(), 2, 2, {}, {}, {}, 1.0), siam::value_error);
  CHECK_THROWS_AS(m::pair_stats(e.data(), el.data(), 1, 2, a, b, y0, 1.0), siam::value_error);
  CHECK_THROWS_AS(m::pair_stats(e.data(), nullptr, 2, 2, a, b, yhalf, 1.0), siam::value_error);
  CHECK_THROWS_AS(m::pair_stats(e.data(), el.data(), 2, 2, a, b, y1, 1.0), siam::value_error);
  CHECK_THROWS_AS(m::pair_stats(e.data(), el.data(), 2, 2, a, b, y0, 0.0), siam::value_error);
  CHECK_NOTHROW(m::pair_stats(e.data(), el.data(), 2, 2, a, b, y0, 1.0));
}

namespace {
// 10,000 classes on a line, ordered by (label % 256, label / 256): classes whose labels agree
// in their low byte are neighbours, so a label cut to 8 bits would merge them.
constexpr std::int64_t kManyClasses = 10000;
std::vector<std::int64_t> line_order() {
  std::vector<std::int64_t> order;
  for (std::int64_t low = 0; low < 256; ++low)
    for (std::int64_t c = low; c < kManyClasses; c += 256)
      order.push_back(c);
  return order;
}
}  // namespace

TEST_CASE("knn_accuracy and precision_at_k with 10,000 classes") {
  const std::vector<std::int64_t> order = line_order();
  REQUIRE(order.size() == static_cast<std::size_t>(kManyClasses));
  const std::size_t n = order.size();
  // The class at position p has the training point (10p, 0); every 4th class also has the
  // test point (10p + 4, 0), whose 3 nearest training points are its own (d 4), the next
  // class's (d 6) and the previous one's (d 14): one vote each, and the smallest summed
  // distance (its own class) wins.
  std::vector<float> tr, te;
  std::vector<std::int64_t> te_labels, shifted;
  for (std::size_t p = 0; p < n; ++p) {
    tr.insert(tr.end(), {10.0f * static_cast<float>(p), 0.0f});
    if (p % 4 != 1) continue;
    te.insert(te.end(), {10.0f * static_cast<float>(p) + 4.0f, 0.0f});
    te_labels.push_back(order[p]);
    shifted.push_back(order[p + 1]);  // the next class's label
  }
  const std::size_t nt = te_labels.size();
  CHECK(m::knn_accuracy(tr.data(), order.data(), n, te.data(), te_labels.data(), nt, 2, 1) == 1.0);
  CHECK(m::knn_accuracy(tr.data(), order.data(), n, te.data(), te_labels.data(), nt, 2, 3) == 1.0);
  CHECK(m::knn_accuracy(tr.data(), order.data(), n, te.data(), shifted.data(), nt, 2, 1) == 0.0);

  // One row (10p, 0) per class, plus a twin row (10p + 1, 0) for the first 1,000 classes.
  // The nearest other row of a twin is its twin (d 1); of any other row, a row of a
  // neighbouring class (d 9 or 10). precision@1 = 2,000 / 11,000 exactly; with labels
  // cut to 8 bits most neighbours would share the row's label.
  std::vector<float> rows;
  std::vector<std::int64_t> row_labels;
  for (std::size_t p = 0; p < n; ++p) {
    const float x = 10.0f * static_cast<float>(p);
    rows.insert(rows.end(), {x, 0.0f});
    row_labels.push_back(order[p]);
    if (p >= 1000) continue;
    rows.insert(rows.end(), {x + 1.0f, 0.0f});
    row_labels.push_back(order[p]);
  }
  REQUIRE(row_labels.size() == 11000);
  CHECK(m::precision_at_k(rows.data(), row_labels.data(), 11000, 2, 1) ==
        doctest::Approx(2000.0 / 11000.0).epsilon(1e-12));
}
