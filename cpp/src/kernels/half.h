// Matrix-vector products with the weight matrix stored in IEEE float16
// (Model::UseHalfWeights). A batch-1 step reads every weight once per step,
// so its time is the time to stream the matrix from cache or memory; at two
// bytes per weight that is half the bytes of float32, and a matrix twice as
// large still fits in a core's L2. Products and sums are float32.
//
// Each output value is one dot product accumulated in a fixed order (vector
// lanes over k, then the lanes summed), whichever rows are computed beside it:
// results do not depend on how the rows are split over threads.
#ifndef RNNCORE_KERNELS_HALF_H_
#define RNNCORE_KERNELS_HALF_H_

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "rnncore/common.h"

namespace rnncore {
namespace kernels {

using Half = Eigen::half;

// out[n] = sum_k float(w[n * K + k]) * a[k] for n in [n0, n1): rows of a
// row-major (N, K) float16 matrix times the vector a (K).
#if defined(__AVX512F__) && defined(__AVX512BW__)
// kHalfRows rows at a time, each a separate stream through memory.
inline void HalfRowDots(const Half* w, Index K, const float* a, float* out, Index n0, Index n1) {
  constexpr int kHalfRows = 4;
  const Index kv = K - K % 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (K % 16)) - 1u);
  auto load = [&](const Half* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  };
  auto load_tail = [&](const Half* p) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tail, p));
  };
  auto rows = [&](Index n, auto count) {
    constexpr int kCount = decltype(count)::value;
    __m512 acc[kCount];
    for (int j = 0; j < kCount; ++j) acc[j] = _mm512_setzero_ps();
    const Half* r = w + n * K;
    for (Index k = 0; k < kv; k += 16) {
      const __m512 av = _mm512_loadu_ps(a + k);
      for (int j = 0; j < kCount; ++j) acc[j] = _mm512_fmadd_ps(load(r + j * K + k), av, acc[j]);
    }
    if (tail) {
      const __m512 av = _mm512_maskz_loadu_ps(tail, a + kv);
      for (int j = 0; j < kCount; ++j)
        acc[j] = _mm512_fmadd_ps(load_tail(r + j * K + kv), av, acc[j]);
    }
    for (int j = 0; j < kCount; ++j) out[n + j] = _mm512_reduce_add_ps(acc[j]);
  };
  Index n = n0;
  for (; n + kHalfRows <= n1; n += kHalfRows) rows(n, std::integral_constant<int, kHalfRows>());
  for (; n < n1; ++n) rows(n, std::integral_constant<int, 1>());
}
#elif defined(__AVX__) && defined(__F16C__) && defined(__FMA__)
inline void HalfRowDots(const Half* w, Index K, const float* a, float* out, Index n0, Index n1) {
  constexpr int kHalfRows = 4;
  const Index kv = K - K % 8;
  auto load = [&](const Half* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  };
  auto sum = [](__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  };
  auto rows = [&](Index n, auto count) {
    constexpr int kCount = decltype(count)::value;
    __m256 acc[kCount];
    for (int j = 0; j < kCount; ++j) acc[j] = _mm256_setzero_ps();
    const Half* r = w + n * K;
    for (Index k = 0; k < kv; k += 8) {
      const __m256 av = _mm256_loadu_ps(a + k);
      for (int j = 0; j < kCount; ++j) acc[j] = _mm256_fmadd_ps(load(r + j * K + k), av, acc[j]);
    }
    for (int j = 0; j < kCount; ++j) {
      float s = sum(acc[j]);
      for (Index k = kv; k < K; ++k) s += static_cast<float>(r[j * K + k]) * a[k];
      out[n + j] = s;
    }
  };
  Index n = n0;
  for (; n + kHalfRows <= n1; n += kHalfRows) rows(n, std::integral_constant<int, kHalfRows>());
  for (; n < n1; ++n) rows(n, std::integral_constant<int, 1>());
}
#else
// Portable: Eigen's conversion, one value at a time (baseline x86-64, NEON).
inline void HalfRowDots(const Half* w, Index K, const float* a, float* out, Index n0, Index n1) {
  for (Index n = n0; n < n1; ++n) {
    const Half* r = w + n * K;
    float s = 0;
    for (Index k = 0; k < K; ++k) s += static_cast<float>(r[k]) * a[k];
    out[n] = s;
  }
}
#endif

}  // namespace kernels
}  // namespace rnncore

#endif  // RNNCORE_KERNELS_HALF_H_
