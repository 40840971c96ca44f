// Writes a small seed corpus for the fuzz targets: valid IDX files (raw and gzip, images
// and labels) and valid archives, plus a few truncations of each.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <siam/data/idx.hpp>
#include <siam/data/synthetic_digits.hpp>
#include <siam/io/archive.hpp>
#include <siam/io/safetensors.hpp>
#include <siam/search/flat.hpp>
#include <string>
#include <vector>

namespace fs = std::filesystem;

static void put(const fs::path& p, const std::vector<unsigned char>& b) {
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}
static std::vector<unsigned char> slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: make_corpus IDX_DIR ARCHIVE_DIR [SAFETENSORS_DIR]\n");
    return 2;
  }
  const fs::path idx = argv[1], arc = argv[2];
  fs::create_directories(idx);
  fs::create_directories(arc);
  const auto d = siam::data::synthetic_digits(3, 1);
  const fs::path tmp = fs::temp_directory_path() / "siam-corpus";
  fs::create_directories(tmp);
  for (bool gz : {false, true}) {
    siam::data::write_idx(tmp / "i", tmp / "l", d, gz);
    for (const char* name : {"i", "l"}) {
      const auto b = slurp(tmp / name);
      const std::string base = std::string(name) + (gz ? ".gz" : ".raw");
      put(idx / base, b);
      put(idx / (base + ".cut"), {b.begin(), b.begin() + static_cast<long>(b.size() / 2)});
    }
  }
  const float w[6] = {1, 2, 3, 4, 5, 6};
  const std::uint64_t s[2] = {7, 8};
  const auto a = siam::io::encode({siam::io::make_record("param/0/W", {2, 3}, w, 6),
                                   siam::io::make_record("state", {2}, s, 2)});
  put(arc / "archive", a);
  put(arc / "archive.cut", {a.begin(), a.begin() + static_cast<long>(a.size() / 2)});
  {  // an exact-search index file (the same archive format, read further by the target)
    siam::search::FlatIndex index(3, siam::search::Metric::l2);
    std::vector<float> v(5 * 3);
    for (std::size_t i = 0; i < v.size(); ++i)
      v[i] = static_cast<float>((i * 7) % 5) - 2.0f;
    index.add({v.data(), 5, 3});
    index.save(tmp / "flat");
    put(arc / "flat", slurp(tmp / "flat"));
  }
  if (argc == 4) {
    const fs::path st = argv[3];
    fs::create_directories(st);
    const double d2[2] = {0.5, -1.5};
    const auto b =
        siam::io::encode_safetensors({siam::io::make_record("layers.0.weight", {3, 2}, w, 6),
                                      siam::io::make_record("layers.0.bias", {2}, d2, 2)},
                                     {{"format", "pt"}});
    put(st / "safetensors", b);
    put(st / "safetensors.cut", {b.begin(), b.begin() + static_cast<long>(b.size() / 2)});
  }
  fs::remove_all(tmp);
  return 0;
}
