// Building blocks the cells share around their time loops: the hoisted input
// projection before the loop, the single-GEMM parameter gradients after it,
// and the copies between step-ordered state and position-ordered tapes.
#ifndef RNNCORE_SEQUENCE_OPS_H_
#define RNNCORE_SEQUENCE_OPS_H_

#include <algorithm>
#include <cstring>
#include <vector>

#include "rnncore/cell.h"
#include "rnncore/common.h"

namespace rnncore {
namespace internal {

template <typename T>
inline void CopyRow(const T* src, T* dst, Index n) {
  std::memcpy(dst, src, sizeof(T) * static_cast<size_t>(n));
}

// out (rows, N) = x (rows, D; stride ldx) w^T, w (N, D).
template <typename T>
void InputProjection(const T* x, Index rows, Index D, Index ldx, const T* w, Index N, T* out) {
  View(out, rows, N).noalias() = CView(x, rows, D, ldx) * CView(w, N, D).transpose();
}

// The step-state h (B, n): initial value or zeros.
template <typename T>
Buffer<T> InitialState(const T* init, Index batch, Index n) {
  Buffer<T> s(static_cast<size_t>(batch * n), T(0));
  if (init) std::copy(init, init + batch * n, s.begin());
  return s;
}

template <typename T>
void ResizeZero(Buffer<T>& v, Index n) {
  v.assign(static_cast<size_t>(n), T(0));
}

// After the backward sweep, for gate-gradient matrices in position order:
//   dW_ih += dax^T x,  db_ih += colsum(dax),  db_hh += colsum(dah),
//   dx (=|+=) dax W_ih.
// The recurrent weight gradient is cell-specific and done by the caller.
template <typename T>
void InputSideGradients(Index rows, Index D, Index N, const T* x, Index ldx, const T* dax,
                        const T* dah, const CellWeights<T>& w, const CellGrads<T>& g, T* dx,
                        Index lddx, bool accumulate_dx) {
  auto DAX = CView(dax, rows, N);
  View(g.w_ih, N, D).noalias() += DAX.transpose() * CView(x, rows, D, ldx);
  VectorMap<T>(g.b_ih, N) += DAX.colwise().sum();
  VectorMap<T>(g.b_hh, N) += CView(dah, rows, N).colwise().sum();
  auto DX = View(dx, rows, D, lddx);
  if (accumulate_dx)
    DX.noalias() += DAX * CView(w.w_ih, N, D);
  else
    DX.noalias() = DAX * CView(w.w_ih, N, D);
}

}  // namespace internal
}  // namespace rnncore

#endif  // RNNCORE_SEQUENCE_OPS_H_
