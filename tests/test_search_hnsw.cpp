// The HNSW index (siam/search/hnsw.hpp): recall against exact search, save/load round trip,
// and one typed error for each kind of bad input or bad file.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "siam/io/archive.hpp"
#include "siam/search/exact.hpp"
#include "siam/search/flat.hpp"
#include "siam/search/hnsw.hpp"

using siam::index_t;
namespace search = siam::search;
namespace fs = std::filesystem;

namespace {

// n points around `clusters` unit-normal centres, within-cluster std 0.5.
std::vector<float> clustered(index_t n, index_t dim, index_t clusters, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> centres(static_cast<std::size_t>(clusters * dim));
  for (auto& c : centres)
    c = g(rng);
  std::vector<float> v(static_cast<std::size_t>(n * dim));
  for (index_t i = 0; i < n; ++i) {
    const index_t c = static_cast<index_t>(rng() % static_cast<unsigned>(clusters));
    for (index_t j = 0; j < dim; ++j)
      v[static_cast<std::size_t>(i * dim + j)] =
          centres[static_cast<std::size_t>(c * dim + j)] + 0.5f * g(rng);
  }
  return v;
}

double recall(const search::Result& approx, const search::Result& exact) {
  double hits = 0;
  for (index_t q = 0; q < exact.queries; ++q) {
    std::set<std::int64_t> truth;
    for (index_t j = 0; j < exact.k; ++j)
      truth.insert(exact.index(q, j));
    for (index_t j = 0; j < exact.k; ++j)
      hits += truth.count(approx.index(q, j)) ? 1 : 0;
  }
  return hits / static_cast<double>(exact.queries * exact.k);
}

struct TempPath {
  fs::path p = fs::temp_directory_path() /
               ("siam-test-hnsw-" + std::to_string(std::random_device{}()) + ".bin");
  ~TempPath() { fs::remove(p); }
};

}  // namespace

TEST_CASE("hnsw: recall against exact search, sorted results, both metrics") {
  const index_t n = 3000, dim = 16, nq = 100, k = 10;
  const auto data = clustered(n, dim, 30, 1);
  const auto queries = clustered(nq, dim, 30, 2);
  for (const auto m : {search::Metric::l2, search::Metric::inner_product}) {
    search::HnswIndex index(dim, m, n);
    index.add({data.data(), n, dim});
    CHECK(index.size() == n);
    const auto exact = search::knn({queries.data(), nq, dim}, {data.data(), n, dim}, k, m);
    const auto approx = index.search({queries.data(), nq, dim}, k, 100);
    CHECK(recall(approx, exact) >= 0.95);
    for (index_t q = 0; q < nq; ++q)
      for (index_t j = 1; j < k; ++j) {
        if (m == search::Metric::l2)
          CHECK(approx.distance(q, j - 1) <= approx.distance(q, j));
        else
          CHECK(approx.distance(q, j - 1) >= approx.distance(q, j));
      }
    // The distance reported is the real one (squared L2 / dot product) of the id reported.
    const auto id = approx.index(0, 0);
    double want = 0;
    for (index_t c = 0; c < dim; ++c) {
      const double a = queries[static_cast<std::size_t>(c)];
      const double b = data[static_cast<std::size_t>(id * dim + c)];
      want += m == search::Metric::l2 ? (a - b) * (a - b) : a * b;
    }
    CHECK(approx.distance(0, 0) == doctest::Approx(want).epsilon(1e-4));
  }
}

TEST_CASE("hnsw: save and load give the same answers; the file is checked") {
  const index_t n = 500, dim = 8, nq = 20;
  const auto data = clustered(n, dim, 10, 3);
  search::HnswParams one;
  one.threads = 1;
  search::HnswIndex index(dim, search::Metric::l2, n + 100, one);
  index.add({data.data(), 200, dim});
  index.add({data.data() + 200 * dim, n - 200, dim});  // a second add continues the ids
  TempPath file;
  index.save(file.p, {siam::io::make_text_record("meta/source", "clustered")});
  CHECK(search::index_kind(file.p) == "hnsw");
  auto back = search::HnswIndex::load(file.p, dim, search::Metric::l2);
  REQUIRE(back.metadata().size() == 1);
  CHECK(back.metadata()[0].text() == "clustered");
  CHECK(back.size() == n);
  CHECK(back.dim() == dim);
  const auto a = index.search({data.data(), nq, dim}, 5, 50);
  const auto b = back.search({data.data(), nq, dim}, 5, 50);
  CHECK(a.indices == b.indices);
  CHECK(a.distances == b.distances);
  for (index_t q = 0; q < nq; ++q)
    CHECK(a.index(q, 0) == q);  // each stored row finds itself first

  // The model's dimension and metric must match the file's.
  CHECK_THROWS_AS((void)search::HnswIndex::load(file.p, dim + 1, search::Metric::l2),
                  siam::shape_error);
  CHECK_THROWS_WITH_AS((void)search::HnswIndex::load(file.p, dim, search::Metric::inner_product),
                       doctest::Contains("built for metric l2"), siam::value_error);
  // Truncated, a flipped byte (checksum), not a file.
  const auto bytes = siam::io::read_file(file.p, "test");
  for (const std::size_t cut :
       {std::size_t{0}, std::size_t{10}, bytes.size() / 2, bytes.size() - 1})
    CHECK_THROWS_AS((void)search::HnswIndex::from_bytes(bytes.data(), cut, "cut"), siam::io_error);
  auto flipped = bytes;
  flipped[bytes.size() / 3] ^= 0x40;
  CHECK_THROWS_AS((void)search::HnswIndex::from_bytes(flipped.data(), flipped.size(), "flip"),
                  siam::io_error);
  CHECK_THROWS_AS((void)search::HnswIndex::load(file.p.string() + ".missing"), siam::io_error);
  // Another kind of index file (the header check both kinds share).
  {
    TempPath flat_file;
    search::FlatIndex flat(dim, search::Metric::l2);
    flat.add({data.data(), 10, dim});
    flat.save(flat_file.p);
    CHECK_THROWS_WITH_AS((void)search::HnswIndex::load(flat_file.p),
                         doctest::Contains("index kind 'flat', expected 'hnsw'"), siam::io_error);
  }

  // A graph that passes the checksum but links out of range: the graph check catches it.
  auto records = siam::io::load_archive(file.p);
  for (auto& r : records)
    if (r.name == "hnsw/graph") {
      const std::size_t head = 96, link0 = head + 4;  // row 0's first bottom-level link
      REQUIRE(r.bytes[head] > 0);                     // row 0 has links
      const std::uint32_t bad = static_cast<std::uint32_t>(n + 7);
      std::memcpy(r.bytes.data() + link0, &bad, 4);
    }
  TempPath evil;
  siam::io::save_archive(evil.p, records);
  CHECK_THROWS_WITH_AS((void)search::HnswIndex::load(evil.p), doctest::Contains("links to"),
                       siam::io_error);
  // A file whose dim record disagrees with its graph.
  records = siam::io::load_archive(file.p);
  for (auto& r : records)
    if (r.name == "index/dim") {
      const std::uint64_t d = dim * 2;
      std::memcpy(r.bytes.data(), &d, 8);
    }
  siam::io::save_archive(evil.p, records);
  CHECK_THROWS_AS((void)search::HnswIndex::load(evil.p), siam::io_error);
}

TEST_CASE("hnsw: bad arguments") {
  const index_t dim = 4;
  const auto data = clustered(50, dim, 5, 4);
  search::HnswIndex index(dim, search::Metric::l2, 50);
  CHECK_THROWS_AS(index.save(fs::temp_directory_path() / "siam-never.bin"), siam::value_error);
  CHECK_THROWS_AS(index.add({data.data(), 10, dim + 1}), siam::shape_error);
  CHECK_THROWS_AS(index.add({data.data(), 51, dim}), siam::value_error);
  auto nan = data;
  nan[7] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(index.add({nan.data(), 10, dim}), doctest::Contains("row 1 column 3"),
                       siam::numeric_error);
  CHECK(index.size() == 0);
  index.add({data.data(), 50, dim});
  CHECK_THROWS_WITH_AS((void)index.search({data.data(), 1, dim}, 51, 10),
                       doctest::Contains("k = 51 must be in [1, 50]"), siam::value_error);
  CHECK_THROWS_AS((void)index.search({data.data(), 1, dim}, 5, 0), siam::value_error);
  CHECK_THROWS_AS((void)index.search({nan.data(), 2, dim}, 5, 10), siam::numeric_error);
  CHECK_THROWS_AS((void)index.search({data.data(), 1, dim - 1}, 5, 10), siam::shape_error);
  CHECK_THROWS_AS(search::HnswIndex(0, search::Metric::l2, 10), siam::value_error);
  search::HnswParams bad;
  bad.M = 1;
  CHECK_THROWS_AS(search::HnswIndex(dim, search::Metric::l2, 10, bad), siam::value_error);
}
