// The GEMMs of one training step of the example's 784-1024-1024-2 network on a stacked
// batch of n rows, alone, on any backend: three forward products, two input gradients (the
// input layer's is not needed), three weight gradients. 3.425 GFLOP for n = 360. The step
// benchmarks time these side by side with the step for the step / GEMMs ratio.
#pragma once

#include <siam/expr.hpp>
#include <siam/tensor.hpp>

namespace bench {

template <class B>
struct StepGemms {
  using Tf = siam::Tensor<float, B>;
  siam::index_t n;
  Tf x, w1, w2, w3, h1, h2, f, dz1, dz2, dz3, g1, g2, g3;

  static Tf filled(siam::Shape s, float v) {
    Tf t(s);
    t.fill(v);
    return t;
  }
  explicit StepGemms(siam::index_t rows)
      : n(rows),
        x(filled({rows, 784}, 0.5f)),
        w1(filled({784, 1024}, 0.01f)),
        w2(filled({1024, 1024}, 0.01f)),
        w3(filled({1024, 2}, 0.01f)),
        h1({rows, 1024}),
        h2({rows, 1024}),
        f({rows, 2}),
        dz1(filled({rows, 1024}, 0.1f)),
        dz2(filled({rows, 1024}, 0.1f)),
        dz3(filled({rows, 2}, 0.1f)),
        g1({784, 1024}),
        g2({1024, 1024}),
        g3({1024, 2}) {}
  static constexpr double flops(siam::index_t rows) {
    return 2.0 * double(rows) * (784.0 * 1024 + 1024.0 * 1024 + 1024.0 * 2) * 3 -
           2.0 * double(rows) * 784.0 * 1024;  // no input gradient for the first layer
  }
  void run() {
    using siam::matmul;
    h1 = matmul(x, w1);
    h2 = matmul(h1, w2);
    f = matmul(h2, w3);
    dz2 = matmul(dz3, w3, false, true);
    dz1 = matmul(dz2, w2, false, true);
    g3 = matmul(h2, dz3, true, false);
    g2 = matmul(h1, dz2, true, false);
    g1 = matmul(x, dz1, true, false);
  }
};

}  // namespace bench
