// A labelled image set on disk, one folder per class (PyTorch's ImageFolder layout):
//
//   root/<class>/<file>          or   root/train/<class>/<file> and root/test/<class>/<file>
//
// Class names are the folder names in sorted (byte) order; label i is class i (int64).
// Files inside a class folder (and its subfolders, symlinks followed) are taken in sorted
// order. Images stay on disk: the folder lists files, and load() decodes one on demand
// through the codecs given (siam/data/png.hpp: png_codec(), siam/data/jpeg.hpp:
// jpeg_codec()), so this header needs neither libpng nor libjpeg.
//
// Bad input (a zero-byte, non-image, truncated or undecodable file, one above the pixel
// limit, an unreadable file, a symlink loop, an empty class folder, a class with fewer
// than min_per_class images) either throws io_error with one line naming the file or
// folder and the reason (OnBadImage::fail), or is skipped and recorded in skipped()
// (OnBadImage::skip).
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "siam/data/image.hpp"
#include "siam/error.hpp"
#include "siam/io/file.hpp"

namespace siam::data {

enum class OnBadImage { fail, skip };

struct ImageFolderOptions {
  std::vector<ImageCodec> codecs;        ///< the formats read (e.g. {png_codec(), jpeg_codec()})
  OnBadImage on_bad = OnBadImage::fail;  ///< throw, or skip and record
  /// "" reads root/<class>/...; "train" or "test" reads root/<split>/<class>/..., or, with
  /// split_file, the files of root/<class>/... that the split file assigns to this split.
  std::string split;
  /// Lines "<split> <class>/<file>" (paths relative to root, '#' starts a comment).
  std::filesystem::path split_file;
  std::size_t min_per_class = 1;  ///< 2 for pair and P x K training (a positive pair)
  bool verify = true;             ///< decode every file while scanning (finds corrupt data)
  std::size_t channels = 0;       ///< samples per pixel load() returns (0: as stored)
  DecodeLimits limits;
};

/// A file or folder left out under OnBadImage::skip, and why.
struct SkippedFile {
  std::filesystem::path path;
  std::string reason;
};

class ImageFolder {
 public:
  /// Scans `root` (see the header comment). Throws io_error when root is not a folder,
  /// holds no class folder, or (OnBadImage::fail) on the first bad file or folder;
  /// value_error when no codec is given.
  ImageFolder(std::filesystem::path root, ImageFolderOptions options)
      : root_(std::move(root)), opt_(std::move(options)) {
    namespace fs = std::filesystem;
    if (opt_.codecs.empty())
      throw value_error("ImageFolder: no image codec given (e.g. png_codec(), jpeg_codec())");
    detail::check_channel_request(opt_.channels, root_.string());
    if (!opt_.split_file.empty() && opt_.split.empty())
      throw value_error("ImageFolder: a split file needs a split name (e.g. \"train\")");
    std::error_code ec;
    if (!fs::is_directory(root_, ec))
      throw io_error(root_.string() + ": not a folder (an image folder holds <class>/<file>)");
    fs::path base = root_;
    std::vector<fs::path> class_roots;  // where class folders are looked up
    if (!opt_.split.empty() && opt_.split_file.empty()) {
      base = root_ / opt_.split;
      if (!fs::is_directory(base, ec))
        throw io_error(base.string() + ": no '" + opt_.split + "' folder in the image folder");
      // Classes are the union over train/ and test/, so both splits number them alike.
      for (const char* s : {"train", "test"})
        if (fs::is_directory(root_ / s, ec)) class_roots.push_back(root_ / s);
    } else {
      class_roots.push_back(root_);
    }
    std::set<std::string> names;
    for (const auto& r : class_roots)
      for (const auto& e : sorted_entries(r))
        if (fs::is_directory(e, ec)) names.insert(e.filename().string());
    classes_.assign(names.begin(), names.end());
    if (classes_.empty())
      throw io_error(base.string() + ": no class folders (expected <class>/<file>)");

    std::set<std::string> wanted;  // split-file entries for this split, relative to root
    const bool by_file = !opt_.split_file.empty();
    if (by_file) read_split_file(wanted);

    for (std::size_t c = 0; c < classes_.size(); ++c) {
      const fs::path dir = base / classes_[c];
      std::vector<fs::path> files;
      if (fs::is_directory(dir, ec)) {
        std::set<fs::path> visited;
        collect(dir, files, visited);
      }
      std::size_t kept = 0;
      std::vector<Entry> here;
      for (const auto& f : files) {
        if (by_file && !wanted.count(fs::relative(f, root_, ec).generic_string())) continue;
        std::string why = check(f);
        if (!why.empty()) {
          bad(f, why);
          continue;
        }
        here.push_back({f, static_cast<std::int64_t>(c)});
        ++kept;
      }
      if (kept < std::max<std::size_t>(opt_.min_per_class, 1)) {
        const std::string why =
            kept == 0 ? "empty class folder (no readable image)"
                      : "class '" + classes_[c] + "' has " + std::to_string(kept) +
                            " image(s), fewer than the " + std::to_string(opt_.min_per_class) +
                            " needed (a positive pair needs 2)";
        bad(kept == 1 ? here.front().path : dir, why);
        continue;
      }
      entries_.insert(entries_.end(), here.begin(), here.end());
    }
    if (entries_.empty()) throw io_error(base.string() + ": no usable image in any class folder");
  }

  std::size_t size() const { return entries_.size(); }
  const std::filesystem::path& root() const { return root_; }
  /// Class names, sorted; label i names classes()[i] (also for classes left out by skip).
  const std::vector<std::string>& classes() const { return classes_; }
  const std::filesystem::path& path(std::size_t i) const { return at(i).path; }
  std::int64_t label(std::size_t i) const { return at(i).label; }
  /// Every image's label, in order.
  std::vector<std::int64_t> labels() const {
    std::vector<std::int64_t> out(entries_.size());
    for (std::size_t i = 0; i < out.size(); ++i)
      out[i] = entries_[i].label;
    return out;
  }
  /// The folder restricted to images `keep` (indices into this one, in the order given),
  /// with the same classes, options and skipped files. Throws value_error for an index out of
  /// range and for an empty selection.
  ImageFolder subset(const std::vector<std::size_t>& keep) const {
    if (keep.empty()) throw value_error("ImageFolder::subset: no image selected");
    ImageFolder out = *this;
    out.entries_.clear();
    out.entries_.reserve(keep.size());
    for (const std::size_t i : keep)
      out.entries_.push_back(at(i));
    return out;
  }
  /// What OnBadImage::skip left out, in scan order.
  const std::vector<SkippedFile>& skipped() const { return skipped_; }
  const ImageFolderOptions& options() const { return opt_; }

  /// Reads and decodes image i with options().channels samples per pixel (thread-safe).
  /// Throws io_error naming the file.
  /// min_side > 0: a decoder that can shrink while decoding (JPEG) may return an image whose
  /// shorter side is at least min_side (see DecodeLimits).
  Image load(std::size_t i, std::size_t min_side = 0) const {
    const auto& e = at(i);
    const auto bytes = io::read_file(e.path, "ImageFolder");
    return decode(bytes, e.path.string(), min_side);
  }

  /// Decodes bytes with the codec whose signature matches; io_error naming `name` else.
  Image decode(const std::vector<std::uint8_t>& bytes, const std::string& name,
               std::size_t min_side = 0) const {
    if (bytes.empty()) throw io_error(name + ": empty file (0 bytes), not an image");
    DecodeLimits limits = opt_.limits;
    if (min_side > 0) limits.min_side = min_side;
    for (const auto& codec : opt_.codecs)
      if (codec.sniff(bytes.data(), bytes.size()))
        return codec.decode(bytes.data(), bytes.size(), name, opt_.channels, limits);
    std::string formats;
    for (const auto& codec : opt_.codecs)
      formats += (formats.empty() ? "" : " or ") + codec.format;
    throw io_error(name + ": not a " + formats + " image (unrecognised signature)");
  }

 private:
  struct Entry {
    std::filesystem::path path;
    std::int64_t label;
  };

  const Entry& at(std::size_t i) const {
    if (i >= entries_.size())
      throw value_error("ImageFolder: image " + std::to_string(i) + " of " +
                        std::to_string(entries_.size()));
    return entries_[i];
  }

  void bad(const std::filesystem::path& p, const std::string& why) {
    if (opt_.on_bad == OnBadImage::fail) throw io_error(p.string() + ": " + why);
    skipped_.push_back({p, why});
  }

  static std::vector<std::filesystem::path> sorted_entries(const std::filesystem::path& dir) {
    std::vector<std::filesystem::path> out;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
      out.push_back(it->path());
    if (ec) throw io_error(dir.string() + ": cannot list the folder (" + ec.message() + ")");
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
      return a.filename().string() < b.filename().string();
    });
    return out;
  }

  /// Files under dir, sorted, following folder symlinks; a symlink loop is a bad entry.
  void collect(const std::filesystem::path& dir, std::vector<std::filesystem::path>& files,
               std::set<std::filesystem::path>& visited) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path real = fs::canonical(dir, ec);
    if (ec) {
      bad(dir, "cannot resolve the folder (" + ec.message() + ")");
      return;
    }
    if (!visited.insert(real).second) {
      bad(dir, "symlink loop (the folder " + real.string() + " is already being read)");
      return;
    }
    std::vector<fs::path> entries;
    try {
      entries = sorted_entries(dir);
    } catch (const io_error& e) {
      bad(dir, std::string("cannot list the folder: ") + e.what());
      return;
    }
    for (const auto& e : entries) {
      const auto st = fs::status(e, ec);  // follows symlinks
      if (ec) {
        bad(e, ec.value() == static_cast<int>(std::errc::too_many_symbolic_link_levels)
                   ? "symlink loop (" + ec.message() + ")"
                   : "cannot stat (" + ec.message() + ")");
        continue;
      }
      if (fs::is_directory(st))
        collect(e, files, visited);
      else
        files.push_back(e);
    }
    visited.erase(real);  // only the folders on the current path make a loop
  }

  /// Why file f is not a usable image, or "" when it is.
  std::string check(const std::filesystem::path& f) const {
    std::ifstream in(f, std::ios::binary);
    if (!in) return "cannot open the file (unreadable: permissions?)";
    std::vector<std::uint8_t> bytes;
    if (!opt_.verify) {
      bytes.resize(16);
      in.read(reinterpret_cast<char*>(bytes.data()), 16);
      bytes.resize(static_cast<std::size_t>(in.gcount()));
      if (bytes.empty()) return "empty file (0 bytes), not an image";
      for (const auto& codec : opt_.codecs)
        if (codec.sniff(bytes.data(), bytes.size())) return "";
      return "not an image of a known format (unrecognised signature)";
    }
    try {
      bytes = io::read_file(f, "ImageFolder");
      (void)decode(bytes, f.string());
    } catch (const io_error& e) {
      std::string msg = e.what();
      const std::string prefix = f.string() + ": ";
      if (msg.rfind(prefix, 0) == 0) msg = msg.substr(prefix.size());
      return msg;
    }
    return "";
  }

  void read_split_file(std::set<std::string>& wanted) const {
    std::ifstream in(opt_.split_file);
    if (!in) throw io_error(opt_.split_file.string() + ": cannot open the split file");
    std::string line;
    for (std::size_t n = 1; std::getline(in, line); ++n) {
      if (const auto h = line.find('#'); h != std::string::npos) line.erase(h);
      const auto a = line.find_first_not_of(" \t\r");
      if (a == std::string::npos) continue;
      const auto b = line.find_first_of(" \t", a);
      const auto c = b == std::string::npos ? b : line.find_first_not_of(" \t", b);
      if (c == std::string::npos)
        throw io_error(opt_.split_file.string() + ":" + std::to_string(n) +
                       ": expected '<split> <class>/<file>'");
      auto rel = line.substr(c);
      rel.erase(rel.find_last_not_of(" \t\r") + 1);
      if (line.substr(a, b - a) == opt_.split) wanted.insert(rel);
    }
  }

  std::filesystem::path root_;
  ImageFolderOptions opt_;
  std::vector<std::string> classes_;
  std::vector<Entry> entries_;
  std::vector<SkippedFile> skipped_;
};

}  // namespace siam::data
