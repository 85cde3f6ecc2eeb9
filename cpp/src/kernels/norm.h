// Normalization kernels (docs/normalization.md section 1): layer norm of one
// row, batch norm of a set of rows (the sequences active at one step, or all
// active positions of a sequence), forward and backward. Raw pointers and
// sizes in, nothing allocated. Variances are computed in two passes.
//
// Notation: a the input, â = (a - μ) r the normalized value, r = (s² + ε)^-½,
// y = γ â (+ β). dy the gradient of y; ĝ = γ dy.
#ifndef RNNCORE_KERNELS_NORM_H_
#define RNNCORE_KERNELS_NORM_H_

#include <cmath>

#include "kernels/pointwise.h"

namespace rnncore {
namespace kernels {

// ------------------------------------------------------------- layer norm
// Written with Eigen's packet functions so that each pass does all its work
// over a row at once: the statistics take two read passes (mean, then the
// variance about it), and â and y are formed in one more; the backward pass
// takes one pass for the parameter gradients and both of its sums, and one
// for da. A row's values do not depend on where it sits or which thread
// takes it.
namespace detail {
template <typename T>
using Packet = typename Eigen::internal::packet_traits<T>::type;
template <typename T>
constexpr Index kLanes = Eigen::internal::unpacket_traits<Packet<T>>::size;
}  // namespace detail

// One row of width n. y may alias a. beta may be null (LN0: no shift).
// Writes â to xhat (unless it is null) and returns r. y = γ â (+ β) is
// formed from the same â whether or not it is kept.
template <typename T>
inline T LayerNormForward(Index n, const T* a, const T* gamma, const T* beta, T eps, T* xhat,
                          T* y) {
  namespace ei = Eigen::internal;
  using P = detail::Packet<T>;
  constexpr Index L = detail::kLanes<T>;
  auto av = A(a, n);
  const T mean = av.sum() / T(n);
  const T var = (av - mean).square().sum() / T(n);
  const T r = T(1) / std::sqrt(var + eps);
  const P pm = ei::pset1<P>(mean), pr = ei::pset1<P>(r);
  Index k = 0;
  for (; k + L <= n; k += L) {
    const P x = ei::pmul(ei::psub(ei::ploadu<P>(a + k), pm), pr);
    if (xhat) ei::pstoreu(xhat + k, x);
    const P g = ei::ploadu<P>(gamma + k);
    ei::pstoreu(y + k, beta ? ei::pmadd(g, x, ei::ploadu<P>(beta + k)) : ei::pmul(g, x));
  }
  for (; k < n; ++k) {
    const T x = (a[k] - mean) * r;
    if (xhat) xhat[k] = x;
    y[k] = beta ? std::fma(gamma[k], x, beta[k]) : gamma[k] * x;
  }
  return r;
}

// da = r (ĝ - mean ĝ - â mean(ĝ â)); written, or added to when accumulate.
// dgamma += dy â; dbeta += dy (dbeta may be null). da may alias dy.
template <typename T>
inline void LayerNormBackward(Index n, const T* dy, const T* xhat, T r, const T* gamma, T* da,
                              bool accumulate, T* dgamma, T* dbeta) {
  namespace ei = Eigen::internal;
  using P = detail::Packet<T>;
  constexpr Index L = detail::kLanes<T>;
  // One pass: the parameter gradients and the sums of ĝ = γ dy and ĝ â.
  P s1 = ei::pset1<P>(T(0)), s2 = s1;
  Index k = 0;
  for (; k + L <= n; k += L) {
    const P d = ei::ploadu<P>(dy + k), x = ei::ploadu<P>(xhat + k);
    ei::pstoreu(dgamma + k, ei::pmadd(d, x, ei::ploadu<P>(dgamma + k)));
    if (dbeta) ei::pstoreu(dbeta + k, ei::padd(ei::ploadu<P>(dbeta + k), d));
    const P gd = ei::pmul(ei::ploadu<P>(gamma + k), d);
    s1 = ei::padd(s1, gd);
    s2 = ei::pmadd(gd, x, s2);
  }
  T t1 = ei::predux(s1), t2 = ei::predux(s2);
  for (Index j = k; j < n; ++j) {
    dgamma[j] = std::fma(dy[j], xhat[j], dgamma[j]);
    if (dbeta) dbeta[j] += dy[j];
    const T gd = gamma[j] * dy[j];
    t1 += gd;
    t2 = std::fma(gd, xhat[j], t2);
  }
  const T m1 = t1 / T(n), m2 = t2 / T(n);
  auto grad = A(gamma, n) * A(dy, n) - m1 - A(xhat, n) * m2;
  if (accumulate)
    A(da, n) += r * grad;
  else
    A(da, n) = r * grad;
}

// ------------------------------------------------------------- batch norm
// The rows are given as pointers (rows[i]): the sequences active at one step,
// in batch order, or every active position. Columns are independent, so the
// group kernels work on columns [col, col + n) of the rows (callers split the
// columns over threads); their per-column arrays (mean, var, r, gamma, the
// parameter gradients, scratch) are passed already offset to column col.

// Biased mean and variance of each column over the rows (two passes).
template <typename T>
inline void BatchStats(Index count, const T* const* rows, Index col, Index n, T* mean, T* var) {
  auto mu = A(mean, n);
  auto v = A(var, n);
  mu.setZero();
  for (Index i = 0; i < count; ++i) mu += A(rows[i] + col, n);
  mu /= T(count);
  v.setZero();
  for (Index i = 0; i < count; ++i) v += (A(rows[i] + col, n) - mu).square();
  v /= T(count);
}

// y = γ â + β, â = (a - μ) r, for one row; r per column. xhat (â) may be
// null (eval, no tape): y is then computed in the same order, so a result
// does not depend on whether â is kept. y may alias a. beta may be null.
template <typename T>
inline void BatchNormApply(Index n, const T* a, const T* mean, const T* r, const T* gamma,
                           const T* beta, T* xhat, T* y) {
  if (xhat) {
    A(xhat, n) = (A(a, n) - A(mean, n)) * A(r, n);
    if (beta)
      A(y, n) = A(gamma, n) * A(xhat, n) + A(beta, n);
    else
      A(y, n) = A(gamma, n) * A(xhat, n);
  } else if (beta) {
    A(y, n) = A(gamma, n) * ((A(a, n) - A(mean, n)) * A(r, n)) + A(beta, n);
  } else {
    A(y, n) = A(gamma, n) * ((A(a, n) - A(mean, n)) * A(r, n));
  }
}

// Training-mode backward over the rows of one normalization group:
//   da_i = r (ĝ_i - (1/n) Σ ĝ - â_i (1/n) Σ ĝ â),
// da written (or added to when accumulate). dgamma += Σ dy â, dbeta += Σ dy.
// Columns [col, col + n) as above; scratch: 2 * n values. da rows may alias
// dy rows.
template <typename T>
inline void BatchNormBackward(Index count, const T* const* dy, const T* const* xhat, Index col,
                              Index n, const T* r, const T* gamma, T* const* da, bool accumulate,
                              T* dgamma, T* dbeta, T* scratch) {
  auto s1 = A(scratch, n);      // Σ dy
  auto s2 = A(scratch + n, n);  // Σ dy â
  s1.setZero();
  s2.setZero();
  for (Index i = 0; i < count; ++i) {
    s1 += A(dy[i] + col, n);
    s2 += A(dy[i] + col, n) * A(xhat[i] + col, n);
  }
  A(dgamma, n) += s2;
  if (dbeta) A(dbeta, n) += s1;
  const T inv = T(1) / T(count);
  for (Index i = 0; i < count; ++i) {
    auto g = A(gamma, n);
    auto d = A(dy[i] + col, n);
    auto xh = A(xhat[i] + col, n);
    if (accumulate)
      A(da[i] + col, n) += A(r, n) * g * (d - s1 * inv - xh * s2 * inv);
    else
      A(da[i] + col, n) = A(r, n) * g * (d - s1 * inv - xh * s2 * inv);
  }
}

// Eval-mode (fixed affine) backward of one row: da = γ r dy (written or
// added), dgamma += dy â, dbeta += dy.
template <typename T>
inline void BatchNormAffineBackward(Index n, const T* dy, const T* xhat, const T* r, const T* gamma,
                                    T* da, bool accumulate, T* dgamma, T* dbeta) {
  A(dgamma, n) += A(dy, n) * A(xhat, n);
  if (dbeta) A(dbeta, n) += A(dy, n);
  if (accumulate)
    A(da, n) += A(gamma, n) * A(r, n) * A(dy, n);
  else
    A(da, n) = A(gamma, n) * A(r, n) * A(dy, n);
}

// r = (var + ε)^-½ per column.
template <typename T>
inline void InverseStd(Index n, const T* var, T eps, T* r) {
  A(r, n) = (A(var, n) + eps).rsqrt();
}

}  // namespace kernels
}  // namespace rnncore

#endif  // RNNCORE_KERNELS_NORM_H_
