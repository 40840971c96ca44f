// expect: siam: operands live on different backends
#include <siam/siamese.hpp>
struct OtherBackend : siam::Cpu {};
void f() {
  siam::Tensor<float, siam::Cpu> a(siam::Shape{2});
  siam::Tensor<float, OtherBackend> b(siam::Shape{2});
  siam::Tensor<float, siam::Cpu> c = a * b;
}
