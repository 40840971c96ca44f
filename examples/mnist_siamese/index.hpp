// The search-index subcommands of mnist_siamese (siam/search/; docs/retrieval.md):
//   index --model FILE [--data DIR] --out index.bin [--exact]   embed the test images, index them
//   query --model FILE --index-file index.bin [--index I | --image PNG] [--k K]
// An HNSW graph (siam::hnsw, hnswlib) by default, an exact flat index with --exact (and in a
// build without hnswlib). The file records the model and the images it was built from, so a
// query with another model, other data, or an index of another dimension or metric ends with
// one line naming the mismatch instead of returning neighbours that mean nothing.
#pragma once

#include <siam/io/archive.hpp>
#include <siam/io/file.hpp>
#include <siam/search/flat.hpp>
#if defined(SIAM_EXAMPLE_HAS_HNSW)
#include <siam/search/hnsw.hpp>
#endif

#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "interop.hpp"
#include "run.hpp"

namespace mnist_siamese {

inline constexpr bool kHaveHnsw =
#if defined(SIAM_EXAMPLE_HAS_HNSW)
    true;
#else
    false;
#endif

/// The first problem with `index`'s options, as one line. --out is the index file here.
inline std::optional<std::string> check_index_options(const Options& o) {
  Options data = o;
  data.out = ".";  // check_data_options wants a directory; --out is checked below
  if (auto e = check_data_options(data)) return e;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(o.model, ec))
    return "--model " + o.model + ": no such file";
  if (o.out.empty() || std::filesystem::is_directory(o.out, ec))
    return "--out " + o.out + ": must name the index file to write";
  const auto parent = std::filesystem::path(o.out).parent_path();
  if (!parent.empty() && !std::filesystem::is_directory(parent, ec))
    return "--out " + o.out + ": no directory " + parent.string();
  if (o.metric != "l2" && o.metric != "inner_product")
    return "--metric " + o.metric + ": must be l2 or inner_product";
  if (!o.exact && !kHaveHnsw)
    return "index: this build has no HNSW (hnswlib not found); use --exact";
  if (o.hnsw_m < 2 || o.hnsw_m > 10000)
    return "--M " + std::to_string(o.hnsw_m) + ": must be in [2, 10000]";
  if (o.ef_construction < 1)
    return "--ef-construction " + std::to_string(o.ef_construction) + ": must be >= 1";
  return std::nullopt;
}

/// The first problem with `query --index-file`'s own options, as one line.
inline std::optional<std::string> check_index_query_options(const Options& o) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(o.index_file, ec))
    return "--index-file " + o.index_file + ": no such file";
  if (o.metric != "l2" && o.metric != "inner_product")
    return "--metric " + o.metric + ": must be l2 or inner_product";
  if (o.k < 1) return "--k " + std::to_string(o.k) + ": must be >= 1";
  if (o.ef < 1) return "--ef " + std::to_string(o.ef) + ": must be >= 1";
  return std::nullopt;
}

namespace detail {

inline siam::search::Metric metric_named(const std::string& m) {
  return m == "inner_product" ? siam::search::Metric::inner_product : siam::search::Metric::l2;
}

/// FNV-1a, 64 bits. Not the CRC-32 of zlib: a siam archive ends with its own CRC-32, and the
/// CRC-32 of any data followed by its CRC-32 is one constant, so every model would match.
inline std::uint64_t hash_of(const void* data, std::size_t bytes) {
  std::uint64_t h = 14695981039346656037ULL;
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i)
    h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}

/// What an index file records about where its rows came from.
struct IndexSource {
  std::uint64_t model_hash = 0, images_hash = 0, images = 0;
  std::string model, data;
};

inline IndexSource source_of(const Options& o, const Data& d) {
  const auto model = siam::io::read_file(o.model, "index");
  return {hash_of(model.data(), model.size()),
          hash_of(d.test.images.data(), d.test.images.size() * sizeof(float)), d.test.size(),
          std::filesystem::path(o.model).filename().string(), d.source};
}

inline std::vector<siam::io::Record> metadata_records(const IndexSource& s) {
  namespace io = siam::io;
  std::vector<io::Record> r;
  r.push_back(io::make_record("meta/model_fnv1a", {1}, &s.model_hash, 1));
  r.push_back(io::make_record("meta/images_fnv1a", {1}, &s.images_hash, 1));
  r.push_back(io::make_record("meta/images", {1}, &s.images, 1));
  r.push_back(io::make_text_record("meta/model", s.model));
  r.push_back(io::make_text_record("meta/data", s.data));
  return r;
}

inline IndexSource source_in(const std::vector<siam::io::Record>& meta, const std::string& file) {
  IndexSource s;
  bool seen[5] = {};
  for (const auto& r : meta) {
    const bool u64 = r.type == siam::io::ArrayType::u64 && r.count() == 1;
    if (r.name == "meta/model_fnv1a" && u64)
      s.model_hash = r.as<std::uint64_t>()[0], seen[0] = true;
    if (r.name == "meta/images_fnv1a" && u64)
      s.images_hash = r.as<std::uint64_t>()[0], seen[1] = true;
    if (r.name == "meta/images" && u64) s.images = r.as<std::uint64_t>()[0], seen[2] = true;
    if (r.name == "meta/model") s.model = r.text(), seen[3] = true;
    if (r.name == "meta/data") s.data = r.text(), seen[4] = true;
  }
  for (const bool b : seen)
    if (!b)
      throw siam::io_error(file +
                           ": not an index written by mnist_siamese index (no model and "
                           "data records)");
  return s;
}

/// The model's embeddings must be finite before they go into an index or a search.
inline void check_embeddings(const std::vector<float>& emb, std::size_t dim, const Options& o,
                             const char* what) {
  for (std::size_t i = 0; i < emb.size(); ++i)
    if (!std::isfinite(emb[i]))
      throw siam::numeric_error("--model " + o.model + ": the embedding of " + what + " " +
                                std::to_string(i / dim) + " has " + std::to_string(emb[i]) +
                                " in column " + std::to_string(i % dim) + " (a diverged model?)");
}

/// A flat or an HNSW index, whichever the file holds.
struct LoadedIndex {
  std::optional<siam::search::FlatIndex> flat;
#if defined(SIAM_EXAMPLE_HAS_HNSW)
  std::optional<siam::search::HnswIndex> hnsw;
#endif
  std::string kind;

  siam::index_t size() const {
#if defined(SIAM_EXAMPLE_HAS_HNSW)
    if (hnsw) return hnsw->size();
#endif
    return flat->size();
  }
  const std::vector<siam::io::Record>& metadata() const {
#if defined(SIAM_EXAMPLE_HAS_HNSW)
    if (hnsw) return hnsw->metadata();
#endif
    return flat->metadata();
  }
  siam::search::Result search(const siam::search::Rows& q, siam::index_t k, siam::index_t ef) {
#if defined(SIAM_EXAMPLE_HAS_HNSW)
    if (hnsw) return hnsw->search(q, k, ef);
#endif
    (void)ef;
    return flat->search(q, k);
  }
};

inline LoadedIndex load_index(const std::string& file, siam::index_t dim,
                              siam::search::Metric metric) {
  LoadedIndex idx;
  idx.kind = siam::search::index_kind(file);
  if (idx.kind == "flat") {
    idx.flat = siam::search::FlatIndex::load(file, dim, metric);
  } else if (idx.kind == "hnsw") {
#if defined(SIAM_EXAMPLE_HAS_HNSW)
    idx.hnsw = siam::search::HnswIndex::load(file, dim, metric);
#else
    throw siam::value_error(file +
                            ": an HNSW index, and this build has no HNSW (hnswlib not "
                            "found); build one with index --exact");
#endif
  } else {
    throw siam::io_error(file + ": unknown index kind '" + idx.kind + "'");
  }
  return idx;
}

}  // namespace detail

/// `index`: embeds the test images with the model and writes an index of them.
inline int build_index(const Options& opt) {
  const auto t0 = Clock::now();
  auto net = load_query_model<siam::Cpu>(opt);
  const Options o = with_model_input(opt, net);
  const Data data = load_data(o);
  std::printf("model: %s, %s\n", o.model.c_str(), net.describe().c_str());
  const std::size_t dim = embedding_dim(net);
  const auto emb = embed(net, data.test);
  detail::check_embeddings(emb, dim, o, "test image");
  const siam::search::Rows rows{emb.data(), static_cast<siam::index_t>(data.test.size()),
                                static_cast<siam::index_t>(dim)};
  const auto metric = detail::metric_named(o.metric);
  const auto meta = detail::metadata_records(detail::source_of(o, data));
  const auto t1 = Clock::now();
  std::string kind;
  if (o.exact) {
    siam::search::FlatIndex index(rows.dim, metric);
    index.add(rows);
    index.save(o.out, meta);
    kind = "exact (flat)";
  } else {
#if defined(SIAM_EXAMPLE_HAS_HNSW)
    siam::search::HnswParams p;
    p.M = o.hnsw_m;
    p.ef_construction = o.ef_construction;
    p.seed = o.seed;
    p.threads = o.threads;
    siam::search::HnswIndex index(rows.dim, metric, rows.count, p);
    index.add(rows);
    index.save(o.out, meta);
    kind = "HNSW (M " + std::to_string(o.hnsw_m) + ", ef_construction " +
           std::to_string(o.ef_construction) + ")";
#endif
  }
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(o.out, ec);
  std::printf("index: %s over %zu test embeddings of dim %zu, metric %s, built in %.2f s\n",
              kind.c_str(), data.test.size(), dim, o.metric.c_str(), seconds_since(t1));
  std::printf("wrote %s (%.1f KB) in %.1f s\n", o.out.c_str(), static_cast<double>(bytes) / 1024,
              seconds_since(t0));
  return 0;
}

/// `query --index-file`: the model embeds the query (a test image or PNG files), the index
/// finds its nearest test images.
inline int query_index(const Options& opt) {
  auto net = load_query_model<siam::Cpu>(opt);
  std::printf("model: %s, %s\n", opt.model.c_str(), net.describe().c_str());
  const auto dim = static_cast<siam::index_t>(embedding_dim(net));
  auto idx = detail::load_index(opt.index_file, dim, detail::metric_named(opt.metric));
  const auto src = detail::source_in(idx.metadata(), opt.index_file);
  if (src.images != static_cast<std::uint64_t>(idx.size()))
    throw siam::io_error(opt.index_file + ": records " + std::to_string(src.images) +
                         " images but holds " + std::to_string(idx.size()) + " rows");
  const auto model = siam::io::read_file(opt.model, "query");
  if (detail::hash_of(model.data(), model.size()) != src.model_hash)
    throw siam::value_error(opt.index_file + " was built with the model " + src.model +
                            ", not --model " + opt.model + " (rebuild it with index --model " +
                            opt.model + ")");
  Options o = with_model_input(opt, net);
  o.test_size = static_cast<long long>(src.images);  // the index's images, not --test-size
  const Data data = load_data(o);
  const auto class_names = label_names(o, data);
  if (data.test.size() != src.images ||
      detail::hash_of(data.test.images.data(), data.test.images.size() * sizeof(float)) !=
          src.images_hash)
    throw siam::value_error(opt.index_file + " indexes other images (" + src.data + ", " +
                            std::to_string(src.images) + " test images): give the --data and " +
                            "--seed it was built with");
  const auto n = static_cast<siam::index_t>(data.test.size());

  // The queries: one test image (left out of its own neighbours), or the image files.
  Dataset queries;
  std::vector<plots::Image> query_pictures;
  std::vector<std::string> names;
  const bool own = o.images.empty();
  std::int64_t self = -1;  // the query's own row in the index
  if (own) {
    const std::size_t q =
        o.index >= 0 ? static_cast<std::size_t>(o.index) : pick_query(o.seed, data.test.size());
    if (q >= data.test.size())
      throw siam::value_error("--index " + std::to_string(q) + ": must be in [0, " +
                              std::to_string(n) + ") (the images in " + o.index_file + ")");
    queries = data.test.slice(q, 1);
    self = static_cast<std::int64_t>(q);
    query_pictures.push_back(image_of(data.test, q, data.channels));
    names.push_back("test image " + std::to_string(q) + " (label " +
                    class_name(class_names, data.test.labels[q]) + ")");
  } else {
#if defined(SIAM_EXAMPLE_HAS_PNG)
    QueryImages read = read_query_images(o, data);
    queries = std::move(read.set);
    for (std::size_t i = 0; i < o.images.size(); ++i) {
      query_pictures.push_back(image_of(queries, i, read.channels));
      names.push_back("image " + o.images[i]);
    }
#endif
  }
  const siam::index_t available = n - (own ? 1 : 0);
  if (o.k > available)
    throw siam::value_error("--k " + std::to_string(o.k) + ": " + o.index_file + " holds " +
                            std::to_string(n) + " images, so at most " + std::to_string(available) +
                            " neighbours" + (own ? " besides the query image" : ""));
  const auto qemb = embed(net, queries);
  detail::check_embeddings(qemb, static_cast<std::size_t>(dim), o, "query");
  const auto nq = static_cast<siam::index_t>(queries.size());
  const siam::index_t k = o.k + (own ? 1 : 0);  // the query's own row comes back too
  const auto t0 = Clock::now();
  const auto r = idx.search({qemb.data(), nq, dim}, k, o.ef);
  const double ms = 1000 * seconds_since(t0);

  const fs::path out = o.out;
  fs::create_directories(out);
  const bool l2 = o.metric == "l2";
  for (siam::index_t q = 0; q < nq; ++q) {
    Retrieval shown;
    for (siam::index_t j = 0; j < k && static_cast<siam::index_t>(shown.neighbours.size()) < o.k;
         ++j) {
      const auto id = r.index(q, j);
      if (id < 0) continue;      // HNSW found fewer than k
      if (id == self) continue;  // the query image itself
      shown.neighbours.push_back(static_cast<std::uint32_t>(id));
      const float d = r.distance(q, j);
      shown.distances.push_back(l2 ? std::sqrt(std::max(d, 0.0f)) : d);
    }
    std::printf("%s via %s index %s (%lld rows, %.2f ms); nearest test images:\n",
                names[static_cast<std::size_t>(q)].c_str(), idx.kind.c_str(), o.index_file.c_str(),
                static_cast<long long>(n), ms);
    for (std::size_t i = 0; i < shown.neighbours.size(); ++i)
      std::printf("  #%zu  image %5u  label %-12s %s %.5f\n", i + 1, shown.neighbours[i],
                  class_name(class_names, data.test.labels[shown.neighbours[i]]).c_str(),
                  l2 ? "distance" : "dot", static_cast<double>(shown.distances[i]));
    if (shown.neighbours.size() < 9) continue;  // the figure shows nine
    std::vector<plots::Image> images;
    std::vector<int> labels;
    for (std::size_t i = 0; i < 9; ++i) {
      images.push_back(image_of(data.test, shown.neighbours[i], data.channels));
      labels.push_back(static_cast<int>(data.test.labels[shown.neighbours[i]]));
    }
    const fs::path png =
        out / (q == 0 ? "retrieval.png" : "retrieval_" + std::to_string(q) + ".png");
    plots::write_retrieval(png, query_pictures[static_cast<std::size_t>(q)], images,
                           std::vector<float>(shown.distances.begin(), shown.distances.begin() + 9),
                           "Nearest test images to " + names[static_cast<std::size_t>(q)], labels);
    std::printf("wrote %s\n", png.string().c_str());
  }
  return 0;
}

}  // namespace mnist_siamese
