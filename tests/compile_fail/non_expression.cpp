// expect: siam: an expression combines only with a siam expression
#include <siam/siamese.hpp>
#include <string>
void f() {
  siam::Tensor<float, siam::Cpu> a(siam::Shape{2});
  auto c = a + std::string("x");
}
