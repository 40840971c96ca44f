// Approximate nearest-neighbour search: an HNSW graph (Malkov & Yashunin, 2018) through
// hnswlib (header-only; Debian libhnswlib-dev), CMake target siam::hnsw. Not included by
// the umbrella header.
//
//   search::HnswIndex index(64, search::Metric::l2, n);   // dim, metric, capacity
//   index.add({data, n, 64});                             // rows get ids 0, 1, ...
//   auto r = index.search({queries, nq, 64}, 10, 128);    // k = 10, ef = 128
//   index.save("index.bin");
//   auto back = search::HnswIndex::load("index.bin", 64, search::Metric::l2);
//
// The file is a siam archive (io/archive.hpp: CRC-checked, written atomically) holding the
// siam version, the embedding dimension, the metric, the row count and hnswlib's graph.
// Loading checks every one of them and walks the whole graph (every link in range, every
// level consistent, every vector finite) before hnswlib sees it, so a corrupt or hostile
// file gives io_error, never a crash. Results use the same Result and Metric as exact
// search: squared L2 distances, or dot products for inner_product (hnswlib's 1 - dot,
// converted back); each query's neighbours are ordered by (distance, id). Adding with
// several threads builds a different (equally good) graph on each run; threads = 1 builds
// the same graph every time.
#pragma once

#include <hnswlib/hnswlib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "siam/detail/config.hpp"
#include "siam/error.hpp"
#include "siam/io/archive.hpp"
#include "siam/search/index_file.hpp"
#include "siam/search/topk.hpp"
#include "siam/search/types.hpp"
#include "siam/version.hpp"

namespace siam::search {

struct HnswParams {
  index_t M = 16;                 // links per node (2M on the bottom level)
  index_t ef_construction = 200;  // candidate list while building
  std::uint64_t seed = 100;       // level draws
  int threads = 0;                // for add() and search(); 0: OpenMP's default
};

namespace detail {

// A file in the temporary directory, removed when this goes out of scope: hnswlib 0.6
// saves and loads through a path only.
class TempFile {
 public:
  TempFile() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("siam-hnsw-" + std::to_string(rd()) + "-" + std::to_string(rd()) + ".tmp");
  }
  ~TempFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

template <class V>
V read_le(const unsigned char* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));  // hnswlib writes host order; siam targets little-endian
  return v;
}

/// Checks hnswlib 0.6's saved graph (`bytes`) for an index of `n` rows of `dim` floats
/// before hnswlib reads it: header fields consistent with dim, sizes exact, every link
/// to an existing node on a level that node has, labels a permutation of 0..n-1, no
/// deleted marks, finite vectors. Throws io_error naming `file` and what is wrong.
inline void validate_hnsw_graph(const std::vector<unsigned char>& bytes, std::uint64_t n,
                                std::uint64_t dim, const std::string& file) {
  auto fail = [&](const std::string& what) {
    throw io_error(file + ": corrupt HNSW graph: " + what);
  };
  constexpr std::size_t head = 6 * 8 + 4 + 4 + 3 * 8 + 8 + 8;
  if (bytes.size() < head) fail("only " + std::to_string(bytes.size()) + " bytes");
  const unsigned char* p = bytes.data();
  const auto offset_level0 = read_le<std::uint64_t>(p + 0);
  const auto max_elements = read_le<std::uint64_t>(p + 8);
  const auto count = read_le<std::uint64_t>(p + 16);
  const auto size_per = read_le<std::uint64_t>(p + 24);
  const auto label_offset = read_le<std::uint64_t>(p + 32);
  const auto offset_data = read_le<std::uint64_t>(p + 40);
  const auto max_level = read_le<std::int32_t>(p + 48);
  const auto enter = read_le<std::uint32_t>(p + 52);
  const auto maxM = read_le<std::uint64_t>(p + 56);
  const auto maxM0 = read_le<std::uint64_t>(p + 64);
  const auto M = read_le<std::uint64_t>(p + 72);
  const auto mult = read_le<double>(p + 80);
  if (count != n || max_elements != n)
    fail("holds " + std::to_string(count) + " rows (capacity " + std::to_string(max_elements) +
         "), the file says " + std::to_string(n));
  if (n == 0 || n > std::numeric_limits<std::int32_t>::max())  // hnswlib reads ids as int
    fail("row count out of range");
  if (M < 2 || M > 10000 || maxM != M || maxM0 != 2 * M) fail("bad link counts");
  const std::uint64_t links0 = maxM0 * 4 + 4, links_up = maxM * 4 + 4;
  if (offset_level0 != 0 || offset_data != links0 || label_offset != links0 + dim * 4 ||
      size_per != links0 + dim * 4 + 8)
    fail("element layout does not match dim " + std::to_string(dim));
  if (!(mult > 0) || !std::isfinite(mult)) fail("bad level multiplier");
  if (max_level < 0 || max_level > 64 || enter >= n) fail("bad entry point or level");
  std::size_t pos = head;
  if ((bytes.size() - pos) / size_per < n) fail("truncated bottom level");
  const unsigned char* level0 = p + pos;
  pos += static_cast<std::size_t>(n * size_per);
  std::vector<int> levels(static_cast<std::size_t>(n));
  std::vector<std::size_t> upper(static_cast<std::size_t>(n), 0);  // offset of upper links
  for (std::uint64_t i = 0; i < n; ++i) {
    if (bytes.size() - pos < 4) fail("truncated link lists");
    const auto len = read_le<std::uint32_t>(p + pos);
    pos += 4;
    if (len % links_up != 0 || len / links_up > static_cast<std::uint64_t>(max_level))
      fail("row " + std::to_string(i) + " has a link block of " + std::to_string(len) + " bytes");
    if (bytes.size() - pos < len) fail("truncated link lists");
    levels[i] = static_cast<int>(len / links_up);
    upper[i] = pos;
    pos += len;
  }
  if (pos != bytes.size()) fail(std::to_string(bytes.size() - pos) + " bytes after the graph");
  if (levels[enter] != max_level) fail("the entry point is not on the top level");
  auto check_links = [&](const unsigned char* list, std::uint64_t cap, int level,
                         std::uint64_t row) {
    const auto c = read_le<std::uint16_t>(list);
    if (c > cap || list[2] != 0 || list[3] != 0)
      fail("row " + std::to_string(row) + " has a bad link list on level " + std::to_string(level));
    // Every slot, used or not: hnswlib prefetches the slot after the last used one.
    for (std::uint64_t j = 0; j < cap; ++j) {
      const auto to = read_le<std::uint32_t>(list + 4 + 4 * j);
      if (to >= n || (j < c && levels[to] < level))
        fail("row " + std::to_string(row) + " links to " + std::to_string(to) + " on level " +
             std::to_string(level));
    }
  };
  std::vector<unsigned char> seen(static_cast<std::size_t>(n), 0);
  for (std::uint64_t i = 0; i < n; ++i) {
    const unsigned char* e = level0 + i * size_per;
    check_links(e, maxM0, 0, i);
    for (std::uint64_t c = 0; c < dim; ++c)
      if (!std::isfinite(read_le<float>(e + offset_data + 4 * c)))
        fail("row " + std::to_string(i) + " has a non-finite value");
    const auto label = read_le<std::uint64_t>(e + label_offset);
    if (label >= n || seen[label]) fail("row " + std::to_string(i) + " has a bad id");
    seen[label] = 1;
    for (int l = 1; l <= levels[i]; ++l)
      check_links(p + upper[i] + static_cast<std::size_t>(l - 1) * links_up, maxM, l, i);
  }
}

}  // namespace detail

/// An HNSW graph over up to `capacity` embeddings of `dim` floats.
class HnswIndex {
 public:
  HnswIndex(index_t dim, Metric metric, index_t capacity, HnswParams params = {})
      : dim_(dim), metric_(metric), params_(params) {
    constexpr const char* op = "HnswIndex";
    if (dim <= 0 || capacity <= 0)
      throw value_error(std::string(op) + ": dim " + std::to_string(dim) + " and capacity " +
                        std::to_string(capacity) + " must be > 0");
    if (params.M < 2 || params.M > 10000 || params.ef_construction < 1)
      throw value_error(std::string(op) + ": M = " + std::to_string(params.M) +
                        " must be in [2, 10000] and ef_construction = " +
                        std::to_string(params.ef_construction) + " >= 1");
    make_space();
    graph_ = std::make_unique<hnswlib::HierarchicalNSW<float>>(
        space_.get(), static_cast<std::size_t>(capacity), static_cast<std::size_t>(params.M),
        static_cast<std::size_t>(params.ef_construction), static_cast<std::size_t>(params.seed));
  }

  index_t dim() const { return dim_; }
  Metric metric() const { return metric_; }
  index_t size() const { return static_cast<index_t>(graph_->cur_element_count); }
  index_t capacity() const { return static_cast<index_t>(graph_->max_elements_); }

  /// Adds rows; row r of the call gets id size() + r. Throws shape_error for another dim,
  /// value_error past the capacity, numeric_error for a NaN or infinite value.
  void add(const Rows& rows) {
    constexpr const char* op = "HnswIndex::add";
    detail::check_rows(op, "rows", rows);
    if (rows.dim != dim_)
      throw shape_error(std::string(op) + ": rows have dim " + std::to_string(rows.dim) +
                        ", the index " + std::to_string(dim_));
    if (rows.count > capacity() - size())
      throw value_error(std::string(op) + ": " + std::to_string(rows.count) + " rows exceed the " +
                        std::to_string(capacity() - size()) + " left of capacity " +
                        std::to_string(capacity()));
    detail::check_finite(op, "rows", rows);
    const index_t base = size();
    index_t first = 0;
    if (base == 0 && rows.count > 0) {  // the entry point, alone, before any parallel insert
      graph_->addPoint(rows.row(0), 0);
      first = 1;
    }
    std::atomic<bool> failed{false};
    std::string message;
    [[maybe_unused]] const int threads = detail::thread_count(params_.threads);
    SIAM_OMP(parallel for schedule(dynamic, 64) num_threads(threads) if (threads > 1))
    for (index_t i = first; i < rows.count; ++i) {
      if (failed) continue;
      try {
        graph_->addPoint(rows.row(i), static_cast<std::size_t>(base + i));
      } catch (const std::exception& ex) {
        SIAM_OMP(critical(siam_hnsw_error)) {
          failed = true;
          message = ex.what();
        }
      }
    }
    if (failed) throw error(std::string(op) + ": hnswlib: " + message);
  }

  /// The k (approximate) nearest ids of each query, searching with a candidate list of
  /// max(ef, k): larger ef, higher recall, slower. Not to be called concurrently on one
  /// index (hnswlib keeps ef in the index). Throws shape_error for another dim, value_error
  /// for k outside [1, size()] or ef < 1, numeric_error for a NaN or infinite query.
  [[nodiscard]] Result search(const Rows& queries, index_t k, index_t ef) {
    constexpr const char* op = "HnswIndex::search";
    detail::check_rows(op, "queries", queries);
    if (queries.dim != dim_)
      throw shape_error(std::string(op) + ": queries have dim " + std::to_string(queries.dim) +
                        ", the index " + std::to_string(dim_));
    if (k < 1 || k > size())
      throw value_error(std::string(op) + ": k = " + std::to_string(k) + " must be in [1, " +
                        std::to_string(size()) + "] (the rows in the index)");
    if (ef < 1)
      throw value_error(std::string(op) + ": ef = " + std::to_string(ef) + " must be >= 1");
    detail::check_finite(op, "queries", queries);
    graph_->setEf(static_cast<std::size_t>(std::max(ef, k)));
    Result r;
    r.queries = queries.count;
    r.k = k;
    r.indices.assign(static_cast<std::size_t>(queries.count * k), -1);
    r.distances.assign(static_cast<std::size_t>(queries.count * k),
                       std::numeric_limits<float>::infinity());
    [[maybe_unused]] const int threads = detail::thread_count(params_.threads);
    SIAM_OMP(parallel for schedule(dynamic, 16) num_threads(threads) if (threads > 1))
    for (index_t q = 0; q < queries.count; ++q) {
      auto pq = graph_->searchKnn(queries.row(q), static_cast<std::size_t>(k));
      std::vector<Neighbour> found;
      while (!pq.empty()) {
        const float d = pq.top().first;
        found.push_back(
            {metric_ == Metric::l2 ? d : -(1.0f - d), static_cast<std::int64_t>(pq.top().second)});
        pq.pop();
      }
      std::sort(found.begin(), found.end());
      for (std::size_t j = 0; j < found.size(); ++j) {
        const auto at = static_cast<std::size_t>(q * k) + j;
        r.indices[at] = found[j].index;
        r.distances[at] = metric_ == Metric::l2 ? found[j].distance : -found[j].distance;
      }
    }
    return r;
  }

  /// Writes the index (see the header comment) atomically, with the caller's "meta/..."
  /// records (metadata() after a load). Throws value_error when empty or for a metadata name
  /// outside meta/, io_error when the file cannot be written.
  void save(const std::filesystem::path& path, const std::vector<io::Record>& meta = {}) const {
    if (size() == 0)
      throw value_error("HnswIndex::save: " + path.string() + ": the index is empty");
    detail::TempFile tmp;
    graph_->saveIndex(tmp.path().string());
    auto graph = io::read_file(tmp.path(), "HnswIndex::save");
    if (graph.size() < 16) throw io_error("HnswIndex::save: hnswlib wrote no graph");
    const auto n = static_cast<std::uint64_t>(size());
    std::memcpy(graph.data() + 8, &n, 8);  // capacity := size: a loaded index holds what it needs
    auto records = detail::index_header("hnsw", dim_, metric_, size());
    io::Record g;
    g.name = "hnsw/graph";
    g.type = io::ArrayType::text;  // opaque bytes: hnswlib's own layout, checked on load
    g.dims = {static_cast<std::int64_t>(graph.size())};
    g.bytes.assign(graph.begin(), graph.end());
    records.push_back(std::move(g));
    detail::append_metadata(records, meta, "HnswIndex::save");
    io::save_archive(path, records);
  }

  /// The "meta/..." records of the file this index was loaded from (empty otherwise).
  const std::vector<io::Record>& metadata() const { return metadata_; }

  /// Reads an index from bytes (`name` labels errors); every check of load().
  static HnswIndex from_bytes(const unsigned char* data, std::size_t size, const std::string& name,
                              HnswParams params = {}) {
    const auto records = io::decode(data, size, name);
    const auto h = detail::read_index_header(records, "hnsw", name);
    const auto dim = h.dim, n = h.size;
    const auto& graph = detail::find_record(records, "hnsw/graph", io::ArrayType::text, name);
    detail::validate_hnsw_graph(graph.bytes, n, dim, name);
    HnswIndex out(static_cast<index_t>(dim), h.metric, params);
    detail::TempFile tmp;
    {
      std::ofstream f(tmp.path(), std::ios::binary);
      f.write(reinterpret_cast<const char*>(graph.bytes.data()),
              static_cast<std::streamsize>(graph.bytes.size()));
      if (!f) throw io_error(name + ": cannot write a temporary copy of the graph");
    }
    out.graph_ =
        std::make_unique<hnswlib::HierarchicalNSW<float>>(out.space_.get(), tmp.path().string());
    out.metadata_ = detail::metadata_of(records);
    return out;
  }

  /// Reads an index file. Throws io_error for a missing, truncated or corrupt file (also
  /// when its graph is inconsistent).
  static HnswIndex load(const std::filesystem::path& path, HnswParams params = {}) {
    const auto bytes = io::read_file(path, "HnswIndex::load");
    return from_bytes(bytes.data(), bytes.size(), path.string(), params);
  }

  /// Reads an index file that must have been built for embeddings of `dim` under
  /// `metric`: also throws shape_error for another dim, value_error for another metric.
  static HnswIndex load(const std::filesystem::path& path, index_t dim, Metric metric,
                        HnswParams params = {}) {
    auto idx = load(path, params);
    detail::check_index_fits(path, idx.dim(), idx.metric(), dim, metric);
    return idx;
  }

 private:
  HnswIndex(index_t dim, Metric metric, HnswParams params)  // for load: the graph comes later
      : dim_(dim), metric_(metric), params_(params) {
    make_space();
  }
  void make_space() {
    if (metric_ == Metric::l2)
      space_ = std::make_unique<hnswlib::L2Space>(static_cast<std::size_t>(dim_));
    else if (metric_ == Metric::inner_product)
      space_ = std::make_unique<hnswlib::InnerProductSpace>(static_cast<std::size_t>(dim_));
    else
      throw value_error("HnswIndex: unknown metric " +
                        std::to_string(static_cast<std::uint32_t>(metric_)));
  }

  index_t dim_;
  Metric metric_;
  HnswParams params_;
  std::unique_ptr<hnswlib::SpaceInterface<float>> space_;  // outlives graph_ (declared first)
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> graph_;
  std::vector<io::Record> metadata_;
};

}  // namespace siam::search
