// Figure writers of the mnist_siamese example, drawn with PLplot (C++ binding, pngcairo driver).
//
// Every function writes one PNG atomically: the figure is rendered into "<png>.tmp-<pid>" in the
// same directory and renamed onto <png> only once it is complete, so a reader never sees a
// half-written figure. On failure the temporary file is removed and an exception is thrown:
//   siam::value_error  the arguments are inconsistent (null pixels, size mismatch, bad label, ...);
//   siam::io_error     the file cannot be written (directory missing or unwritable, PLplot or its
//                      pngcairo driver failed); the message names the file.
// PLplot's own fatal-error path (which would call exit()) is redirected into an exception, and the
// target directory is probed for writability before PLplot is started.
//
// Images are float pixels in [0,1] (values outside are clamped, NaN shows as 0), row-major, row 0
// at the top. They are drawn as gray images, white digit on black background as in MNIST, or
// in colour when they have 3 channels.
//
// PLplot keeps global state, so the writers serialise on an internal mutex: calling them from
// several threads is safe but not concurrent.
//
// Build: compile plots.cpp with `pkg-config --cflags plplot-c++` and link with
// `pkg-config --libs plplot-c++ plplot` (the C library is needed too because plots.cpp sets
// PLplot's exit/abort handlers through the C API); also needs -I<repo>/include for siam/error.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace plots {

/// A gray image: rows*cols floats in [0,1], row-major, row 0 at the top; or, with channels 3,
/// a colour one: three such planes (red, green, blue) one after the other. Not owned.
struct Image {
  const float* pixels = nullptr;
  int rows = 28, cols = 28;
  int channels = 1;
};

/// Grid of images, grid_cols per row (rows as needed), with a title above.
/// samples.png: 9 images with grid_cols = 3. Throws value_error if images is empty.
void write_tile(const std::filesystem::path& png, const std::vector<Image>& images, int grid_cols,
                const std::string& title);

/// Pairs of images side by side (first[i] left, second[i] right), up to 5 pairs per row, each
/// pair on a light card with captions[i] below it. The captions "similar" and "dissimilar" are
/// coloured green and red. captions may be empty (no captions) or have one entry per pair.
/// Throws value_error if there are no pairs or the sizes differ.
void write_pairs(const std::filesystem::path& png, const std::vector<Image>& first,
                 const std::vector<Image>& second, const std::vector<std::string>& captions);

/// "Training progress": raw loss per iteration (thin, light blue; x = 1..loss.size()) with a
/// centred moving average over smooth_window iterations (thick, dark blue) on top; axes
/// "Iteration" and "Loss"; legend. Non-finite values are skipped (the line is broken there).
/// An empty loss vector gives a valid figure with empty axes and the note "no loss values yet".
void write_loss(const std::filesystem::path& png, const std::vector<float>& loss,
                std::size_t smooth_window);

/// Scatter plot of n 2-D points (xy = x0,y0,x1,y1,...), coloured by labels[i] (one of 10
/// distinct colours), equal scale on both axes, legend with class_names on the right.
/// class_names may be empty (names "0".."9") and has at most 10 entries; every label must be
/// < max(class_names.size(), 10 if class_names is empty). Non-finite points are skipped.
/// n == 0 gives a valid figure with empty axes and the note "no points".
void write_embedding(const std::filesystem::path& png, const float* xy, const std::int64_t* labels,
                     std::size_t n, const std::string& title,
                     const std::vector<std::string>& class_names);

/// Nearest-neighbour retrieval: the query enlarged on the left, the neighbours (in the given
/// order, nearest first) in a grid on the right (3x3 for 9), each captioned "#k  d = <distance>".
/// If neighbour_labels is given (one per neighbour) the captions also show the label, and if
/// query_label >= 0 as well, captions of neighbours with the query's label are green, others red.
/// Throws value_error if neighbours is empty or the sizes differ.
void write_retrieval(const std::filesystem::path& png, Image query,
                     const std::vector<Image>& neighbours, const std::vector<float>& distances,
                     const std::string& title, const std::vector<int>& neighbour_labels = {},
                     int query_label = -1, const std::vector<std::string>& label_names = {});

}  // namespace plots
