// expect: siam: tape\.constant\(\) does not copy its argument
// A tape keeps a pointer to a constant's storage until backward(): binding a temporary
// tensor, which is destroyed at the end of the statement, must not compile.
#include <siam/siamese.hpp>

int main() {
  siam::Tape<float, siam::Cpu> tape;
  auto x = tape.constant(siam::Tensor<float, siam::Cpu>(siam::Shape{2, 2}));
  (void)x;
}
