// NT-Xent / InfoNCE (Chen et al. 2020, SimCLR): temperature-scaled cross-entropy over
// cosine similarities. For n positive pairs (z1_i, z2_i), stacked as Z = [z1; z2] [2n x D]:
//   S = cos(Z, Z) / t   (t: the temperature);  pos(i) = i + n mod 2n
//   loss = mean_i [ log SUM_{j != i} exp(S[i, j]) - S[i, pos(i)] ]
// i.e. each embedding must pick out its partner among the 2n - 1 others. The log-sum-exp
// subtracts each row's maximum (no overflow); the diagonal is masked by adding -1e9, which
// exp() turns into an exact 0. The gradient follows from the ops it is built of.
#pragma once

#include <string>
#include <vector>

#include "siam/autodiff/elementwise.hpp"
#include "siam/autodiff/metric.hpp"
#include "siam/autodiff/reduce.hpp"
#include "siam/autodiff/structure.hpp"

namespace siam {

struct NTXentOptions {
  double temperature = 0.1;  ///< > 0
};

/// The loss of a stacked batch Z [2n x D] (rows 0..n-1 first views, n..2n-1 their partners).
/// Throws shape_error for a shape that is not 2n x D, value_error for temperature <= 0.
template <class T, class B>
Var<T, B> ntxent_loss_stacked(Var<T, B> z, NTXentOptions opt = {}) {
  const Shape s = z.shape();
  if (s.rank() != 2 || s.rows() % 2 != 0)
    throw shape_error("ntxent_loss: embeddings " + s.str() +
                      " must be a 2n x D matrix (n first views, then their partners)");
  if (!(opt.temperature > 0))
    throw value_error("ntxent_loss: temperature must be > 0, got " +
                      std::to_string(opt.temperature));
  const index_t m = s.rows(), n = m / 2;
  if (m > 65535)
    throw shape_error("ntxent_loss: more than 65535 embeddings (" + std::to_string(m) +
                      ") are not supported");
  if (n == 0) return sum(z);  // an empty batch: 0
  auto& t = z.tape();
  Var<T, B> sim = cosine_similarity_matrix(z, z) * static_cast<T>(1 / opt.temperature);
  Var<T, B> mask = t.make(Shape{m, m}, false);
  mask.value() = Diagonal<T, B>{Shape{m, m}, T(-1e9)};
  Var<T, B> lse = logsumexp_rows(sim + mask);
  std::vector<std::uint32_t> pos(static_cast<std::size_t>(m));
  for (index_t i = 0; i < m; ++i)
    pos[static_cast<std::size_t>(i)] = static_cast<std::uint32_t>(i * m + (i + n) % m);
  Var<T, B> positives = gather_rows(reshape(sim, Shape{m * m, 1}), pos);
  return mean(lse - positives);
}

/// The loss of n pairs z1, z2 [n x D] of one shape.
template <class T, class B>
Var<T, B> ntxent_loss(Var<T, B> z1, Var<T, B> z2, NTXentOptions opt = {}) {
  if (!(z1.shape() == z2.shape()) || z1.shape().rank() != 2)
    throw shape_error("ntxent_loss: views " + z1.shape().str() + " and " + z2.shape().str() +
                      " must be two n x D matrices of one shape");
  return ntxent_loss_stacked(concat_rows(z1, z2), opt);
}

}  // namespace siam
