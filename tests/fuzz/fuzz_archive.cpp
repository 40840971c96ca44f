// libFuzzer target: the model/checkpoint archive decoder. Inputs either decode or are
// rejected with siam::io_error. The checksum is skipped for half of the inputs (bit 0
// of the first byte) by recomputing it, so the fuzzer reaches the record parser too.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <siam/io/archive.hpp>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<unsigned char> bytes(data, data + size);
  if (size >= 4 && (data[0] & 1)) {  // fix the trailing CRC so the body gets parsed
    const auto crc =
        static_cast<std::uint32_t>(crc32(0L, bytes.data(), static_cast<uInt>(size - 4)));
    for (int i = 0; i < 4; ++i)
      bytes[size - 4 + i] = static_cast<unsigned char>(crc >> (8 * i));
  }
  try {
    (void)siam::io::decode(bytes.data(), bytes.size(), "fuzz-archive");
  } catch (const siam::io_error&) {
  }
  return 0;
}
