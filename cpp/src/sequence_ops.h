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
#include "rnncore/runtime.h"

namespace rnncore {
namespace internal {

// Chunk sizes for splitting work over threads. They depend on nothing but the
// problem, so a chunk's result never depends on the thread count.
constexpr Index kRowChunk = 256;   // rows of (T*B, .) matrices
constexpr Index kUnitChunk = 256;  // rows of weight-gradient matrices
constexpr Index kStepChunk = 128;  // output columns of a per-step product
// A per-step product is split only when it has at least this many
// multiply-adds: below it, waking threads costs more than it saves.
constexpr Index kStepParallelMacs = Index(1) << 16;

// A step's pointwise work over its batch rows is split when it touches at
// least this many values, in chunks of kStepRows rows.
constexpr Index kStepParallelValues = Index(1) << 15;
constexpr Index kStepRows = 8;

inline Index NumChunks(Index n, Index chunk) { return (n + chunk - 1) / chunk; }

// fn(begin, count) over [0, n) in fixed chunks, in parallel.
template <typename F>
void ForChunks(Index n, Index chunk, F&& fn) {
  ParallelFor(NumChunks(n, chunk), [&](Index c) {
    const Index begin = c * chunk;
    fn(begin, std::min(chunk, n - begin));
  });
}

// fn(b) for every row b < rows of a step whose rows are width values wide;
// rows are independent, so how they are split changes nothing.
template <typename F>
void ForRows(Index rows, Index width, F&& fn) {
  if (rows * width < kStepParallelValues) {
    for (Index b = 0; b < rows; ++b) fn(b);
    return;
  }
  ForChunks(rows, kStepRows, [&](Index b0, Index n) {
    for (Index b = b0; b < b0 + n; ++b) fn(b);
  });
}

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

// out (rows, N) = x (rows, D; stride ldx) w^T, w (N, D). Split over row chunks;
// a projection of fewer rows than one chunk (a streamed step, a short
// sequence at batch 1) is split over output columns instead, so that each
// thread reads only its own slice of w.
template <typename T>
void InputProjection(const T* x, Index rows, Index D, Index ldx, const T* w, Index N, T* out) {
  if (rows <= kRowChunk && rows * D * N >= kStepParallelMacs) {
    ForChunks(N, kStepChunk, [&](Index c0, Index n) {
      View(out + c0, rows, n, N).noalias() =
          CView(x, rows, D, ldx) * CView(w + c0 * D, n, D).transpose();
    });
    return;
  }
  ForChunks(rows, kRowChunk, [&](Index r0, Index n) {
    View(out + r0 * N, n, N).noalias() =
        CView(x + r0 * ldx, n, D, ldx) * CView(w, N, D).transpose();
  });
}

// The recurrent product of one step: out (B, N; stride ldo) = h (B, P) w^T,
// w (N, P). Large steps are split over output columns.
template <typename T>
void StepProduct(const T* h, Index B, Index P, const T* w, Index N, T* out, Index ldo) {
  if (B * P * N < kStepParallelMacs) {
    View(out, B, N, ldo).noalias() = CView(h, B, P) * CView(w, N, P).transpose();
    return;
  }
  ForChunks(N, kStepChunk, [&](Index c0, Index n) {
    View(out + c0, B, n, ldo).noalias() = CView(h, B, P) * CView(w + c0 * P, n, P).transpose();
  });
}

// The backward counterpart: out (B, P) = d (B, N; stride ldd) w, w (N, P).
// Split over output columns (of P) when large; the reduction over N is never
// split, so it keeps one order.
template <typename T>
void StepProductT(const T* d, Index B, Index N, Index ldd, const T* w, Index P, T* out) {
  if (B * P * N < kStepParallelMacs) {
    View(out, B, P).noalias() = CView(d, B, N, ldd) * CView(w, N, P);
    return;
  }
  ForChunks(P, kStepChunk, [&](Index c0, Index n) {
    View(out + c0, B, n, P).noalias() = CView(d, B, N, ldd) * CView(w + c0, N, n, P);
  });
}

// dw (N, K) += da^T (N x rows) x (rows, K), da with row stride ldda, x with
// row stride ldx. Split over the rows of dw.
template <typename T>
void WeightGradient(const T* da, Index rows, Index N, Index ldda, const T* x, Index K, Index ldx,
                    T* dw) {
  ForChunks(N, kUnitChunk, [&](Index n0, Index n) {
    View(dw + n0 * K, n, K).noalias() +=
        CView(da + n0, rows, n, ldda).transpose() * CView(x, rows, K, ldx);
  });
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

// After the backward sweep, with gradients in position order (T*B rows):
//   dbx, dbh  gradients of the input and recurrent terms as they enter the
//             gates (after any normalization): their column sums are the
//             bias gradients (db_ih, db_hh);
//   dax       gradient of x W_ih^T (dbx after the input norm's backward).
// Adds dW_ih += dax^T x and the bias gradients; dx (=|+=) dax W_ih.
// The recurrent weight gradient is cell-specific and done by the caller.
template <typename T>
void InputSideGradients(Index rows, Index D, Index N, const T* x, Index ldx, const T* dax,
                        const T* dbx, const T* dbh, const CellWeights<T>& w, const CellGrads<T>& g,
                        T* dx, Index lddx, bool accumulate_dx) {
  WeightGradient(dax, rows, N, N, x, D, ldx, g.w_ih);
  VectorMap<T>(g.b_ih, N) += CView(dbx, rows, N).colwise().sum();
  VectorMap<T>(g.b_hh, N) += CView(dbh, rows, N).colwise().sum();
  ForChunks(rows, kRowChunk, [&](Index r0, Index n) {
    auto DX = View(dx + r0 * lddx, n, D, lddx);
    if (accumulate_dx)
      DX.noalias() += CView(dax + r0 * N, n, N) * CView(w.w_ih, N, D);
    else
      DX.noalias() = CView(dax + r0 * N, n, N) * CView(w.w_ih, N, D);
  });
}

}  // namespace internal
}  // namespace rnncore

#endif  // RNNCORE_SEQUENCE_OPS_H_
