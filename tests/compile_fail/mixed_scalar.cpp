// expect: siam: operands have different scalar types
#include <siam/siamese.hpp>
void f() {
  siam::Tensor<float, siam::Cpu> a(siam::Shape{2});
  siam::Tensor<double, siam::Cpu> b(siam::Shape{2});
  siam::Tensor<float, siam::Cpu> c = a + b;
}
