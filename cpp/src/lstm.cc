#include "rnncore/lstm.h"

#include "kernels/pointwise.h"
#include "sequence_ops.h"

namespace rnncore {
namespace lstm {

using internal::CopyRow;

template <typename T>
void ForwardPass<T>::Run(const StepIndex& seq, const T* x, Index ldx, const T* h0, const T* c0,
                         T* y, Index ldy, T* h_n, T* c_n, CellTape<T>* tape) const {
  const Index steps = seq.steps(), B = seq.batch(), D = config_.input, H = config_.hidden;
  const Index P = config_.out(), G = kGates * H;
  const bool proj = config_.proj > 0;

  Buffer<T> ax(static_cast<size_t>(steps * B * G));
  internal::InputProjection(x, steps * B, D, ldx, w_.w_ih, G, ax.data());
  Buffer<T> bias(static_cast<size_t>(G));
  VectorMap<T>(bias.data(), G) = ConstVectorMap<T>(w_.b_ih, G) + ConstVectorMap<T>(w_.b_hh, G);

  Buffer<T> h = internal::InitialState(h0, B, P);
  Buffer<T> c = internal::InitialState(c0, B, H);
  Buffer<T> ah(static_cast<size_t>(B * G)), m(static_cast<size_t>(B * H));
  Buffer<T> hp(proj ? static_cast<size_t>(B * P) : 0);
  Buffer<T> gates_row(static_cast<size_t>(G)), tc_row(static_cast<size_t>(H));
  if (tape) {
    internal::ResizeZero(tape->gates, steps * B * G);
    internal::ResizeZero(tape->h_prev, steps * B * P);
    internal::ResizeZero(tape->c_prev, steps * B * H);
    internal::ResizeZero(tape->aux, steps * B * H);
  }

  for (Index k = 0; k < steps; ++k) {
    internal::StepProduct(h.data(), B, P, w_.w_hh, G, ah.data(), G);
    for (Index b = 0; b < B; ++b) {
      const Index r = seq.Row(k, b);
      if (r < 0) continue;
      T* gates = gates_row.data();
      T* tc = tc_row.data();
      if (tape) {
        gates = tape->gates.data() + r * G;
        tc = tape->aux.data() + r * H;
        CopyRow(h.data() + b * P, tape->h_prev.data() + r * P, P);
        CopyRow(c.data() + b * H, tape->c_prev.data() + r * H, H);
      }
      kernels::LstmForward(H, ax.data() + r * G, ah.data() + b * G, bias.data(),
                           c.data() + b * H, gates, c.data() + b * H, tc, m.data() + b * H);
    }
    const T* out = m.data();
    if (proj) {
      internal::StepProduct(m.data(), B, H, w_.w_hr, P, hp.data(), P);
      out = hp.data();
    }
    for (Index b = 0; b < B; ++b) {
      const Index r = seq.Row(k, b);
      if (r < 0) continue;
      CopyRow(out + b * P, h.data() + b * P, P);
      CopyRow(out + b * P, y + r * ldy, P);
    }
  }
  std::copy(h.begin(), h.end(), h_n);
  std::copy(c.begin(), c.end(), c_n);
}

template <typename T>
void ForwardPass<T>::Iterate(Index batch, const T* x, const T* h_prev, const T* c_prev, T* h,
                             T* c) const {
  const StepIndex seq(1, batch, nullptr, false);
  Buffer<T> y(static_cast<size_t>(batch * config_.out()));
  Run(seq, x, config_.input, h_prev, c_prev, y.data(), config_.out(), h, c, nullptr);
}

template <typename T>
void BackwardPass<T>::Run(const StepIndex& seq, const T* x, Index ldx, const CellTape<T>& tape,
                          const T* dy, Index ldy, T* dh, T* dc, T* dx, Index lddx,
                          bool accumulate_dx, const CellGrads<T>& grads) const {
  const Index steps = seq.steps(), B = seq.batch(), D = config_.input, H = config_.hidden;
  const Index P = config_.out(), G = kGates * H, rows = steps * B;
  const bool proj = config_.proj > 0;

  Buffer<T> da(static_cast<size_t>(rows * G), T(0));
  Buffer<T> dstep(static_cast<size_t>(B * G)), dh_new(static_cast<size_t>(B * P));
  Buffer<T> dm_buf(proj ? static_cast<size_t>(B * H) : 0);
  Buffer<T> dh_out(proj ? static_cast<size_t>(rows * P) : 0, T(0));

  for (Index k = steps - 1; k >= 0; --k) {
    for (Index b = 0; b < B; ++b) {
      const Index r = seq.Row(k, b);
      if (r >= 0) VectorMap<T>(dh + b * P, P) += ConstVectorMap<T>(dy + r * ldy, P);
    }
    const T* dm = dh;
    if (proj) {
      internal::StepProductT(dh, B, P, P, w_.w_hr, H, dm_buf.data());
      dm = dm_buf.data();
      for (Index b = 0; b < B; ++b) {
        const Index r = seq.Row(k, b);
        if (r >= 0) CopyRow(dh + b * P, dh_out.data() + r * P, P);
      }
    }
    for (Index b = 0; b < B; ++b) {
      const Index r = seq.Row(k, b);
      T* ds = dstep.data() + b * G;
      if (r < 0) {
        std::fill(ds, ds + G, T(0));
        continue;
      }
      kernels::LstmBackward(H, tape.gates.data() + r * G, tape.c_prev.data() + r * H,
                            tape.aux.data() + r * H, dm + b * H, dc + b * H, ds);
      CopyRow(ds, da.data() + r * G, G);
    }
    internal::StepProductT(dstep.data(), B, G, G, w_.w_hh, P, dh_new.data());
    for (Index b = 0; b < B; ++b)
      if (seq.Row(k, b) >= 0) CopyRow(dh_new.data() + b * P, dh + b * P, P);
  }

  internal::InputSideGradients(rows, D, G, x, ldx, da.data(), da.data(), w_, grads, dx, lddx,
                               accumulate_dx);
  internal::WeightGradient(da.data(), rows, G, G, tape.h_prev.data(), P, P, grads.w_hh);
  if (proj) {
    // m = o * tanh(c), zero at inactive positions (their gates are zero).
    Buffer<T> m(static_cast<size_t>(rows * H));
    for (Index r = 0; r < rows; ++r)
      kernels::A(m.data() + r * H, H) =
          kernels::A(tape.gates.data() + r * G + 3 * H, H) * kernels::A(tape.aux.data() + r * H, H);
    internal::WeightGradient(dh_out.data(), rows, P, P, m.data(), H, H, grads.w_hr);
  }
}

template class ForwardPass<float>;
template class ForwardPass<double>;
template class BackwardPass<float>;
template class BackwardPass<double>;

}  // namespace lstm
}  // namespace rnncore
