// libFuzzer target: the model/checkpoint archive decoder, and the exact-search index file
// (siam/search/flat.hpp, an archive of its own records) behind it. Inputs either decode or
// are rejected with siam::io_error; an archive that decodes is read as a flat index, which
// either loads and answers a search or is rejected with siam::io_error. The checksum is
// skipped for half of the inputs (bit 0 of the first byte) by recomputing it, so the fuzzer
// reaches the record parser and the index checks too.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <siam/io/archive.hpp>
#include <siam/search/flat.hpp>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<unsigned char> bytes(data, data + size);
  if (size >= 4 && (data[0] & 1)) {  // fix the trailing CRC so the body gets parsed
    const auto crc =
        static_cast<std::uint32_t>(crc32(0L, bytes.data(), static_cast<uInt>(size - 4)));
    for (int i = 0; i < 4; ++i)
      bytes[size - 4 + i] = static_cast<unsigned char>(crc >> (8 * i));
  }
  std::vector<siam::io::Record> records;
  try {
    records = siam::io::decode(bytes.data(), bytes.size(), "fuzz-archive");
  } catch (const siam::io_error&) {
    return 0;
  }
  try {
    const auto index = siam::search::FlatIndex::from_records(records, "fuzz-index");
    const std::vector<float> q(static_cast<std::size_t>(index.dim()), 0.5f);
    (void)index.search({q.data(), 1, index.dim()}, std::min<siam::index_t>(3, index.size()));
  } catch (const siam::io_error&) {
  }
  return 0;
}
