// What the cells' passes (rnn.cc, gru.cc, lstm.cc) share: the sizes of a
// call and its normalization sites (CellScope), and the members of the
// hidden-state passes (rnncore/hidden_state_cell.h), which run the cell's
// ForwardSequence / BackwardSequence.
#ifndef RNNCORE_CELL_PASS_H_
#define RNNCORE_CELL_PASS_H_

#include "norm_site.h"
#include "rnncore/allocator.h"
#include "rnncore/cell.h"
#include "rnncore/common.h"
#include "rnncore/hidden_state_cell.h"

namespace rnncore {
namespace internal {

// The sizes of a cell's call: T, B, D, H, P, G * H and T * B, and the kinds
// of its normalization sites.
struct CellDims {
  CellDims(CellKind cell, const StepIndex& seq, const CellConfig& c)
      : steps(seq.steps()),
        batch(seq.batch()),
        input(c.input),
        hidden(c.hidden),
        out(c.out()),
        gates(GateCount(cell) * c.hidden),
        rows(seq.steps() * seq.batch()),
        sites(Sites(c.norm, cell)) {}
  Index steps, batch, input, hidden, out, gates, rows;
  SiteKinds sites;
};

// What every pass of a cell starts from: its sizes and the normalization
// sites of its input term (nx, G wide), recurrent term (nh, G wide) and, for
// the LSTM, cell state (nc, H wide). A forward pass records into the tape
// (when it has one) and updates the running statistics in training mode; a
// backward pass reads the tape the forward pass recorded.
template <typename T>
struct CellScope : CellDims {
  // Forward: tape null for inference.
  CellScope(CellKind cell, const StepIndex& seq, const CellConfig& c, const CellWeights<T>& w,
            CellTape<T>* tape)
      : CellDims(cell, seq, c),
        nx(sites.x, seq, gates, w.gx, nullptr, c, w.rx, tape ? &tape->nx : nullptr),
        nh(sites.h, seq, gates, w.gh, nullptr, c, w.rh, tape ? &tape->nh : nullptr),
        nc(sites.c, seq, hidden, w.gc, w.bc, c, w.rc, tape ? &tape->nc : nullptr) {}
  // Backward.
  CellScope(CellKind cell, const StepIndex& seq, const CellConfig& c, const CellWeights<T>& w,
            const CellTape<T>& tape)
      : CellDims(cell, seq, c),
        nx(sites.x, seq, gates, w.gx, nullptr, c, tape.nx),
        nh(sites.h, seq, gates, w.gh, nullptr, c, tape.nh),
        nc(sites.c, seq, hidden, w.gc, w.bc, c, tape.nc) {}

  NormSite<T> nx, nh, nc;
};

// Selects a cell's ForwardSequence / BackwardSequence (defined next to its
// kernels, in rnn.cc and gru.cc) by argument-dependent lookup.
template <CellKind kCell>
struct CellTag {};

}  // namespace internal

template <CellKind kCell, typename T>
void HiddenStateForwardPass<kCell, T>::Run(const StepIndex& seq, const T* x, Index ldx, const T* h0,
                                           T* y, Index ldy, T* h_n, CellTape<T>* tape) const {
  ForwardSequence(internal::CellTag<kCell>(), config_, w_, seq, x, ldx, h0, y, ldy, h_n, tape);
}

template <CellKind kCell, typename T>
void HiddenStateForwardPass<kCell, T>::Iterate(Index batch, const T* x, const T* h_prev,
                                               T* h) const {
  const StepIndex seq(1, batch, nullptr, false);
  Buffer<T> y(static_cast<size_t>(batch * config_.hidden));
  Run(seq, x, config_.input, h_prev, y.data(), config_.hidden, h, nullptr);
}

template <CellKind kCell, typename T>
void HiddenStateBackwardPass<kCell, T>::Run(const StepIndex& seq, const T* x, Index ldx,
                                            const CellTape<T>& tape, const T* dy, Index ldy, T* dh,
                                            T* dx, Index lddx, const CellGrads<T>& grads) const {
  BackwardSequence(internal::CellTag<kCell>(), config_, w_, seq, x, ldx, tape, dy, ldy, dh, dx,
                   lddx, grads);
}

}  // namespace rnncore

#endif  // RNNCORE_CELL_PASS_H_
