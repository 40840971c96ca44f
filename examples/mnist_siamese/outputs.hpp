// What mnist_siamese writes and measures: the CSV and JSON files, the figures built from data
// sets, and the evaluation of an embedding. Every file is written atomically (a temporary name in
// the same directory, then a rename), so an interrupted run never leaves half a file behind.
#pragma once

#include <siam/data/dataset.hpp>
#include <siam/data/pairs.hpp>
#include <siam/io/archive.hpp>
#include <siam/io/json.hpp>
#include <siam/metrics.hpp>
#include <siam/random.hpp>
#include <siam/search/accuracy.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "plots.hpp"

namespace mnist_siamese {

namespace fs = std::filesystem;
using siam::data::Dataset;

inline void write_text(const fs::path& path, const std::string& text) {
  siam::io::write_file_atomic(path, std::vector<unsigned char>(text.begin(), text.end()));
}

/// %.9g prints a float exactly, so equal histories give byte-identical files.
inline std::string loss_csv(const std::vector<float>& losses) {
  std::string s = "iteration,loss\n";
  char buf[64];
  for (std::size_t i = 0; i < losses.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%zu,%.9g\n", i + 1, static_cast<double>(losses[i]));
    s += buf;
  }
  return s;
}

/// emb is n x dim (row-major); columns x, y for 2-D embeddings, else e0, e1, ...
inline std::string embedding_csv(const std::vector<float>& emb, const Dataset& set,
                                 std::size_t dim = 2) {
  std::string s = "index,label";
  for (std::size_t d = 0; d < dim; ++d)
    s += dim == 2 ? (d == 0 ? ",x" : ",y") : ",e" + std::to_string(d);
  s += "\n";
  char buf[64];
  for (std::size_t i = 0; i < set.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%zu,%lld", i, static_cast<long long>(set.labels[i]));
    s += buf;
    for (std::size_t d = 0; d < dim; ++d) {
      std::snprintf(buf, sizeof buf, ",%.9g", static_cast<double>(emb[dim * i + d]));
      s += buf;
    }
    s += "\n";
  }
  return s;
}

/// A flat JSON object, one key per line (easy to grep); NaN and Inf become null.
class JsonObject {
 public:
  JsonObject& add(const std::string& key, double v) {
    char buf[64];
    if (std::isfinite(v))
      std::snprintf(buf, sizeof buf, "%.10g", v);
    else
      std::snprintf(buf, sizeof buf, "null");
    return raw(key, buf);
  }
  JsonObject& add(const std::string& key, long long v) { return raw(key, std::to_string(v)); }
  JsonObject& add(const std::string& key, std::uint64_t v) { return raw(key, std::to_string(v)); }
  JsonObject& add(const std::string& key, const std::string& v) { return raw(key, quote(v)); }
  JsonObject& add(const std::string& key, const std::vector<std::string>& v) {
    std::string a = "[";
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i) a += ", ";
      a += quote(v[i]);
    }
    return raw(key, a + "]");
  }
  /// A nested object, on one line: {"a": 1, "b": 2}.
  JsonObject& add_object(const std::string& key, const JsonObject& v) {
    const std::string& s = v.body_;  // "{\n  a: 1,\n  b: 2" -> "{a: 1, b: 2}"
    std::string b;
    b.reserve(s.size() + 1);
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s.compare(i, 3, "\n  ") == 0) {
        if (i != 1) b.push_back(' ');
        i += 2;
        continue;
      }
      b.push_back(s[i]);
    }
    b.push_back('}');
    return raw(key, b);
  }
  std::string str() const { return body_ + "\n}\n"; }

 private:
  JsonObject& raw(const std::string& key, const std::string& value) {
    body_ += body_.size() > 1 ? ",\n  " : "\n  ";  // appends only: see quote()
    body_ += quote(key);
    body_ += ": ";
    body_ += value;
    return *this;
  }
  static std::string quote(const std::string& s) {
    std::string q(1, '"');  // appended piece by piece: GCC 12 misreads "\"" + string&& (-Wrestrict)
    q += siam::io::json_escape(s);
    q += '"';
    return q;
  }
  std::string body_ = "{";
};

/// Image i of `set` for a figure. A colour set (channels 3) holds each image's channel
/// planes one below the other: rows = channels x the image's side.
inline plots::Image image_of(const Dataset& set, std::size_t i, int channels = 1) {
  return {set.image(i), static_cast<int>(set.rows) / channels, static_cast<int>(set.cols),
          channels};
}

/// The images a figure shows, by index: a Dataset's, or decoded on demand (an image folder
/// that stays on disk) into storage this object keeps.
class Pictures {
 public:
  using Decode = std::function<void(std::size_t, float*)>;
  explicit Pictures(const Dataset& set, int channels = 1) : set_(&set), channels_(channels) {}
  Pictures(int rows, int cols, int channels, Decode decode)
      : rows_(rows), cols_(cols), channels_(channels), decode_(std::move(decode)) {}
  plots::Image operator()(std::size_t i) {
    if (set_) return image_of(*set_, i, channels_);
    store_.emplace_back(static_cast<std::size_t>(rows_ * cols_ * channels_));
    decode_(i, store_.back().data());
    return {store_.back().data(), rows_, cols_, channels_};
  }

 private:
  const Dataset* set_ = nullptr;
  int rows_ = 0, cols_ = 0, channels_ = 1;
  Decode decode_;
  std::deque<std::vector<float>> store_;  // a deque: earlier images stay where they are
};

/// k distinct random indices below n (fewer if n < k); a partial Fisher-Yates shuffle.
inline std::vector<std::size_t> random_indices(std::size_t n, std::size_t k, siam::Rng& rng) {
  std::vector<std::size_t> idx(n);
  std::iota(idx.begin(), idx.end(), std::size_t{0});
  k = std::min(k, n);
  for (std::size_t i = 0; i < k; ++i)
    std::swap(idx[i], idx[i + rng.below(n - i)]);
  idx.resize(k);
  return idx;
}

// Each figure draws from its own generator, so adding a figure never changes another one.
inline constexpr std::uint64_t kSamplesStream = 0x5a3b1e5ULL;
inline constexpr std::uint64_t kPairsStream = 0x9a125ULL;
inline constexpr std::uint64_t kQueryStream = 0x9e7e5ULL;
// Test pairs are fixed independently of --seed, so runs with different seeds are comparable.
inline constexpr std::uint64_t kTestPairsSeed = 20240601;
inline constexpr std::size_t kTestPairs = 10000;

/// The test image the retrieval figure shows for a seed.
inline std::size_t pick_query(std::uint64_t seed, std::size_t n) {
  siam::Rng rng(seed ^ kQueryStream);
  return static_cast<std::size_t>(rng.below(n));
}

inline void write_samples(const fs::path& png, std::size_t n, Pictures& pictures,
                          std::uint64_t seed) {
  siam::Rng rng(seed ^ kSamplesStream);
  std::vector<plots::Image> images;
  for (const std::size_t i : random_indices(n, 9, rng))
    images.push_back(pictures(i));
  plots::write_tile(png, images, 3, "Training images");
}

/// Five similar pairs (top row) and five dissimilar ones (bottom row), the first of each kind
/// that the sampler draws: ten pairs straight from it would often be lopsided.
inline void write_pair_examples(const fs::path& png, const std::vector<std::int64_t>& labels,
                                Pictures& pictures, std::uint64_t seed) {
  siam::data::PairSampler sampler(labels);
  siam::Rng rng(seed ^ kPairsStream);
  std::vector<plots::Image> a[2], b[2];  // [0] similar, [1] dissimilar
  std::vector<std::uint32_t> first, second;
  std::vector<float> similar;
  while (a[0].size() < 5 || a[1].size() < 5) {
    sampler.sample(rng, 1, first, second, similar);
    const int kind = similar[0] == 1.0f ? 0 : 1;
    if (a[kind].size() == 5) continue;
    a[kind].push_back(pictures(first[0]));
    b[kind].push_back(pictures(second[0]));
  }
  a[0].insert(a[0].end(), a[1].begin(), a[1].end());
  b[0].insert(b[0].end(), b[1].begin(), b[1].end());
  std::vector<std::string> captions(5, "similar");
  captions.resize(10, "dissimilar");
  plots::write_pairs(png, a[0], b[0], captions);
}

/// Fixed random labelled pairs of test images for the held-out contrastive loss.
struct TestPairs {
  std::vector<std::uint32_t> first, second;
  std::vector<float> similar;
};

inline TestPairs fixed_test_pairs(const Dataset& test) {
  TestPairs tp;
  siam::Rng rng(kTestPairsSeed);
  siam::data::PairSampler(test.labels).sample(rng, kTestPairs, tp.first, tp.second, tp.similar);
  return tp;
}

/// The 9 test images nearest to test image q in the embedding (q itself left out).
struct Retrieval {
  std::size_t query = 0;
  std::vector<std::uint32_t> neighbours;
  std::vector<float> distances;
};

inline Retrieval retrieve(const std::vector<float>& emb, std::size_t n, std::size_t dim,
                          std::size_t q) {
  Retrieval r;
  r.query = q;
  auto nn = siam::metrics::nearest_with_distances(emb.data(), n, dim, q, 9);
  r.neighbours = std::move(nn.indices);
  for (const double d : nn.distances)
    r.distances.push_back(static_cast<float>(d));
  return r;
}

inline void write_retrieval(const fs::path& png, const Dataset& test, const Retrieval& r,
                            const std::string& query_name,
                            const std::vector<std::string>& class_names = {}, int channels = 1) {
  std::vector<plots::Image> images;
  std::vector<int> labels;
  for (const std::uint32_t j : r.neighbours) {
    images.push_back(image_of(test, j, channels));
    labels.push_back(static_cast<int>(test.labels[j]));
  }
  plots::write_retrieval(
      png, image_of(test, r.query, channels), images, r.distances,
      "Nearest test images to test image " + std::to_string(r.query) + " (" + query_name + ")",
      labels, static_cast<int>(test.labels[r.query]), class_names);
}

/// How well an embedding separates the classes (see docs/mnist_siamese.md).
struct Evaluation {
  siam::metrics::PairStats pairs;  // on the fixed test pairs
  double knn1 = 0, knn5 = 0;       // test classified by the nearest training embeddings
  double precision9 = 0;           // test against the other test images
  // Retrieval among the test images (siam/search/accuracy.hpp; docs/retrieval.md); NaN
  // (null in metrics.json) when the embeddings are out of float's range for an exact search
  double precision1 = 0, r_precision = 0, map_at_r = 0;
};

inline Evaluation evaluate(const std::vector<float>& train_emb, const Dataset& train,
                           const std::vector<float>& test_emb, const Dataset& test, std::size_t dim,
                           const TestPairs& tp, double margin) {
  namespace m = siam::metrics;
  Evaluation e;
  e.pairs = m::pair_stats(test_emb.data(), test.labels.data(), test.size(), dim, tp.first,
                          tp.second, tp.similar, margin);
  e.knn1 = m::knn_accuracy(train_emb.data(), train.labels.data(), train.size(), test_emb.data(),
                           test.labels.data(), test.size(), dim, 1);
  e.knn5 =
      m::knn_accuracy(train_emb.data(), train.labels.data(), train.size(), test_emb.data(),
                      test.labels.data(), test.size(), dim, std::min<std::size_t>(5, train.size()));
  e.precision9 = m::precision_at_k(test_emb.data(), test.labels.data(), test.size(), dim, 9);
  siam::search::AccuracyOptions ao;
  ao.recall_at = {1};
  try {
    const auto r = siam::search::accuracy(
        {test_emb.data(), static_cast<siam::index_t>(test.size()), static_cast<siam::index_t>(dim)},
        test.labels.data(), ao);
    e.precision1 = r.precision_at_1;
    e.r_precision = r.r_precision;
    e.map_at_r = r.map_at_r;
  } catch (const siam::numeric_error&) {
    // A diverged model (e.g. --on-nan skip after a blow-up): the kNN figures above still
    // describe it; the retrieval figures are left undefined rather than ending the run.
    e.precision1 = e.r_precision = e.map_at_r = std::nan("");
  }
  return e;
}

}  // namespace mnist_siamese
