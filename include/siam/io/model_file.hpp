// Saving and loading networks through the archive format of archive.hpp.
//
// A model file (format 2) is self-describing: besides the weights ("param/<i>/<name>")
// it holds
//   model/format  u64 [1]     2
//   model/scalar  text        float32 or float64
//   model/input   u64 [rank]  the shape of one input example
//   model/arch    text        one line per layer, its kind and settings (nn/spec.hpp)
//   model/classes text        optional: the class names, one per line, label i on line i
// so load_model<T, B>(path) returns a ready network. Files of format 1 hold weights only:
// they load into a network the caller builds, with load_model(path, net.parameters()).
#pragma once

#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "siam/autodiff/tape.hpp"
#include "siam/io/archive.hpp"
#include "siam/nn/registry.hpp"

namespace siam::io {

template <class T, class B>
Record tensor_record(const std::string& name, const Tensor<T, B>& t) {
  const auto host = t.to_vector();
  std::vector<std::int64_t> dims;
  for (int i = 0; i < t.shape().rank(); ++i)
    dims.push_back(t.shape()[i]);
  return make_record(name, dims, host.data(), host.size());
}

/// Copies a record into `t`, which must already have the record's shape and type;
/// throws io_error naming the file, the record and both shapes otherwise.
template <class T, class B>
void load_tensor(const Record& r, Tensor<T, B>& t, const std::string& file) {
  std::vector<std::int64_t> dims;
  for (int i = 0; i < t.shape().rank(); ++i)
    dims.push_back(t.shape()[i]);
  auto str = [](const std::vector<std::int64_t>& d) {
    std::string s = "[";
    for (std::size_t i = 0; i < d.size(); ++i)
      s += (i ? " x " : "") + std::to_string(d[i]);
    return s + "]";
  };
  if (r.dims != dims)
    throw io_error(file + ": '" + r.name + "' has shape " + str(r.dims) + ", the network expects " +
                   str(dims) + " (a model of another network shape?)");
  const ArrayType want = std::is_same_v<T, float> ? ArrayType::f32 : ArrayType::f64;
  if (r.type != want) throw io_error(file + ": '" + r.name + "' has the wrong element type");
  const auto v = r.as<T>();
  B::from_host(t.data(), v.data(), t.size());
}

/// Parameter records are named "param/<index>/<name>".
template <class T, class B>
std::vector<Record> parameter_records(const std::vector<Parameter<T, B>*>& params) {
  std::vector<Record> out;
  for (std::size_t i = 0; i < params.size(); ++i)
    out.push_back(
        tensor_record("param/" + std::to_string(i) + "/" + params[i]->name, params[i]->value));
  return out;
}

template <class T, class B>
void load_parameters(const std::vector<Record>& records,
                     const std::vector<Parameter<T, B>*>& params, const std::string& file) {
  std::size_t found = 0;
  for (const auto& r : records) {
    if (r.name.rfind("param/", 0) != 0) continue;
    if (found >= params.size())
      throw io_error(file + ": holds more parameters than the network's " +
                     std::to_string(params.size()));
    const std::string want = "param/" + std::to_string(found) + "/" + params[found]->name;
    if (r.name != want) throw io_error(file + ": expected '" + want + "', found '" + r.name + "'");
    load_tensor(r, params[found]->value, file);
    ++found;
  }
  if (found != params.size())
    throw io_error(file + ": holds " + std::to_string(found) + " parameters, the network has " +
                   std::to_string(params.size()));
}

/// Saves the parameters (atomically) to a model file.
template <class T, class B>
void save_model(const std::filesystem::path& path, const std::vector<Parameter<T, B>*>& params) {
  save_archive(path, parameter_records(params));
}
/// Loads a model file's weights into existing parameters (shapes must match).
template <class T, class B>
void load_model(const std::filesystem::path& path, const std::vector<Parameter<T, B>*>& params) {
  load_parameters(load_archive(path), params, path.string());
}

inline constexpr std::uint64_t model_format_version = 2;

namespace detail {
template <class T>
const char* scalar_name() {
  return sizeof(T) == 4 ? "float32" : "float64";
}
inline const Record* find_record(const std::vector<Record>& records, const std::string& name) {
  for (const auto& r : records)
    if (r.name == name) return &r;
  return nullptr;
}
}  // namespace detail

/// Whether archive records describe a network (a "model/format" record: a model file, or a
/// checkpoint written with io::model_records), so load_model<T, B>(path) can build it; false
/// for a weights-only file (format 1) or a bare checkpoint.
inline bool is_model_file(const std::vector<Record>& records) {
  return detail::find_record(records, "model/format") != nullptr;
}
/// The same for a file (read whole). Throws io_error for a missing or corrupt archive.
inline bool is_model_file(const std::filesystem::path& path) {
  return is_model_file(load_archive(path));
}

/// The records describing `net` (architecture, input shape, scalar type, format).
template <class T, class B>
std::vector<Record> model_records(const nn::Sequential<T, B>& net) {
  std::vector<Record> out;
  const std::uint64_t version = model_format_version;
  out.push_back(make_record("model/format", {1}, &version, 1));
  out.push_back(make_text_record("model/scalar", detail::scalar_name<T>()));
  const Shape in = net.input_shape();
  if (in.size() == 0)
    throw value_error("save_model: the network has no input shape (set_input_shape)");
  std::vector<std::uint64_t> dims;
  for (int i = 0; i < in.rank(); ++i)
    dims.push_back(static_cast<std::uint64_t>(in[i]));
  out.push_back(make_record("model/input", {static_cast<std::int64_t>(dims.size())}, dims.data(),
                            dims.size()));
  std::string arch;
  for (const auto& l : nn::specs(net))
    arch += l.str() + "\n";
  out.push_back(make_text_record("model/arch", arch));
  return out;
}

/// The record naming the classes (label i is class_names[i]), one name per line. Throws
/// value_error for an empty list, an empty name or one holding a line break.
inline Record class_names_record(const std::vector<std::string>& class_names) {
  if (class_names.empty()) throw value_error("class_names_record: no class names");
  std::string text;
  for (std::size_t i = 0; i < class_names.size(); ++i) {
    const auto& n = class_names[i];
    if (n.empty() || n.find_first_of("\r\n") != std::string::npos)
      throw value_error("class_names_record: class " + std::to_string(i) + " ('" + n +
                        "') is empty or holds a line break");
    text += n + "\n";
  }
  return make_text_record("model/classes", text);
}

/// The class names a model file's records hold, label order; empty when it holds none
/// (every file saved without them). Throws io_error naming the file for a malformed record.
inline std::vector<std::string> class_names(const std::vector<Record>& records,
                                            const std::string& file) {
  const Record* r = detail::find_record(records, "model/classes");
  if (!r) return {};
  if (r->type != ArrayType::text) throw io_error(file + ": model/classes is not a text record");
  std::vector<std::string> out;
  std::istringstream lines(r->text());
  for (std::string line; std::getline(lines, line);)
    out.push_back(line);
  if (out.empty()) throw io_error(file + ": model/classes names no class");
  return out;
}
/// The class names saved in a model file (empty when it holds none).
inline std::vector<std::string> load_class_names(const std::filesystem::path& path) {
  return class_names(load_archive(path), path.string());
}

/// Saves a whole network, self-describing (atomically: see archive.hpp), with the names
/// of its classes when `classes` is not empty (without them the file is as before).
template <class T, class B>
void save_model(const std::filesystem::path& path, nn::Sequential<T, B>& net,
                const std::vector<std::string>& classes = {}) {
  auto records = model_records(net);
  if (!classes.empty()) records.push_back(class_names_record(classes));
  for (auto& r : parameter_records(net.state()))  // parameters, then buffers
    records.push_back(std::move(r));
  save_archive(path, records);
}

/// The architecture a model file describes: its layer specs and input shape. Throws
/// io_error (naming the file) for a weights-only file, another format version, or
/// malformed records.
struct ModelDescription {
  std::vector<nn::LayerSpec> layers;
  Shape input;
  std::string scalar;
};
inline ModelDescription describe_model(const std::vector<Record>& records,
                                       const std::string& file) {
  const Record* fmt = detail::find_record(records, "model/format");
  if (!fmt && detail::find_record(records, "settings") && detail::find_record(records, "state"))
    throw io_error(file +
                   ": a training checkpoint without a model description, not a model file; "
                   "resume training from it with Trainer::load_checkpoint, or pass "
                   "io::model_records(net) as save_checkpoint's extra records to make "
                   "checkpoints that load as models");
  if (!fmt)
    throw io_error(file +
                   ": a weights-only model file (format 1, no architecture); build the "
                   "network and load it with load_model(path, net.parameters())");
  if (fmt->type != ArrayType::u64 || fmt->count() != 1)
    throw io_error(file + ": malformed model/format record");
  const auto version = fmt->as<std::uint64_t>()[0];
  if (version != model_format_version)
    throw io_error(file + ": model format version " + std::to_string(version) +
                   "; this build reads version " + std::to_string(model_format_version));
  ModelDescription d;
  const Record* sc = detail::find_record(records, "model/scalar");
  const Record* in = detail::find_record(records, "model/input");
  const Record* arch = detail::find_record(records, "model/arch");
  if (!sc || !in || !arch || sc->type != ArrayType::text || arch->type != ArrayType::text ||
      in->type != ArrayType::u64)
    throw io_error(file + ": a model file without its scalar type, input shape or architecture");
  d.scalar = sc->text();
  const auto dims = in->as<std::uint64_t>();
  if (dims.empty() || dims.size() > 3)
    throw io_error(file + ": input shape of rank " + std::to_string(dims.size()) +
                   " (1 to 3 expected)");
  for (auto v : dims)
    if (v == 0 || v > (std::uint64_t{1} << 31))
      throw io_error(file + ": impossible input dimension " + std::to_string(v));
  const auto i64 = [&](std::size_t i) { return static_cast<index_t>(dims[i]); };
  d.input = dims.size() == 1   ? Shape{i64(0)}
            : dims.size() == 2 ? Shape{i64(0), i64(1)}
                               : Shape{i64(0), i64(1), i64(2)};
  std::istringstream lines(arch->text());
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    try {
      d.layers.push_back(nn::LayerSpec::parse(line));
    } catch (const value_error& e) {
      throw io_error(file + ": " + e.what());
    }
  }
  if (d.layers.empty()) throw io_error(file + ": the architecture lists no layer");
  return d;
}

/// Loads a self-describing model file as a ready network of scalar type T on backend B.
/// Throws io_error naming the file for a weights-only file, another format version, a
/// file of the other scalar type (saying which types), an unknown layer, layers whose
/// shapes do not fit the input shape, or weights that do not fit the architecture.
/// `Extra` (an nn::LayerKinds<...>) adds a program's own layer kinds, as nn::build does.
template <class T, class B, class Extra = nn::LayerKinds<>>
nn::Sequential<T, B> load_model(const std::filesystem::path& path) {
  const std::string file = path.string();
  const auto records = load_archive(path);
  const ModelDescription d = describe_model(records, file);
  if (d.scalar != detail::scalar_name<T>())
    throw io_error(file + ": holds " + d.scalar + " weights, but a " + detail::scalar_name<T>() +
                   " network was asked for (load it with the matching scalar type)");
  Rng rng(0);
  nn::Sequential<T, B> net;
  try {
    net = nn::build<T, B, Extra>(d.layers, d.input, rng);  // checks every layer's shapes
  } catch (const value_error& e) {
    throw io_error(file + ": " + e.what());
  } catch (const shape_error& e) {
    throw io_error(file + ": " + e.what());
  }
  load_parameters(records, net.state(), file);
  return net;
}

/// Loads a model file into an existing network, checking first that the file describes
/// the same architecture (io_error naming the first layer that differs). Weights-only
/// files (format 1) are loaded by shape alone.
template <class T, class B>
void load_model(const std::filesystem::path& path, nn::Sequential<T, B>& net) {
  const std::string file = path.string();
  const auto records = load_archive(path);
  if (detail::find_record(records, "model/format")) {
    const ModelDescription d = describe_model(records, file);
    const auto mine = nn::specs(net);
    for (std::size_t i = 0; i < std::max(mine.size(), d.layers.size()); ++i) {
      const std::string a = i < d.layers.size() ? d.layers[i].str() : "(none)";
      const std::string b = i < mine.size() ? mine[i].str() : "(none)";
      if (a != b)
        throw io_error(file + ": layer " + std::to_string(i) + " is '" + a + "' in the file but '" +
                       b + "' in the network");
    }
  }
  load_parameters(records, net.state(), file);
}

}  // namespace siam::io
