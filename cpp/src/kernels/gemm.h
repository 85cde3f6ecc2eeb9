// A register-blocked matrix product for the recurrent step products: a few
// rows (the batch) times a weight matrix that is used on every step.
//
// The weight matrix M (K, N) is packed once per sequence into column panels
// of kPanel columns, each panel K x kPanel values contiguous (zero-padded past
// N), so that a step streams it linearly and a panel stays in L1 while every
// row block of the batch uses it. The kernel keeps kRows x 2 vector
// accumulators in registers and broadcasts one value of each row per k.
// Eigen's general product repacks the weights on every call, which at batch
// sizes of a recurrent step costs as much as the multiply itself.
//
// Written with GCC/Clang vector extensions, so one source compiles to
// 512-, 256- or 128-bit code in each ISA's module. Each output value is one
// accumulation over k in order: results do not depend on how the columns are
// split over threads.
#ifndef RNNCORE_KERNELS_GEMM_H_
#define RNNCORE_KERNELS_GEMM_H_

#include <algorithm>
#include <cstring>

#include "rnncore/common.h"

namespace rnncore {
namespace kernels {

#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
constexpr int kRows = 12;  // 24 accumulators of the 32 vector registers
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
constexpr int kRows = 6;  // 12 of 16
#else
constexpr int kVectorBytes = 16;
constexpr int kRows = 4;  // 8 of 16
#endif
static_assert(kRows <= 12, "PanelProduct handles at most 11 leftover rows");

template <typename T>
struct Vector {
  typedef T type __attribute__((vector_size(kVectorBytes)));
};

// Columns per packed panel: two vectors.
template <typename T>
constexpr Index PanelWidth() {
  return 2 * kVectorBytes / static_cast<Index>(sizeof(T));
}

// Panels that hold n columns.
template <typename T>
constexpr Index NumPanels(Index n) {
  return (n + PanelWidth<T>() - 1) / PanelWidth<T>();
}

// Packs M (K, N), element (k, n) at src[k * sk + n * sn], into panels:
// dst[(p * K + k) * PW + j] = M(k, p * PW + j), zero for columns >= N.
// dst holds NumPanels(N) * K * PW values; this call fills panels [p0, p1)
// (callers split the panels over threads).
template <typename T>
void PackPanels(const T* src, Index K, Index N, Index sk, Index sn, T* dst, Index p0, Index p1) {
  constexpr Index PW = PanelWidth<T>();
  for (Index p = p0; p < p1; ++p) {
    const Index cols = std::min(PW, N - p * PW);
    T* out = dst + p * K * PW;
    if (sk == 1) {  // read along k, the contiguous direction; the panel is in L1
      for (Index j = 0; j < cols; ++j) {
        const T* in = src + (p * PW + j) * sn;
        for (Index k = 0; k < K; ++k) out[k * PW + j] = in[k];
      }
      for (Index k = 0; k < K; ++k)
        for (Index j = cols; j < PW; ++j) out[k * PW + j] = T(0);
      continue;
    }
    for (Index k = 0; k < K; ++k) {
      const T* in = src + k * sk + p * PW * sn;
      for (Index j = 0; j < cols; ++j) out[k * PW + j] = in[j * sn];
      for (Index j = cols; j < PW; ++j) out[k * PW + j] = T(0);
    }
  }
}

// c (R, cols; ldc) = (or +=, with accumulate) a (R, K) times one packed panel
// (K, PW), where a's element (r, k) is a[r * ra + k * ka].
template <typename T, int R>
inline void PanelBlock(const T* a, Index ra, Index ka, Index K, const T* panel, T* c, Index ldc,
                       Index cols, bool accumulate) {
  using V = typename Vector<T>::type;
  constexpr int W = kVectorBytes / static_cast<int>(sizeof(T));
  V acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = V{};
  for (Index k = 0; k < K; ++k) {
    V m0, m1;
    std::memcpy(&m0, panel + k * 2 * W, sizeof(V));
    std::memcpy(&m1, panel + k * 2 * W + W, sizeof(V));
    const T* ak = a + k * ka;
    for (int r = 0; r < R; ++r) {
      const T s = ak[r * ra];
      acc0[r] += s * m0;
      acc1[r] += s * m1;
    }
  }
  for (int r = 0; r < R; ++r) {
    T row[2 * W];
    std::memcpy(row, &acc0[r], sizeof(V));
    std::memcpy(row + W, &acc1[r], sizeof(V));
    T* cr = c + r * ldc;
    if (accumulate) {
      for (Index j = 0; j < cols; ++j) cr[j] += row[j];
    } else {
      std::memcpy(cr, row, sizeof(T) * static_cast<size_t>(cols));
    }
  }
}

// The rows left over after the blocks of kRows: R < kRows (R == 0: none).
template <typename T, int R>
inline void PanelRest(const T* a, Index ra, Index ka, Index K, const T* panel, T* c, Index ldc,
                      Index cols, bool accumulate) {
  if constexpr (R > 0 && R < kRows) PanelBlock<T, R>(a, ra, ka, K, panel, c, ldc, cols, accumulate);
}

// c (rows [0, B), columns of panels [p0, p1); ldc) = (or +=) a M, with a's
// element (r, k) at a[r * ra + k * ka] and M (K rows, N columns) packed by
// PackPanels with its panels `stride` rows apart (K, or more when only rows
// [k0, k0 + K) of a taller packed matrix are used: pass packed + k0 * PW).
// c points at column 0.
template <typename T>
void PanelProduct(const T* a, Index B, Index K, Index ra, Index ka, const T* packed, Index stride,
                  Index N, Index p0, Index p1, T* c, Index ldc, bool accumulate) {
  constexpr Index PW = PanelWidth<T>();
  for (Index p = p0; p < p1; ++p) {
    const Index cols = std::min(PW, N - p * PW);
    const T* panel = packed + p * stride * PW;
    T* cp = c + p * PW;
    Index b = 0;
    for (; b + kRows <= B; b += kRows)
      PanelBlock<T, kRows>(a + b * ra, ra, ka, K, panel, cp + b * ldc, ldc, cols, accumulate);
    const T* ab = a + b * ra;
    T* cb = cp + b * ldc;
    switch (B - b) {
#define RNNCORE_REST(n)                                               \
  case n:                                                             \
    PanelRest<T, n>(ab, ra, ka, K, panel, cb, ldc, cols, accumulate); \
    break;
      RNNCORE_REST(1)
      RNNCORE_REST(2)
      RNNCORE_REST(3)
      RNNCORE_REST(4)
      RNNCORE_REST(5)
      RNNCORE_REST(6)
      RNNCORE_REST(7)
      RNNCORE_REST(8)
      RNNCORE_REST(9)
      RNNCORE_REST(10)
      RNNCORE_REST(11)
#undef RNNCORE_REST
      default:
        break;
    }
  }
}

}  // namespace kernels
}  // namespace rnncore

#endif  // RNNCORE_KERNELS_GEMM_H_
