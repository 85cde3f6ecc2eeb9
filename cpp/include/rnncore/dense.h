// A dense (fully connected) layer, y = x W^T + b, forward and backward, on
// the core's kernels and thread pool.
//
// rnncore.Linear computes with these instead of NumPy's BLAS: a training loop
// that alternates a recurrent layer and a dense head then runs on one thread
// pool. (A second pool, such as OpenBLAS's, keeps polling for work between
// its calls and competes for the same cores, which slows such a training
// step down; benchmarks/README.md, "Measurements behind design choices in
// the core", has the numbers.) Results are bitwise identical for any thread
// count.
//
// Shapes: R rows (all leading axes), D inputs, N outputs. Row-major:
//   x (R, D), W (N, D) (PyTorch's layout), b (N), y (R, N).
#ifndef RNNCORE_DENSE_H_
#define RNNCORE_DENSE_H_

#include "rnncore/common.h"

namespace rnncore {
namespace dense {

// y = x W^T + b. b may be null (no bias). y must not alias x.
template <typename T>
void Forward(Index R, Index D, Index N, const T* x, const T* w, const T* b, T* y);

// Given gy = dL/dy (R, N): ADDS dW += gy^T x into dw (N, D) and the column
// sums of gy into db (N) unless db is null, and writes dx = gy W (R, D)
// unless dx is null.
template <typename T>
void Backward(Index R, Index D, Index N, const T* x, const T* gy, const T* w, T* dx, T* dw, T* db);

}  // namespace dense
}  // namespace rnncore

#endif  // RNNCORE_DENSE_H_
