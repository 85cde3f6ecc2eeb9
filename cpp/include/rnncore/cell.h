// Types shared by the per-cell ForwardPass / BackwardPass classes
// (rnn.h, lstm.h, gru.h): one layer, one direction, a whole sequence.
#ifndef RNNCORE_CELL_H_
#define RNNCORE_CELL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "rnncore/allocator.h"
#include "rnncore/common.h"

namespace rnncore {

struct CellConfig {
  Index input = 0;                            // D
  Index hidden = 0;                           // H
  Index proj = 0;                             // LSTM projection size; 0: none
  Activation activation = Activation::kTanh;  // RNN only
  bool reset_after = true;                    // GRU only
  // Normalization (docs/normalization.md). training: batch norms use batch
  // statistics and update the running ones; otherwise the running ones.
  Norm norm = Norm::kNone;
  bool training = true;
  double ln_eps = 1e-5;
  double bn_eps = 1e-5;
  double bn_momentum = 0.1;
  // Eval mode: the time step of the first position (a stream continuing a
  // sequence). Batch norm at position k reads running-statistics row
  // min(step_offset + k, S - 1).
  Index step_offset = 0;
  // Gate options (ModelConfig): 0 / false is off. The LSTM's peepholes are
  // on when its weights have them (CellWeights::peep).
  double clip = 0;
  double cell_clip = 0;
  bool input_forget = false;
  // Regularization (regularize.h). recurrent_dropout: variational dropout of
  // h_{t-1} in the recurrent product, training only. zoneout: probability
  // that a unit of h (and of the LSTM cell) keeps its previous value in
  // training; eval mode uses the expectation. The masks are drawn from seed,
  // layer and direction.
  double recurrent_dropout = 0;
  double zoneout = 0;
  std::uint64_t seed = 0;
  Index layer = 0;
  Index direction = 0;
  // Width P of the step output h_t (and of the recurrent input).
  Index out() const { return proj > 0 ? proj : hidden; }
};

// Running statistics of one batch-norm site: rows x width, one row per time
// step (norm="batch") or a single row (norm="batch_input"). Rows added by
// Grow start at mean 0, variance 1. Eval mode reads row min(k, rows - 1), or
// mean 0 / variance 1 when there is none.
template <typename T>
class RunningStats {
 public:
  void Reset(Index width, Index rows) {
    width_ = width;
    rows_ = 0;
    mean_.clear();
    var_.clear();
    Grow(rows);
  }
  Index rows() const { return rows_; }
  Index width() const { return width_; }
  const T* mean() const { return mean_.data(); }
  const T* var() const { return var_.data(); }
  void Grow(Index rows) {
    if (rows <= rows_) return;
    mean_.resize(static_cast<size_t>(rows * width_), T(0));
    var_.resize(static_cast<size_t>(rows * width_), T(1));
    rows_ = rows;
  }
  void Set(Index rows, const T* mean, const T* var) {
    rows_ = rows;
    mean_.assign(mean, mean + rows * width_);
    var_.assign(var, var + rows * width_);
  }
  // mean and r = (var + eps)^-1/2 of the row eval mode uses at step k.
  void EvalRow(Index k, T eps, T* mean, T* r) const {
    if (rows_ == 0) {
      for (Index j = 0; j < width_; ++j) mean[j] = T(0), r[j] = T(1) / std::sqrt(T(1) + eps);
      return;
    }
    const Index row = std::min(k, rows_ - 1);
    for (Index j = 0; j < width_; ++j) {
      mean[j] = mean_[static_cast<size_t>(row * width_ + j)];
      r[j] = T(1) / std::sqrt(var_[static_cast<size_t>(row * width_ + j)] + eps);
    }
  }
  // run <- (1 - m) run + m stat, with the unbiased variance var n / (n - 1),
  // over columns [c0, c1) (the whole row by default).
  void Update(Index row, T momentum, const T* mean, const T* var, Index n, Index c0 = 0,
              Index c1 = -1) {
    const T unbias = T(n) / T(n - 1);
    for (Index j = c0; j < (c1 < 0 ? width_ : c1); ++j) {
      T& rm = mean_[static_cast<size_t>(row * width_ + j)];
      T& rv = var_[static_cast<size_t>(row * width_ + j)];
      rm = (T(1) - momentum) * rm + momentum * mean[j];
      rv = (T(1) - momentum) * rv + momentum * var[j] * unbias;
    }
  }

 private:
  Index width_ = 0, rows_ = 0;
  Buffer<T> mean_, var_;
};

// Read-only parameters of one layer and direction, PyTorch layouts:
//   w_ih (G*H, D), w_hh (G*H, P), b_ih (G*H), b_hh (G*H), w_hr (P, H) or null.
// Biases are never null (a bias-free model passes zeros).
// Normalization parameters (null when the norm has none): gains of the
// input term gx and recurrent term gh (G*H; for the layer-norm RNN, gh is the
// gain of the normalized sum, H), LSTM cell gain gc and shift bc (H).
// Running statistics rx, rh, rc of the batch norms: read in eval mode,
// updated in training mode.
// w_ih16, w_hh16, w_hr16: float16 copies of w_ih, w_hh, w_hr, whose values
// equal them (Model::UseHalfWeights), or null. Products that read W once
// for a few rows read these (StepMatrix).
template <typename T>
struct CellWeights {
  const T* w_ih = nullptr;
  const T* w_hh = nullptr;
  const T* b_ih = nullptr;
  const T* b_hh = nullptr;
  const T* w_hr = nullptr;
  const T* peep = nullptr;  // LSTM peepholes w_ci, w_cf, w_co (3H), or null
  const Eigen::half* w_ih16 = nullptr;
  const Eigen::half* w_hh16 = nullptr;
  const Eigen::half* w_hr16 = nullptr;
  const T* gx = nullptr;
  const T* gh = nullptr;
  const T* gc = nullptr;
  const T* bc = nullptr;
  RunningStats<T>* rx = nullptr;
  RunningStats<T>* rh = nullptr;
  RunningStats<T>* rc = nullptr;
};

// Where a regularization mask applies (regularize.h).
enum class MaskSite : std::uint64_t {
  kInput = 1,
  kRecurrent = 2,
  kZoneH = 3,
  kZoneC = 4,
  kLayerOutput = 5
};

// Gradient buffers with the shapes of CellWeights; BackwardPass ADDS into them.
// dh_sq (T) or null: receives, per time position t, the sum over the batch of
// the squared gradient of the step output h_t.
template <typename T>
struct CellGrads {
  T* w_ih = nullptr;
  T* w_hh = nullptr;
  T* b_ih = nullptr;
  T* b_hh = nullptr;
  T* w_hr = nullptr;
  T* peep = nullptr;
  T* gx = nullptr;
  T* gh = nullptr;
  T* gc = nullptr;
  T* bc = nullptr;
  T* dh_sq = nullptr;
};

// What a normalization site keeps: â (T*B, width) in position order, and r:
// per position (layer norm), per step and column (batch norm), or per column
// (sequence-wise batch norm).
template <typename T>
struct NormTape {
  Buffer<T> xhat, rstd;
};

// What the forward pass of one direction keeps for backpropagation, in
// position order (row t * B + b), zero at inactive positions:
//   gates  (T*B, G*H)  activated gate values
//   h_prev (T*B, P)    recurrent input of the step
//   c_prev (T*B, H)    LSTM: cell state before the step
//   aux    (T*B, H)    LSTM: tanh(N_c(c_t)); GRU reset_after: N_h(h W_hh^T)_n
//                      + b_hn; GRU reset_before: r * h_prev; RNN: h_t
//   keep   (T*B, G*H)  clip only: 1 where a gate's pre-activation was inside
//                      [-clip, clip], 0 where it was clamped
//   c_new  (T*B, H)    LSTM with peepholes or cell_clip: c_t (clamped)
//   nx, nh, nc         the normalization sites of the input term, the
//                      recurrent term (the RNN's layer norm: their sum) and
//                      the LSTM cell state
// The layer input x is kept by the caller (it is shared by both directions).
template <typename T>
struct CellTape {
  Buffer<T> gates, h_prev, c_prev, aux, keep, c_new;
  NormTape<T> nx, nh, nc;
};

}  // namespace rnncore

#endif  // RNNCORE_CELL_H_
