// Types shared by the per-cell ForwardPass / BackwardPass classes
// (rnn.h, lstm.h, gru.h): one layer, one direction, a whole sequence.
#ifndef RNNCORE_CELL_H_
#define RNNCORE_CELL_H_

#include <vector>

#include "rnncore/common.h"

namespace rnncore {

struct CellConfig {
  Index input = 0;   // D
  Index hidden = 0;  // H
  Index proj = 0;    // LSTM projection size; 0: none
  Activation activation = Activation::kTanh;  // RNN only
  bool reset_after = true;                    // GRU only
  // Width P of the step output h_t (and of the recurrent input).
  Index out() const { return proj > 0 ? proj : hidden; }
};

// Read-only parameters of one layer and direction, PyTorch layouts:
//   w_ih (G*H, D), w_hh (G*H, P), b_ih (G*H), b_hh (G*H), w_hr (P, H) or null.
// Biases are never null (a bias-free model passes zeros).
template <typename T>
struct CellWeights {
  const T* w_ih = nullptr;
  const T* w_hh = nullptr;
  const T* b_ih = nullptr;
  const T* b_hh = nullptr;
  const T* w_hr = nullptr;
};

// Gradient buffers with the shapes of CellWeights; BackwardPass ADDS into them.
template <typename T>
struct CellGrads {
  T* w_ih = nullptr;
  T* w_hh = nullptr;
  T* b_ih = nullptr;
  T* b_hh = nullptr;
  T* w_hr = nullptr;
};

// What the forward pass of one direction keeps for backpropagation, in
// position order (row t * B + b), zero at inactive positions:
//   gates  (T*B, G*H)  activated gate values
//   h_prev (T*B, P)    recurrent input of the step
//   c_prev (T*B, H)    LSTM: cell state before the step
//   aux    (T*B, H)    LSTM: tanh(c_t); GRU reset_after: h W_hn^T + b_hn;
//                      GRU reset_before: r * h_prev; RNN: h_t
// The layer input x is kept by the caller (it is shared by both directions).
template <typename T>
struct CellTape {
  Buffer<T> gates, h_prev, c_prev, aux;
};

}  // namespace rnncore

#endif  // RNNCORE_CELL_H_
