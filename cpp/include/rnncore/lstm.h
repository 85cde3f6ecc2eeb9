// LSTM: one layer, one direction, forward and backpropagation through time.
//
// Gates i, f, g, o (PyTorch order); c_t = f c_{t-1} + i g; h_t = o tanh(c_t),
// projected by W_hr (P, H) when proj > 0.
//
// Shapes: x (T, B, D) with row stride ldx; h0, h_n (B, P); y (T, B, P) with
// row stride ldy (so two directions can write halves of one (T, B, 2P)
// output). G = 4 gate blocks. See cell.h for the weights and the tape.
#ifndef RNNCORE_LSTM_H_
#define RNNCORE_LSTM_H_

#include "rnncore/cell.h"

namespace rnncore {
namespace lstm {

constexpr Index kGates = GateCount(CellKind::kLstm);

template <typename T>
class ForwardPass {
 public:
  ForwardPass(const CellConfig& config, const CellWeights<T>& weights)
      : config_(config), w_(weights) {}

  // Whole sequence, visiting positions as seq says (direction, lengths).
  //   h0 (B, P) or null (zeros).
  //   c0 (B, H) or null (zeros); c_n (B, H) out.
  //   y rows are written at active positions only (the caller zeroes it).
  //   tape: null for inference; else sized and filled for BackwardPass.
  void Run(const StepIndex& seq, const T* x, Index ldx, const T* h0, const T* c0, T* y, Index ldy,
           T* h_n, T* c_n, CellTape<T>* tape) const;

  // One step for B sequences, all active: x (B, D), states (B, P) / (B, H).
  // h may not alias h_prev.
  void Iterate(Index batch, const T* x, const T* h_prev, const T* c_prev, T* h, T* c) const;

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
  //   dc (B, H): in, gradient of c_n (zeros if none); out, gradient of c0.
  //   dx (T, B, D), stride lddx: written.
  //   grads: parameter gradients, added to.
  void Run(const StepIndex& seq, const T* x, Index ldx, const CellTape<T>& tape, const T* dy,
           Index ldy, T* dh, T* dc, T* dx, Index lddx, const CellGrads<T>& grads) const;

 private:
  CellConfig config_;
  CellWeights<T> w_;
};

}  // namespace lstm
}  // namespace rnncore

#endif  // RNNCORE_LSTM_H_
