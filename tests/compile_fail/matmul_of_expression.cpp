// expect: siam: matmul operands must be tensors or views
#include <siam/siamese.hpp>
void f() {
  siam::Tensor<float, siam::Cpu> a(siam::Shape{2, 2});
  siam::Tensor<float, siam::Cpu> c = siam::matmul(a + a, a);
}
