// The library's version. CMake checks these numbers against project(VERSION) at configure
// time (a mismatch stops the configure), so an installed copy and the source tree agree.
#pragma once

#define SIAM_VERSION_MAJOR 0
#define SIAM_VERSION_MINOR 1
#define SIAM_VERSION_PATCH 0

namespace siam {

/// "MAJOR.MINOR.PATCH", e.g. the ONNX producer_version of an exported model.
inline constexpr const char* version_string = "0.1.0";
inline constexpr int version_major = SIAM_VERSION_MAJOR;
inline constexpr int version_minor = SIAM_VERSION_MINOR;
inline constexpr int version_patch = SIAM_VERSION_PATCH;

}  // namespace siam
