// Compiler and OS portability for the core: the GCC/Clang builtins and
// pragmas it uses, with MSVC alternatives, and aligned allocation. On GCC and
// Clang every macro and helper expands to the builtin the code used before,
// so Linux builds compile to the same code. No Eigen, C++17.
#ifndef RNNCORE_PORTABLE_H_
#define RNNCORE_PORTABLE_H_

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <type_traits>

#if defined(_WIN32)
#include <malloc.h>  // _aligned_malloc, _aligned_free
#endif
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>  // _BitScanForward64, __prefetch (ARM64)
#if defined(_M_X64) || defined(_M_IX86)
#include <immintrin.h>  // _mm_prefetch
#endif
#endif

// GCC's extensions (builtins, vector extensions, pragmas): GCC and Clang,
// clang-cl included.
#if defined(__GNUC__) || defined(__clang__)
#define RNNCORE_GNU_EXTENSIONS 1
#endif

// FMA and F16C in this translation unit's instruction set. GCC and Clang
// define __FMA__ and __F16C__ (-mfma, -mf16c); MSVC's /arch:AVX2 and
// /arch:AVX512 imply both but define neither.
#if defined(__FMA__) || (defined(_MSC_VER) && !defined(__clang__) && defined(__AVX2__))
#define RNNCORE_HAVE_FMA 1
#endif
#if defined(__F16C__) || (defined(_MSC_VER) && !defined(__clang__) && defined(__AVX2__))
#define RNNCORE_HAVE_F16C 1
#endif

// A pointer qualifier: no other pointer used in the scope aliases this one.
#if defined(RNNCORE_GNU_EXTENSIONS)
#define RNNCORE_RESTRICT __restrict__
#elif defined(_MSC_VER)
#define RNNCORE_RESTRICT __restrict
#else
#define RNNCORE_RESTRICT
#endif

// Branch hints.
#if defined(RNNCORE_GNU_EXTENSIONS)
#define RNNCORE_LIKELY(x) __builtin_expect(!!(x), 1)
#define RNNCORE_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define RNNCORE_LIKELY(x) (!!(x))
#define RNNCORE_UNLIKELY(x) (!!(x))
#endif

// Prefetches the cache line at p for reading, into every cache level
// (__builtin_prefetch(p): prefetcht0 on x86-64).
#if defined(RNNCORE_GNU_EXTENSIONS)
#define RNNCORE_PREFETCH(p) __builtin_prefetch(p)
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#define RNNCORE_PREFETCH(p) _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0)
#elif defined(_MSC_VER) && defined(_M_ARM64)
#define RNNCORE_PREFETCH(p) __prefetch(reinterpret_cast<const void*>(p))
#else
#define RNNCORE_PREFETCH(p) static_cast<void>(p)
#endif

// Unrolls the loop that follows n times (GCC's "#pragma GCC unroll", which
// Clang also reads). Nothing where the compiler has no such pragma (MSVC).
#if defined(RNNCORE_GNU_EXTENSIONS)
#define RNNCORE_PRAGMA(x) _Pragma(#x)
#define RNNCORE_UNROLL(n) RNNCORE_PRAGMA(GCC unroll n)
#else
#define RNNCORE_UNROLL(n)
#endif

namespace rnncore {
namespace portable {

// *r = a * b; returns whether the product overflowed T (then *r holds it
// wrapped), as __builtin_mul_overflow.
template <typename T>
inline bool MulOverflow(T a, T b, T* r) {
  static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>, "integers only");
#if defined(RNNCORE_GNU_EXTENSIONS) && !defined(RNNCORE_TEST_PORTABLE_FALLBACKS)
  return __builtin_mul_overflow(a, b, r);
#else
  using U = std::make_unsigned_t<T>;
  *r = static_cast<T>(static_cast<U>(static_cast<U>(a) * static_cast<U>(b)));
  constexpr T kMax = std::numeric_limits<T>::max(), kMin = std::numeric_limits<T>::min();
  if (a == 0 || b == 0) return false;
  if constexpr (std::is_signed_v<T>) {
    if (a > 0) return b > 0 ? a > kMax / b : b < kMin / a;
    return b > 0 ? a < kMin / b : a < kMax / b;
  } else {
    return a > kMax / b;
  }
#endif
}

// The number of trailing zero bits of x != 0.
inline int CountTrailingZeros(std::uint64_t x) {
#if defined(RNNCORE_GNU_EXTENSIONS) && !defined(RNNCORE_TEST_PORTABLE_FALLBACKS)
  return __builtin_ctzll(x);
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_ARM64))
  unsigned long i;
  _BitScanForward64(&i, x);
  return static_cast<int>(i);
#else
  int n = 0;
  while (!(x & 1)) {
    x >>= 1;
    ++n;
  }
  return n;
#endif
}

// The number of one bits of x.
inline int PopCount(std::uint64_t x) {
#if defined(RNNCORE_GNU_EXTENSIONS) && !defined(RNNCORE_TEST_PORTABLE_FALLBACKS)
  return __builtin_popcountll(x);
#else
  // Not __popcnt64: baseline x86-64 CPUs need not have POPCNT.
  x = x - ((x >> 1) & 0x5555555555555555ull);
  x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
  x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
  return static_cast<int>((x * 0x0101010101010101ull) >> 56);
#endif
}

// bytes of memory aligned to alignment (a power of two, bytes a multiple of
// it), or null; freed by AlignedFree. std::aligned_alloc where the C library
// has it (not MSVC's, and libc++ on macOS only from 10.15 on).
inline void* AlignedAlloc(std::size_t alignment, std::size_t bytes) {
#if defined(_WIN32)
  return _aligned_malloc(bytes, alignment);
#elif defined(__APPLE__)
  void* p = nullptr;
  return posix_memalign(&p, alignment, bytes) == 0 ? p : nullptr;
#else
  return std::aligned_alloc(alignment, bytes);
#endif
}

inline void AlignedFree(void* p) {
#if defined(_WIN32)
  _aligned_free(p);
#else
  std::free(p);
#endif
}

}  // namespace portable
}  // namespace rnncore

#endif  // RNNCORE_PORTABLE_H_
