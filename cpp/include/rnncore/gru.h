// GRU: one layer, one direction, forward and backpropagation through time.
//
// Gates r, z, n (PyTorch order). reset_after: n = tanh(x W_in^T + b_in +
// r (h W_hn^T + b_hn)) (PyTorch, cuDNN); otherwise n = tanh(x W_in^T + b_in + (r h) W_hn^T + b_hn)
// (original GRU). h_t = (1 - z) n + z h_{t-1}.
// G = 3 gate blocks. The passes and their shapes: hidden_state_cell.h.
#ifndef RNNCORE_GRU_H_
#define RNNCORE_GRU_H_

#include "rnncore/common.h"
#include "rnncore/hidden_state_cell.h"

namespace rnncore {
namespace gru {

constexpr Index kGates = GateCount(CellKind::kGru);

template <typename T>
using ForwardPass = HiddenStateForwardPass<CellKind::kGru, T>;
template <typename T>
using BackwardPass = HiddenStateBackwardPass<CellKind::kGru, T>;

}  // namespace gru
}  // namespace rnncore

#endif  // RNNCORE_GRU_H_
