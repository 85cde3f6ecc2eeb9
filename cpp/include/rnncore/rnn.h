// Elman RNN: one layer, one direction, forward and backpropagation through time.
//
// h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act = tanh or relu.
// G = 1 gate block. The passes and their shapes: hidden_state_cell.h.
#ifndef RNNCORE_RNN_H_
#define RNNCORE_RNN_H_

#include "rnncore/common.h"
#include "rnncore/hidden_state_cell.h"

namespace rnncore {
namespace rnn {

constexpr Index kGates = GateCount(CellKind::kRnn);

template <typename T>
using ForwardPass = HiddenStateForwardPass<CellKind::kRnn, T>;
template <typename T>
using BackwardPass = HiddenStateBackwardPass<CellKind::kRnn, T>;

}  // namespace rnn
}  // namespace rnncore

#endif  // RNNCORE_RNN_H_
