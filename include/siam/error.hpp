// Typed exceptions thrown by siam. Every message names the operation and the
// offending shapes/values/files so that a user can act on it without a debugger.
#pragma once

#include <stdexcept>
#include <string>

namespace siam {

/// Base of every exception siam throws.
struct error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Operand shapes do not fit the operation (message names the op and both shapes).
struct shape_error : error {
  using error::error;
};

/// An argument value is out of its domain (negative size, margin <= 0, label not 0/1, ...).
struct value_error : error {
  using error::error;
};

/// A file could not be read or written, or its contents are malformed (names the file).
struct io_error : error {
  using error::error;
};

/// A NaN or Inf appeared in a loss or gradient (names the tensor and iteration).
struct numeric_error : error {
  using error::error;
};

/// A CUDA or cuBLAS call failed, or a GPU was demanded where none is present.
struct cuda_error : error {
  using error::error;
};

}  // namespace siam
