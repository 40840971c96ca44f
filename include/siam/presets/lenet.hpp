// Caffe's mnist_siamese LeNet as layer specs: a choice of architecture for 28 x 28 digits
// (a preset), not a generic library part. nn::lenet (nn/conv.hpp) builds the same network
// directly.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "siam/error.hpp"
#include "siam/nn/spec.hpp"
#include "siam/shape.hpp"

namespace siam::presets {

/// Caffe's mnist_siamese LeNet as specs for `input` = [C x H x W] images (H, W >= 16): two
/// 5x5 convolutions (20 and 50 channels) each followed by ReLU and 2x2 max pooling, then
/// Dense 500, ReLU and Dense `embedding`. At [1 x 28 x 28] this is nn::lenet (nn/conv.hpp);
/// other sizes change only the first convolution's input channels and the first Dense
/// layer's input width (50 x ((H - 4) / 2 - 4) / 2 x ((W - 4) / 2 - 4) / 2).
inline std::vector<nn::LayerSpec> lenet_specs(const Shape& input, index_t embedding = 2) {
  using nn::LayerSpec;
  if (input.rank() != 3 || input[0] < 1 || input[1] < 16 || input[2] < 16)
    throw shape_error(
        "presets::lenet_specs: the input must be [C x H x W] with C >= 1 and H, "
        "W >= 16, got " +
        input.str());
  if (embedding < 1)
    throw value_error("presets::lenet_specs: embedding " + std::to_string(embedding) +
                      " must be >= 1");
  auto pooled = [](index_t side) { return ((side - 4) / 2 - 4) / 2; };
  std::vector<LayerSpec> l;
  for (auto [in, out] : {std::pair{input[0], index_t{20}}, std::pair{index_t{20}, index_t{50}}}) {
    l.push_back(LayerSpec{"Conv2D", {}}
                    .set("in", double(in))
                    .set("out", double(out))
                    .set("kernel", 5)
                    .set("stride", 1)
                    .set("padding", 0)
                    .set("bias", 1));
    l.push_back({"ReLU", {}});
    l.push_back(LayerSpec{"MaxPool2D", {}}.set("kernel", 2).set("stride", 2));
  }
  l.push_back({"Flatten", {}});
  l.push_back(LayerSpec{"Dense", {}}
                  .set("in", double(50 * pooled(input[1]) * pooled(input[2])))
                  .set("out", 500));
  l.push_back({"ReLU", {}});
  l.push_back(LayerSpec{"Dense", {}}.set("in", 500).set("out", double(embedding)));
  return l;
}

/// The layers of nn::lenet (Caffe's mnist_siamese LeNet, `embedding`-D output) as specs,
/// for configurations that name an architecture (SiameseConfig::network); the input is
/// [1 x 28 x 28], so the leading Reshape is left out.
inline std::vector<nn::LayerSpec> lenet_specs(index_t embedding = 2) {
  return lenet_specs(Shape{1, 28, 28}, embedding);
}

}  // namespace siam::presets
