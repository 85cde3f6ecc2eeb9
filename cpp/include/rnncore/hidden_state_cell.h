// The passes of a cell whose only state is h: the Elman RNN (rnn.h) and the
// GRU (gru.h). One layer, one direction, forward and backpropagation through
// time.
//
// Shapes: x (T, B, D) with row stride ldx; h0, h_n (B, P); y (T, B, P) with
// row stride ldy (so two directions can write halves of one (T, B, 2P)
// output). G = GateCount(kCell) gate blocks. See cell.h for the weights and
// the tape.
#ifndef RNNCORE_HIDDEN_STATE_CELL_H_
#define RNNCORE_HIDDEN_STATE_CELL_H_

#include "rnncore/cell.h"
#include "rnncore/common.h"

namespace rnncore {

template <CellKind kCell, typename T>
class HiddenStateForwardPass {
 public:
  HiddenStateForwardPass(const CellConfig& config, const CellWeights<T>& weights)
      : config_(config), w_(weights) {}

  // Whole sequence, visiting positions as seq says (direction, lengths).
  //   h0 (B, P) or null (zeros).
  //   y rows are written at active positions only (the caller zeroes it).
  //   tape: null for inference; else sized and filled for the backward pass.
  void Run(const StepIndex& seq, const T* x, Index ldx, const T* h0, T* y, Index ldy, T* h_n,
           CellTape<T>* tape) const;

  // One step for B sequences, all active: x (B, D), states (B, P).
  // h may not alias h_prev.
  void Iterate(Index batch, const T* x, const T* h_prev, T* h) const;

 private:
  CellConfig config_;
  CellWeights<T> w_;
};

template <CellKind kCell, typename T>
class HiddenStateBackwardPass {
 public:
  HiddenStateBackwardPass(const CellConfig& config, const CellWeights<T>& weights)
      : config_(config), w_(weights) {}

  // Backpropagates through the sequence the forward pass recorded in tape.
  //   x: the same input (T, B, D) the forward pass saw, stride ldx.
  //   dy (T, B, P), stride ldy: gradient of the outputs.
  //   dh (B, P): in, gradient of h_n (zeros if none); out, gradient of h0.
  //   dx (T, B, D), stride lddx: written.
  //   grads: parameter gradients, added to.
  void Run(const StepIndex& seq, const T* x, Index ldx, const CellTape<T>& tape, const T* dy,
           Index ldy, T* dh, T* dx, Index lddx, const CellGrads<T>& grads) const;

 private:
  CellConfig config_;
  CellWeights<T> w_;
};

}  // namespace rnncore

#endif  // RNNCORE_HIDDEN_STATE_CELL_H_
