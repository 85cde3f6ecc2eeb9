// Building blocks the cells share around their time loops: the hoisted input
// projection before the loop, the single-GEMM parameter gradients after it,
// and the copies between step-ordered state and position-ordered tapes.
#ifndef RNNCORE_SEQUENCE_OPS_H_
#define RNNCORE_SEQUENCE_OPS_H_

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "kernels/dots.h"
#include "kernels/gemm.h"
#include "rnncore/cell.h"
#include "rnncore/common.h"
#include "rnncore/runtime.h"

namespace rnncore {
namespace internal {

// Chunk sizes for splitting work over threads. They depend on nothing but the
// problem, so a chunk's result never depends on the thread count.
constexpr Index kRowChunk = 256;     // rows of (T*B, .) matrices
constexpr Index kUnitChunk = 256;    // rows of weight-gradient matrices, at most
constexpr Index kPackChunk = 4;      // panels of a matrix being packed
constexpr Index kReduceChunk = 256;  // rows of a weight gradient's reduction
constexpr Index kStepChunk = 128;    // output columns of a per-step product (StepMatrix)
// A per-step product is split only when it has at least this many
// multiply-adds: below it, waking threads costs more than it saves.
constexpr Index kStepParallelMacs = Index(1) << 16;

// A step's pointwise work over its batch rows is split when it touches at
// least this many values, in chunks of kStepRows rows.
constexpr Index kStepParallelValues = Index(1) << 13;
constexpr Index kStepRows = 8;
// A step's product is split by rows instead of columns when its weight
// matrix takes at most this many bytes (StepMatrix::RowSplit).
constexpr Index kRowSplitBytes = Index(256) << 10;

inline Index NumChunks(Index n, Index chunk) { return (n + chunk - 1) / chunk; }

// Rows per chunk of a weight gradient of n rows: a quarter of them, so that a
// small one (an RNN's, n = H) is split too, within [64, kUnitChunk]. Smaller
// chunks read the packed input once more each.
inline Index UnitChunk(Index n) { return std::clamp<Index>((n + 3) / 4, 64, kUnitChunk); }

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

// fn(c0, n) over the columns of a (rows, width) step-sized matrix whose
// columns are independent: in fixed chunks of kStepChunk when it holds at
// least kStepParallelValues values, else all at once.
template <typename F>
void ForColumns(Index rows, Index width, F&& fn) {
  if (rows * width < kStepParallelValues)
    fn(0, width);
  else
    ForChunks(width, kStepChunk, fn);
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
// read. Other products pack W once for all steps (measured over sequences:
// at 2 rows of float32, and at 4 of float16, a packed GEMM step beat dot
// products over the weights). Large products are split over output columns
// in fixed chunks.
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
  bool Parallel() const { return batch_ * K_ * N_ >= kStepParallelMacs; }
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
  if (wx.Parallel() || m.Parallel())
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

// dx (rows, D; stride lddx) = da (rows, N) w, w (N, D): the gradient of the
// input of a projection x w^T. Split over row chunks.
template <typename T>
void ProjectBack(const T* da, Index rows, Index N, const T* w, Index D, T* dx, Index lddx) {
  const PackedMatrix<T> wp(w, N, D, D, 1);  // w itself: (N, D)
  ForChunks(rows, kRowChunk,
            [&](Index r0, Index n) { wp.Multiply(da + r0 * N, n, N, dx + r0 * lddx, lddx); });
}

// After the backward sweep, with gradients in position order (T*B rows):
//   dbx, dbh  gradients of the input and recurrent terms as they enter the
//             gates (after any normalization): their column sums are the
//             bias gradients (db_ih, db_hh);
//   dax       gradient of x W_ih^T (dbx after the input norm's backward).
// Adds dW_ih += dax^T x and the bias gradients; dx (=|+=) dax W_ih.
// The recurrent weight gradient is cell-specific and done by the caller.
//
// With h (not null): also dW_hh += dah^T h (h (rows, H; stride H), the
// recurrent product's input at each position), together with dW_ih when
// dah is dax. dbx_sums (N), when not null, holds dbx's column sums already
// (NormSite::InputGradient forms them in its pass over dbx).
template <typename T>
void InputSideGradients(Index rows, Index D, Index N, const T* x, Index ldx, const T* dax,
                        const T* dbx, const T* dbh, const CellWeights<T>& w, const CellGrads<T>& g,
                        T* dx, Index lddx, bool accumulate_dx, const T* dah = nullptr,
                        const T* h = nullptr, Index H = 0, const T* dbx_sums = nullptr) {
  // The bias gradients' column sums come with dW_ih's pass when they are
  // sums of dax itself (no norm at all).
  const bool one_sum = dbx == dbh;
  Buffer<T> sums(one_sum ? static_cast<size_t>(N) : 0, T(0));
  T* with_dw = one_sum && dbx == dax ? sums.data() : nullptr;
  if (h && dah == dax) {
    WeightGradient(dax, rows, N, N, x, D, ldx, g.w_ih, h, H, H, g.w_hh, with_dw);
  } else {
    WeightGradient<T>(dax, rows, N, N, x, D, ldx, g.w_ih, nullptr, 0, 0, nullptr, with_dw);
    if (h) WeightGradient(dah, rows, N, N, h, H, H, g.w_hh);
  }
  if (one_sum) {  // one term's gradient (both biases added after any norm)
    const T* s = dbx_sums ? dbx_sums : sums.data();
    if (!with_dw && !dbx_sums) AddColumnSums(dbx, rows, N, sums.data());
    VectorMap<T>(g.b_ih, N) += ConstVectorMap<T>(s, N);
    VectorMap<T>(g.b_hh, N) += ConstVectorMap<T>(s, N);
  } else {
    if (dbx_sums)
      VectorMap<T>(g.b_ih, N) += ConstVectorMap<T>(dbx_sums, N);
    else
      AddColumnSums(dbx, rows, N, g.b_ih);
    AddColumnSums(dbh, rows, N, g.b_hh);
  }
  if (accumulate_dx) {
    ForChunks(rows, kRowChunk, [&](Index r0, Index n) {
      View(dx + r0 * lddx, n, D, lddx).noalias() += CView(dax + r0 * N, n, N) * CView(w.w_ih, N, D);
    });
    return;
  }
  ProjectBack(dax, rows, N, w.w_ih, D, dx, lddx);
}

}  // namespace internal
}  // namespace rnncore

#endif  // RNNCORE_SEQUENCE_OPS_H_
