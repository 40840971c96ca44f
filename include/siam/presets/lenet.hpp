// Caffe's mnist_siamese LeNet as layer specs: a choice of architecture for 28 x 28 digits
// (a preset), not a generic library part. nn::lenet (nn/conv.hpp) builds the same network
// directly.
#pragma once

#include <utility>
#include <vector>

#include "siam/nn/spec.hpp"
#include "siam/shape.hpp"

namespace siam::presets {

/// The layers of nn::lenet (Caffe's mnist_siamese LeNet, `embedding`-D output) as specs,
/// for configurations that name an architecture (SiameseConfig::network); the input is
/// [1 x 28 x 28], so the leading Reshape is left out.
inline std::vector<nn::LayerSpec> lenet_specs(index_t embedding = 2) {
  using nn::LayerSpec;
  std::vector<LayerSpec> l;
  for (auto [in, out] : {std::pair{1, 20}, std::pair{20, 50}}) {
    l.push_back(LayerSpec{"Conv2D", {}}
                    .set("in", in)
                    .set("out", out)
                    .set("kernel", 5)
                    .set("stride", 1)
                    .set("padding", 0)
                    .set("bias", 1));
    l.push_back({"ReLU", {}});
    l.push_back(LayerSpec{"MaxPool2D", {}}.set("kernel", 2).set("stride", 2));
  }
  l.push_back({"Flatten", {}});
  l.push_back(LayerSpec{"Dense", {}}.set("in", 800).set("out", 500));
  l.push_back({"ReLU", {}});
  l.push_back(LayerSpec{"Dense", {}}.set("in", 500).set("out", double(embedding)));
  return l;
}

}  // namespace siam::presets
