// The products of a cell's time loop: a weight matrix packed once per call
// (PackedMatrix), and the planner that picks, for a per-step product, packed
// panels or dot products over the weights, and how to split it over threads
// (StepMatrix).
#ifndef RNNCORE_STEP_PRODUCTS_H_
#define RNNCORE_STEP_PRODUCTS_H_

#include <algorithm>
#include <optional>
#include <type_traits>

#include "kernels/dots.h"
#include "kernels/gemm.h"
#include "parallel_chunks.h"
#include "rnncore/allocator.h"
#include "rnncore/common.h"

namespace rnncore {
namespace internal {

// A matrix M (K, N) packed for kernels::PanelProduct. Element (k, n) is
// read from w[k * sk + n * sn]: sk == 1 is W^T for a row-major W (N, K) (the
// forward products x W^T), sn == 1 a row-major W (K, N) itself (the
// backward products d W).
template <typename T>
class PackedMatrix {
 public:
  PackedMatrix(const T* w, Index K, Index N, Index sk, Index sn)
      : K_(K),
        N_(N),
        data_(static_cast<size_t>(kernels::NumPanels<T>(N) * K * kernels::PanelWidth<T>())) {
    // Fixed chunks of panels: each is packed the same way on any thread.
    ForChunks(kernels::NumPanels<T>(N), kPackChunk, [&](Index p0, Index n) {
      kernels::PackPanels(w, K, N, sk, sn, data_.data(), p0, p0 + n);
    });
  }
  // out (B, N; stride ldo) = a (B, K; stride lda) M.
  void Multiply(const T* a, Index B, Index lda, T* out, Index ldo) const {
    kernels::PanelProduct(a, B, K_, lda, 1, data_.data(), K_, N_, 0, kernels::NumPanels<T>(N_), out,
                          ldo, false);
  }
  // out (B, columns [c0, c0 + n); stride ldo) = a M, with a (B, K) already
  // packed by kernels::PackRows; c0 and n are multiples of the panel width
  // (n may end at N). out points at column 0.
  void MultiplyPacked(const T* ap, Index B, T* out, Index ldo, Index c0, Index n) const {
    constexpr Index PW = kernels::PanelWidth<T>();
    kernels::PackedProduct(ap, B, K_, data_.data(), K_, N_, c0 / PW, (c0 + n + PW - 1) / PW, out,
                           ldo, false);
  }
  // out (B, N; ldo) += A M over M's rows [k0, k0 + nk), with A (B, nk)
  // packed by kernels::PackRows.
  void MultiplyAddPacked(const T* ap, Index B, Index k0, Index nk, T* out, Index ldo) const {
    constexpr Index PW = kernels::PanelWidth<T>();
    kernels::PackedProduct(ap, B, nk, data_.data() + k0 * PW, K_, N_, 0, kernels::NumPanels<T>(N_),
                           out, ldo, true);
  }

 private:
  Index K_, N_;
  Buffer<T> data_;
};

// The weight matrix of a per-step product (M as in PackedMatrix), prepared
// for steps of `batch` rows. A row-major W (N, K) (sk == 1) is read as it
// is, by dot products (kernels::RowDots for float, Eigen for double), when
// the product is used once (a single step) for at most kernels::kDotRows
// rows, or for every step of a single row, or of up to 2 rows given w16, a
// float16 copy of W (Model::UseHalfWeights), which the dot products then
// read. Other products pack W once for all steps: over a sequence, a packed
// GEMM step beats dot products over the weights from a few rows on (where
// exactly: benchmarks/README.md, "Measurements behind design choices in the
// core"). Large products are split over output columns in fixed chunks.
template <typename T>
class StepMatrix {
 public:
  StepMatrix(const T* w, Index K, Index N, Index sk, Index sn, Index batch,
             const kernels::Half* w16 = nullptr, bool once = false)
      : w_(w),
        dots_(sk == 1 && (batch <= (w16 ? 2 : 1) || (once && batch <= kernels::kDotRows))),
        w16_(dots_ ? w16 : nullptr),
        K_(K),
        N_(N),
        sk_(sk),
        sn_(sn),
        batch_(batch) {
    static_assert(kStepChunk % kernels::PanelWidth<T>() == 0, "chunks must hold whole panels");
    if (batch >= 2 && !dots_) {
      packed_.emplace(w, K, N, sk, sn);
      rows_.resize(static_cast<size_t>(batch * K));
    }
  }

  // out (B, N; stride ldo) = a (B, K; stride lda) M, B = the batch given.
  // Not reentrant: a is packed into this object's buffer, once per call for
  // all column chunks.
  void Product(const T* a, Index lda, T* out, Index ldo) {
    Prepare(a, lda);
    if (!Parallel())
      ChunkColumns(a, lda, out, ldo, 0, N_);
    else
      ForChunks(N_, kStepChunk, [&](Index c0, Index n) { ChunkColumns(a, lda, out, ldo, c0, n); });
  }

  // Product in parts, for callers that run it inside their own parallel
  // region: Prepare once, then ChunkColumns for every chunk of kStepChunk
  // columns.
  void Prepare(const T* a, Index lda) {
    if (packed_) kernels::PackRows(a, batch_, K_, lda, Index(1), rows_.data());
  }
  bool Parallel() const { return macs() >= kStepParallelMacs; }
  Index macs() const { return batch_ * K_ * N_; }
  // Whether a step is better split over threads by its rows (ProductAndRows):
  // a product worth splitting, rows to split, and an M small enough for every
  // core to keep all of it in its cache.
  bool RowSplit() const {
    return packed_ && Parallel() && batch_ >= 2 * kStepRows &&
           K_ * N_ * static_cast<Index>(sizeof(T)) <= kRowSplitBytes;
  }
  Index batch() const { return batch_; }
  // Rows [b0, b0 + n) of out = a M, through this thread's scratch (a row gets
  // the same values as in Product, whatever the rows around it).
  void Rows(const T* a, Index lda, T* out, Index ldo, Index b0, Index n) const {
    packed_->Multiply(a + b0 * lda, n, lda, out + b0 * ldo, ldo);
  }
  Index cols() const { return N_; }
  // Chunk [c0, c0 + n) of the product's columns, as Product splits it: those
  // columns when Parallel(), else all N with the first chunk (c0 = 0) and
  // nothing with the others.
  void ChunkColumns(const T* a, Index lda, T* out, Index ldo, Index c0, Index n) const {
    if (Parallel())
      Columns(a, lda, out, ldo, c0, n);
    else if (c0 == 0)
      Columns(a, lda, out, ldo, 0, N_);
  }

 private:
  // Columns [c0, c0 + n) of out (out points at column 0).
  void Columns(const T* a, Index lda, T* out, Index ldo, Index c0, Index n) const {
    if (packed_) {
      packed_->MultiplyPacked(rows_.data(), batch_, out, ldo, c0, n);
      return;
    }
    if constexpr (std::is_same_v<T, float>) {
      if (w16_) {
        kernels::RowDots(w16_, K_, a, batch_, lda, out, ldo, c0, c0 + n);
        return;
      }
      if (dots_) {
        kernels::RowDots(w_, K_, a, batch_, lda, out, ldo, c0, c0 + n);
        return;
      }
    }
    auto A = CView(a, batch_, K_, lda);
    if (sk_ == 1)
      View(out + c0, batch_, n, ldo).noalias() = A * CView(w_ + c0 * sn_, n, K_, sn_).transpose();
    else
      View(out + c0, batch_, n, ldo).noalias() = A * CView(w_ + c0, K_, n, sk_);
  }

  const T* w_;
  bool dots_;
  const kernels::Half* w16_;
  Index K_, N_, sk_, sn_, batch_;
  std::optional<PackedMatrix<T>> packed_;
  Buffer<T> rows_;  // a, packed by kernels::PackRows
};

// A one-step sequence's input projection ax (B, N) = x (B, D; stride ldx)
// w^T, w (N, D), and its recurrent product ah (B, N; stride ldah) =
// u (B, K; stride ldu) m, in one parallel region instead of two. Chunk c
// computes the same columns of both, so a thread reads the same gate rows of
// W_ih and of the recurrent weights; each product is the one InputProjection
// and m.Product compute, chunk for chunk.
template <typename T>
void FirstStepProducts(const T* x, Index B, Index D, Index ldx, const T* w, T* ax, StepMatrix<T>& m,
                       const T* u, Index ldu, T* ah, Index ldah, const kernels::Half* w16) {
  const Index N = m.cols();
  StepMatrix<T> wx(w, D, N, 1, D, B, w16, /*once=*/true);
  wx.Prepare(x, ldx);
  m.Prepare(u, ldu);
  auto both = [&](Index c0, Index n) {
    wx.ChunkColumns(x, ldx, ax, N, c0, n);
    m.ChunkColumns(u, ldu, ah, ldah, c0, n);
  };
  if ((wx.Parallel() || m.Parallel()) && wx.macs() + m.macs() >= kFirstStepParallelMacs)
    ForChunks(N, kStepChunk, both);
  else
    both(0, N);
}

// A step split by rows (m.RowSplit()): each chunk of kStepRows rows gets its
// rows of out = u m and then fn(b) for each of them, in one parallel region
// (instead of the product split by columns, then the rows). fn(b) may
// overwrite row b of u: nothing else reads it.
template <typename T, typename F>
void ProductAndRows(const StepMatrix<T>& m, const T* u, Index ldu, T* out, Index ldo, F&& fn) {
  ForChunks(m.batch(), kStepRows, [&](Index b0, Index n) {
    m.Rows(u, ldu, out, ldo, b0, n);
    for (Index b = b0; b < b0 + n; ++b) fn(b);
  });
}

// One step of a cell's forward loop: out = u m (when `product`; a fused
// first step has it already), then `whole` (work that needs the whole
// step's product, such as batch statistics) unless rows_alone, then row(b)
// for every row b of the step (rows of width values). When rows_alone (each
// row is finished on its own) and m.RowSplit(), the product and the rows run
// split by rows in one parallel region (ProductAndRows); otherwise the
// product is split by columns and the rows follow (ForRows).
template <typename T, typename Whole, typename Row>
void StepProductThenRows(StepMatrix<T>& m, bool product, const T* u, Index ldu, T* out, Index ldo,
                         Index width, bool rows_alone, Whole&& whole, Row&& row) {
  if (rows_alone && product && m.RowSplit()) {
    ProductAndRows(m, u, ldu, out, ldo, row);
    return;
  }
  if (product) m.Product(u, ldu, out, ldo);
  if (!rows_alone) whole();
  ForRows(m.batch(), width, row);
}

}  // namespace internal
}  // namespace rnncore

#endif  // RNNCORE_STEP_PRODUCTS_H_
