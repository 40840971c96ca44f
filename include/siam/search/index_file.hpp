// What every siam index file (FlatIndex in flat.hpp, HnswIndex in hnsw.hpp) shares: a siam
// archive (io/archive.hpp) that starts with "index/kind", "index/siam_version", "index/dim",
// "index/metric" and "index/size", and may carry the caller's "meta/..." records.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "siam/error.hpp"
#include "siam/io/archive.hpp"
#include "siam/search/types.hpp"
#include "siam/version.hpp"

namespace siam::search {

namespace detail {

/// The record `key` of `records` with type `type`; io_error naming `file` otherwise.
inline const io::Record& find_record(const std::vector<io::Record>& records, const char* key,
                                     io::ArrayType type, const std::string& file) {
  for (const auto& r : records)
    if (r.name == key) {
      if (r.type != type) throw io_error(file + ": '" + key + "' has the wrong type");
      return r;
    }
  throw io_error(file + ": not a siam index file (no '" + key + "')");
}

inline std::uint64_t find_u64(const std::vector<io::Record>& records, const char* key,
                              const std::string& file) {
  const auto& r = find_record(records, key, io::ArrayType::u64, file);
  if (r.count() != 1) throw io_error(file + ": '" + key + "' must hold one value");
  return r.as<std::uint64_t>()[0];
}

/// The metric named in an index file.
inline Metric metric_of(const std::vector<io::Record>& records, const std::string& file) {
  const auto name = find_record(records, "index/metric", io::ArrayType::text, file).text();
  if (name == "l2") return Metric::l2;
  if (name == "inner_product") return Metric::inner_product;
  throw io_error(file + ": unknown metric '" + name + "'");
}

/// What the records every index file starts with say (index_header below writes them).
struct IndexHeader {
  std::uint64_t dim = 0, size = 0;
  Metric metric = Metric::l2;
};

/// Reads and checks the records every index file starts with: io_error naming `file` when
/// one is missing or of the wrong type, the kind is not `kind`, the dim is 0 or above 2^20,
/// or the metric is unknown.
inline IndexHeader read_index_header(const std::vector<io::Record>& records, const char* kind,
                                     const std::string& file) {
  const auto got = find_record(records, "index/kind", io::ArrayType::text, file).text();
  if (got != kind)
    throw io_error(file + ": index kind '" + got + "', expected '" + std::string(kind) + "'");
  (void)find_record(records, "index/siam_version", io::ArrayType::text, file);
  IndexHeader h;
  h.dim = find_u64(records, "index/dim", file);
  h.size = find_u64(records, "index/size", file);
  if (h.dim == 0 || h.dim > (1u << 20)) throw io_error(file + ": dim " + std::to_string(h.dim));
  h.metric = metric_of(records, file);
  return h;
}

/// What load(path, dim, metric) adds to load(path): shape_error for an index of another dim,
/// value_error for another metric.
inline void check_index_fits(const std::filesystem::path& path, index_t have_dim,
                             Metric have_metric, index_t dim, Metric metric) {
  if (have_dim != dim)
    throw shape_error(path.string() + ": the index holds embeddings of dim " +
                      std::to_string(have_dim) + ", the model makes dim " + std::to_string(dim));
  if (have_metric != metric)
    throw value_error(path.string() + ": the index was built for metric " + to_string(have_metric) +
                      ", not " + to_string(metric));
}

/// The records every index file starts with.
inline std::vector<io::Record> index_header(const char* kind, index_t dim, Metric metric,
                                            index_t size) {
  std::vector<io::Record> records;
  records.push_back(io::make_text_record("index/kind", kind));
  records.push_back(io::make_text_record("index/siam_version", siam::version_string));
  const auto d = static_cast<std::uint64_t>(dim), n = static_cast<std::uint64_t>(size);
  records.push_back(io::make_record("index/dim", {1}, &d, 1));
  records.push_back(io::make_text_record("index/metric", to_string(metric)));
  records.push_back(io::make_record("index/size", {1}, &n, 1));
  return records;
}

/// Appends the caller's records, each of which must be named "meta/...".
inline void append_metadata(std::vector<io::Record>& records, const std::vector<io::Record>& meta,
                            const char* op) {
  for (const auto& r : meta) {
    if (r.name.rfind("meta/", 0) != 0)
      throw value_error(std::string(op) + ": metadata record '" + r.name +
                        "' must be named meta/...");
    records.push_back(r);
  }
}

inline std::vector<io::Record> metadata_of(const std::vector<io::Record>& records) {
  std::vector<io::Record> out;
  for (const auto& r : records)
    if (r.name.rfind("meta/", 0) == 0) out.push_back(r);
  return out;
}

}  // namespace detail

/// The kind of index a file holds ("flat" or "hnsw"). Throws io_error for a missing, corrupt
/// or truncated file, or one that is not an index.
inline std::string index_kind(const std::filesystem::path& path) {
  const auto records = io::load_archive(path);
  return detail::find_record(records, "index/kind", io::ArrayType::text, path.string()).text();
}

}  // namespace siam::search
