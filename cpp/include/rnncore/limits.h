// The size limits of a model, in one place: the core checks them
// (ModelConfig::Validate, ParameterLayout) and the extension module exports
// them (rnncore._core.MAX_DIM, MAX_LAYERS, MAX_THREADS, MAX_PARAMETER_BYTES) for the Python layer's
// checks, which come first with friendlier messages.
#ifndef RNNCORE_LIMITS_H_
#define RNNCORE_LIMITS_H_

#include "rnncore/common.h"

namespace rnncore {

// The largest input_size, hidden_size, num_layers (and other dimensions).
constexpr Index kMaxDim = (Index(1) << 31) - 1;

// The most layers a stack may have: deeper recurrent stacks do not train, and
// a count beyond this is a mistake (it would otherwise run for minutes).
constexpr Index kMaxLayers = 1024;

// The most threads the pool may be asked for.
constexpr int kMaxThreads = 4096;

// The most bytes a model's parameters may take.
constexpr Index kMaxParameterBytes = Index(1) << 40;

// The most parameters (values) the core lays out: the byte limit at one byte
// a value, so that it only guards the layout's arithmetic against overflow
// and never refuses a model within kMaxParameterBytes.
constexpr Index kMaxParameters = kMaxParameterBytes;

}  // namespace rnncore

#endif  // RNNCORE_LIMITS_H_
