// A register-blocked matrix product for the recurrent step products and the
// weight gradients: a few rows (the batch) times a weight matrix that is
// used on every step.
//
// The weight matrix M (K, N) is packed once per sequence into column panels
// of PanelWidth columns, each panel K x PanelWidth values contiguous
// (zero-padded past N), so that a step streams it linearly. A panel is used
// kDepth rows at a time, a slice that stays in L1 while every row block of
// the batch uses it. The rows are packed too, k-major in blocks of kRows, so
// the kernel reads them as one stream (for a strided operand such as the
// transposed gradient of a weight-gradient product, this avoids one cache
// line per k, all in the same L1 set when the stride is a multiple of 4 KiB);
// that costs B x K copies against B x K x N multiply-adds. The kernel keeps
// kRows x 2 vector accumulators in registers and broadcasts one value of
// each row per k. Eigen's general product repacks the weights on every call,
// which at batch sizes of a recurrent step costs as much as the multiply.
//
// Written with GCC/Clang vector extensions, so one source compiles to
// 512-, 256- or 128-bit code in each ISA's module (for MSVC, which has none,
// a small vector type over the intrinsics of the same width: Vector below).
// The order in which each output value is accumulated is fixed by kDepth
// alone: results do not depend on how the columns or rows are split over
// threads.
#ifndef RNNCORE_KERNELS_GEMM_H_
#define RNNCORE_KERNELS_GEMM_H_

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "portable.h"
#include "rnncore/common.h"

#if defined(__AVX__)
#include <immintrin.h>
#elif defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>  // Vector without vector extensions (MSVC)
#endif

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
static_assert(kRows <= 12, "PackedProduct handles at most 11 leftover rows");

// In-register transposes of float blocks for the packers, which otherwise
// move one value per store. TransposeFloats(in, ldi, rows, out, ldo, lanes):
// for k < kTransposeLanes, out[k * ldo + r] = in[r * ldi + k] for r < rows
// and 0 for rows <= r < lanes (rows <= lanes <= kTransposeLanes).
#if defined(__AVX512F__)
constexpr int kTransposeLanes = 16;
inline void TransposeFloats(const float* in, Index ldi, int rows, float* out, Index ldo,
                            int lanes) {
  __m512 r[16], t[16], u[16];
  for (int i = 0; i < 16; ++i)
    r[i] = i < rows ? _mm512_loadu_ps(in + i * ldi) : _mm512_setzero_ps();
  // Per 128-bit lane L: t[4g] = rows 4g, 4g+1 at k = 4L, 4L+1 interleaved,
  // t[4g+1] the same at 4L+2, 4L+3 (t[4g+2], t[4g+3]: rows 4g+2, 4g+3).
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  // u[4g+j], lane L: rows 4g..4g+3 at k = 4L + j.
  for (int g = 0; g < 4; ++g) {
    const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 2]);
    const __m512d c = _mm512_castps_pd(t[4 * g + 1]), d = _mm512_castps_pd(t[4 * g + 3]);
    u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
    u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
    u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
  }
  // Output k = 4L + j gathers lane L of u[j], u[4+j], u[8+j], u[12+j].
  const __mmask16 keep = static_cast<__mmask16>((1u << lanes) - 1u);
  for (int j = 0; j < 4; ++j) {
    const __m512 v0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x44);  // lanes 0, 1 of each
    const __m512 v1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xEE);  // lanes 2, 3
    const __m512 w0 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x44);
    const __m512 w1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xEE);
    _mm512_mask_storeu_ps(out + j * ldo, keep, _mm512_shuffle_f32x4(v0, w0, 0x88));
    _mm512_mask_storeu_ps(out + (4 + j) * ldo, keep, _mm512_shuffle_f32x4(v0, w0, 0xDD));
    _mm512_mask_storeu_ps(out + (8 + j) * ldo, keep, _mm512_shuffle_f32x4(v1, w1, 0x88));
    _mm512_mask_storeu_ps(out + (12 + j) * ldo, keep, _mm512_shuffle_f32x4(v1, w1, 0xDD));
  }
}
#elif defined(__AVX__)
constexpr int kTransposeLanes = 8;
inline void TransposeFloats(const float* in, Index ldi, int rows, float* out, Index ldo,
                            int lanes) {
  __m256 r[8], t[8], s[8];
  for (int i = 0; i < 8; ++i) r[i] = i < rows ? _mm256_loadu_ps(in + i * ldi) : _mm256_setzero_ps();
  for (int i = 0; i < 8; i += 2) {  // per 128-bit lane L: k = 4L, 4L+1 | 4L+2, 4L+3
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int g = 0; g < 2; ++g) {  // s[4g+j], lane L: rows 4g..4g+3 at k = 4L + j
    s[4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    s[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    s[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    s[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  alignas(32) int mask[8];
  for (int i = 0; i < 8; ++i) mask[i] = i < lanes ? -1 : 0;
  const __m256i keep = _mm256_load_si256(reinterpret_cast<const __m256i*>(mask));
  for (int j = 0; j < 4; ++j) {
    _mm256_maskstore_ps(out + j * ldo, keep, _mm256_permute2f128_ps(s[j], s[4 + j], 0x20));
    _mm256_maskstore_ps(out + (4 + j) * ldo, keep, _mm256_permute2f128_ps(s[j], s[4 + j], 0x31));
  }
}
#else
constexpr int kTransposeLanes = 0;  // none: the packers move values one by one
inline void TransposeFloats(const float*, Index, int, float*, Index, int) {}
#endif

// Whether the packers transpose blocks of T in registers.
template <typename T>
constexpr bool kTransposes = std::is_same_v<T, float> && kTransposeLanes > 0;

#if defined(RNNCORE_GNU_EXTENSIONS) && !defined(RNNCORE_TEST_PORTABLE_FALLBACKS)
template <typename T>
struct Vector {
  typedef T type __attribute__((vector_size(kVectorBytes)));
};
#else
// Without GCC's vector extensions (MSVC): a vector of kVectorBytes with the
// operations PanelBlock uses: V{} (zeros), v += w, and v += s * w, a
// multiply-add (fused where the instruction set has FMA, as GCC contracts it
// in the AVX2 and AVX-512 builds).
namespace detail {
// One vector's register type and operations: Add, and MulAdd(s, m, acc) = acc + s m.
template <typename T>
struct Simd {};
#if defined(__AVX512F__)
template <>
struct Simd<float> {
  static constexpr bool kDefined = true;
  using Reg = __m512;
  static Reg Add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  static Reg MulAdd(float s, Reg m, Reg acc) { return _mm512_fmadd_ps(_mm512_set1_ps(s), m, acc); }
};
template <>
struct Simd<double> {
  static constexpr bool kDefined = true;
  using Reg = __m512d;
  static Reg Add(Reg a, Reg b) { return _mm512_add_pd(a, b); }
  static Reg MulAdd(double s, Reg m, Reg acc) { return _mm512_fmadd_pd(_mm512_set1_pd(s), m, acc); }
};
#elif defined(__AVX__)
template <>
struct Simd<float> {
  static constexpr bool kDefined = true;
  using Reg = __m256;
  static Reg Add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  static Reg MulAdd(float s, Reg m, Reg acc) {
#if defined(RNNCORE_HAVE_FMA)
    return _mm256_fmadd_ps(_mm256_set1_ps(s), m, acc);
#else
    return _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(s), m));
#endif
  }
};
template <>
struct Simd<double> {
  static constexpr bool kDefined = true;
  using Reg = __m256d;
  static Reg Add(Reg a, Reg b) { return _mm256_add_pd(a, b); }
  static Reg MulAdd(double s, Reg m, Reg acc) {
#if defined(RNNCORE_HAVE_FMA)
    return _mm256_fmadd_pd(_mm256_set1_pd(s), m, acc);
#else
    return _mm256_add_pd(acc, _mm256_mul_pd(_mm256_set1_pd(s), m));
#endif
  }
};
#elif defined(__SSE2__) || defined(_M_X64)
template <>
struct Simd<float> {
  static constexpr bool kDefined = true;
  using Reg = __m128;
  static Reg Add(Reg a, Reg b) { return _mm_add_ps(a, b); }
  static Reg MulAdd(float s, Reg m, Reg acc) {
    return _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(s), m));
  }
};
template <>
struct Simd<double> {
  static constexpr bool kDefined = true;
  using Reg = __m128d;
  static Reg Add(Reg a, Reg b) { return _mm_add_pd(a, b); }
  static Reg MulAdd(double s, Reg m, Reg acc) {
    return _mm_add_pd(acc, _mm_mul_pd(_mm_set1_pd(s), m));
  }
};
#endif

// Any other target (MSVC on ARM64): lanes in an array, left to the
// auto-vectorizer.
template <typename T, typename = void>
struct Lanes {
  struct Reg {
    T v[kVectorBytes / sizeof(T)];
  };
  static Reg Add(Reg a, Reg b) {
    for (std::size_t i = 0; i < kVectorBytes / sizeof(T); ++i) a.v[i] += b.v[i];
    return a;
  }
  static Reg MulAdd(T s, Reg m, Reg acc) {
    for (std::size_t i = 0; i < kVectorBytes / sizeof(T); ++i) acc.v[i] += s * m.v[i];
    return acc;
  }
};
template <typename T>
struct Lanes<T, std::void_t<decltype(Simd<T>::kDefined)>> : Simd<T> {};

template <typename T>
struct Scaled {  // s * m, added by SimdVector::operator+= as one multiply-add
  T s;
  typename Lanes<T>::Reg m;
};
template <typename T>
struct SimdVector {
  typename Lanes<T>::Reg v;  // SimdVector{} value-initializes it: zeros
  SimdVector& operator+=(const SimdVector& o) {
    v = Lanes<T>::Add(v, o.v);
    return *this;
  }
  SimdVector& operator+=(const Scaled<T>& p) {
    v = Lanes<T>::MulAdd(p.s, p.m, v);
    return *this;
  }
  friend Scaled<T> operator*(T s, const SimdVector& m) { return {s, m.v}; }
};
}  // namespace detail

template <typename T>
struct Vector {
  using type = detail::SimdVector<T>;
  static_assert(sizeof(type) == kVectorBytes, "a vector is kVectorBytes");
};
#endif

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
    if (sk == 1) {
      // A transpose: column j of the panel is row p * PW + j of a row-major
      // W. Done kTile values of k at a time, so that the tile written
      // (kTile x PW) and the lines read (one per column) stay in L1; column
      // by column over all of K, each of a panel's lines would be written PW
      // times from L2.
      constexpr Index kTile = 64 / static_cast<Index>(sizeof(T)), kAhead = 8;
      const T* in = src + p * PW * sn;
      // The hardware prefetchers do not follow PW streams at once.
      auto prefetch_ahead = [&](Index k0) {
        if (k0 + kAhead * kTile < K)
          for (Index j = 0; j < cols; ++j) RNNCORE_PREFETCH(in + j * sn + k0 + kAhead * kTile);
      };
      Index k0 = 0;
      if constexpr (kTransposes<T>) {
        // Whole blocks of kTransposeLanes values of k: the panel's two halves
        // transposed in registers (zeros past column cols).
        constexpr Index L = kTransposeLanes;
        static_assert(PW == 2 * L, "a panel is two transposed blocks wide");
        for (; k0 + L <= K; k0 += L) {
          prefetch_ahead(k0);
          for (Index h = 0; h < 2; ++h) {
            const int rows = static_cast<int>(std::clamp<Index>(cols - h * L, 0, L));
            TransposeFloats(in + h * L * sn + k0, sn, rows, out + k0 * PW + h * L, PW,
                            static_cast<int>(L));
          }
        }
      }
      for (; k0 < K; k0 += kTile) {
        const Index nk = std::min(kTile, K - k0);
        T* tile = out + k0 * PW;
        prefetch_ahead(k0);
        for (Index j = 0; j < cols; ++j)
          for (Index k = 0; k < nk; ++k) tile[k * PW + j] = in[j * sn + k0 + k];
        for (Index k = 0; k < nk; ++k)
          for (Index j = cols; j < PW; ++j) tile[k * PW + j] = T(0);
      }
      continue;
    }
    for (Index k = 0; k < K; ++k) {
      const T* in = src + k * sk + p * PW * sn;
      for (Index j = 0; j < cols; ++j) out[k * PW + j] = in[j * sn];
      for (Index j = cols; j < PW; ++j) out[k * PW + j] = T(0);
    }
  }
}

// Depth of one pass over a panel: kDepth rows of a panel (32 KiB for both
// float and double with 512-bit vectors) stay in L1 while every row block
// of a uses them. Each output value is accumulated over k in order, in
// blocks of kDepth added into c one after another.
constexpr Index kDepth = 256;

// Packs a (B, K), element (r, k) at a[r * ra + k * ka], for PackedProduct:
// blocks of kRows rows (the last one holds the B % kRows rows left over),
// each k-major, so that a block's values for one k are adjacent. dst holds
// B * K values.
template <typename T>
void PackRows(const T* a, Index B, Index K, Index ra, Index ka, T* dst) {
  for (Index b = 0; b < B; b += kRows) {
    const Index rows = std::min<Index>(kRows, B - b);
    T* out = dst + b * K;
    const T* in = a + b * ra;
    if constexpr (kTransposes<T>) {
      if (rows == kRows && ka == 1) {
        // Whole blocks of kTransposeLanes values of k transposed in registers.
        constexpr Index L = kTransposeLanes;
        Index k = 0;
        for (; k + L <= K; k += L)
          TransposeFloats(in + k, ra, kRows, out + k * kRows, kRows, kRows);
        for (; k < K; ++k)
          for (Index r = 0; r < kRows; ++r) out[k * kRows + r] = in[r * ra + k];
        continue;
      }
    }
    if (rows == kRows && ra == 1) {
      // A whole block of a transposed operand (a weight gradient's): each k
      // is kRows adjacent values, copied with a constant count.
      for (Index k = 0; k < K; ++k) std::memcpy(out + k * kRows, in + k * ka, sizeof(T) * kRows);
    } else if (ka == 1) {  // rows contiguous along k
      for (Index r = 0; r < rows; ++r)
        for (Index k = 0; k < K; ++k) out[k * rows + r] = in[r * ra + k];
    } else {
      for (Index k = 0; k < K; ++k)
        for (Index r = 0; r < rows; ++r) out[k * rows + r] = in[r * ra + k * ka];
    }
  }
}

// c (R, cols; ldc) = (or +=, with accumulate) a (R, K) times one packed panel
// (K, PW), with a packed k-major: a[k * R + r].
template <typename T, int R>
inline void PanelBlock(const T* a, Index K, const T* panel, T* c, Index ldc, Index cols,
                       bool accumulate) {
  using V = typename Vector<T>::type;
  constexpr int W = kVectorBytes / static_cast<int>(sizeof(T));
  // Every loop over r is unrolled, so that the accumulators stay in registers
  // from start to end (a loop left rolled makes the compiler keep them in an
  // array on the stack: zeroed with a memset, spilled and reloaded).
  V acc0[R], acc1[R];
  RNNCORE_UNROLL(16)
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = V{};
  for (Index k = 0; k < K; ++k) {
    V m0, m1;
    std::memcpy(&m0, panel + k * 2 * W, sizeof(V));
    std::memcpy(&m1, panel + k * 2 * W + W, sizeof(V));
    const T* ak = a + k * R;
  RNNCORE_UNROLL(16)
    for (int r = 0; r < R; ++r) {
      const T s = ak[r];
      acc0[r] += s * m0;
      acc1[r] += s * m1;
    }
  }
  RNNCORE_UNROLL(16)
  for (int r = 0; r < R; ++r) {
    T* cr = c + r * ldc;
    if (cols == 2 * W) {  // a whole panel: vector stores (c + acc is acc + c exactly)
      if (accumulate) {
        V c0, c1;
        std::memcpy(&c0, cr, sizeof(V));
        std::memcpy(&c1, cr + W, sizeof(V));
        acc0[r] += c0;
        acc1[r] += c1;
      }
      std::memcpy(cr, &acc0[r], sizeof(V));
      std::memcpy(cr + W, &acc1[r], sizeof(V));
      continue;
    }
    T row[2 * W];  // the last, partial panel of a matrix
    std::memcpy(row, &acc0[r], sizeof(V));
    std::memcpy(row + W, &acc1[r], sizeof(V));
    if (accumulate) {
      for (Index j = 0; j < cols; ++j) cr[j] += row[j];
    } else {
      std::memcpy(cr, row, sizeof(T) * static_cast<size_t>(cols));
    }
  }
}

// c (rows [0, B), columns of panels [p0, p1); ldc) = (or +=) a M, with a
// (B, K) packed by PackRows and M (K rows, N columns) packed by PackPanels
// with its panels `stride` rows apart (K, or more when only rows [k0, k0 + K)
// of a taller packed matrix are used: pass packed + k0 * PW). c points at
// column 0.
template <typename T>
void PackedProduct(const T* ap, Index B, Index K, const T* packed, Index stride, Index N, Index p0,
                   Index p1, T* c, Index ldc, bool accumulate) {
  constexpr Index PW = PanelWidth<T>();
  const Index full = B / kRows, rest = B - full * kRows;
  const T* ar = ap + full * kRows * K;  // the block of leftover rows
  for (Index p = p0; p < p1; ++p) {
    const Index cols = std::min(PW, N - p * PW);
    T* cp = c + p * PW;
    T* cr = cp + full * kRows * ldc;
    for (Index k0 = 0; k0 < K; k0 += kDepth) {
      const Index nk = std::min(kDepth, K - k0);
      const T* panel = packed + (p * stride + k0) * PW;
      const bool acc = accumulate || k0 > 0;
      for (Index i = 0; i < full; ++i)
        PanelBlock<T, kRows>(ap + (i * K + k0) * kRows, nk, panel, cp + i * kRows * ldc, ldc, cols,
                             acc);
      switch (rest) {
#define RNNCORE_REST(n)                                                                    \
  case n:                                                                                  \
    if constexpr (n < kRows) PanelBlock<T, n>(ar + k0 * n, nk, panel, cr, ldc, cols, acc); \
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
}

// PackedProduct of an unpacked a, element (r, k) at a[r * ra + k * ka],
// packed first into this thread's scratch (kept between calls: at most a
// chunk of rows times K values).
template <typename T>
void PanelProduct(const T* a, Index B, Index K, Index ra, Index ka, const T* packed, Index stride,
                  Index N, Index p0, Index p1, T* c, Index ldc, bool accumulate) {
  thread_local std::vector<T> scratch;
  const size_t need = static_cast<size_t>(B * K);
  if (scratch.size() < need) scratch.resize(need);
  PackRows(a, B, K, ra, ka, scratch.data());
  PackedProduct(scratch.data(), B, K, packed, stride, N, p0, p1, c, ldc, accumulate);
}

}  // namespace kernels
}  // namespace rnncore

#endif  // RNNCORE_KERNELS_GEMM_H_
