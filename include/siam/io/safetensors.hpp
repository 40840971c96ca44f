// A network's parameters and buffers as a safetensors file, which PyTorch loads with
// `model.load_state_dict(..., strict=True)` into a torch.nn.Module of the same structure,
// and siam loads back (PyTorch's files too). The format is io/safetensors_format.hpp; the
// names and layouts (PyTorch's state_dict) are io/state_dict.hpp.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "siam/io/file.hpp"
#include "siam/io/safetensors_format.hpp"
#include "siam/io/state_dict.hpp"
#include "siam/nn/layers.hpp"

namespace siam::io {

/// Writes the network's state_dict (atomically) as a safetensors file; `metadata` goes to
/// "__metadata__" together with "format": "pt" and the architecture (net.describe()).
template <class T, class B>
void save_safetensors(const std::filesystem::path& path, nn::Sequential<T, B>& net,
                      std::map<std::string, std::string> metadata = {}) {
  metadata.emplace("format", "pt");
  metadata.emplace("architecture", net.describe());
  write_file_atomic(path, encode_safetensors(state_dict(net), metadata));
}

/// Loads a safetensors file into an existing network. The file must hold exactly the
/// network's parameters and buffers (names, shapes and dtypes as save_safetensors writes
/// them, which is how PyTorch saves the matching module's state_dict); nothing is changed
/// unless every tensor checks out. Throws io_error naming the file and the values.
template <class T, class B>
void load_safetensors(const std::filesystem::path& path, nn::Sequential<T, B>& net) {
  const std::string file = path.string();
  const auto bytes = read_file(path, "load_safetensors");
  load_state_dict(decode_safetensors(bytes.data(), bytes.size(), file).tensors, net, file);
}

}  // namespace siam::io
