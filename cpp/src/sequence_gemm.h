// The products over a whole sequence around a cell's time loop: the hoisted
// input projection before it, and the single-GEMM parameter and input
// gradients after it.
#ifndef RNNCORE_SEQUENCE_GEMM_H_
#define RNNCORE_SEQUENCE_GEMM_H_

#include <algorithm>
#include <optional>

#include "parallel_chunks.h"
#include "rnncore/allocator.h"
#include "rnncore/cell.h"
#include "rnncore/common.h"
#include "step_products.h"

namespace rnncore {
namespace internal {

// out (rows, N) = x (rows, D; stride ldx) w^T, w (N, D), through the packed
// w. Split over row chunks; a projection of fewer rows than one chunk (a
// streamed step, a short sequence at batch 1) is split over output columns
// instead, so that each thread reads only its own slice of w. w16: a float16
// copy of w for the dot-product paths (StepMatrix), or null.
template <typename T>
void InputProjection(const T* x, Index rows, Index D, Index ldx, const T* w, Index N, T* out,
                     const kernels::Half* w16 = nullptr) {
  if (rows <= kRowChunk) {
    StepMatrix<T>(w, D, N, 1, D, rows, w16, /*once=*/true).Product(x, ldx, out, N);
    return;
  }
  const PackedMatrix<T> wt(w, D, N, 1, D);
  ForChunks(rows, kRowChunk,
            [&](Index r0, Index n) { wt.Multiply(x + r0 * ldx, n, ldx, out + r0 * N, N); });
}

// A cell's input projection ax (rows, N) = x w^T (InputProjection). For a
// single step of at most kRowChunk rows (a streamed call) with m given, also
// the step's recurrent product ah = u m, in the same parallel region
// (FirstStepProducts; m has N columns). Returns whether it computed ah.
template <typename T>
bool ProjectInput(const T* x, Index steps, Index B, Index D, Index ldx, const T* w, Index N, T* ax,
                  StepMatrix<T>* m, const T* u, Index ldu, T* ah, Index ldah,
                  const kernels::Half* w16 = nullptr) {
  if (m && steps == 1 && B <= kRowChunk) {
    FirstStepProducts(x, B, D, ldx, w, ax, *m, u, ldu, ah, ldah, w16);
    return true;
  }
  InputProjection(x, steps * B, D, ldx, w, N, ax, w16);
  return false;
}

// dw (N, K) += da^T (N x rows) x (rows, K), da with row stride ldda, x with
// row stride ldx. x is packed once; the reduction over rows runs in blocks of
// kReduceChunk (each block's panels stay in cache while all of a chunk of dw's
// rows use them), added into dw in order. Split over fixed chunks of dw's
// rows.
//
// With x2 (not null), also dw2 (N, K2) += da^T x2 (row stride ldx2), in the
// same pass: each block of da^T is packed once for both (the LSTM's and the
// RNN's W_ih and W_hh have the same da when no norm sits between them).
// dw and dw2 get exactly the values of two separate calls. With sums (not
// null): also sums (N) += the column sums of da (AddColumnSums' values),
// read while each block of da is in cache.
template <typename T>
void WeightGradient(const T* da, Index rows, Index N, Index ldda, const T* x, Index K, Index ldx,
                    T* dw, const T* x2 = nullptr, Index K2 = 0, Index ldx2 = 0, T* dw2 = nullptr,
                    T* sums = nullptr) {
  auto add_sums = [&](Index r0, Index nk, Index n0, Index n) {  // rows in order, as AddColumnSums
    if (sums)
      for (Index r = r0; r < r0 + nk; ++r)
        VectorMap<T>(sums + n0, n) += ConstVectorMap<T>(da + r * ldda + n0, n);
  };
  if (rows < 2) {
    View(dw, N, K).noalias() += CView(da, rows, N, ldda).transpose() * CView(x, rows, K, ldx);
    if (x2)
      View(dw2, N, K2).noalias() +=
          CView(da, rows, N, ldda).transpose() * CView(x2, rows, K2, ldx2);
    add_sums(0, rows, 0, N);
    return;
  }
  const PackedMatrix<T> xp(x, rows, K, ldx, 1);
  std::optional<PackedMatrix<T>> xp2;
  if (x2) xp2.emplace(x2, rows, K2, ldx2, 1);
  ForChunks(N, UnitChunk(N), [&](Index n0, Index n) {
    thread_local Buffer<T> packed;  // a block of da^T, kept between calls
    packed.resize(static_cast<size_t>(n * std::min(kReduceChunk, rows)));
    for (Index r0 = 0; r0 < rows; r0 += kReduceChunk) {
      const Index nk = std::min(kReduceChunk, rows - r0);
      kernels::PackRows(da + r0 * ldda + n0, n, nk, Index(1), ldda, packed.data());
      add_sums(r0, nk, n0, n);  // the block is in cache now
      xp.MultiplyAddPacked(packed.data(), n, r0, nk, dw + n0 * K, K);
      if (xp2) xp2->MultiplyAddPacked(packed.data(), n, r0, nk, dw2 + n0 * K2, K2);
    }
  });
}

// out (N) += the column sums of a (rows, N), each column summed over rows in
// order. Split over fixed chunks of columns.
template <typename T>
void AddColumnSums(const T* a, Index rows, Index N, T* out) {
  ForColumns(rows, N, [&](Index c0, Index n) {
    auto acc = VectorMap<T>(out + c0, n);
    for (Index r = 0; r < rows; ++r) acc += ConstVectorMap<T>(a + r * N + c0, n);
  });
}

// dx (rows, D; stride lddx) = da (rows, N) w, w (N, D): the gradient of the
// input of a projection x w^T. Split over row chunks.
template <typename T>
void ProjectBack(const T* da, Index rows, Index N, const T* w, Index D, T* dx, Index lddx) {
  const PackedMatrix<T> wp(w, N, D, D, 1);  // w itself: (N, D)
  ForChunks(rows, kRowChunk,
            [&](Index r0, Index n) { wp.Multiply(da + r0 * N, n, N, dx + r0 * lddx, lddx); });
}

// How InputSideGradients forms the bias gradients db_ih and db_hh.
enum class BiasGradients {
  kTwoTerms,  // db_ih from dbx's column sums, db_hh from dbh's
  kOneTerm,   // both from dbx's column sums (both biases enter after any norm)
  // Both from the column sums of dax, which is dbx (no norm at all), formed
  // in the pass of dW_ih over dax.
  kOneTermWithWeights,
};

// How InputSideGradients forms the recurrent weight gradient dW_hh.
enum class RecurrentWeights {
  kByCaller,     // not at all: the caller does (the GRU's is cell-specific)
  kSeparate,     // dW_hh += dah^T h, a pass of its own
  kWithWeights,  // the same with dah = dax, in the pass of dW_ih
};

// What InputSideGradients reads, in position order (T*B rows of N values).
template <typename T>
struct InputSideTerms {
  Index rows = 0, input = 0, width = 0;  // T*B, D, N
  const T* x = nullptr;                  // the layer input (rows, D), stride ldx
  Index ldx = 0;
  const T* dax = nullptr;  // gradient of x W_ih^T (dbx after the input norm's backward)
  // Gradients of the input and recurrent terms as they enter the gates
  // (after any normalization): their column sums are the bias gradients.
  const T* dbx = nullptr;
  const T* dbh = nullptr;  // kTwoTerms only
  // dbx's column sums when they are formed already (NormSite::InputGradient
  // forms them in its pass over dbx), else null.
  const T* dbx_sums = nullptr;
  BiasGradients biases = BiasGradients::kTwoTerms;
  // kSeparate: dah, the gradient of h W_hh^T, and h (rows, H; stride H), the
  // recurrent product's input at each position. kWithWeights: h only.
  const T* dah = nullptr;
  const T* h = nullptr;
  Index hidden = 0;  // H
  RecurrentWeights recurrent = RecurrentWeights::kByCaller;
};

// After the backward sweep: adds dW_ih += dax^T x, the bias gradients and,
// unless kByCaller, dW_hh into g, and writes dx (rows, D; stride lddx) =
// dax W_ih.
template <typename T>
void InputSideGradients(const InputSideTerms<T>& a, const CellWeights<T>& w, const CellGrads<T>& g,
                        T* dx, Index lddx) {
  const Index rows = a.rows, D = a.input, N = a.width, H = a.hidden;
  const bool one_sum = a.biases != BiasGradients::kTwoTerms;
  Buffer<T> sums(one_sum ? static_cast<size_t>(N) : 0, T(0));
  T* with_dw = a.biases == BiasGradients::kOneTermWithWeights ? sums.data() : nullptr;
  if (a.recurrent == RecurrentWeights::kWithWeights) {
    WeightGradient(a.dax, rows, N, N, a.x, D, a.ldx, g.w_ih, a.h, H, H, g.w_hh, with_dw);
  } else {
    WeightGradient<T>(a.dax, rows, N, N, a.x, D, a.ldx, g.w_ih, nullptr, 0, 0, nullptr, with_dw);
    if (a.recurrent == RecurrentWeights::kSeparate)
      WeightGradient(a.dah, rows, N, N, a.h, H, H, g.w_hh);
  }
  if (one_sum) {  // one term's gradient (both biases added after any norm)
    const T* s = a.dbx_sums ? a.dbx_sums : sums.data();
    if (!with_dw && !a.dbx_sums) AddColumnSums(a.dbx, rows, N, sums.data());
    VectorMap<T>(g.b_ih, N) += ConstVectorMap<T>(s, N);
    VectorMap<T>(g.b_hh, N) += ConstVectorMap<T>(s, N);
  } else {
    if (a.dbx_sums)
      VectorMap<T>(g.b_ih, N) += ConstVectorMap<T>(a.dbx_sums, N);
    else
      AddColumnSums(a.dbx, rows, N, g.b_ih);
    AddColumnSums(a.dbh, rows, N, g.b_hh);
  }
  ProjectBack(a.dax, rows, N, w.w_ih, D, dx, lddx);
}

}  // namespace internal
}  // namespace rnncore

#endif  // RNNCORE_SEQUENCE_GEMM_H_
