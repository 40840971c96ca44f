// The compiled component (CMake: siam::compiled, src/compiled.cpp): the common types for
// float on the CPU backend, instantiated once in a library instead of in every translation
// unit that uses them. Include this header (it brings in <siam/siamese.hpp> and the general
// trainer) and link siam::compiled; the declarations below tell the compiler not to
// instantiate these types here, which cuts a training program's compile time and compiler
// memory (figures: docs/compile-time.md). The code is the same as header-only: the library
// is built from these headers with the same options, so results are bit-identical.
// Header-only use (<siam/siamese.hpp> without this header) is the default and unchanged.
#pragma once

#include "siam/io/model_file.hpp"
#include "siam/siamese.hpp"
#include "siam/train/batches.hpp"
#include "siam/train/losses.hpp"
#include "siam/train/trainer.hpp"

// One list of what the library instantiates, for the declarations here (SIAM_EXTERN =
// extern) and the definitions in src/compiled.cpp (SIAM_EXTERN empty).
// clang-format off
#define SIAM_COMPILED_INSTANTIATIONS(SIAM_EXTERN, T, B)                                        \
  namespace siam {                                                                           \
  SIAM_EXTERN template class Tensor<T, B>;                                                   \
  SIAM_EXTERN template class Tape<T, B>;                                                     \
  SIAM_EXTERN template class Trainer<T, B>;                                                  \
  SIAM_EXTERN template class ImageSet<T, B>;                                                 \
  SIAM_EXTERN template class PairBatches<T, B>;                                              \
  SIAM_EXTERN template class PositivePairBatches<T, B>;                                      \
  SIAM_EXTERN template class TripletBatches<T, B>;                                           \
  SIAM_EXTERN template class PKBatches<T, B>;                                                \
  SIAM_EXTERN template Var<T, B> contrastive_loss(Var<T, B>, Var<T, B>, Var<T, B>,           \
                                                  ContrastiveOptions);                       \
  SIAM_EXTERN template Var<T, B> triplet_loss(Var<T, B>, Var<T, B>, Var<T, B>,               \
                                              TripletOptions);                               \
  SIAM_EXTERN template Var<T, B> ntxent_loss(Var<T, B>, Var<T, B>, NTXentOptions);           \
  }                                                                                          \
  namespace siam::nn {                                                                       \
  SIAM_EXTERN template class Layer<T, B>;                                                    \
  SIAM_EXTERN template class ParameterFree<T, B>;                                            \
  SIAM_EXTERN template class Dense<T, B>;                                                    \
  SIAM_EXTERN template class ReLU<T, B>;                                                     \
  SIAM_EXTERN template class Tanh<T, B>;                                                     \
  SIAM_EXTERN template class Sigmoid<T, B>;                                                  \
  SIAM_EXTERN template class L2Normalize<T, B>;                                              \
  SIAM_EXTERN template class Sequential<T, B>;                                               \
  SIAM_EXTERN template class Conv2D<T, B>;                                                   \
  SIAM_EXTERN template class MaxPool2D<T, B>;                                                \
  SIAM_EXTERN template class Flatten<T, B>;                                                  \
  SIAM_EXTERN template class Reshape<T, B>;                                                  \
  SIAM_EXTERN template class GlobalAvgPool<T, B>;                                            \
  SIAM_EXTERN template class AvgPool2D<T, B>;                                                \
  SIAM_EXTERN template class BatchNorm<T, B>;                                                \
  SIAM_EXTERN template class Dropout<T, B>;                                                  \
  SIAM_EXTERN template class Residual<T, B>;                                                 \
  SIAM_EXTERN template Sequential<T, B> mlp<T, B>(const std::vector<index_t>&, Rng&, Init);  \
  SIAM_EXTERN template Sequential<T, B> lenet<T, B>(Rng&, index_t, Init);                    \
  SIAM_EXTERN template Sequential<T, B> build<T, B, LayerKinds<>>(                           \
      const std::vector<LayerSpec>&, Shape, Rng&);                                           \
  SIAM_EXTERN template std::vector<LayerSpec> specs<T, B>(const Sequential<T, B>&);          \
  }                                                                                          \
  namespace siam::optim {                                                                    \
  SIAM_EXTERN template class Optimizer<T, B>;                                                \
  SIAM_EXTERN template class SGD<T, B>;                                                      \
  SIAM_EXTERN template class Adam<T, B>;                                                     \
  SIAM_EXTERN template class AdamW<T, B>;                                                    \
  }                                                                                          \
  namespace siam::losses {                                                                   \
  SIAM_EXTERN template LossFn<T, B> contrastive<T, B>(ContrastiveOptions);                   \
  SIAM_EXTERN template LossFn<T, B> triplet<T, B>(TripletOptions);                           \
  SIAM_EXTERN template LossFn<T, B> batch_hard<T, B>(MiningOptions, MiningStats*);           \
  SIAM_EXTERN template LossFn<T, B> batch_all<T, B>(MiningOptions, MiningStats*);            \
  SIAM_EXTERN template LossFn<T, B> ntxent<T, B>(NTXentOptions);                             \
  }                                                                                          \
  namespace siam::io {                                                                       \
  SIAM_EXTERN template void save_model<T, B>(const std::filesystem::path&,                   \
                                             nn::Sequential<T, B>&,                          \
                                             const std::vector<std::string>&);               \
  SIAM_EXTERN template nn::Sequential<T, B> load_model<T, B>(const std::filesystem::path&);  \
  SIAM_EXTERN template void load_model<T, B>(const std::filesystem::path&,                   \
                                             nn::Sequential<T, B>&);                         \
  }
// clang-format on

#if !defined(SIAM_COMPILED_DEFINE)
SIAM_COMPILED_INSTANTIATIONS(extern, float, ::siam::Cpu)
#endif
