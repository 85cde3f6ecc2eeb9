#include "rnncore/rnn.h"

#include "kernels/pointwise.h"
#include "sequence_ops.h"

namespace rnncore {
namespace rnn {

using internal::CopyRow;

template <typename T>
void ForwardPass<T>::Run(const StepIndex& seq, const T* x, Index ldx, const T* h0, T* y,
                         Index ldy, T* h_n, CellTape<T>* tape) const {
  const Index steps = seq.steps(), B = seq.batch(), D = config_.input, H = config_.hidden;

  Buffer<T> ax(static_cast<size_t>(steps * B * H));
  internal::InputProjection(x, steps * B, D, ldx, w_.w_ih, H, ax.data());
  Buffer<T> bias(static_cast<size_t>(H));
  VectorMap<T>(bias.data(), H) = ConstVectorMap<T>(w_.b_ih, H) + ConstVectorMap<T>(w_.b_hh, H);

  Buffer<T> h = internal::InitialState(h0, B, H);
  Buffer<T> ah(static_cast<size_t>(B * H));
  if (tape) {
    internal::ResizeZero(tape->h_prev, steps * B * H);
    internal::ResizeZero(tape->aux, steps * B * H);
  }
  for (Index k = 0; k < steps; ++k) {
    internal::StepProduct(h.data(), B, H, w_.w_hh, H, ah.data(), H);
    for (Index b = 0; b < B; ++b) {
      const Index r = seq.Row(k, b);
      if (r < 0) continue;
      T* hb = h.data() + b * H;
      if (tape) CopyRow(hb, tape->h_prev.data() + r * H, H);
      kernels::RnnForward(H, config_.activation, ax.data() + r * H, ah.data() + b * H,
                          bias.data(), hb);
      if (tape) CopyRow(hb, tape->aux.data() + r * H, H);
      CopyRow(hb, y + r * ldy, H);
    }
  }
  std::copy(h.begin(), h.end(), h_n);
}

template <typename T>
void ForwardPass<T>::Iterate(Index batch, const T* x, const T* h_prev, T* h) const {
  const StepIndex seq(1, batch, nullptr, false);
  Buffer<T> y(static_cast<size_t>(batch * config_.hidden));
  Run(seq, x, config_.input, h_prev, y.data(), config_.hidden, h, nullptr);
}

template <typename T>
void BackwardPass<T>::Run(const StepIndex& seq, const T* x, Index ldx, const CellTape<T>& tape,
                          const T* dy, Index ldy, T* dh, T* dx, Index lddx, bool accumulate_dx,
                          const CellGrads<T>& grads) const {
  const Index steps = seq.steps(), B = seq.batch(), D = config_.input, H = config_.hidden;
  const Index rows = steps * B;

  Buffer<T> da(static_cast<size_t>(rows * H), T(0));
  Buffer<T> dstep(static_cast<size_t>(B * H)), dh_new(static_cast<size_t>(B * H));
  for (Index k = steps - 1; k >= 0; --k) {
    for (Index b = 0; b < B; ++b) {
      const Index r = seq.Row(k, b);
      T* ds = dstep.data() + b * H;
      if (r < 0) {
        std::fill(ds, ds + H, T(0));
        continue;
      }
      VectorMap<T>(dh + b * H, H) += ConstVectorMap<T>(dy + r * ldy, H);
      kernels::RnnBackward(H, config_.activation, tape.aux.data() + r * H, dh + b * H, ds);
      CopyRow(ds, da.data() + r * H, H);
    }
    internal::StepProductT(dstep.data(), B, H, H, w_.w_hh, H, dh_new.data());
    for (Index b = 0; b < B; ++b)
      if (seq.Row(k, b) >= 0) CopyRow(dh_new.data() + b * H, dh + b * H, H);
  }
  internal::InputSideGradients(rows, D, H, x, ldx, da.data(), da.data(), w_, grads, dx, lddx,
                               accumulate_dx);
  internal::WeightGradient(da.data(), rows, H, H, tape.h_prev.data(), H, H, grads.w_hh);
}

template class ForwardPass<float>;
template class ForwardPass<double>;
template class BackwardPass<float>;
template class BackwardPass<double>;

}  // namespace rnn
}  // namespace rnncore
