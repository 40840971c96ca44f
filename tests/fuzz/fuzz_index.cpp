// libFuzzer target: the HNSW index file (siam/search/hnsw.hpp). Inputs either load, and
// then answer a search, or are rejected with siam::io_error. The archive checksum is
// recomputed for half of the inputs (bit 0 of the first byte) so that the fuzzer reaches
// the record checks and the graph walk behind it.
// Built with -DSIAM_FUZZ_MAKE_SEED instead, it is a program that writes a seed index file.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <siam/search/hnsw.hpp>
#include <vector>

#if defined(SIAM_FUZZ_MAKE_SEED)
#include <cstdio>
int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_FILE\n", argv[0]);
    return 2;
  }
  std::vector<float> v(40 * 3);
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<float>((i * 37) % 11) - 5.0f;
  siam::search::HnswParams p;
  p.M = 4;
  p.threads = 1;
  siam::search::HnswIndex index(3, siam::search::Metric::l2, 40, p);
  index.add({v.data(), 40, 3});
  index.save(argv[1]);
  return 0;
}
#else
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<unsigned char> bytes(data, data + size);
  if (size >= 4 && (data[0] & 1)) {  // fix the trailing CRC so the body gets parsed
    const auto crc =
        static_cast<std::uint32_t>(crc32(0L, bytes.data(), static_cast<uInt>(size - 4)));
    for (int i = 0; i < 4; ++i)
      bytes[size - 4 + i] = static_cast<unsigned char>(crc >> (8 * i));
  }
  try {
    siam::search::HnswParams p;
    p.threads = 1;
    auto index = siam::search::HnswIndex::from_bytes(bytes.data(), bytes.size(), "fuzz-index", p);
    const std::vector<float> q(static_cast<std::size_t>(index.dim()), 0.5f);
    (void)index.search({q.data(), 1, index.dim()}, std::min<siam::index_t>(3, index.size()), 8);
  } catch (const siam::io_error&) {
  }
  return 0;
}
#endif
