// Normalization kernels (spec/normalization.md section 1): layer norm of one
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
// One row of width n. y may alias a. beta may be null (LN0: no shift).
// Writes â to xhat (unless it is null) and returns r.
template <typename T>
inline T LayerNormForward(Index n, const T* a, const T* gamma, const T* beta, T eps, T* xhat,
                          T* y) {
  auto av = A(a, n);
  const T mean = av.sum() / T(n);
  auto xh = A(xhat ? xhat : y, n);
  xh = av - mean;
  const T var = xh.square().sum() / T(n);
  const T r = T(1) / std::sqrt(var + eps);
  xh *= r;
  if (beta)
    A(y, n) = A(gamma, n) * xh + A(beta, n);
  else
    A(y, n) = A(gamma, n) * xh;
  return r;
}

// da = r (ĝ - mean ĝ - â mean(ĝ â)); written, or added to when accumulate.
// dgamma += dy â; dbeta += dy (dbeta may be null). da may alias dy.
template <typename T>
inline void LayerNormBackward(Index n, const T* dy, const T* xhat, T r, const T* gamma, T* da,
                              bool accumulate, T* dgamma, T* dbeta) {
  auto d = A(dy, n);
  auto xh = A(xhat, n);
  A(dgamma, n) += d * xh;
  if (dbeta) A(dbeta, n) += d;
  // ĝ computed on the fly: mean ĝ and mean(ĝ â).
  const T m1 = (A(gamma, n) * d).sum() / T(n);
  const T m2 = (A(gamma, n) * d * xh).sum() / T(n);
  if (accumulate)
    A(da, n) += r * (A(gamma, n) * d - m1 - xh * m2);
  else
    A(da, n) = r * (A(gamma, n) * d - m1 - xh * m2);
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
