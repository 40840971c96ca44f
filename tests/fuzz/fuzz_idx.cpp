// libFuzzer target: the IDX reader, raw and gzip. Every input must either parse or be
// rejected with siam::io_error; anything else (a crash, a sanitizer report, another
// exception, memory beyond the input's real size) is a finding.
#include <cstddef>
#include <cstdint>
#include <siam/data/idx.hpp>
#include <span>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  try {
    (void)siam::data::read_idx_images_bytes(bytes, "fuzz-images");
  } catch (const siam::io_error&) {
  }
  try {
    (void)siam::data::read_idx_labels_bytes(bytes, "fuzz-labels");
  } catch (const siam::io_error&) {
  }
  return 0;
}
