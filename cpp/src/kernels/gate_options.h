// Pointwise kernels of cells with gate options (ModelConfig: clip,
// cell_clip, peephole, input_forget), forward and backward. A cell without
// them runs the plain kernels (pointwise.h), unchanged.
//
// A forward kernel writes each gate's pre-activation into its gate vector,
// clamps and activates it there. keep (G*H) or null receives 1 where a
// pre-activation was inside [-clip, clip] and 0 where it was clamped; the
// backward kernels multiply the gates' gradients by it (the gradient is zero
// where a value was clamped).
#ifndef RNNCORE_KERNELS_GATE_OPTIONS_H_
#define RNNCORE_KERNELS_GATE_OPTIONS_H_

#include "kernels/pointwise.h"

namespace rnncore {
namespace kernels {

template <typename T>
struct GateOptions {
  T clip = 0;                 // > 0: gate pre-activations clamped to [-clip, clip]
  T cell_clip = 0;            // LSTM, > 0: c_t clamped to [-cell_clip, cell_clip]
  const T* peep = nullptr;    // LSTM: w_ci, w_cf, w_co (3H), or null
  bool input_forget = false;  // LSTM: f = 1 - i
  bool any() const { return clip > 0 || cell_clip > 0 || peep || input_forget; }
};

// z (n) clamped to [-bound, bound] when bound > 0 (NaN stays NaN); keep as
// above, when not null.
template <typename T>
inline void Clamp(T* z, Index n, T bound, T* keep) {
  if (!(bound > T(0))) return;
  auto a = A(z, n);
  if (keep) A(keep, n) = (a.abs() <= bound).template cast<T>();
  a = a.template max<Eigen::PropagateNaN>(-bound).template min<Eigen::PropagateNaN>(bound);
}

// ---------------------------------------------------------------- Elman RNN
// h = act(clamp(ax + ah + bias)).
template <typename T>
inline void RnnForwardClip(Index H, Activation act, T clip, const T* ax, const T* ah, const T* bias,
                           T* h, T* keep) {
  A(h, H) = A(ax, H) + A(ah, H) + A(bias, H);
  Clamp(h, H, clip, keep);
  if (act == Activation::kTanh)
    A(h, H) = A(h, H).tanh();
  else
    A(h, H) = A(h, H).max(T(0));
}

// ---------------------------------------------------------------------- LSTM
// gates (4H) <- i, f, g, o; c <- c_t (may alias c_prev); c_new (H) or null:
// a copy of c_t.
//   a = ax + ah + bias; a_i += w_ci c_prev; a_f += w_cf c_prev
//   i, f, g from a clamped (f = 1 - i with input_forget)
//   c_t = clamp(f c_prev + i g, cell_clip)
//   a_o += w_co c_t; o from a_o clamped
template <typename T>
inline void LstmGatesOpt(Index H, const GateOptions<T>& opt, const T* ax, const T* ah,
                         const T* bias, const T* c_prev, T* gates, T* c, T* keep, T* c_new) {
  A(gates, 4 * H) = A(ax, 4 * H) + A(ah, 4 * H) + A(bias, 4 * H);
  auto i = A(gates, H), f = A(gates + H, H), g = A(gates + 2 * H, H), o = A(gates + 3 * H, H);
  if (opt.peep) {
    i += A(opt.peep, H) * A(c_prev, H);
    f += A(opt.peep + H, H) * A(c_prev, H);
  }
  Clamp(gates, 3 * H, opt.clip, keep);
  i = Sigmoid<T>(i);
  if (opt.input_forget)
    f = T(1) - i;
  else
    f = Sigmoid<T>(f);
  g = g.tanh();
  A(c, H) = f * A(c_prev, H) + i * g;
  Clamp(c, H, opt.cell_clip, static_cast<T*>(nullptr));
  if (opt.peep) o += A(opt.peep + 2 * H, H) * A(c, H);
  Clamp(gates + 3 * H, H, opt.clip, keep ? keep + 3 * H : nullptr);
  o = Sigmoid<T>(o);
  if (c_new) A(c_new, H) = A(c, H);
}

// dc in: the gradient of c_t from later steps and from the output path
// (h = o tanh(N_c(c_t))), not from the output gate's peephole; out: the
// gradient of c_{t-1}. c_new: c_t (read with peepholes or cell_clip). Writes
// dz (4H, the pre-activations' gradients).
template <typename T>
inline void LstmGatesBackwardOpt(Index H, const GateOptions<T>& opt, const T* gates,
                                 const T* c_prev, const T* c_new, const T* tanh_c, const T* dm,
                                 const T* keep, T* dc, T* dz) {
  auto i = A(gates, H), f = A(gates + H, H), g = A(gates + 2 * H, H), o = A(gates + 3 * H, H);
  auto dzi = A(dz, H), dzf = A(dz + H, H), dzg = A(dz + 2 * H, H), dzo = A(dz + 3 * H, H);
  auto dcv = A(dc, H);
  dzo = A(dm, H) * A(tanh_c, H) * o * (T(1) - o);
  if (keep) dzo *= A(keep + 3 * H, H);
  if (opt.peep) dcv += dzo * A(opt.peep + 2 * H, H);
  // A clamped c_t sits on the bound; below it, c_t is the update itself.
  if (opt.cell_clip > 0) dcv = (A(c_new, H).abs() < opt.cell_clip).select(dcv, T(0));
  if (opt.input_forget) {  // c_t = (1 - i) c_prev + i g
    dzi = dcv * (g - A(c_prev, H)) * i * (T(1) - i);
    dzf.setZero();
  } else {
    dzi = dcv * g * i * (T(1) - i);
    dzf = dcv * A(c_prev, H) * f * (T(1) - f);
  }
  dzg = dcv * i * (T(1) - g.square());
  if (keep) A(dz, 3 * H) *= A(keep, 3 * H);
  dcv *= f;
  if (opt.peep) dcv += dzi * A(opt.peep, H) + dzf * A(opt.peep + H, H);
}

// Without a normalized cell: dc (from later steps) gains the output path.
template <typename T>
inline void LstmBackwardOpt(Index H, const GateOptions<T>& opt, const T* gates, const T* c_prev,
                            const T* c_new, const T* tanh_c, const T* dm, const T* keep, T* dc,
                            T* dz) {
  A(dc, H) += A(dm, H) * A(gates + 3 * H, H) * (T(1) - A(tanh_c, H).square());
  LstmGatesBackwardOpt(H, opt, gates, c_prev, c_new, tanh_c, dm, keep, dc, dz);
}

// ----------------------------------------------------------------------- GRU
// reset_after with clip: GruForward with every gate's pre-activation clamped.
template <typename T>
inline void GruForwardClip(Index H, T clip, const T* ax, const T* ah, const T* b_ih, const T* b_hh,
                           const T* h_prev, T* gates, T* rn, T* h, T* keep) {
  auto r = A(gates, H), z = A(gates + H, H), n = A(gates + 2 * H, H);
  r = A(ax, H) + A(b_ih, H) + A(ah, H) + A(b_hh, H);
  z = A(ax + H, H) + A(b_ih + H, H) + A(ah + H, H) + A(b_hh + H, H);
  Clamp(gates, 2 * H, clip, keep);
  r = Sigmoid<T>(r);
  z = Sigmoid<T>(z);
  A(rn, H) = A(ah + 2 * H, H) + A(b_hh + 2 * H, H);
  n = A(ax + 2 * H, H) + A(b_ih + 2 * H, H) + r * A(rn, H);
  Clamp(gates + 2 * H, H, clip, keep ? keep + 2 * H : nullptr);
  n = n.tanh();
  A(h, H) = (T(1) - z) * n + z * A(h_prev, H);
}

// reset_before with clip, first half (r, z) and second half (n, h).
template <typename T>
inline void GruResetBeforeGatesClip(Index H, T clip, const T* ax, const T* ah_rz, const T* b_ih,
                                    const T* b_hh, const T* h_prev, T* gates, T* rh, T* keep) {
  auto r = A(gates, H), z = A(gates + H, H);
  r = A(ax, H) + A(b_ih, H) + A(ah_rz, H) + A(b_hh, H);
  z = A(ax + H, H) + A(b_ih + H, H) + A(ah_rz + H, H) + A(b_hh + H, H);
  Clamp(gates, 2 * H, clip, keep);
  r = Sigmoid<T>(r);
  z = Sigmoid<T>(z);
  A(rh, H) = r * A(h_prev, H);
}

template <typename T>
inline void GruResetBeforeOutputClip(Index H, T clip, const T* ax, const T* ah_n, const T* b_ih,
                                     const T* b_hh, const T* h_prev, T* gates, T* h, T* keep) {
  auto z = A(gates + H, H), n = A(gates + 2 * H, H);
  n = A(ax + 2 * H, H) + A(b_ih + 2 * H, H) + A(ah_n, H) + A(b_hh + 2 * H, H);
  Clamp(gates + 2 * H, H, clip, keep ? keep + 2 * H : nullptr);
  n = n.tanh();
  A(h, H) = (T(1) - z) * n + z * A(h_prev, H);
}

}  // namespace kernels
}  // namespace rnncore

#endif  // RNNCORE_KERNELS_GATE_OPTIONS_H_
