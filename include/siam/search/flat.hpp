// An exact index: the gallery's embeddings kept as they are, searched by search::knn
// (blocked GEMMs + top-k, exact.hpp), saved to and loaded from a siam archive. The
// counterpart of HnswIndex (hnsw.hpp) without an optional dependency and without a build
// step: its file is the vectors themselves (4 dim bytes per row).
//
//   search::FlatIndex index(64, search::Metric::l2);
//   index.add({data, n, 64});                                    // rows get ids 0, 1, ...
//   auto r = index.search({queries, nq, 64}, 10);
//   index.save("index.bin", {io::make_text_record("meta/source", "...")});
//   auto back = search::FlatIndex::load("index.bin", 64, search::Metric::l2);
//
// The file holds "index/kind" = "flat", the siam version, the dimension, the metric, the row
// count, the vectors ("flat/vectors", f32 rows x dim) and any "meta/..." records the caller
// adds (returned by metadata() after a load). index_kind() (index_file.hpp) reads which kind
// a file is.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "siam/error.hpp"
#include "siam/io/archive.hpp"
#include "siam/search/exact.hpp"
#include "siam/search/index_file.hpp"
#include "siam/search/types.hpp"

namespace siam::search {

/// Exact search over the embeddings added so far.
class FlatIndex {
 public:
  FlatIndex(index_t dim, Metric metric) : dim_(dim), metric_(metric) {
    if (dim <= 0) throw value_error("FlatIndex: dim " + std::to_string(dim) + " must be > 0");
    if (metric != Metric::l2 && metric != Metric::inner_product)
      throw value_error("FlatIndex: unknown metric " +
                        std::to_string(static_cast<std::uint32_t>(metric)));
  }

  index_t dim() const { return dim_; }
  Metric metric() const { return metric_; }
  index_t size() const { return static_cast<index_t>(vectors_.size()) / dim_; }
  const float* data() const { return vectors_.data(); }
  /// The "meta/..." records of the file this index was loaded from (empty otherwise).
  const std::vector<io::Record>& metadata() const { return metadata_; }

  /// Adds rows; row r of the call gets id size() + r. Throws shape_error for another dim,
  /// numeric_error for a NaN or infinite value (naming its row and column) or a row whose
  /// squared norm overflows float.
  void add(const Rows& rows) {
    constexpr const char* op = "FlatIndex::add";
    detail::check_rows(op, "rows", rows);
    if (rows.dim != dim_)
      throw shape_error(std::string(op) + ": rows have dim " + std::to_string(rows.dim) +
                        ", the index " + std::to_string(dim_));
    detail::check_finite(op, "rows", rows);
    (void)detail::squared_norms(op, "rows", rows);  // a norm past float's range: never searchable
    vectors_.insert(vectors_.end(), rows.data, rows.data + rows.count * rows.dim);
  }

  /// The k nearest ids of each query (search::knn; `opt` as there). Throws as knn does:
  /// shape_error for another dim, value_error for k outside [1, size()], numeric_error for
  /// a NaN or infinite query.
  [[nodiscard]] Result search(const Rows& queries, index_t k, const Options& opt = {}) const {
    return knn(queries, {vectors_.data(), size(), dim_}, k, metric_, opt);
  }

  /// Writes the index (see the header comment) atomically, with the caller's "meta/..."
  /// records. Throws value_error when empty or for a metadata name outside meta/, io_error
  /// when the file cannot be written.
  void save(const std::filesystem::path& path, const std::vector<io::Record>& meta = {}) const {
    if (size() == 0)
      throw value_error("FlatIndex::save: " + path.string() + ": the index is empty");
    auto records = detail::index_header("flat", dim_, metric_, size());
    records.push_back(
        io::make_record("flat/vectors", {size(), dim_}, vectors_.data(), vectors_.size()));
    detail::append_metadata(records, meta, "FlatIndex::save");
    io::save_archive(path, records);
  }

  /// Reads an index from decoded records (`name` labels errors); every check of load().
  static FlatIndex from_records(const std::vector<io::Record>& records, const std::string& name) {
    const auto h = detail::read_index_header(records, "flat", name);
    const auto dim = h.dim, n = h.size;
    const auto& v = detail::find_record(records, "flat/vectors", io::ArrayType::f32, name);
    if (v.dims.size() != 2 || static_cast<std::uint64_t>(v.dims[0]) != n ||
        static_cast<std::uint64_t>(v.dims[1]) != dim || n == 0)
      throw io_error(name + ": 'flat/vectors' does not hold " + std::to_string(n) +
                     " rows of dim " + std::to_string(dim));
    FlatIndex out(static_cast<index_t>(dim), h.metric);
    out.vectors_ = v.as<float>();
    for (std::size_t i = 0; i < out.vectors_.size(); ++i)
      if (!std::isfinite(out.vectors_[i]))
        throw io_error(name + ": row " + std::to_string(i / dim) + " has a non-finite value");
    try {  // rows whose squared norms overflow float could never be searched: refused here
      (void)detail::squared_norms("FlatIndex", "vector",
                                  {out.vectors_.data(), out.size(), out.dim_});
    } catch (const numeric_error& e) {
      throw io_error(name + ": " + e.what());
    }
    out.metadata_ = detail::metadata_of(records);
    return out;
  }

  /// Reads an index file. Throws io_error for a missing, truncated or corrupt file, another
  /// kind of index, or non-finite vectors.
  static FlatIndex load(const std::filesystem::path& path) {
    return from_records(io::load_archive(path), path.string());
  }

  /// Reads an index file that must have been built for embeddings of `dim` under `metric`:
  /// also throws shape_error for another dim, value_error for another metric.
  static FlatIndex load(const std::filesystem::path& path, index_t dim, Metric metric) {
    auto idx = load(path);
    detail::check_index_fits(path, idx.dim(), idx.metric(), dim, metric);
    return idx;
  }

 private:
  index_t dim_;
  Metric metric_;
  std::vector<float> vectors_;
  std::vector<io::Record> metadata_;
};

}  // namespace siam::search
