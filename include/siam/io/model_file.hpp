// Saving and loading a network's parameters (and, for checkpoints, the optimiser's
// state) through the archive format of archive.hpp.
#pragma once

#include <filesystem>
#include <vector>

#include "siam/autodiff/tape.hpp"
#include "siam/io/archive.hpp"

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
/// Loads a model file into existing parameters (shapes must match).
template <class T, class B>
void load_model(const std::filesystem::path& path, const std::vector<Parameter<T, B>*>& params) {
  load_parameters(load_archive(path), params, path.string());
}

}  // namespace siam::io
