// librnncore.so, the front: the C API's exported functions, each forwarding
// to the backend chosen for this CPU on first use. The backends are the
// whole library (core, kernels, Eigen, c_api.cc) compiled once per
// instruction set into lib/rnncore/librnncore_<isa>.so.<version> beside this
// library, each loaded RTLD_LOCAL with its table as its only exported
// symbol, so code compiled with different -m flags never meets (no ODR
// mixing), as Python's per-ISA extension modules. This file includes no
// Eigen and no core header.
//
// The choice: RNNCORE_ISA (baseline, avx2, avx512) when set (refused with an
// error when not built or not runnable on this CPU), else the best variant
// built that the CPU runs (x86-64: AVX-512 F/BW/DQ/VL, else AVX2 + FMA + F16C
// + BMI2, else baseline). It is made once per process.
#include <dlfcn.h>

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "backend.h"
#include "rnncore/c_api.h"

#ifndef RNNCORE_VERSION
#define RNNCORE_VERSION "0.0.0"
#endif
// The variants built, best first, separated by spaces.
#ifndef RNNCORE_ISAS
#define RNNCORE_ISAS "baseline"
#endif

namespace {

std::atomic<const rnncore_backend_v1*> g_backend{nullptr};
std::once_flag g_once;
char g_load_error[2048] = "";  // why no backend could be loaded (set once)
int g_load_code = RNNCORE_OK;

thread_local char t_error[2048] = "";  // this front's own errors (no backend)
thread_local int t_code = RNNCORE_OK;

bool CpuRuns(const std::string& isa) {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (isa == "baseline") return true;
  if (isa == "avx2")
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2");
  if (isa == "avx512")
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return false;
#else
  return isa == "baseline";
#endif
}

std::string Built() { return RNNCORE_ISAS; }

bool IsBuilt(const std::string& isa) {
  const std::string list = " " + Built() + " ";
  return !isa.empty() && list.find(" " + isa + " ") != std::string::npos;
}

void LoadFailed(int code, const std::string& message) {
  g_load_code = code;
  std::snprintf(g_load_error, sizeof g_load_error, "%s", message.c_str());
}

// The directory of this library (where lib/rnncore/ is).
std::string OwnDirectory() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&rnncore_version), &info) == 0 || !info.dli_fname)
    return ".";
  const std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

void LoadBackend() {
  std::string isa;
  if (const char* env = std::getenv("RNNCORE_ISA")) {
    for (const char* p = env; *p; ++p)
      if (!std::isspace(static_cast<unsigned char>(*p)))
        isa += static_cast<char>(std::tolower(static_cast<unsigned char>(*p)));
  }
  if (!isa.empty()) {
    if (!IsBuilt(isa))
      return LoadFailed(RNNCORE_ERROR_ARGUMENT, "RNNCORE_ISA='" + isa +
                                                    "': this build of rnncore has " + Built());
    if (!CpuRuns(isa))
      return LoadFailed(RNNCORE_ERROR_ARGUMENT, "RNNCORE_ISA='" + isa + "': this CPU cannot run it");
  } else {
    for (const char* candidate : {"avx512", "avx2", "baseline"}) {
      if (IsBuilt(candidate) && CpuRuns(candidate)) {
        isa = candidate;
        break;
      }
    }
    if (isa.empty()) return LoadFailed(RNNCORE_ERROR_INTERNAL, "no rnncore backend runs on this CPU");
  }
  const std::string path =
      OwnDirectory() + "/rnncore/librnncore_" + isa + ".so." + RNNCORE_VERSION;
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* why = dlerror();
    return LoadFailed(RNNCORE_ERROR_FILE, "cannot load the rnncore backend " + path + ": " +
                                              (why ? why : "unknown error"));
  }
  const auto get = reinterpret_cast<rnncore_backend_v1_fn>(dlsym(handle, RNNCORE_BACKEND_SYMBOL));
  const rnncore_backend_v1* table = get ? get() : nullptr;
  if (!table || table->size != sizeof(rnncore_backend_v1) ||
      std::strcmp(table->version, RNNCORE_VERSION) != 0)
    return LoadFailed(RNNCORE_ERROR_FILE, "the rnncore backend " + path +
                                              " does not match this library (version " +
                                              RNNCORE_VERSION + ")");
  g_backend.store(table, std::memory_order_release);  // never unloaded: models live in it
}

// The backend, or null with this thread's error set.
const rnncore_backend_v1* Backend() {
  std::call_once(g_once, LoadBackend);
  const rnncore_backend_v1* b = g_backend.load(std::memory_order_acquire);
  if (!b) {
    t_code = g_load_code;
    std::snprintf(t_error, sizeof t_error, "%s", g_load_error);
  }
  return b;
}

}  // namespace

extern "C" {

const char* rnncore_version(void) { return RNNCORE_VERSION; }

const char* rnncore_isa(void) {
  const rnncore_backend_v1* b = Backend();
  return b ? b->isa : "";
}

const char* rnncore_last_error(void) {
  // Errors before the backend was loaded, or of the loading, are the front's.
  const rnncore_backend_v1* b = g_backend.load(std::memory_order_acquire);
  if (b && t_code == RNNCORE_OK) return b->last_error();
  return t_error;
}

int rnncore_last_error_code(void) {
  const rnncore_backend_v1* b = g_backend.load(std::memory_order_acquire);
  if (b && t_code == RNNCORE_OK) return b->last_error_code();
  return t_code;
}

rnncore_model* rnncore_model_load(const char* path, const char* name) {
  const rnncore_backend_v1* b = Backend();
  return b ? b->model_load(path, name) : nullptr;
}

void rnncore_model_free(rnncore_model* model) {
  const rnncore_backend_v1* b = g_backend.load(std::memory_order_acquire);
  if (model && b) b->model_free(model);
}

int64_t rnncore_model_input_size(const rnncore_model* model) {
  const rnncore_backend_v1* b = Backend();
  return b ? b->model_input_size(model) : -1;
}

int64_t rnncore_model_output_size(const rnncore_model* model) {
  const rnncore_backend_v1* b = Backend();
  return b ? b->model_output_size(model) : -1;
}

int64_t rnncore_model_state_size(const rnncore_model* model, int which) {
  const rnncore_backend_v1* b = Backend();
  return b ? b->model_state_size(model, which) : -1;
}

int rnncore_model_forward(const rnncore_model* model, const float* x, int64_t T, int64_t B,
                          const int64_t* lengths, float* out, float* h_n, float* c_n) {
  const rnncore_backend_v1* b = Backend();
  return b ? b->model_forward_from(model, x, T, B, lengths, nullptr, nullptr, out, h_n, c_n)
           : t_code;
}

int rnncore_model_forward_from(const rnncore_model* model, const float* x, int64_t T, int64_t B,
                               const int64_t* lengths, const float* h_0, const float* c_0,
                               float* out, float* h_n, float* c_n) {
  const rnncore_backend_v1* b = Backend();
  return b ? b->model_forward_from(model, x, T, B, lengths, h_0, c_0, out, h_n, c_n) : t_code;
}

rnncore_stream* rnncore_stream_new(const rnncore_model* model, int64_t batch) {
  const rnncore_backend_v1* b = Backend();
  return b ? b->stream_new(model, batch) : nullptr;
}

int rnncore_stream_step(rnncore_stream* stream, const float* x, float* y) {
  const rnncore_backend_v1* b = Backend();
  return b ? b->stream_step_many(stream, x, 1, y) : t_code;
}

int rnncore_stream_step_many(rnncore_stream* stream, const float* x, int64_t T, float* y) {
  const rnncore_backend_v1* b = Backend();
  return b ? b->stream_step_many(stream, x, T, y) : t_code;
}

void rnncore_stream_reset(rnncore_stream* stream) {
  const rnncore_backend_v1* b = g_backend.load(std::memory_order_acquire);
  if (stream && b) b->stream_reset(stream);
}

int rnncore_stream_reset_row(rnncore_stream* stream, int64_t row) {
  const rnncore_backend_v1* b = Backend();
  return b ? b->stream_reset_row(stream, row) : t_code;
}

int64_t rnncore_stream_batch(const rnncore_stream* stream) {
  const rnncore_backend_v1* b = Backend();
  return b ? b->stream_batch(stream) : -1;
}

void rnncore_stream_free(rnncore_stream* stream) {
  const rnncore_backend_v1* b = g_backend.load(std::memory_order_acquire);
  if (stream && b) b->stream_free(stream);
}

int rnncore_set_num_threads(int n) {
  const rnncore_backend_v1* b = Backend();
  return b ? b->set_num_threads(n) : t_code;
}

int rnncore_get_num_threads(void) {
  const rnncore_backend_v1* b = Backend();
  return b ? b->get_num_threads() : 1;
}

}  // extern "C"
