// Embedding whole data sets with a trained network: batched, tape-free (through
// Sequential::embed, which reuses the network's own buffers), on any backend.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "siam/data/dataset.hpp"
#include "siam/nn/layers.hpp"

namespace siam {

/// Called after each batch with (images done, images in all).
using Progress = std::function<void(index_t done, index_t total)>;

/// How embed_images and embed_rows run.
struct EmbedOptions {
  index_t batch = 1000;  ///< images per forward pass, at most
  /// Bound on the network's inference buffers (every intermediate value of a batch, kept
  /// for the next call): the batch shrinks until they fit, at least one image. A ResNet on
  /// 28x28 images holds about 3.2 MB per image, an MLP a few KB. 0: no bound.
  std::size_t max_bytes = std::size_t{512} << 20;
  bool check_finite = false;  ///< scan each input batch first: numeric_error at a NaN or inf
  Progress progress{};        ///< called after each batch with (images done, images in all)
};

namespace detail {
/// Throws numeric_error naming the first non-finite value of the m x cols input rows x
/// (on the backend), whose first row is row `first` of the whole input.
template <class T, class B>
void check_finite_input(const View<T, B>& x, index_t first, std::vector<T>& host) {
  const index_t n = x.size(), cols = x.shape().rank() >= 2 ? x.size() / x.rows() : n;
  const T* p = x.data();
  if constexpr (!B::is_host) {
    host.resize(static_cast<std::size_t>(n));
    B::to_host(host.data(), x.data(), n);
    p = host.data();
  }
  for (index_t i = 0; i < n; ++i)
    if (!std::isfinite(static_cast<double>(p[i])))
      throw numeric_error("embed: input row " + std::to_string(first + i / cols) + ", column " +
                          std::to_string(i % cols) + " is " +
                          std::to_string(static_cast<double>(p[i])) + " (not finite)");
}

/// The batch loop both entry points share: rows(b, m) gives the m input rows from b on.
template <class T, class B, class Rows>
std::vector<float> embed_batches(nn::Sequential<T, B>& net, index_t n, const EmbedOptions& o,
                                 const Rows& rows) {
  index_t batch = o.batch;
  if (batch <= 0) throw value_error("embed: batch must be > 0, got " + std::to_string(batch));
  if (o.max_bytes > 0 && n > 0) {
    // Bytes per image: from the buffers of the batches seen, or from a probe of a few rows
    // (its output dropped, so the batches and their results do not depend on it).
    if (net.embed_rows() == 0) (void)net.embed(rows(0, std::min({batch, n, index_t(16)})));
    const std::size_t per_row =
        net.embed_bytes() / static_cast<std::size_t>(std::max<index_t>(net.embed_rows(), 1));
    if (per_row > 0)
      batch = std::clamp(static_cast<index_t>(o.max_bytes / per_row), index_t(1), batch);
  }
  std::vector<float> out;
  std::vector<T> host;
  for (index_t b = 0; b < n; b += batch) {
    const index_t m = std::min(batch, n - b);
    const View<T, B> x = rows(b, m);
    if (o.check_finite) check_finite_input(x, b, host);
    const auto e = net.embed(x).to_vector();
    out.insert(out.end(), e.begin(), e.end());
    if (o.progress) o.progress(b + m, n);
  }
  return out;
}
}  // namespace detail

/// Embeds every image of `set`, o.batch images at a time; returns an N x D row-major
/// host array. Throws value_error when the images do not fit the network's input; with
/// o.check_finite, numeric_error naming the row (image) and column (pixel) of the first
/// NaN or inf (unchecked, NaN propagates into that image's embedding).
/// On a host backend in float the network reads the images where they are (no copy).
template <class T, class B>
std::vector<float> embed_images(nn::Sequential<T, B>& net, const data::Dataset& set,
                                const EmbedOptions& o) {
  set.validate();
  const auto px = static_cast<index_t>(set.pixels());
  if (net.input_shape().size() > 0 && px != net.input_shape().size())
    throw value_error("embed: images have " + std::to_string(px) + " pixels, the network expects " +
                      net.input_shape().str());
  const auto n = static_cast<index_t>(set.size());
  if constexpr (B::is_host && std::is_same_v<T, float>) {
    // embed() only reads its input: the const_cast never leads to a write
    const View<T, B> all(const_cast<float*>(set.images.data()), Shape{n, px});
    return detail::embed_batches(net, n, o,
                                 [&](index_t b, index_t m) { return all.row_slice(b, m); });
  } else {
    Tensor<T, B> chunk;
    std::vector<T> host;
    return detail::embed_batches(net, n, o, [&](index_t b, index_t m) {
      chunk.resize(Shape{m, px});
      if constexpr (std::is_same_v<T, float>) {
        B::from_host(chunk.data(), set.images.data() + b * px, m * px);
      } else {
        host.assign(set.images.begin() + b * px, set.images.begin() + (b + m) * px);
        B::from_host(chunk.data(), host.data(), m * px);
      }
      return chunk.view();
    });
  }
}

/// embed_images with `batch` images per pass and no finiteness check.
template <class T, class B>
std::vector<float> embed_images(nn::Sequential<T, B>& net, const data::Dataset& set,
                                index_t batch = 1000, const Progress& progress = {}) {
  return embed_images(net, set, EmbedOptions{.batch = batch, .progress = progress});
}

/// Embeds the rows of `images` (N x input size, already on the backend: a trainer's
/// training set, say), o.batch rows at a time, with no upload; returns an N x D row-major
/// host array. Throws value_error when the rows do not fit the network's input; with
/// o.check_finite, numeric_error naming the row and column of the first NaN or inf (on a
/// device backend each batch is then copied to the host for the check).
template <class T, class B>
std::vector<float> embed_rows(nn::Sequential<T, B>& net, const Tensor<T, B>& images,
                              const EmbedOptions& o) {
  const Shape in = net.input_shape();
  if (images.shape().rank() != 2 || (in.size() > 0 && images.cols() != in.size()))
    throw value_error("embed: rows of shape " + images.shape().str() +
                      " for a network whose input is " + in.str());
  const View<T, B> all(const_cast<T*>(images.data()), images.shape());
  return detail::embed_batches(net, images.rows(), o,
                               [&](index_t b, index_t m) { return all.row_slice(b, m); });
}

/// embed_rows with `batch` rows per pass and no finiteness check.
template <class T, class B>
std::vector<float> embed_rows(nn::Sequential<T, B>& net, const Tensor<T, B>& images,
                              index_t batch = 1000, const Progress& progress = {}) {
  return embed_rows(net, images, EmbedOptions{.batch = batch, .progress = progress});
}

}  // namespace siam
