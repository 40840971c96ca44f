// A network as PyTorch's state_dict: named tensors in PyTorch's naming and layout, so that
// `model.load_state_dict(..., strict=True)` works on a torch.nn.Module of the same structure
// (its `layers` attribute the matching nn.Sequential), and back. The format that carries
// them (safetensors) is io/safetensors_format.hpp; io/safetensors.hpp joins the two.
//
// Names: each layer names its parameters and buffers as torch.nn does
// (Layer::tensor_names, Layer::buffer_names: `weight`, `bias`, `running_mean`,
// `running_var`, `num_batches_tracked`); layer i of a Sequential writes them as
// `layers.<i>.<name>` (indices count every layer, parameter-free ones too, as
// torch.nn.Sequential does). A Residual block is a module with two nn.Sequential children,
// `body` and `projection` (empty for the identity shortcut): `layers.3.body.0.weight`,
// `layers.9.projection.1.running_var`. Parameters come first, then buffers, as
// Sequential::state() orders them.
//
// Layout: a Dense layer's weight is written transposed, as PyTorch's Linear stores it
// ([out x in]; siam keeps W as [in x out] for y = x W + b); Conv2D's weight [O x C x K x K]
// is PyTorch's layout already. Element types: F32 for float networks, F64 for double ones;
// `num_batches_tracked` is an I64 scalar (shape []), as PyTorch keeps it (siam holds it as
// a one-element tensor of the network's type). Files written before Conv2D's tensors were
// renamed (`layers.<i>.W`, `layers.<i>.b`) still load.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "siam/error.hpp"
#include "siam/io/archive.hpp"
#include "siam/nn/layers.hpp"

namespace siam::io {

namespace detail {

/// One tensor of a network's state_dict: PyTorch's name, the shape as written and how it
/// is stored.
template <class T, class B>
struct StateEntry {
  enum class Form { plain, transposed, count };  // count: an I64 scalar (num_batches_tracked)
  std::string name;
  Parameter<T, B>* param;
  std::vector<std::int64_t> dims;  // as written (transposed ones swapped, counts [])
  Form form = Form::plain;
};

inline bool is_batch_count(const std::string& name) {
  const std::string tail = "num_batches_tracked";
  return name == tail || (name.size() > tail.size() &&
                          name.compare(name.size() - tail.size(), tail.size(), tail) == 0 &&
                          name[name.size() - tail.size() - 1] == '.');
}

template <class T, class B>
std::vector<StateEntry<T, B>> state_entries(nn::Sequential<T, B>& net) {
  using E = StateEntry<T, B>;
  std::vector<E> out;
  const auto add = [&](const std::vector<Parameter<T, B>*>& params,
                       const std::vector<nn::TensorName>& names, const char* what) {
    if (names.size() != params.size())
      throw value_error("state_dict: the network " + net.describe() + " names " +
                        std::to_string(names.size()) + " tensors for its " +
                        std::to_string(params.size()) + " " + what);
    for (std::size_t k = 0; k < params.size(); ++k) {
      const Shape s = params[k]->value.shape();
      std::vector<std::int64_t> dims;
      for (int i = 0; i < s.rank(); ++i)
        dims.push_back(s[i]);
      typename E::Form form = E::Form::plain;
      if (names[k].transposed) {
        if (dims.size() != 2)
          throw value_error("state_dict: '" + names[k].name + "' of shape " + s.str() +
                            " is marked transposed but is not 2-D");
        std::swap(dims[0], dims[1]);
        form = E::Form::transposed;
      } else if (is_batch_count(names[k].name) && s.size() == 1) {
        dims.clear();
        form = E::Form::count;
      }
      out.push_back({names[k].name, params[k], dims, form});
    }
  };
  add(net.parameters(), net.tensor_names(), "parameters");
  add(net.buffers(), net.buffer_names(), "buffers");
  return out;
}

// [r x c] row-major -> [c x r] row-major.
template <class T>
std::vector<T> transposed(const std::vector<T>& v, std::int64_t r, std::int64_t c) {
  std::vector<T> t(v.size());
  for (std::int64_t i = 0; i < r; ++i)
    for (std::int64_t j = 0; j < c; ++j)
      t[static_cast<std::size_t>(j * r + i)] = v[static_cast<std::size_t>(i * c + j)];
  return t;
}

/// The name siam wrote a tensor under before Conv2D's were renamed ("layers.3.weight" ->
/// "layers.3.W", "bias" -> "b"); empty when there was none.
inline std::string legacy_tensor_name(const std::string& name) {
  const auto dot = name.rfind('.');
  if (dot == std::string::npos) return {};
  const std::string last = name.substr(dot + 1);
  if (last == "weight") return name.substr(0, dot + 1) + "W";
  if (last == "bias") return name.substr(0, dot + 1) + "b";
  return {};
}

/// Copies n elements of little-endian `src` to host values.
template <class V>
void from_little_endian_bytes(V* dst, const unsigned char* src, std::size_t n) {
  std::memcpy(dst, src, n * sizeof(V));
  if constexpr (std::endian::native == std::endian::big) {
    auto* b = reinterpret_cast<unsigned char*>(dst);
    for (std::size_t i = 0; i < n; ++i)
      std::reverse(b + i * sizeof(V), b + (i + 1) * sizeof(V));
  }
}

inline std::string dims_text(const std::vector<std::int64_t>& d) {
  std::string s = "[";
  for (std::size_t i = 0; i < d.size(); ++i)
    s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

inline const char* dtype_text(ArrayType t) {
  switch (t) {
    case ArrayType::f32:
      return "F32";
    case ArrayType::f64:
      return "F64";
    case ArrayType::i64:
      return "I64";
    case ArrayType::u64:
      return "U64";
    case ArrayType::text:
      return "U8";
  }
  return "?";
}

/// Swaps each element's bytes on a big-endian host (records hold little-endian payloads).
inline void to_little_endian(Record& r) {
  if constexpr (std::endian::native == std::endian::big)
    for (std::size_t k = 0; k < r.bytes.size(); k += r.element_size())
      std::reverse(r.bytes.begin() + static_cast<std::ptrdiff_t>(k),
                   r.bytes.begin() + static_cast<std::ptrdiff_t>(k + r.element_size()));
}

}  // namespace detail

/// The network's parameters and buffers as PyTorch names and lays them out (see the file
/// comment); payloads little-endian. Throws value_error when a layer names its tensors
/// inconsistently.
template <class T, class B>
std::vector<Record> state_dict(nn::Sequential<T, B>& net) {
  using E = detail::StateEntry<T, B>;
  std::vector<Record> out;
  for (const auto& e : detail::state_entries(net)) {
    auto v = e.param->value.to_vector();
    if (e.form == E::Form::count) {
      const auto n = static_cast<std::int64_t>(std::llround(static_cast<double>(v[0])));
      Record r = make_record(e.name, e.dims, &n, 1);
      r.type = ArrayType::i64;
      out.push_back(std::move(r));
    } else {
      if (e.form == E::Form::transposed) v = detail::transposed(v, e.dims[1], e.dims[0]);
      out.push_back(make_record(e.name, e.dims, v.data(), v.size()));
    }
    detail::to_little_endian(out.back());
  }
  return out;
}

/// Copies named tensors (PyTorch's names and layout, as state_dict writes them) into the
/// network. `tensors` must hold exactly the network's parameters and buffers with their
/// shapes and dtypes (F32 / F64 as the network's type, I64 for num_batches_tracked; a
/// count must be non-negative); nothing is changed unless every tensor checks out. `file`
/// labels errors. Throws io_error naming the tensor and the values.
template <class T, class B>
void load_state_dict(const std::vector<Record>& tensors, nn::Sequential<T, B>& net,
                     const std::string& file) {
  using E = detail::StateEntry<T, B>;
  const auto entries = detail::state_entries(net);
  const ArrayType type = std::is_same_v<T, float> ? ArrayType::f32 : ArrayType::f64;
  std::map<std::string, const Record*> have;
  for (const auto& r : tensors)
    have.emplace(r.name, &r);
  // An older file of siam's own: Conv2D tensors under W / b. Read under today's names when
  // the file holds none of today's names for that tensor.
  // (Dense always wrote weight / bias: its transposed weight has no older name.)
  std::map<std::string, std::string> renamed;  // old name -> today's
  for (const auto& e : entries) {
    const std::string old = e.form == E::Form::transposed ? "" : detail::legacy_tensor_name(e.name);
    if (!old.empty() && !have.count(e.name) && have.count(old)) renamed.emplace(old, e.name);
  }
  for (const auto& [old, now] : renamed) {
    have.emplace(now, have.at(old));
    have.erase(old);
  }
  // (Not a structured binding: clang 14 cannot capture one in a lambda.)
  for (const auto& entry : have) {
    const std::string& n = entry.first;
    if (std::none_of(entries.begin(), entries.end(), [&](const E& w) { return w.name == n; }))
      throw io_error(file + ": holds the tensor '" + entry.second->name + "', which the network " +
                     net.describe() + " does not have");
  }
  for (const auto& e : entries) {
    const auto it = have.find(e.name);
    if (it == have.end())
      throw io_error(file + ": lacks the tensor '" + e.name + "' of the network " + net.describe());
    const Record& r = *it->second;
    if (r.dims != e.dims)
      throw io_error(file + ": tensor '" + r.name + "' has shape " + detail::dims_text(r.dims) +
                     ", the network expects " + detail::dims_text(e.dims));
    const ArrayType want = e.form == E::Form::count ? ArrayType::i64 : type;
    if (r.type != want)
      throw io_error(file + ": tensor '" + r.name + "' has dtype " + detail::dtype_text(r.type) +
                     ", the network needs " + detail::dtype_text(want));
    if (e.form == E::Form::count) {
      std::int64_t n = 0;
      detail::from_little_endian_bytes(&n, r.bytes.data(), 1);
      if (n < 0)
        throw io_error(file + ": tensor '" + r.name + "' counts " + std::to_string(n) +
                       " batches (must be non-negative)");
    }
  }
  // Every check passed: copy.
  for (const auto& e : entries) {
    const Record& r = *have.at(e.name);
    std::vector<T> v(static_cast<std::size_t>(e.param->value.size()));
    if (e.form == E::Form::count) {
      std::int64_t n = 0;
      detail::from_little_endian_bytes(&n, r.bytes.data(), 1);
      v.assign(1, static_cast<T>(n));
    } else {
      detail::from_little_endian_bytes(v.data(), r.bytes.data(), v.size());
      if (e.form == E::Form::transposed) v = detail::transposed(v, e.dims[0], e.dims[1]);
    }
    B::from_host(e.param->value.data(), v.data(), e.param->value.size());
  }
}

}  // namespace siam::io
