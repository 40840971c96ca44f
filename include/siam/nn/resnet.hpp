// A small ResNet embedding network (He et al.'s basic blocks), as layer specs and as a
// network: a 3x3 stem of `width` channels with BatchNorm and ReLU; three stages of two basic
// blocks at width, 2 width and 4 width channels, stride 2 at the start of the second and
// third stage (1x1 strided convolution and BatchNorm on the shortcut there); global average
// pooling; a Dense head to `embedding` values; L2 normalisation.
#pragma once

#include <string>
#include <vector>

#include "siam/nn/registry.hpp"

namespace siam::nn {

namespace detail {
inline LayerSpec conv_spec(index_t in, index_t out, index_t k, index_t stride, index_t pad) {
  return LayerSpec{"Conv2D", {}}
      .set("in", double(in))
      .set("out", double(out))
      .set("kernel", double(k))
      .set("stride", double(stride))
      .set("padding", double(pad))
      .set("bias", 0);
}
inline LayerSpec bn_spec(index_t c) {
  return LayerSpec{"BatchNorm", {}}
      .set("features", double(c))
      .set("eps", 1e-5)
      .set("momentum", 0.1);
}
/// relu(body(x) + shortcut(x)), body = conv3x3(stride) BN ReLU conv3x3 BN; the shortcut is
/// conv1x1(stride) BN when the shape changes, else the identity.
inline void basic_block(std::vector<LayerSpec>& l, index_t in, index_t out, index_t stride) {
  const bool project = stride != 1 || in != out;
  l.push_back(LayerSpec{"Residual", {}}.set("body", 5).set("projection", project ? 2 : 0));
  l.push_back(conv_spec(in, out, 3, stride, 1));
  l.push_back(bn_spec(out));
  l.push_back({"ReLU", {}});
  l.push_back(conv_spec(out, out, 3, 1, 1));
  l.push_back(bn_spec(out));
  if (project) {
    l.push_back(conv_spec(in, out, 1, stride, 0));
    l.push_back(bn_spec(out));
  }
  l.push_back({"ReLU", {}});
}
}  // namespace detail

/// The ResNet's layer specs for examples of shape `input` [C x H x W] (e.g. [1 x 28 x 28]).
/// Throws value_error for an input that is not [C x H x W] or a width or embedding below 1.
inline std::vector<LayerSpec> resnet_specs(Shape input, index_t width = 32,
                                           index_t embedding = 64) {
  if (input.rank() != 3 || input.size() == 0 || width < 1 || embedding < 1)
    throw value_error("resnet_specs: input " + input.str() + ", width " + std::to_string(width) +
                      ", embedding " + std::to_string(embedding) +
                      ": the input must be [C x H x W], width and embedding positive");
  std::vector<LayerSpec> l;
  l.push_back(detail::conv_spec(input[0], width, 3, 1, 1));
  l.push_back(detail::bn_spec(width));
  l.push_back({"ReLU", {}});
  index_t c = width;
  for (int stage = 0; stage < 3; ++stage) {
    const index_t out = width << stage;
    for (int block = 0; block < 2; ++block) {
      detail::basic_block(l, c, out, stage > 0 && block == 0 ? 2 : 1);
      c = out;
    }
  }
  l.push_back({"GlobalAvgPool", {}});
  l.push_back(LayerSpec{"Dense", {}}.set("in", double(c)).set("out", double(embedding)));
  l.push_back(LayerSpec{"L2Normalize", {}}.set("eps", 1e-12));
  return l;
}

/// The ResNet of resnet_specs as a ready network (He initialisation from `rng`; BatchNorm
/// weight 1, bias 0), in training mode; its input shape is `input`.
template <class T, class B>
Sequential<T, B> resnet(Shape input, Rng& rng, index_t width = 32, index_t embedding = 64) {
  return build<T, B>(resnet_specs(input, width, embedding), input, rng);
}

}  // namespace siam::nn
