// siam: a small, header-only C++20 library for metric learning (Siamese networks).
// This umbrella header brings in the CPU backend and everything built on it; the
// CUDA backend lives in <siam/backend/cuda.hpp> and needs nvcc.
#pragma once

#include "siam/autodiff/conv.hpp"
#include "siam/autodiff/ops.hpp"
#include "siam/autodiff/tape.hpp"
#include "siam/backend/cpu.hpp"
#include "siam/error.hpp"
#include "siam/eval.hpp"
#include "siam/expr.hpp"
#include "siam/loss/contrastive.hpp"
#include "siam/nn/conv.hpp"
#include "siam/nn/init.hpp"
#include "siam/nn/layers.hpp"
#include "siam/optim/adam.hpp"
#include "siam/random.hpp"
#include "siam/shape.hpp"
#include "siam/tensor.hpp"
