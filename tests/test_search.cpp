// Exact search (siam/search/exact.hpp, the FlatIndex of flat.hpp) and the retrieval metrics
// (siam/search/accuracy.hpp) against plain double-precision brute force written from the
// definitions. Most data has
// small integer coordinates, so every float distance is exact: ties and duplicate points
// are everywhere and the (distance, index) order must match the reference exactly.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <vector>

#include "siam/search/accuracy.hpp"
#include "siam/search/exact.hpp"
#include "siam/search/flat.hpp"

using siam::index_t;
namespace search = siam::search;

namespace {

std::vector<float> integer_points(index_t n, index_t dim, int range, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> u(-range, range);
  std::vector<float> v(static_cast<std::size_t>(n * dim));
  for (auto& x : v)
    x = static_cast<float>(u(rng));
  return v;
}

std::vector<float> gaussian_points(index_t n, index_t dim, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(n * dim));
  for (auto& x : v)
    x = g(rng);
  return v;
}

struct Ref {
  double d;
  std::int64_t i;
  bool operator<(const Ref& o) const { return d < o.d || (d == o.d && i < o.i); }
};

// All gallery rows of query q by (distance, index); inner product as minus the dot.
std::vector<Ref> brute(const float* q, const std::vector<float>& g, index_t dim, search::Metric m,
                       std::int64_t skip) {
  std::vector<Ref> out;
  const index_t n = static_cast<index_t>(g.size()) / dim;
  for (index_t j = 0; j < n; ++j) {
    if (j == skip) continue;
    double s = 0;
    for (index_t c = 0; c < dim; ++c) {
      const double a = q[c], b = g[static_cast<std::size_t>(j * dim + c)];
      s += m == search::Metric::l2 ? (a - b) * (a - b) : -a * b;
    }
    out.push_back({s, j});
  }
  std::sort(out.begin(), out.end());
  return out;
}

void check_exact(const std::vector<float>& q, const std::vector<float>& g, index_t dim, index_t k,
                 search::Metric m, const search::Options& opt) {
  const index_t nq = static_cast<index_t>(q.size()) / dim;
  const index_t ng = static_cast<index_t>(g.size()) / dim;
  const auto r = search::knn({q.data(), nq, dim}, {g.data(), ng, dim}, k, m, opt);
  REQUIRE(r.queries == nq);
  REQUIRE(r.k == k);
  for (index_t i = 0; i < nq; ++i) {
    const auto ref =
        brute(q.data() + i * dim, g, dim, m, opt.exclude_self ? opt.self_offset + i : -1);
    for (index_t j = 0; j < k; ++j) {
      const auto& e = ref[static_cast<std::size_t>(j)];
      const double want = m == search::Metric::l2 ? e.d : -e.d;
      INFO("query " << i << " rank " << j);
      CHECK(r.index(i, j) == e.i);
      CHECK(static_cast<double>(r.distance(i, j)) == want);
    }
  }
}

}  // namespace

TEST_CASE("knn: exact order with ties and duplicates, any blocks and threads") {
  const index_t dim = 5;
  const auto g = integer_points(300, dim, 2, 1);  // 5^5 cells, 300 points: duplicates
  const auto q = integer_points(23, dim, 2, 2);
  for (const auto m : {search::Metric::l2, search::Metric::inner_product})
    for (const index_t k : {1, 7, 300})
      for (const int threads : {1, 2})
        for (const index_t blocks : {0, 5}) {
          search::Options opt;
          opt.threads = threads;
          opt.query_block = blocks;
          opt.gallery_block = blocks == 0 ? 0 : 16;
          CAPTURE(k);
          CAPTURE(threads);
          CAPTURE(blocks);
          check_exact(q, g, dim, k, m, opt);
        }
}

TEST_CASE("knn: the gallery cut across threads (few queries) merges to the same order") {
  const index_t dim = 3;
  const auto g = integer_points(500, dim, 1, 3);  // 27 cells: heavy ties
  const auto q = integer_points(2, dim, 1, 4);
  search::Options opt;
  opt.threads = 2;
  opt.gallery_block = 16;  // 500 >= 4 * 16 * 2 rows: the gallery-split path
  for (const index_t k : {1, 10, 200, 500})
    check_exact(q, g, dim, k, search::Metric::l2, opt);
}

TEST_CASE("knn: exclude_self leaves each query's own row out, also for a slice") {
  const index_t dim = 4;
  const auto g = integer_points(120, dim, 1, 5);
  search::Options opt;
  opt.exclude_self = true;
  opt.query_block = 8;
  opt.gallery_block = 32;
  check_exact(g, g, dim, 119, search::Metric::l2, opt);
  const std::vector<float> slice(g.begin() + 40 * dim, g.begin() + 70 * dim);
  opt.self_offset = 40;
  check_exact(slice, g, dim, 9, search::Metric::l2, opt);
}

TEST_CASE("knn: Gaussian data agrees with double precision up to float rounding") {
  const index_t dim = 64, ng = 2000, nq = 37, k = 10;
  const auto g = gaussian_points(ng, dim, 6);
  const auto q = gaussian_points(nq, dim, 7);
  const auto r = search::knn({q.data(), nq, dim}, {g.data(), ng, dim}, k);
  for (index_t i = 0; i < nq; ++i) {
    const auto ref = brute(q.data() + i * dim, g, dim, search::Metric::l2, -1);
    for (index_t j = 0; j < k; ++j) {
      const double want = ref[static_cast<std::size_t>(j)].d;
      CHECK(std::abs(r.distance(i, j) - want) <= 1e-4 * (1 + want));
      // Same neighbour unless its reference distance is within rounding of the next one's.
      const double gap =
          std::min(std::abs(want - ref[static_cast<std::size_t>(j + 1)].d),
                   j > 0 ? std::abs(want - ref[static_cast<std::size_t>(j - 1)].d) : 1e30);
      if (gap > 1e-3) CHECK(r.index(i, j) == ref[static_cast<std::size_t>(j)].i);
    }
  }
}

TEST_CASE("knn: bad input gets one typed error naming the values") {
  const std::vector<float> g = {0, 0, 1, 1, 2, 2};
  std::vector<float> q = {0, 1};
  const search::Rows G{g.data(), 3, 2}, Q{q.data(), 1, 2};
  CHECK_THROWS_AS((void)search::knn(Q, {g.data(), 2, 3}, 1), siam::shape_error);
  CHECK_THROWS_AS((void)search::knn(Q, G, 0), siam::value_error);
  CHECK_THROWS_WITH_AS((void)search::knn(Q, G, 4), doctest::Contains("k = 4 must be in [1, 3]"),
                       siam::value_error);
  search::Options self;
  self.exclude_self = true;
  CHECK_THROWS_AS((void)search::knn(G, G, 3, search::Metric::l2, self), siam::value_error);
  CHECK_NOTHROW((void)search::knn(G, G, 2, search::Metric::l2, self));
  CHECK_THROWS_AS((void)search::knn({nullptr, 1, 2}, G, 1), siam::value_error);
  CHECK_THROWS_AS((void)search::knn(Q, G, 1, static_cast<search::Metric>(7)), siam::value_error);
  q[1] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS((void)search::knn(Q, G, 1), doctest::Contains("queries row 0 column 1"),
                       siam::numeric_error);
  q[1] = 3e20f;  // finite, but its squared norm is not
  CHECK_THROWS_AS((void)search::knn(Q, G, 1), siam::numeric_error);
  CHECK(search::knn({q.data(), 0, 2}, G, 1).indices.empty());
}

// ---- metrics, from the definitions (accuracy.hpp's header comment)
namespace {

struct RefAccuracy {
  double p1 = 0, rp = 0, map = 0;
  std::vector<double> recall;
  index_t scored = 0;
};

RefAccuracy reference_accuracy(const std::vector<float>& q, const std::vector<std::int64_t>& ql,
                               const std::vector<float>& g, const std::vector<std::int64_t>& gl,
                               index_t dim, bool same, const std::vector<index_t>& Ks) {
  RefAccuracy a;
  a.recall.assign(Ks.size(), 0.0);
  const index_t nq = static_cast<index_t>(ql.size());
  for (index_t i = 0; i < nq; ++i) {
    const auto order = brute(q.data() + i * dim, g, dim, search::Metric::l2, same ? i : -1);
    const auto y = ql[static_cast<std::size_t>(i)];
    std::vector<int> rel;
    for (const auto& e : order)
      rel.push_back(gl[static_cast<std::size_t>(e.i)] == y ? 1 : 0);
    index_t R = 0;
    for (const int x : rel)
      R += x;
    if (R == 0) continue;
    ++a.scored;
    a.p1 += rel[0];
    double in_r = 0, ap = 0, cum = 0;
    for (index_t j = 0; j < R; ++j) {
      cum += rel[static_cast<std::size_t>(j)];
      in_r += rel[static_cast<std::size_t>(j)];
      if (rel[static_cast<std::size_t>(j)]) ap += cum / static_cast<double>(j + 1);
    }
    a.rp += in_r / static_cast<double>(R);
    a.map += ap / static_cast<double>(R);
    for (std::size_t t = 0; t < Ks.size(); ++t)
      a.recall[t] += std::any_of(rel.begin(), rel.begin() + Ks[t], [](int x) { return x; }) ? 1 : 0;
  }
  const double n = a.scored ? static_cast<double>(a.scored) : 1.0;
  a.p1 /= n;
  a.rp /= n;
  a.map /= n;
  for (auto& r : a.recall)
    r /= n;
  return a;
}

void check_accuracy(const search::Accuracy& got, const RefAccuracy& want, index_t n_queries) {
  CHECK(got.queries == want.scored);
  CHECK(got.lone_queries == n_queries - want.scored);
  CHECK(got.precision_at_1 == doctest::Approx(want.p1).epsilon(1e-12));
  CHECK(got.r_precision == doctest::Approx(want.rp).epsilon(1e-12));
  CHECK(got.map_at_r == doctest::Approx(want.map).epsilon(1e-12));
  REQUIRE(got.recall_at_k.size() == want.recall.size());
  for (std::size_t t = 0; t < want.recall.size(); ++t)
    CHECK(got.recall_at_k[t].second == doctest::Approx(want.recall[t]).epsilon(1e-12));
}

std::vector<std::int64_t> labels_with_singletons(index_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::int64_t> u(0, 6);
  std::vector<std::int64_t> l(static_cast<std::size_t>(n));
  for (auto& x : l)
    x = u(rng) * 1000000007LL;  // wide 64-bit labels
  l[3] = -5;                    // classes of size 1
  l[17] = 1LL << 40;
  return l;
}

}  // namespace

TEST_CASE("accuracy: one set, against the definitions (ties, duplicates, singletons)") {
  const index_t dim = 3, n = 150;
  const auto e = integer_points(n, dim, 1, 11);  // 27 cells: duplicates and ties
  const auto l = labels_with_singletons(n, 12);
  const std::vector<index_t> Ks = {1, 2, 5, 20};
  search::AccuracyOptions opt;
  opt.recall_at = Ks;
  opt.chunk_bytes = 4096;  // many small chunks, each its own k (top_k); one row per block
  const auto want = reference_accuracy(e, l, e, l, dim, true, Ks);
  for (const auto method : {search::AccuracyMethod::top_k, search::AccuracyMethod::full_rows}) {
    CAPTURE(static_cast<int>(method));
    opt.method = method;
    const auto got = search::accuracy({e.data(), n, dim}, l.data(), opt);
    CHECK(got.lone_queries == 2);
    check_accuracy(got, want, n);
    CHECK(got.recall_at_k[0].second == got.precision_at_1);
  }
}

TEST_CASE("accuracy: full rows and top-k agree on large classes, for any thread count") {
  // Two classes of 200 (R = 199, so `automatic` ranks full rows), integer points: many ties.
  const index_t dim = 4, n = 400;
  const auto e = integer_points(n, dim, 2, 21);
  std::vector<std::int64_t> l(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i)
    l[static_cast<std::size_t>(i)] = (i * 7) % 2;
  search::AccuracyOptions opt;
  opt.recall_at = {1, 10};
  const auto want = reference_accuracy(e, l, e, l, dim, true, opt.recall_at);
  opt.method = search::AccuracyMethod::top_k;
  const auto top = search::accuracy({e.data(), n, dim}, l.data(), opt);
  check_accuracy(top, want, n);
  for (const int threads : {1, 2, 3}) {
    CAPTURE(threads);
    opt.method = search::AccuracyMethod::automatic;
    opt.threads = threads;
    const auto rows = search::accuracy({e.data(), n, dim}, l.data(), opt);
    check_accuracy(rows, want, n);
    CHECK(rows.map_at_r == top.map_at_r);  // the same sums in the same order: bit for bit
    CHECK(rows.r_precision == top.r_precision);
  }
  opt.metric = search::Metric::inner_product;  // negative distances: the key's sign flip
  opt.method = search::AccuracyMethod::top_k;
  const auto ip_top = search::accuracy({e.data(), n, dim}, l.data(), opt);
  opt.method = search::AccuracyMethod::full_rows;
  const auto ip_rows = search::accuracy({e.data(), n, dim}, l.data(), opt);
  CHECK(ip_rows.map_at_r == ip_top.map_at_r);
  CHECK(ip_rows.precision_at_1 == ip_top.precision_at_1);
  // Gaussian points: distances that differ only in their low bits must still be ranked.
  const auto gp = gaussian_points(n, dim, 22);
  opt = {};
  opt.recall_at = {1, 10};
  opt.method = search::AccuracyMethod::full_rows;
  check_accuracy(search::accuracy({gp.data(), n, dim}, l.data(), opt),
                 reference_accuracy(gp, l, gp, l, dim, true, opt.recall_at), n);
}

TEST_CASE("accuracy: full rows with more tied candidates than a row's list holds") {
  // 500 of 600 points at one spot: every threshold drawn from the sample is 0 and gathers
  // those 500, far more than a list sized for R = 5 holds, so those rows are ranked again
  // from whole distance rows. The other 100 points are spread out.
  const index_t dim = 2, n = 600;
  std::vector<float> e(static_cast<std::size_t>(n * dim), 0.0f);
  for (index_t i = 500; i < n; ++i) {
    e[static_cast<std::size_t>(i * dim)] = static_cast<float>(i % 17);
    e[static_cast<std::size_t>(i * dim + 1)] = static_cast<float>(i / 17);
  }
  std::vector<std::int64_t> l(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i)
    l[static_cast<std::size_t>(i)] = (i * 13) % 100;  // 100 classes of 6: R = 5
  search::AccuracyOptions opt;
  opt.recall_at = {1, 4};
  const auto want = reference_accuracy(e, l, e, l, dim, true, opt.recall_at);
  for (const int threads : {1, 2}) {
    CAPTURE(threads);
    opt.threads = threads;
    opt.method = search::AccuracyMethod::full_rows;
    const auto rows = search::accuracy({e.data(), n, dim}, l.data(), opt);
    check_accuracy(rows, want, n);
    opt.method = search::AccuracyMethod::top_k;
    const auto top = search::accuracy({e.data(), n, dim}, l.data(), opt);
    CHECK(rows.map_at_r == top.map_at_r);
    CHECK(rows.r_precision == top.r_precision);
    CHECK(rows.precision_at_1 == top.precision_at_1);
  }
}

TEST_CASE("accuracy: separate query and reference sets") {
  const index_t dim = 2;
  const auto g = integer_points(90, dim, 2, 13);
  const auto q = integer_points(40, dim, 2, 14);
  auto gl = labels_with_singletons(90, 15);
  auto ql = labels_with_singletons(40, 16);
  ql[5] = 99;  // a label the reference set lacks: a lone query
  const std::vector<index_t> Ks = {1, 3, 90};
  search::AccuracyOptions opt;
  opt.recall_at = Ks;
  for (const auto method : {search::AccuracyMethod::top_k, search::AccuracyMethod::full_rows}) {
    opt.method = method;
    const auto got =
        search::accuracy({q.data(), 40, dim}, ql.data(), {g.data(), 90, dim}, gl.data(), opt);
    check_accuracy(got, reference_accuracy(q, ql, g, gl, dim, false, Ks), 40);
  }
}

TEST_CASE("accuracy: a hand-computed case") {
  // 1-D points 0, 1, 2, 10 labelled a, b, a, a. Query 0 (a): neighbours 1(b), 2(a), 10(a),
  // R = 2: P@1 = 0, RP = 1/2, AP@R = (1/2)(1/2) = 1/4. Query 1 (b): lone. Query 2 (a):
  // neighbours 1(b), 0(a), 10(a): P@1 0, RP 1/2, AP 1/4. Query 3 (a): neighbours 2(a), 1(b), 0(a):
  // P@1 1, RP 1/2, AP (1/2)(1) = 1/2.
  const std::vector<float> x = {0, 1, 2, 10};
  const std::vector<std::int64_t> y = {7, 8, 7, 7};
  search::AccuracyOptions opt;
  opt.recall_at = {1, 2};
  const auto a = search::accuracy({x.data(), 4, 1}, y.data(), opt);
  CHECK(a.queries == 3);
  CHECK(a.lone_queries == 1);
  CHECK(a.precision_at_1 == doctest::Approx(1.0 / 3));
  CHECK(a.r_precision == doctest::Approx(0.5));
  CHECK(a.map_at_r == doctest::Approx((0.25 + 0.25 + 0.5) / 3));
  CHECK(a.recall_at_k[1].second == doctest::Approx(1.0));
}

TEST_CASE("accuracy: bad input") {
  const std::vector<float> x = {0, 1, 2};
  const std::vector<std::int64_t> y = {1, 1, 2};
  search::AccuracyOptions opt;
  opt.recall_at = {3};
  CHECK_THROWS_WITH_AS((void)search::accuracy({x.data(), 3, 1}, y.data(), opt),
                       doctest::Contains("K = 3"), siam::value_error);
  opt.recall_at = {1};
  CHECK_THROWS_AS((void)search::accuracy({x.data(), 3, 1}, nullptr, opt), siam::value_error);
  CHECK_THROWS_AS(
      (void)search::accuracy({x.data(), 3, 1}, y.data(), {x.data(), 1, 3}, y.data(), opt),
      siam::shape_error);
  const std::vector<float> bad = {0, std::nanf(""), 2};
  CHECK_THROWS_AS((void)search::accuracy({bad.data(), 3, 1}, y.data(), opt), siam::numeric_error);
}

TEST_CASE("FlatIndex: search is knn; save and load keep vectors, metric and metadata") {
  const index_t n = 60, dim = 3, nq = 7;
  const auto g = integer_points(n, dim, 2, 21);  // small integers: ties everywhere
  const auto q = integer_points(nq, dim, 2, 22);
  for (const auto metric : {search::Metric::l2, search::Metric::inner_product}) {
    search::FlatIndex index(dim, metric);
    index.add({g.data(), 25, dim});
    index.add({g.data() + 25 * dim, n - 25, dim});  // a second add continues the ids
    REQUIRE(index.size() == n);
    const auto want = search::knn({q.data(), nq, dim}, {g.data(), n, dim}, 5, metric);
    const auto got = index.search({q.data(), nq, dim}, 5);
    CHECK(got.indices == want.indices);
    CHECK(got.distances == want.distances);

    const auto path = std::filesystem::temp_directory_path() /
                      ("siam-test-flat-" + std::to_string(std::random_device{}()) + ".bin");
    const std::uint64_t stamp = 1234;
    index.save(path, {siam::io::make_text_record("meta/source", "unit test"),
                      siam::io::make_record("meta/stamp", {1}, &stamp, 1)});
    CHECK(search::index_kind(path) == "flat");
    const auto back = search::FlatIndex::load(path, dim, metric);
    CHECK(back.size() == n);
    CHECK(std::equal(back.data(), back.data() + n * dim, g.data()));
    const auto again = back.search({q.data(), nq, dim}, 5);
    CHECK(again.indices == want.indices);
    REQUIRE(back.metadata().size() == 2);
    CHECK(back.metadata()[0].text() == "unit test");
    CHECK(back.metadata()[1].as<std::uint64_t>()[0] == stamp);

    // The model's dimension and metric must match the file's.
    CHECK_THROWS_WITH_AS((void)search::FlatIndex::load(path, dim + 1, metric),
                         doctest::Contains("embeddings of dim 3, the model makes dim 4"),
                         siam::shape_error);
    const auto other =
        metric == search::Metric::l2 ? search::Metric::inner_product : search::Metric::l2;
    CHECK_THROWS_WITH_AS((void)search::FlatIndex::load(path, dim, other),
                         doctest::Contains("built for metric"), siam::value_error);
    // Truncated or flipped (checksum), another kind, vectors that disagree with the size.
    const auto bytes = siam::io::read_file(path, "test");
    for (const std::size_t cut :
         {std::size_t{0}, std::size_t{12}, bytes.size() / 2, bytes.size() - 1}) {
      CHECK_THROWS_AS(
          (void)search::FlatIndex::from_records(siam::io::decode(bytes.data(), cut, "cut"), "cut"),
          siam::io_error);
    }
    auto records = siam::io::load_archive(path);
    for (auto& r : records)
      if (r.name == "index/kind") r = siam::io::make_text_record("index/kind", "hnsw");
    CHECK_THROWS_WITH_AS((void)search::FlatIndex::from_records(records, "kind"),
                         doctest::Contains("expected 'flat'"), siam::io_error);
    records = siam::io::load_archive(path);
    for (auto& r : records)
      if (r.name == "index/size") {
        const std::uint64_t wrong = n + 1;
        std::memcpy(r.bytes.data(), &wrong, 8);
      }
    CHECK_THROWS_WITH_AS((void)search::FlatIndex::from_records(records, "size"),
                         doctest::Contains("does not hold 61 rows"), siam::io_error);
    records = siam::io::load_archive(path);
    for (auto& r : records)
      if (r.name == "flat/vectors") {
        const float nan = std::numeric_limits<float>::quiet_NaN();
        std::memcpy(r.bytes.data() + 4 * dim * 5, &nan, 4);  // row 5
      }
    CHECK_THROWS_WITH_AS((void)search::FlatIndex::from_records(records, "nan"),
                         doctest::Contains("row 5 has a non-finite value"), siam::io_error);
    records = siam::io::load_archive(path);
    for (auto& r : records)
      if (r.name == "flat/vectors") {
        const float huge = 1e30f;                             // finite, but its square is not
        std::memcpy(r.bytes.data() + 4 * dim * 7, &huge, 4);  // row 7
      }
    CHECK_THROWS_WITH_AS((void)search::FlatIndex::from_records(records, "huge"),
                         doctest::Contains("huge: FlatIndex: vector row 7 has a squared norm"),
                         siam::io_error);
    search::FlatIndex grow(dim, search::Metric::l2);
    std::vector<float> big(static_cast<std::size_t>(dim), 1e30f);
    CHECK_THROWS_AS(grow.add({big.data(), 1, dim}), siam::numeric_error);
    CHECK(grow.size() == 0);
    std::filesystem::remove(path);
  }
}

TEST_CASE("FlatIndex: bad input") {
  search::FlatIndex index(4, search::Metric::l2);
  const std::vector<float> v(12, 1.0f);
  CHECK_THROWS_AS(search::FlatIndex(0, search::Metric::l2), siam::value_error);
  CHECK_THROWS_AS(index.add({v.data(), 4, 3}), siam::shape_error);
  std::vector<float> bad = v;
  bad[6] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(index.add({bad.data(), 3, 4}), doctest::Contains("row 1 column 2"),
                       siam::numeric_error);
  CHECK(index.size() == 0);  // nothing of a refused add is kept
  CHECK_THROWS_AS(index.save("never-written.bin"), siam::value_error);
  index.add({v.data(), 3, 4});
  CHECK_THROWS_WITH_AS((void)index.search({v.data(), 1, 4}, 4), doctest::Contains("k = 4"),
                       siam::value_error);
  CHECK_THROWS_WITH_AS(index.save("x.bin", {siam::io::make_text_record("user/x", "y")}),
                       doctest::Contains("must be named meta/"), siam::value_error);
  CHECK_THROWS_AS((void)search::FlatIndex::load("no-such-index.bin"), siam::io_error);
}
