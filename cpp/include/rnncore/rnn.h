// Elman RNN: one layer, one direction, forward and backpropagation through time.
//
// h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act = tanh or relu.
//
// Shapes: x (T, B, D) with row stride ldx; h0, h_n (B, P); y (T, B, P) with
// row stride ldy (so two directions can write halves of one (T, B, 2P)
// output). G = 1 gate blocks. See cell.h for the weights and the tape.
#ifndef RNNCORE_RNN_H_
#define RNNCORE_RNN_H_

#include "rnncore/cell.h"

namespace rnncore {
namespace rnn {

constexpr Index kGates = 1;

template <typename T>
class ForwardPass {
 public:
  ForwardPass(const CellConfig& config, const CellWeights<T>& weights)
      : config_(config), w_(weights) {}

  // Whole sequence, visiting positions as seq says (direction, lengths).
  //   h0 (B, P) or null (zeros).
  //   y rows are written at active positions only (the caller zeroes it).
  //   tape: null for inference; else sized and filled for BackwardPass.
  void Run(const StepIndex& seq, const T* x, Index ldx, const T* h0, T* y, Index ldy, T* h_n,
           CellTape<T>* tape) const;

  // One step for B sequences, all active: x (B, D), states (B, P) / (B, H).
  // h may not alias h_prev.
  void Iterate(Index batch, const T* x, const T* h_prev, T* h) const;

 private:
  CellConfig config_;
  CellWeights<T> w_;
};

template <typename T>
class BackwardPass {
 public:
  BackwardPass(const CellConfig& config, const CellWeights<T>& weights)
      : config_(config), w_(weights) {}

  // Backpropagates through the sequence ForwardPass::Run recorded in tape.
  //   x: the same input (T, B, D) the forward pass saw, stride ldx.
  //   dy (T, B, P), stride ldy: gradient of the outputs.
  //   dh (B, P): in, gradient of h_n (zeros if none); out, gradient of h0.
  //   dx (T, B, D), stride lddx: written, or added to when accumulate_dx.
  //   grads: parameter gradients, added to.
  void Run(const StepIndex& seq, const T* x, Index ldx, const CellTape<T>& tape, const T* dy,
           Index ldy, T* dh, T* dx, Index lddx, bool accumulate_dx,
           const CellGrads<T>& grads) const;

 private:
  CellConfig config_;
  CellWeights<T> w_;
};

}  // namespace rnn
}  // namespace rnncore

#endif  // RNNCORE_RNN_H_
