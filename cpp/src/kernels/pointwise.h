// Fused pointwise kernels of the plain cells: one pass over a batch row per
// step, forward and backward. Raw pointers and sizes in, nothing allocated,
// nothing known about sequences or threads.
//
// Every function works on one row of width H (or G*H for gate vectors, blocks
// laid out gate after gate). Gate vectors hold ACTIVATED values.
#ifndef RNNCORE_KERNELS_POINTWISE_H_
#define RNNCORE_KERNELS_POINTWISE_H_

#include <Eigen/Core>

#include "rnncore/common.h"

namespace rnncore {
namespace kernels {

template <typename T>
using Arr = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <typename T>
using CArr = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

template <typename T>
inline Arr<T> A(T* p, Index n) {
  return Arr<T>(p, n);
}
template <typename T>
inline CArr<T> A(const T* p, Index n) {
  return CArr<T>(p, n);
}

template <typename T, typename E>
inline auto Sigmoid(const E& z) {
  return (T(1) + (-z).exp()).inverse();
}

// ---------------------------------------------------------------- Elman RNN
// h = act(ax + ah + bias)
template <typename T>
inline void RnnForward(Index H, Activation act, const T* ax, const T* ah, const T* bias, T* h) {
  auto z = A(ax, H) + A(ah, H) + A(bias, H);
  if (act == Activation::kTanh)
    A(h, H) = z.tanh();
  else
    A(h, H) = z.max(T(0));
}

// dz = dh * act'(z), expressed through the output h.
template <typename T>
inline void RnnBackward(Index H, Activation act, const T* h, const T* dh, T* dz) {
  if (act == Activation::kTanh)
    A(dz, H) = A(dh, H) * (T(1) - A(h, H).square());
  else
    A(dz, H) = (A(h, H) > T(0)).select(A(dh, H), T(0));
}

// ---------------------------------------------------------------------- LSTM
// gates (4H) <- activated i, f, g, o of ax + ah + bias; c = f c_prev + i g.
// c may alias c_prev.
template <typename T>
inline void LstmGates(Index H, const T* ax, const T* ah, const T* bias, const T* c_prev, T* gates,
                      T* c) {
  // Each gate's sum is activated in the same pass (the same values as
  // storing the sums first: a float stored and reloaded is unchanged).
  auto z = [&](Index g) { return A(ax + g * H, H) + A(ah + g * H, H) + A(bias + g * H, H); };
  A(gates, H) = Sigmoid<T>(z(0));          // i
  A(gates + H, H) = Sigmoid<T>(z(1));      // f
  A(gates + 2 * H, H) = z(2).tanh();       // g
  A(gates + 3 * H, H) = Sigmoid<T>(z(3));  // o
  A(c, H) = A(gates + H, H) * A(c_prev, H) + A(gates, H) * A(gates + 2 * H, H);
}

// tanh_c = tanh(cn), m = o tanh_c, where cn is c or its normalization.
template <typename T>
inline void LstmOutput(Index H, const T* gates, const T* cn, T* tanh_c, T* m) {
  A(tanh_c, H) = A(cn, H).tanh();
  A(m, H) = A(gates + 3 * H, H) * A(tanh_c, H);
}

template <typename T>
inline void LstmForward(Index H, const T* ax, const T* ah, const T* bias, const T* c_prev, T* gates,
                        T* c, T* tanh_c, T* m) {
  LstmGates(H, ax, ah, bias, c_prev, gates, c);
  LstmOutput(H, gates, c, tanh_c, m);
}

// dcn = gradient of the tanh input cn, from dm (gradient of o tanh_c).
template <typename T>
inline void LstmOutputBackward(Index H, const T* gates, const T* tanh_c, const T* dm, T* dcn) {
  A(dcn, H) = A(dm, H) * A(gates + 3 * H, H) * (T(1) - A(tanh_c, H).square());
}

// From dm and dc (the full gradient of c_t), writes dz (4H, pre-activation
// gradients) and turns dc into the gradient of c_{t-1}.
template <typename T>
inline void LstmGatesBackward(Index H, const T* gates, const T* c_prev, const T* tanh_c,
                              const T* dm, T* dc, T* dz) {
  auto i = A(gates, H), f = A(gates + H, H), g = A(gates + 2 * H, H), o = A(gates + 3 * H, H);
  auto dcv = A(dc, H);
  A(dz, H) = dcv * g * i * (T(1) - i);
  A(dz + H, H) = dcv * A(c_prev, H) * f * (T(1) - f);
  A(dz + 2 * H, H) = dcv * i * (T(1) - g.square());
  A(dz + 3 * H, H) = A(dm, H) * A(tanh_c, H) * o * (T(1) - o);
  dcv *= f;
}

// Plain cell: dc (gradient of c_t from later steps) gains the output path.
template <typename T>
inline void LstmBackward(Index H, const T* gates, const T* c_prev, const T* tanh_c, const T* dm,
                         T* dc, T* dz) {
  A(dc, H) += A(dm, H) * A(gates + 3 * H, H) * (T(1) - A(tanh_c, H).square());
  LstmGatesBackward(H, gates, c_prev, tanh_c, dm, dc, dz);
}

// ----------------------------------------------------------------------- GRU
// reset_after (PyTorch/cuDNN form). ax holds x W_ih^T (3H), ah h W_hh^T (3H).
// gates <- r, z, n; rn <- ah_n + b_hn (kept for backward); h updated.
template <typename T>
inline void GruForward(Index H, const T* ax, const T* ah, const T* b_ih, const T* b_hh,
                       const T* h_prev, T* gates, T* rn, T* h) {
  auto r = A(gates, H), z = A(gates + H, H), n = A(gates + 2 * H, H);
  r = Sigmoid<T>(A(ax, H) + A(b_ih, H) + A(ah, H) + A(b_hh, H));
  z = Sigmoid<T>(A(ax + H, H) + A(b_ih + H, H) + A(ah + H, H) + A(b_hh + H, H));
  A(rn, H) = A(ah + 2 * H, H) + A(b_hh + 2 * H, H);
  n = (A(ax + 2 * H, H) + A(b_ih + 2 * H, H) + r * A(rn, H)).tanh();
  A(h, H) = (T(1) - z) * n + z * A(h_prev, H);
}

// dh: gradient of h_t. Writes dax, dah (3H each) and dh_direct = dh z (the
// part of dh_{t-1} that does not go through W_hh).
// keep (3H) or null: a clip's mask (kernels/gate_options.h).
template <typename T>
inline void GruBackward(Index H, const T* gates, const T* rn, const T* h_prev, const T* dh, T* dax,
                        T* dah, T* dh_direct, const T* keep = nullptr) {
  auto r = A(gates, H), z = A(gates + H, H), n = A(gates + 2 * H, H);
  auto d = A(dh, H);
  auto dn = A(dax + 2 * H, H);
  dn = d * (T(1) - z) * (T(1) - n.square());
  if (keep) dn *= A(keep + 2 * H, H);
  A(dax, H) = dn * A(rn, H) * r * (T(1) - r);
  A(dax + H, H) = d * (A(h_prev, H) - n) * z * (T(1) - z);
  if (keep) A(dax, 2 * H) *= A(keep, 2 * H);
  A(dah, 2 * H) = A(dax, 2 * H);
  A(dah + 2 * H, H) = dn * r;
  A(dh_direct, H) = d * z;
}

// reset_before (original GRU), first half: r and z from ax + ah_rz + biases.
template <typename T>
inline void GruResetBeforeGates(Index H, const T* ax, const T* ah_rz, const T* b_ih, const T* b_hh,
                                const T* h_prev, T* gates, T* rh) {
  auto r = A(gates, H), z = A(gates + H, H);
  r = Sigmoid<T>(A(ax, H) + A(b_ih, H) + A(ah_rz, H) + A(b_hh, H));
  z = Sigmoid<T>(A(ax + H, H) + A(b_ih + H, H) + A(ah_rz + H, H) + A(b_hh + H, H));
  A(rh, H) = r * A(h_prev, H);
}

// reset_before, second half: n from ax_n + (r h) W_hn^T (ah_n) + biases; h.
template <typename T>
inline void GruResetBeforeOutput(Index H, const T* ax, const T* ah_n, const T* b_ih, const T* b_hh,
                                 const T* h_prev, T* gates, T* h) {
  auto z = A(gates + H, H), n = A(gates + 2 * H, H);
  n = (A(ax + 2 * H, H) + A(b_ih + 2 * H, H) + A(ah_n, H) + A(b_hh + 2 * H, H)).tanh();
  A(h, H) = (T(1) - z) * n + z * A(h_prev, H);
}

// reset_before backward, first half: da (3H; only the z and n blocks are
// written here) from dh.
template <typename T>
inline void GruResetBeforeBackwardOutput(Index H, const T* gates, const T* h_prev, const T* dh,
                                         T* da) {
  auto z = A(gates + H, H), n = A(gates + 2 * H, H);
  auto d = A(dh, H);
  A(da + H, H) = d * (A(h_prev, H) - n) * z * (T(1) - z);
  A(da + 2 * H, H) = d * (T(1) - z) * (T(1) - n.square());
}

// reset_before backward, second half: drh = gradient of r u (from the n
// block through W_hn), u the recurrent input (h_prev, or h_prev under its
// dropout mask). Writes the r block of da, dh_direct = dh z (the part of
// dh_{t-1} through the state update) and du = drh r (the part through u).
template <typename T>
inline void GruResetBeforeBackwardGates(Index H, const T* gates, const T* u, const T* dh,
                                        const T* drh, T* da, T* dh_direct, T* du) {
  auto r = A(gates, H), z = A(gates + H, H);
  A(da, H) = A(drh, H) * A(u, H) * r * (T(1) - r);
  A(dh_direct, H) = A(dh, H) * z;
  A(du, H) = A(drh, H) * r;
}

}  // namespace kernels
}  // namespace rnncore

#endif  // RNNCORE_KERNELS_POINTWISE_H_
