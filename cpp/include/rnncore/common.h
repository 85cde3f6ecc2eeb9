// Shared vocabulary of the rnncore core: sizes, enums, matrix views and the
// sequence indexing that every cell uses.
//
// Conventions used in every header of this directory:
//   T  time steps, B  batch, D  input features, H  hidden units,
//   P  output width of a step (H, or proj_size for a projected LSTM),
//   G  gate blocks (1 RNN, 4 LSTM, 3 GRU).
// All arrays are dense, row-major (last axis fastest). A sequence tensor
// "(T, B, D)" has row (t, b) at offset (t * B + b) * ld, where ld >= D is the
// row stride (ld == D unless stated otherwise).
//
// Positions and steps. A direction visits, at step k = 0..T-1, the position
//   t = k          (forward direction)
//   t = len_b-1-k  (reverse direction, each sequence from its own end)
// of sequence b, and only while k < len_b (PyTorch packed-sequence
// semantics). Tapes store per-position quantities in position order, so that
// the weight gradients after the backward sweep are single GEMMs over all T*B
// rows; rows of inactive positions are zero.
#ifndef RNNCORE_COMMON_H_
#define RNNCORE_COMMON_H_

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace rnncore {

using Index = std::int64_t;

enum class CellKind { kRnn, kLstm, kGru };
enum class Activation { kTanh, kRelu };
enum class Norm { kNone, kLayer, kBatch, kBatchInput };

// Gate blocks G of a cell: 1 (RNN), 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n).
constexpr Index GateCount(CellKind cell) {
  return cell == CellKind::kRnn ? 1 : cell == CellKind::kLstm ? 4 : 3;
}

template <typename T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using MatrixMap = Eigen::Map<RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using ConstMatrixMap = Eigen::Map<const RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using VectorMap = Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>;
template <typename T>
using ConstVectorMap = Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>;

// A (rows, cols) row-major view with row stride ld.
template <typename T>
inline MatrixMap<T> View(T* p, Index rows, Index cols, Index ld) {
  return MatrixMap<T>(p, rows, cols, Eigen::OuterStride<>(ld));
}
template <typename T>
inline MatrixMap<T> View(T* p, Index rows, Index cols) {
  return View(p, rows, cols, cols);
}
template <typename T>
inline ConstMatrixMap<T> CView(const T* p, Index rows, Index cols, Index ld) {
  return ConstMatrixMap<T>(p, rows, cols, Eigen::OuterStride<>(ld));
}
template <typename T>
inline ConstMatrixMap<T> CView(const T* p, Index rows, Index cols) {
  return CView(p, rows, cols, cols);
}

// Which position each sequence is at on each step of one direction.
// lengths may be null (every sequence has length T); it is not owned.
class StepIndex {
 public:
  StepIndex(Index steps, Index batch, const std::int64_t* lengths, bool reverse)
      : steps_(steps), batch_(batch), lengths_(lengths), reverse_(reverse) {}

  Index steps() const { return steps_; }
  Index batch() const { return batch_; }
  bool reverse() const { return reverse_; }
  Index length(Index b) const { return lengths_ ? lengths_[b] : steps_; }
  // The number of steps at which some sequence is active.
  Index MaxLength() const {
    Index m = 0;
    for (Index b = 0; b < batch_; ++b) m = std::max(m, length(b));
    return m;
  }

  // Position of sequence b at step k, or -1 when b has already ended.
  Index Position(Index k, Index b) const {
    const Index len = length(b);
    if (k >= len) return -1;
    return reverse_ ? len - 1 - k : k;
  }
  // Row of the (T * B, .) position-ordered matrices for sequence b at step k,
  // or -1 when inactive.
  Index Row(Index k, Index b) const {
    const Index t = Position(k, b);
    return t < 0 ? -1 : t * batch_ + b;
  }
  // True when every sequence is active at every step and positions equal
  // steps, i.e. step k's rows are the contiguous block [k*B, (k+1)*B).
  bool Dense() const {
    if (reverse_) return false;
    if (!lengths_) return true;
    for (Index b = 0; b < batch_; ++b)
      if (lengths_[b] != steps_) return false;
    return true;
  }

 private:
  Index steps_, batch_;
  const std::int64_t* lengths_;
  bool reverse_;
};

// Thrown for arguments the core cannot work with (the bindings turn it into
// ValueError). The Python layer validates first; this is the last guard.
class InvalidArgument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

inline void Require(bool ok, const std::string& what) {
  if (!ok) throw InvalidArgument(what);
}

}  // namespace rnncore

#endif  // RNNCORE_COMMON_H_
