// Trains a small Siamese network for a few steps and checks that the loss fell.
#include <cstdio>
#include <siam/siamese.hpp>

int main() {
  using namespace siam;
  Rng rng(1);
  auto net = nn::mlp<float, Cpu>({8, 16, 2}, rng);
  optim::Adam<float, Cpu> adam(net.parameters(), {1e-2});
  Tensor<float, Cpu> x(Shape{16, 8}), y(Shape{8});
  for (index_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<float>(rng.uniform(-1, 1));
  for (index_t i = 0; i < 8; ++i)
    y[i] = static_cast<float>(i % 2);
  Tape<float, Cpu> tape;
  float first = 0, last = 0;
  for (int it = 0; it < 50; ++it) {
    tape.reset();
    adam.zero_grad();
    auto f = net.forward(tape.constant(x));
    auto loss = contrastive_loss(slice_rows(f, 0, 8), slice_rows(f, 8, 8), tape.constant(y), {1.0});
    tape.backward(loss);
    adam.step();
    (it == 0 ? first : last) = loss.value().item();
  }
  std::printf("downstream: loss %.4f -> %.4f\n", first, last);
  return last < first ? 0 : 1;
}
