// libFuzzer target: the safetensors decoder, and loading into a small network. Inputs
// either decode or are rejected with siam::io_error; nothing else may happen (no crash,
// leak, sanitizer report or allocation beyond the input's size).
#include <cstddef>
#include <cstdint>
#include <siam/io/safetensors.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto f = siam::io::decode_safetensors(data, size, "fuzz-safetensors");
    std::size_t total = 0;
    for (const auto& t : f.tensors)
      total += t.bytes.size();
    if (total > size) __builtin_trap();  // payloads must come from the input
  } catch (const siam::io_error&) {
  }
  return 0;
}
