// Which instruction-set variants of rnncore this CPU runs, and the choice of
// one (RNNCORE_ISA, else the best built variant that runs). Shared by the
// Python extension module (bindings/module.cc: cpu_supports) and the C
// library's front (capi/dispatch.cc), so it includes no Eigen and no core
// header: header-only, C++17, GCC, Clang and MSVC.
//
// The variants (the flags they are compiled with):
//   baseline  any CPU
//   avx2      AVX2, FMA, F16C and BMI2 (-mavx2 -mfma -mf16c -mbmi2)
//   avx512    AVX-512 F, BW, DQ and VL (and everything avx2 needs)
// A variant runs when CPUID reports its features and the OS saves the
// registers they use (XCR0: XMM and YMM state for AVX, and the opmask and
// both ZMM halves for AVX-512), which is what GCC's __builtin_cpu_supports
// checks (libgcc's cpuinfo): AVX2, FMA and F16C need the YMM state, the
// AVX-512 features the ZMM state, BMI2 none. macOS enables the AVX-512 state
// lazily, on a thread's first AVX-512 instruction, so its XCR0 does not show
// it beforehand: there, as compiler-rt's __builtin_cpu_supports does, the
// AVX-512 state is taken as available. Not x86-64 (aarch64, where NEON is the
// baseline): only baseline runs.
#ifndef RNNCORE_CPU_FEATURES_H_
#define RNNCORE_CPU_FEATURES_H_

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <string>

#if (defined(__x86_64__) || defined(_M_X64)) && !defined(_M_ARM64EC)
#define RNNCORE_CPU_X86_64 1
#if defined(__GNUC__) || defined(__clang__)
#include <cpuid.h>
#elif defined(_MSC_VER)
#include <immintrin.h>  // _xgetbv
#include <intrin.h>     // __cpuidex
#else
#error "cpu_features.h: no CPUID for this compiler"
#endif
#endif

namespace rnncore {
namespace cpu {

// What the variants need, as this CPU and OS provide it.
struct Features {
  bool avx2 = false;    // AVX2 + FMA + F16C + BMI2, YMM state saved by the OS
  bool avx512 = false;  // AVX-512 F + BW + DQ + VL, opmask and ZMM state saved
};

namespace detail {

#if defined(RNNCORE_CPU_X86_64)
// CPUID leaf (sub-leaf): eax, ebx, ecx, edx.
inline void Cpuid(unsigned leaf, unsigned subleaf, unsigned r[4]) {
#if defined(__GNUC__) || defined(__clang__)
  __cpuid_count(leaf, subleaf, r[0], r[1], r[2], r[3]);
#else
  int v[4];
  __cpuidex(v, static_cast<int>(leaf), static_cast<int>(subleaf));
  for (int i = 0; i < 4; ++i) r[i] = static_cast<unsigned>(v[i]);
#endif
}

// XCR0, the state components the OS saves (only when CPUID.1:ECX.OSXSAVE).
inline std::uint64_t Xcr0() {
#if defined(__GNUC__) || defined(__clang__)
  // The instruction's bytes: xgetbv needs no -mxsave, and old assemblers
  // lack the mnemonic (as libgcc's cpuinfo).
  unsigned lo, hi;
  __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<std::uint64_t>(hi) << 32) | lo;
#else
  return _xgetbv(0);
#endif
}

inline Features DetectX86() {
  Features f;
  unsigned r[4];
  Cpuid(0, 0, r);
  const unsigned max_leaf = r[0];
  if (max_leaf < 1) return f;
  Cpuid(1, 0, r);
  const unsigned ecx1 = r[2];
  constexpr unsigned kFma = 1u << 12, kOsxsave = 1u << 27, kF16c = 1u << 29;
  // XCR0 bits: SSE (XMM) 1, AVX (YMM) 2, opmask 5, ZMM_Hi256 6, Hi16_ZMM 7.
  constexpr std::uint64_t kAvxState = 0x6, kAvx512State = 0xE6;
  bool avx_state = false, avx512_state = false;
  if (ecx1 & kOsxsave) {
    const std::uint64_t xcr0 = Xcr0();
    if ((xcr0 & kAvxState) == kAvxState) {
      avx_state = true;
#if defined(__APPLE__)
      avx512_state = true;  // enabled on first use (see above)
#else
      avx512_state = (xcr0 & kAvx512State) == kAvx512State;
#endif
    }
  }
  if (max_leaf < 7) return f;
  Cpuid(7, 0, r);
  const unsigned ebx7 = r[1];
  constexpr unsigned kAvx2 = 1u << 5, kBmi2 = 1u << 8, kAvx512f = 1u << 16, kAvx512dq = 1u << 17,
                     kAvx512bw = 1u << 30, kAvx512vl = 1u << 31;
  f.avx2 = avx_state && (ebx7 & kAvx2) && (ecx1 & kFma) && (ecx1 & kF16c) && (ebx7 & kBmi2);
  constexpr unsigned kAvx512 = kAvx512f | kAvx512dq | kAvx512bw | kAvx512vl;
  f.avx512 = avx512_state && (ebx7 & kAvx512) == kAvx512;
  return f;
}
#endif

}  // namespace detail

// This CPU's features (detected once).
inline const Features& Detected() {
#if defined(RNNCORE_CPU_X86_64)
  static const Features features = detail::DetectX86();
#else
  static const Features features;
#endif
  return features;
}

// Whether this CPU runs the variant isa ("baseline", "avx2", "avx512"); false
// for any other name.
inline bool Runs(const std::string& isa) {
  if (isa == "baseline") return true;
  if (isa == "avx2") return Detected().avx2;
  if (isa == "avx512") return Detected().avx512;
  return false;
}

// RNNCORE_ISA, lowercased and without whitespace; empty when unset or blank.
inline std::string IsaOverride() {
  std::string isa;
  if (const char* env = std::getenv("RNNCORE_ISA")) {
    for (const char* p = env; *p; ++p)
      if (!std::isspace(static_cast<unsigned char>(*p)))
        isa += static_cast<char>(std::tolower(static_cast<unsigned char>(*p)));
  }
  return isa;
}

// Whether isa is one of built, the variants built separated by spaces.
inline bool IsBuilt(const std::string& isa, const std::string& built) {
  const std::string list = " " + built + " ";
  return !isa.empty() && list.find(" " + isa + " ") != std::string::npos;
}

// The variant to load, of those built (separated by spaces): RNNCORE_ISA's
// when set, else the best one this CPU runs (avx512, avx2, baseline).
struct Choice {
  enum Status { kOk, kBadOverride, kNone };
  Status status = kOk;
  std::string isa;    // the variant (kOk)
  std::string error;  // why there is none: RNNCORE_ISA names a variant not
                      // built or that this CPU cannot run (kBadOverride), or
                      // no built variant runs (kNone)
};

inline Choice ChooseIsa(const std::string& built) {
  Choice c;
  const std::string forced = IsaOverride();
  if (!forced.empty()) {
    if (!IsBuilt(forced, built)) {
      c.status = Choice::kBadOverride;
      c.error = "RNNCORE_ISA='" + forced + "': this build of rnncore has " + built;
    } else if (!Runs(forced)) {
      c.status = Choice::kBadOverride;
      c.error = "RNNCORE_ISA='" + forced + "': this CPU cannot run it";
    } else {
      c.isa = forced;
    }
    return c;
  }
  for (const char* candidate : {"avx512", "avx2", "baseline"}) {
    if (IsBuilt(candidate, built) && Runs(candidate)) {
      c.isa = candidate;
      return c;
    }
  }
  c.status = Choice::kNone;
  c.error = "no rnncore backend runs on this CPU";
  return c;
}

}  // namespace cpu
}  // namespace rnncore

#endif  // RNNCORE_CPU_FEATURES_H_
