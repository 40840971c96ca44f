// expect: siam: not a Backend: it lacks gemm, gather_rows or scatter_add_rows
#include <siam/siamese.hpp>
struct NoGemm : siam::Cpu {
  static void gemm() = delete;
};
void f() {
  siam::Tensor<float, NoGemm> a(siam::Shape{2});
}
