// The metric-learning losses (loss/*.hpp) against central differences in double
// precision and against plain-loop references of their formulas; their errors; and the
// contrastive loss's squared-distance form.
#include <cmath>
#include <memory>
#include <vector>

#include "gradcheck.hpp"

using gradcheck::check;
using gradcheck::check_throws_identically;
using gradcheck::random;
using gradcheck::Tape;
using gradcheck::Tensor;
using gradcheck::Var;
using siam::Distance;
using siam::index_t;
using siam::MiningOptions;
using siam::MiningStats;
using siam::Reduction;
using siam::Rng;
using siam::Shape;
using siam::shape_error;
using siam::TripletOptions;
using siam::value_error;
using VarList = std::vector<Var>;

namespace {
double dist(const Tensor& x, index_t i, const Tensor& y, index_t j, Distance d) {
  double q = 0;
  for (index_t c = 0; c < x.cols(); ++c)
    q += (x(i, c) - y(j, c)) * (x(i, c) - y(j, c));
  return d == Distance::squared ? q : std::sqrt(q + 1e-6);
}
double softplus(double x) {
  return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x)));
}
}  // namespace

TEST_CASE("triplet loss: gradient, value by loop, 1x1, empty, errors") {
  Rng rng(40);
  for (auto [n, d] : {std::pair{5, 3}, std::pair{1, 1}, std::pair{0, 2}})
    for (Distance dd : {Distance::euclidean, Distance::squared})
      for (Reduction r : {Reduction::mean, Reduction::sum}) {
        CAPTURE(n);
        Tensor a = random(Shape{n, d}, rng), p = random(Shape{n, d}, rng),
               q = random(Shape{n, d}, rng);
        TripletOptions opt{0.7, dd, r};
        check([opt](Tape&, VarList& v) { return triplet_loss(v[0], v[1], v[2], opt); }, {a, p, q});
        Tape t;
        const double got =
            triplet_loss(t.constant(a), t.constant(p), t.constant(q), opt).value().item();
        double want = 0;
        for (index_t i = 0; i < n; ++i)
          want += std::max(dist(a, i, p, i, dd) - dist(a, i, q, i, dd) + 0.7, 0.0);
        if (r == Reduction::mean && n > 0) want /= n;
        CHECK(got == doctest::Approx(want).epsilon(1e-12));
      }
  // the stacked form equals the three-argument one
  Tensor f = random(Shape{9, 2}, rng);
  check([](Tape&, VarList& v) { return triplet_loss_stacked(v[0], {0.3}); }, {f});
  check_throws_identically<shape_error>(
      [](Tape&, VarList& v) { return triplet_loss(v[0], v[1], v[2]); },
      {Tensor(Shape{3, 2}), Tensor(Shape{3, 2}), Tensor(Shape{2, 2})});
  check_throws_identically<value_error>(
      [](Tape&, VarList& v) { return triplet_loss(v[0], v[1], v[2], {-0.1}); },
      {Tensor(Shape{3, 2}), Tensor(Shape{3, 2}), Tensor(Shape{3, 2})});
  check_throws_identically<shape_error>(
      [](Tape&, VarList& v) { return triplet_loss_stacked(v[0]); }, {Tensor(Shape{4, 2})});
}

TEST_CASE("batch-hard triplet loss: gradient, mined value by loop, soft margin, stats, errors") {
  Rng rng(41);
  const std::vector<int> labels{0, 0, 1, 1, 2, 2, 1, 0};
  for (Distance dd : {Distance::euclidean, Distance::squared})
    for (bool soft : {false, true}) {
      CAPTURE(soft);
      Tensor e = random(Shape{8, 3}, rng);
      MiningOptions opt{0.5, soft, dd, false};
      check([&](Tape&, VarList& v) { return batch_hard_triplet_loss(v[0], labels, opt); }, {e});
      double want = 0;
      index_t active = 0;
      for (index_t a = 0; a < 8; ++a) {
        double hp = -1, hn = 1e300;
        for (index_t j = 0; j < 8; ++j) {
          const double v = dist(e, a, e, j, dd);
          if (labels[a] == labels[j] && j != a) hp = std::max(hp, v);
          if (labels[a] != labels[j]) hn = std::min(hn, v);
        }
        const double term = soft ? softplus(hp - hn) : std::max(hp - hn + 0.5, 0.0);
        want += term / 8;
        active += soft || hp - hn + 0.5 > 0;
      }
      Tape t;
      MiningStats st;
      CHECK(batch_hard_triplet_loss(t.constant(e), labels, opt, &st).value().item() ==
            doctest::Approx(want).epsilon(1e-9));
      CHECK(st.anchors == 8);
      CHECK(st.active == active);
    }
  // an anchor whose class has one image: an error naming it, or skipped on request
  const std::vector<int> lonely{0, 0, 1, 1, 7};
  Tensor e = random(Shape{5, 2}, rng);
  Tape t;
  try {
    (void)batch_hard_triplet_loss(t.constant(e), lonely);
    FAIL("no error");
  } catch (const value_error& err) {
    CHECK(std::string(err.what()).find("anchor 4 (label 7)") != std::string::npos);
  }
  MiningStats st;
  (void)batch_hard_triplet_loss(t.constant(e), lonely, {0.2, false, Distance::euclidean, true},
                                &st);
  CHECK(st.anchors == 4);
  const std::vector<int> one_class{3, 3, 3};
  Tensor e3 = random(Shape{3, 2}, rng);
  CHECK_THROWS_AS(
      batch_hard_triplet_loss(t.constant(e3), one_class, {0.2, false, Distance::euclidean, true}),
      value_error);
  const std::vector<int> short_labels{0, 1};
  CHECK_THROWS_AS(batch_hard_triplet_loss(t.constant(e3), short_labels), shape_error);
  CHECK_THROWS_AS(batch_hard_triplet_loss(t.constant(e), lonely, {-1.0}), value_error);
}

TEST_CASE("batch-all triplet loss: gradient, value by loop, soft margin, stats, errors") {
  Rng rng(42);
  const std::vector<std::int64_t> labels{5, 5, 9, 9, 9, 2, 5};
  for (Distance dd : {Distance::euclidean, Distance::squared})
    for (bool soft : {false, true}) {
      CAPTURE(soft);
      Tensor e = random(Shape{7, 3}, rng, -0.6, 0.6);
      MiningOptions opt{0.4, soft, dd, false};
      check([&](Tape&, VarList& v) { return batch_all_triplet_loss(v[0], labels, opt); }, {e});
      double total = 0;
      index_t valid = 0, active = 0;
      for (index_t a = 0; a < 7; ++a)
        for (index_t p = 0; p < 7; ++p)
          for (index_t q = 0; q < 7; ++q) {
            if (p == a || labels[p] != labels[a] || labels[q] == labels[a]) continue;
            ++valid;
            const double x = dist(e, a, e, p, dd) - dist(e, a, e, q, dd);
            if (soft) {
              total += softplus(x);
              ++active;
            } else if (x + 0.4 > 0) {
              total += x + 0.4;
              ++active;
            }
          }
      const double want = total / double(soft ? valid : std::max<index_t>(active, 1));
      Tape t;
      MiningStats st;
      CHECK(batch_all_triplet_loss(t.constant(e), labels, opt, &st).value().item() ==
            doctest::Approx(want).epsilon(1e-9));
      CHECK(st.triplets == valid);
      CHECK(st.active == active);
    }
  Tape t;
  const std::vector<int> distinct{0, 1, 2};
  Tensor e = random(Shape{3, 2}, rng);
  CHECK_THROWS_AS(batch_all_triplet_loss(t.constant(e), distinct), value_error);
}

namespace {
// The mining losses by their definitions (loss/mining.hpp's header), as plain loops over a
// batch whose anchors may lack a positive: such anchors are left out of both losses.
struct Mined {
  double value;
  index_t anchors, triplets, active;
};
Mined batch_hard_by_definition(const Tensor& e, const std::vector<int>& labels,
                               const MiningOptions& o) {
  const auto n = static_cast<index_t>(labels.size());
  double total = 0;
  index_t kept = 0, active = 0;
  for (index_t a = 0; a < n; ++a) {
    bool has_pos = false, has_neg = false;
    double hp = 0, hn = 0;
    for (index_t j = 0; j < n; ++j) {
      const double v = dist(e, a, e, j, o.distance);
      if (j != a && labels[j] == labels[a]) {
        hp = has_pos ? std::max(hp, v) : v;
        has_pos = true;
      } else if (labels[j] != labels[a]) {
        hn = has_neg ? std::min(hn, v) : v;
        has_neg = true;
      }
    }
    if (!has_pos || !has_neg) continue;
    ++kept;
    const double x = hp - hn;
    total += o.soft ? softplus(x) : std::max(x + o.margin, 0.0);
    active += o.soft || x + o.margin > 0;
  }
  return {total / double(kept), kept, kept, active};
}
Mined batch_all_by_definition(const Tensor& e, const std::vector<int>& labels,
                              const MiningOptions& o) {
  const auto n = static_cast<index_t>(labels.size());
  double total = 0;
  index_t anchors = 0, valid = 0, active = 0;
  for (index_t a = 0; a < n; ++a) {
    const index_t before = valid;
    for (index_t p = 0; p < n; ++p)
      for (index_t q = 0; q < n; ++q) {
        if (p == a || labels[p] != labels[a] || labels[q] == labels[a]) continue;
        ++valid;
        const double x = dist(e, a, e, p, o.distance) - dist(e, a, e, q, o.distance);
        if (o.soft || x + o.margin > 0) {
          total += o.soft ? softplus(x) : x + o.margin;
          ++active;
        }
      }
    anchors += valid > before;
  }
  return {total / double(o.soft ? valid : std::max<index_t>(active, 1)), anchors, valid, active};
}
}  // namespace

TEST_CASE("batch-hard and batch-all with anchors lacking a positive: values by definition") {
  // Classes 2 and 4 have one image each: anchors 4 and 8 have no positive.
  const std::vector<int> labels{0, 0, 1, 1, 2, 3, 3, 0, 4};
  Rng rng(44);
  for (Distance dd : {Distance::euclidean, Distance::squared})
    for (bool soft : {false, true})
      for (double margin : {0.3, 2.0}) {  // a small margin and a large one
        CAPTURE(soft);
        CAPTURE(margin);
        const Tensor e = random(Shape{9, 3}, rng);
        const MiningOptions opt{margin, soft, dd, true};
        Tape t;
        MiningStats st;
        const Mined hard = batch_hard_by_definition(e, labels, opt);
        CHECK(hard.anchors == 7);
        CHECK(batch_hard_triplet_loss(t.constant(e), labels, opt, &st).value().item() ==
              doctest::Approx(hard.value).epsilon(1e-12));
        CHECK(st.anchors == hard.anchors);
        CHECK(st.triplets == hard.triplets);
        CHECK(st.active == hard.active);
        check([&](Tape&, VarList& v) { return batch_hard_triplet_loss(v[0], labels, opt); }, {e});

        const Mined all = batch_all_by_definition(e, labels, opt);
        CHECK(all.anchors == 7);
        CHECK(batch_all_triplet_loss(t.constant(e), labels, opt, &st).value().item() ==
              doctest::Approx(all.value).epsilon(1e-12));
        CHECK(st.anchors == all.anchors);
        CHECK(st.triplets == all.triplets);
        CHECK(st.active == all.active);
        check([&](Tape&, VarList& v) { return batch_all_triplet_loss(v[0], labels, opt); }, {e});
      }
}

TEST_CASE("NT-Xent: gradient, value by loop, stable at a small temperature, errors") {
  Rng rng(43);
  for (index_t n : {4, 1}) {
    CAPTURE(n);
    Tensor z1 = random(Shape{n, 3}, rng), z2 = random(Shape{n, 3}, rng);
    for (double temp : {0.5, 0.1}) {
      check([temp](Tape&, VarList& v) { return ntxent_loss(v[0], v[1], {temp}); }, {z1, z2});
      // by loop
      const index_t m = 2 * n;
      std::vector<std::vector<double>> z(static_cast<std::size_t>(m));
      for (index_t i = 0; i < m; ++i) {
        const Tensor& src = i < n ? z1 : z2;
        double nrm = 0;
        for (index_t c = 0; c < 3; ++c)
          nrm += src(i % n, c) * src(i % n, c);
        for (index_t c = 0; c < 3; ++c)
          z[i].push_back(src(i % n, c) / std::sqrt(nrm));
      }
      double want = 0;
      for (index_t i = 0; i < m; ++i) {
        double denom = 0, pos = 0;
        for (index_t j = 0; j < m; ++j) {
          double s = 0;
          for (index_t c = 0; c < 3; ++c)
            s += z[i][c] * z[j][c];
          s /= temp;
          if (j != i) denom += std::exp(s);
          if (j == (i + n) % m) pos = s;
        }
        want += (std::log(denom) - pos) / double(m);
      }
      Tape t;
      CHECK(ntxent_loss(t.constant(z1), t.constant(z2), {temp}).value().item() ==
            doctest::Approx(want).epsilon(1e-10));
    }
  }
  // temperature 0.01: similarities of +-100 stay finite through the log-sum-exp
  Tensor a = Tensor::from(Shape{2, 2}, {1, 0, 0, 1}), b = Tensor::from(Shape{2, 2}, {-1, 0, 0, -1});
  Tape t;
  const double l = ntxent_loss(t.constant(a), t.constant(b), {0.01}).value().item();
  CHECK(std::isfinite(l));
  CHECK(l > 100);
  Tensor empty(Shape{0, 3});
  CHECK(ntxent_loss(t.constant(empty), t.constant(empty)).value().item() == 0.0);
  check_throws_identically<value_error>(
      [](Tape&, VarList& v) { return ntxent_loss(v[0], v[1], {0.0}); },
      {Tensor(Shape{2, 2}), Tensor(Shape{2, 2})});
  check_throws_identically<shape_error>([](Tape&, VarList& v) { return ntxent_loss(v[0], v[1]); },
                                        {Tensor(Shape{2, 2}), Tensor(Shape{3, 2})});
  check_throws_identically<shape_error>([](Tape&, VarList& v) { return ntxent_loss_stacked(v[0]); },
                                        {Tensor(Shape{3, 2})});
}

TEST_CASE("contrastive loss, squared-distance form: gradient and value by loop") {
  Rng rng(44);
  Tensor y = Tensor::from(Shape{6}, {1, 0, 1, 0, 0, 1});
  for (double margin : {0.3, 4.0}) {
    Tensor f1 = random(Shape{6, 2}, rng), f2 = random(Shape{6, 2}, rng);
    siam::ContrastiveOptions opt{margin, Reduction::sum, true, true};
    check([&](Tape& t, VarList& v) { return contrastive_loss(v[0], v[1], t.constant(y), opt); },
          {f1, f2});
    Tensor f = random(Shape{12, 2}, rng);
    check([&](Tape& t, VarList& v) { return contrastive_loss_stacked(v[0], t.constant(y), opt); },
          {f});
    double want = 0;
    for (index_t i = 0; i < 6; ++i) {
      const double q = dist(f1, i, f2, i, Distance::squared);
      want += 0.5 * (y[i] * q + (1 - y[i]) * std::max(margin - q, 0.0));
    }
    Tape t;
    CHECK(contrastive_loss(t.constant(f1), t.constant(f2), t.constant(y), opt).value().item() ==
          doctest::Approx(want).epsilon(1e-12));
  }
}
