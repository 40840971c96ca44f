// How a loss combines its per-item terms.
#pragma once

namespace siam {

/// sum: the terms' total; mean: their average (what PyTorch's losses default to).
enum class Reduction { sum, mean };

}  // namespace siam
