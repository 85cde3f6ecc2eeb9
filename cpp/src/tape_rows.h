// Copies between the step-ordered state of a cell's time loop and the
// position-ordered (T*B, width) tapes (rnncore/common.h: positions and steps).
#ifndef RNNCORE_TAPE_ROWS_H_
#define RNNCORE_TAPE_ROWS_H_

#include <algorithm>
#include <cstring>

#include "rnncore/allocator.h"
#include "rnncore/common.h"

namespace rnncore {
namespace internal {

template <typename T>
inline void CopyRow(const T* src, T* dst, Index n) {
  std::memcpy(dst, src, sizeof(T) * static_cast<size_t>(n));
}

// Step-norm diagnostics: adds |g|^2 of the gradient row g (n) of position
// row r to dh_sq[t], t = r / B, when dh_sq is not null.
template <typename T>
inline void AddSquaredNorm(T* dh_sq, Index r, Index B, const T* g, Index n) {
  if (dh_sq) dh_sq[r / B] += ConstVectorMap<T>(g, n).squaredNorm();
}

// The step-state h (B, n): initial value or zeros.
template <typename T>
Buffer<T> InitialState(const T* init, Index batch, Index n) {
  Buffer<T> s(static_cast<size_t>(batch * n), T(0));
  if (init) std::copy(init, init + batch * n, s.begin());
  return s;
}

// Sizes v as a position-ordered (T*B, width) matrix whose active rows the
// caller writes: only the padding rows (positions past a sequence's length),
// which later passes read as zeros, are cleared.
template <typename T>
void ResizePositions(Buffer<T>& v, const StepIndex& seq, Index width) {
  const Index B = seq.batch();
  v.resize(static_cast<size_t>(seq.steps() * B * width));
  for (Index b = 0; b < B; ++b)
    for (Index t = seq.length(b); t < seq.steps(); ++t)
      std::fill_n(v.data() + (t * B + b) * width, width, T(0));
}

}  // namespace internal
}  // namespace rnncore

#endif  // RNNCORE_TAPE_ROWS_H_
