// Which engine runs conv2d and max_pool2d (autodiff/conv.hpp) on a backend B: the switch
// that lets an optional engine (oneDNN, backend/conv_dnnl.hpp) take over the float
// convolution on the host, the host engines (backend/conv_host.hpp), and the device engine
// a device backend specialises (DeviceConv, defined for CUDA in backend/cudnn.hpp). The ops
// call ConvDispatch<T, B> alone; an engine includes this header, never an autodiff one.
#pragma once

#include <concepts>
#include <string>

#include "siam/backend/conv_host.hpp"
#include "siam/detail/conv_geometry.hpp"
#include "siam/error.hpp"

namespace siam {

/// Which engine runs float convolutions on the CPU. `im2col` is always there; `onednn`
/// exists when <siam/backend/conv_dnnl.hpp> is included (CMake option SIAM_DNNL). im2col is
/// the default: it is the faster of the two on the LeNet shapes (docs/conv.md).
enum class ConvEngine { im2col, onednn };

namespace detail {

/// A float convolution engine: workspace need (in floats) and the two passes. Null
/// gradient pointers are skipped; acc_* says whether to add to (true) or overwrite them.
/// `block`: the channel block of its blocked layout (ConvGeometry::xblock / yblock), 0 if
/// it has none.
struct HostConvFns {
  const char* name;
  index_t (*block)();
  index_t (*workspace)(const ConvGeometry& g);
  void (*forward)(const ConvGeometry& g, const float* x, const float* w, const float* b, float* y,
                  float* work);
  void (*backward)(const ConvGeometry& g, const float* x, const float* w, const float* dy,
                   float* dx, bool acc_dx, float* dw, bool acc_dw, float* db, bool acc_db,
                   float* work);
};
inline const HostConvFns*& onednn_conv_fns() {
  static const HostConvFns* fns = nullptr;
  return fns;
}
inline ConvEngine& active_conv_engine() {
  static ConvEngine e = ConvEngine::im2col;
  return e;
}

}  // namespace detail

/// Selects the CPU float convolution engine. Throws value_error for `onednn` when this
/// program was built without <siam/backend/conv_dnnl.hpp>. Not thread-safe: choose before
/// training, not between a forward and its backward.
inline void set_conv_engine(ConvEngine e) {
  if (e == ConvEngine::onednn && !detail::onednn_conv_fns())
    throw value_error(
        "set_conv_engine: oneDNN is not built in (include <siam/backend/conv_dnnl.hpp> and "
        "configure with -DSIAM_DNNL=ON)");
  detail::active_conv_engine() = e;
}
inline ConvEngine conv_engine() {
  return detail::active_conv_engine();
}
inline const char* conv_engine_name() {
  return conv_engine() == ConvEngine::onednn ? "onednn" : "im2col";
}

namespace detail {

/// Device engines: the CUDA backend's is defined in <siam/backend/cudnn.hpp>.
template <class T, class B>
struct DeviceConv {
  static constexpr bool available = false;
};

/// A device backend without its convolution engine included. A runtime error rather than a
/// static_assert: networks built from layer specs (nn/registry.hpp) instantiate every layer
/// kind, including the ones a program never runs.
[[noreturn]] inline void no_device_conv(const char* backend) {
  throw value_error(std::string("conv2d/max_pool2d on the ") + backend +
                    " backend need <siam/backend/cudnn.hpp> (cuDNN) in this translation unit");
}

template <class T, class B>
struct ConvDispatch {
  static constexpr bool device = !B::is_host && DeviceConv<T, B>::available;
  static bool onednn() {
    if constexpr (std::same_as<T, float> && B::is_host)
      return active_conv_engine() == ConvEngine::onednn && onednn_conv_fns();
    else
      return false;
  }
  /// Whether this engine reads and writes channel-blocked tensors (ConvGeometry::xblock,
  /// yblock), and in blocks of how many channels.
  static bool blocked() { return onednn() && onednn_conv_fns()->block() > 0; }
  static index_t block() {
    if constexpr (std::same_as<T, float> && B::is_host)
      if (onednn()) return onednn_conv_fns()->block();
    return 0;
  }
  static index_t workspace(const ConvGeometry& g) {
    if constexpr (device) {
      return DeviceConv<T, B>::workspace(g);
    } else if constexpr (!B::is_host) {
      no_device_conv(B::name);
    } else {
      if (onednn()) return onednn_conv_fns()->workspace(g);
      return Im2Col<T, B>::workspace(g);
    }
  }
  static void forward(const ConvGeometry& g, const T* x, const T* w, const T* b, T* y, T* work) {
    if constexpr (device) {
      DeviceConv<T, B>::forward(g, x, w, b, y, work);
    } else if constexpr (!B::is_host) {
      no_device_conv(B::name);
    } else {
      if constexpr (std::same_as<T, float>)
        if (onednn()) return onednn_conv_fns()->forward(g, x, w, b, y, work);
      Im2Col<T, B>::forward(g, x, w, b, y, work);
    }
  }
  static void backward(const ConvGeometry& g, const T* x, const T* w, const T* dy, T* dx,
                       bool acc_dx, T* dw, bool acc_dw, T* db, bool acc_db, T* work) {
    if constexpr (device) {
      DeviceConv<T, B>::backward(g, x, w, dy, dx, acc_dx, dw, acc_dw, db, acc_db, work);
    } else if constexpr (!B::is_host) {
      no_device_conv(B::name);
    } else {
      if constexpr (std::same_as<T, float>)
        if (onednn())
          return onednn_conv_fns()->backward(g, x, w, dy, dx, acc_dx, dw, acc_dw, db, acc_db, work);
      Im2Col<T, B>::backward(g, x, w, dy, dx, acc_dx, dw, acc_dw, db, acc_db, work);
    }
  }
  static void pool_forward(const ConvGeometry& g, const T* x, T* y, T* idx) {
    if constexpr (B::is_host)
      HostPool<T>::forward(g, x, y, idx);
    else if constexpr (device)
      DeviceConv<T, B>::pool_forward(g, x, y, idx);
    else
      no_device_conv(B::name);
  }
  static void pool_backward(const ConvGeometry& g, const T* dy, const T* idx, T* dx, bool acc) {
    if constexpr (B::is_host)
      HostPool<T>::backward(g, dy, idx, dx, acc);
    else if constexpr (device)
      DeviceConv<T, B>::pool_backward(g, dy, idx, dx, acc);
    else
      no_device_conv(B::name);
  }
};

}  // namespace detail
}  // namespace siam
