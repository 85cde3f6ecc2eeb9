// Products of a few rows with a row-major weight matrix read straight from
// its PyTorch layout, as dot products: out (rows, N) = a (rows, K) W^T for
// W (N, K), float or IEEE float16 (Model::UseHalfWeights). This is for the
// products that use W once and have few rows (a streamed step, a short
// input projection): there, reading W is the cost, and packing it for the
// GEMM kernel (kernels/gemm.h) would read it, write a copy and read that.
// With float16 weights it reads half the bytes, and a matrix twice as large
// still fits in a core's L2. Products and sums are float32.
//
// Each output value is one dot product accumulated in a fixed order (vector
// lanes over k, then the lanes summed), whichever rows and columns are
// computed beside it: results do not depend on how the columns are split
// over threads, nor on the number of rows.
#ifndef RNNCORE_KERNELS_DOTS_H_
#define RNNCORE_KERNELS_DOTS_H_

#include <type_traits>

#include "portable.h"
#include "rnncore/common.h"

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace rnncore {
namespace kernels {

using Half = Eigen::half;

// The most rows a product takes as dot products (RowDots) rather than packed.
constexpr Index kDotRows = 8;

#if defined(__AVX512F__) && defined(__AVX512BW__)
namespace detail {
inline __m512 Load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 Load16(const Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline __m512 Load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 Load16(const Half* p, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}
// out[j] = the lane sum of a[j], j < 4, each summed in the order of
// _mm512_reduce_add_ps (lanes i + i+8, then i + i+4, i + i+2, i + i+1), so
// the sums equal it bit for bit; the four reductions share their shuffles.
inline void Sum4x16(const __m512 a[4], float* out) {
  // Lanes i + i+8: [a0 (8) | a1 (8)] and [a2 | a3].
  const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(a[0], a[1], 0x44),
                                   _mm512_shuffle_f32x4(a[0], a[1], 0xEE));
  const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(a[2], a[3], 0x44),
                                   _mm512_shuffle_f32x4(a[2], a[3], 0xEE));
  // Lanes i + i+4: 128-bit lane j holds a_j's 4 partial sums.
  __m512 v = _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, 0x88),
                           _mm512_shuffle_f32x4(s01, s23, 0xDD));
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4E));  // i + i+2
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0xB1));  // i + i+1
  const __m512 at0 = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0,
                                                             0, 0, 0, 0), v);
  _mm_storeu_ps(out, _mm512_castps512_ps128(at0));
}
}  // namespace detail

// out[b * ldo + n] = sum_k w[n * K + k] * a[b * lda + k] for b < kB rows
// and n in [n0, n1): kW weight rows at a time (separate streams through
// memory) against every row of a, kW * kB accumulators in registers.
template <int kB, typename W>
inline void RowDotsFixed(const W* w, Index K, const float* a, Index lda, float* out, Index ldo,
                         Index n0, Index n1) {
  constexpr int kW = kB <= 4 ? 4 : 2;
  const Index kv = K - K % 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (K % 16)) - 1u);
  auto block = [&](Index n, auto weight_rows) {
    constexpr int kR = decltype(weight_rows)::value;
    __m512 acc[kR][kB];
    for (int j = 0; j < kR; ++j)
      for (int b = 0; b < kB; ++b) acc[j][b] = _mm512_setzero_ps();
    const W* r = w + n * K;
    for (Index k = 0; k < kv; k += 16) {
      __m512 wv[kR];
      for (int j = 0; j < kR; ++j) wv[j] = detail::Load16(r + j * K + k);
      for (int b = 0; b < kB; ++b) {
        const __m512 av = _mm512_loadu_ps(a + b * lda + k);
        for (int j = 0; j < kR; ++j) acc[j][b] = _mm512_fmadd_ps(wv[j], av, acc[j][b]);
      }
    }
    if (tail) {
      __m512 wv[kR];
      for (int j = 0; j < kR; ++j) wv[j] = detail::Load16(r + j * K + kv, tail);
      for (int b = 0; b < kB; ++b) {
        const __m512 av = detail::Load16(a + b * lda + kv, tail);
        for (int j = 0; j < kR; ++j) acc[j][b] = _mm512_fmadd_ps(wv[j], av, acc[j][b]);
      }
    }
    if constexpr (kR == 4) {
      for (int b = 0; b < kB; ++b) {
        const __m512 rows[4] = {acc[0][b], acc[1][b], acc[2][b], acc[3][b]};
        detail::Sum4x16(rows, out + b * ldo + n);
      }
    } else {
      for (int j = 0; j < kR; ++j)
        for (int b = 0; b < kB; ++b) out[b * ldo + n + j] = _mm512_reduce_add_ps(acc[j][b]);
    }
  };
  Index n = n0;
  for (; n + kW <= n1; n += kW) block(n, std::integral_constant<int, kW>());
  for (; n < n1; ++n) block(n, std::integral_constant<int, 1>());
}
#elif defined(__AVX__) && defined(RNNCORE_HAVE_F16C) && defined(RNNCORE_HAVE_FMA)
namespace detail {
inline __m256 Load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 Load8(const Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
// out[j] = Sum8(a[j]), j < 4, bit for bit, the four sharing their shuffles.
inline void Sum4x8(const __m256 a[4], float* out) {
  // Lanes i + i+4: [a0 | a1] and [a2 | a3], 4 partial sums each.
  const __m256 s01 = _mm256_add_ps(_mm256_permute2f128_ps(a[0], a[1], 0x20),
                                   _mm256_permute2f128_ps(a[0], a[1], 0x31));
  const __m256 s23 = _mm256_add_ps(_mm256_permute2f128_ps(a[2], a[3], 0x20),
                                   _mm256_permute2f128_ps(a[2], a[3], 0x31));
  // Lanes i + i+2: [a0 (2), a2 (2) | a1 (2), a3 (2)]; then i + i+1.
  const __m256 v = _mm256_add_ps(_mm256_shuffle_ps(s01, s23, 0x44),
                                 _mm256_shuffle_ps(s01, s23, 0xEE));
  const __m256 w = _mm256_hadd_ps(v, v);  // [a0, a2, a0, a2 | a1, a3, a1, a3]
  const __m128 lo = _mm256_castps256_ps128(w), hi = _mm256_extractf128_ps(w, 1);
  _mm_storeu_ps(out, _mm_unpacklo_ps(lo, hi));  // a0, a1, a2, a3
}
}  // namespace detail

template <int kB, typename W>
inline void RowDotsFixed(const W* w, Index K, const float* a, Index lda, float* out, Index ldo,
                         Index n0, Index n1) {
  constexpr int kW = kB <= 4 ? 4 : 2;
  const Index kv = K - K % 8;
  auto block = [&](Index n, auto weight_rows) {
    constexpr int kR = decltype(weight_rows)::value;
    __m256 acc[kR][kB];
    for (int j = 0; j < kR; ++j)
      for (int b = 0; b < kB; ++b) acc[j][b] = _mm256_setzero_ps();
    const W* r = w + n * K;
    for (Index k = 0; k < kv; k += 8) {
      __m256 wv[kR];
      for (int j = 0; j < kR; ++j) wv[j] = detail::Load8(r + j * K + k);
      for (int b = 0; b < kB; ++b) {
        const __m256 av = _mm256_loadu_ps(a + b * lda + k);
        for (int j = 0; j < kR; ++j) acc[j][b] = _mm256_fmadd_ps(wv[j], av, acc[j][b]);
      }
    }
    for (int b = 0; b < kB; ++b) {
      float sums[kR];
      if constexpr (kR == 4) {
        const __m256 rows[4] = {acc[0][b], acc[1][b], acc[2][b], acc[3][b]};
        detail::Sum4x8(rows, sums);
      } else {
        for (int j = 0; j < kR; ++j) sums[j] = detail::Sum8(acc[j][b]);
      }
      for (int j = 0; j < kR; ++j) {
        float s = sums[j];
        for (Index k = kv; k < K; ++k) s += static_cast<float>(r[j * K + k]) * a[b * lda + k];
        out[b * ldo + n + j] = s;
      }
    }
  };
  Index n = n0;
  for (; n + kW <= n1; n += kW) block(n, std::integral_constant<int, kW>());
  for (; n < n1; ++n) block(n, std::integral_constant<int, 1>());
}
#else
// Portable: one value at a time (baseline x86-64, NEON).
template <int kB, typename W>
inline void RowDotsFixed(const W* w, Index K, const float* a, Index lda, float* out, Index ldo,
                         Index n0, Index n1) {
  for (Index b = 0; b < kB; ++b)
    for (Index n = n0; n < n1; ++n) {
      const W* r = w + n * K;
      float s = 0;
      for (Index k = 0; k < K; ++k) s += static_cast<float>(r[k]) * a[b * lda + k];
      out[b * ldo + n] = s;
    }
}
#endif

// RowDotsFixed for rows in [1, kDotRows].
template <typename W>
inline void RowDots(const W* w, Index K, const float* a, Index rows, Index lda, float* out,
                    Index ldo, Index n0, Index n1) {
  switch (rows) {
    case 1:
      return RowDotsFixed<1>(w, K, a, lda, out, ldo, n0, n1);
    case 2:
      return RowDotsFixed<2>(w, K, a, lda, out, ldo, n0, n1);
    case 3:
      return RowDotsFixed<3>(w, K, a, lda, out, ldo, n0, n1);
    case 4:
      return RowDotsFixed<4>(w, K, a, lda, out, ldo, n0, n1);
    case 5:
      return RowDotsFixed<5>(w, K, a, lda, out, ldo, n0, n1);
    case 6:
      return RowDotsFixed<6>(w, K, a, lda, out, ldo, n0, n1);
    case 7:
      return RowDotsFixed<7>(w, K, a, lda, out, ldo, n0, n1);
    default:
      return RowDotsFixed<kDotRows>(w, K, a, lda, out, ldo, n0, n1);
  }
}

}  // namespace kernels
}  // namespace rnncore

#endif  // RNNCORE_KERNELS_DOTS_H_
