// Embedding whole data sets with a trained network: batched, tape-free (through
// Sequential::embed, which reuses the network's own buffers), on any backend.
#pragma once

#include <algorithm>
#include <functional>
#include <type_traits>
#include <vector>

#include "siam/data/dataset.hpp"
#include "siam/nn/layers.hpp"

namespace siam {

/// Called after each batch with (images done, images in all).
using Progress = std::function<void(index_t done, index_t total)>;

namespace detail {
/// The batch loop both entry points share: rows(b, m) gives the m input rows from b on.
template <class T, class B, class Rows>
std::vector<float> embed_batches(nn::Sequential<T, B>& net, index_t n, index_t batch,
                                 const Progress& progress, const Rows& rows) {
  if (batch <= 0) throw value_error("embed: batch must be > 0, got " + std::to_string(batch));
  std::vector<float> out;
  for (index_t b = 0; b < n; b += batch) {
    const index_t m = std::min(batch, n - b);
    const auto e = net.embed(rows(b, m)).to_vector();
    out.insert(out.end(), e.begin(), e.end());
    if (progress) progress(b + m, n);
  }
  return out;
}
}  // namespace detail

/// Embeds every image of `set`, `batch` images at a time; returns an N x D row-major
/// host array. Throws value_error when the images do not fit the network's input.
/// On a host backend in float the network reads the images where they are (no copy).
template <class T, class B>
std::vector<float> embed_images(nn::Sequential<T, B>& net, const data::Dataset& set,
                                index_t batch = 1000, const Progress& progress = {}) {
  set.validate();
  const auto px = static_cast<index_t>(set.pixels());
  if (net.input_shape().size() > 0 && px != net.input_shape().size())
    throw value_error("embed: images have " + std::to_string(px) + " pixels, the network expects " +
                      net.input_shape().str());
  const auto n = static_cast<index_t>(set.size());
  if constexpr (B::is_host && std::is_same_v<T, float>) {
    // embed() only reads its input: the const_cast never leads to a write
    const View<T, B> all(const_cast<float*>(set.images.data()), Shape{n, px});
    return detail::embed_batches(net, n, batch, progress,
                                 [&](index_t b, index_t m) { return all.row_slice(b, m); });
  } else {
    Tensor<T, B> chunk;
    std::vector<T> host;
    return detail::embed_batches(net, n, batch, progress, [&](index_t b, index_t m) {
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

/// Embeds the rows of `images` (N x input size, already on the backend: a trainer's
/// training set, say), `batch` rows at a time, with no upload; returns an N x D row-major
/// host array. Throws value_error when the rows do not fit the network's input.
template <class T, class B>
std::vector<float> embed_rows(nn::Sequential<T, B>& net, const Tensor<T, B>& images,
                              index_t batch = 1000, const Progress& progress = {}) {
  const Shape in = net.input_shape();
  if (images.shape().rank() != 2 || (in.size() > 0 && images.cols() != in.size()))
    throw value_error("embed: rows of shape " + images.shape().str() +
                      " for a network whose input is " + in.str());
  const View<T, B> all(const_cast<T*>(images.data()), images.shape());
  return detail::embed_batches(net, images.rows(), batch, progress,
                               [&](index_t b, index_t m) { return all.row_slice(b, m); });
}

}  // namespace siam
