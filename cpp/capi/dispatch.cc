// librnncore.so, the front: the C API's exported functions, each forwarding
// to the backend chosen for this CPU on first use. The backends are the
// whole library (core, kernels, Eigen, c_api.cc) compiled once per
// instruction set into lib/rnncore/librnncore_<isa>.so.<version> beside this
// library, each loaded RTLD_LOCAL with its table as its only exported
// symbol, so code compiled with different -m flags never meets (no ODR
// mixing), as Python's per-ISA extension modules. This file includes no
// Eigen and no core header. On Windows the front is rnncore.dll and the
// backends rnncore\rnncore_<isa>.dll beside it (RNNCORE_BACKEND_PREFIX and
// RNNCORE_BACKEND_SUFFIX, below, name the files; the build may set them).
//
// The choice (cpu_features.h): RNNCORE_ISA (baseline, avx2, avx512) when set
// (refused with an error when not built or not runnable on this CPU), else
// the best variant built that the CPU runs (x86-64: AVX-512 F/BW/DQ/VL, else
// AVX2 + FMA + F16C + BMI2, else baseline). It is made once per process.
#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
#else
#include <dlfcn.h>
#endif

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "../src/cpu_features.h"  // relative: Eigen-free, and no src/ include path here
#include "backend.h"
#include "rnncore/c_api.h"

#ifndef RNNCORE_VERSION
#define RNNCORE_VERSION "0.0.0"
#endif
// The variants built, best first, separated by spaces.
#ifndef RNNCORE_ISAS
#define RNNCORE_ISAS "baseline"
#endif
// A backend's file: <this library's directory>/rnncore/PREFIX<isa>SUFFIX.
#ifndef RNNCORE_BACKEND_PREFIX
#if defined(_WIN32)
#define RNNCORE_BACKEND_PREFIX "rnncore_"
#else
#define RNNCORE_BACKEND_PREFIX "librnncore_"
#endif
#endif
#ifndef RNNCORE_BACKEND_SUFFIX
#if defined(_WIN32)
#define RNNCORE_BACKEND_SUFFIX ".dll"
#else
#define RNNCORE_BACKEND_SUFFIX ".so." RNNCORE_VERSION
#endif
#endif

namespace {

std::atomic<const rnncore_backend_v1*> g_backend{nullptr};
std::once_flag g_once;
char g_load_error[2048] = "";  // why no backend could be loaded (set once)
int g_load_code = RNNCORE_OK;

thread_local char t_error[2048] = "";  // this front's own errors (no backend)
thread_local int t_code = RNNCORE_OK;

void LoadFailed(int code, const std::string& message) {
  g_load_code = code;
  std::snprintf(g_load_error, sizeof g_load_error, "%s", message.c_str());
}

// Loading a shared library and finding its table: dlopen (Linux, macOS) or
// LoadLibrary (Windows), with paths in UTF-8 there.
#if defined(_WIN32)
std::wstring Widen(const std::string& s) {
  if (s.empty()) return std::wstring();
  const int n = MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), nullptr, 0);
  std::wstring w(static_cast<size_t>(n > 0 ? n : 0), L'\0');
  if (n > 0) MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), &w[0], n);
  return w;
}

std::string Narrow(const std::wstring& w) {
  if (w.empty()) return std::string();
  const int n = WideCharToMultiByte(CP_UTF8, 0, w.data(), static_cast<int>(w.size()), nullptr, 0,
                                    nullptr, nullptr);
  std::string s(static_cast<size_t>(n > 0 ? n : 0), '\0');
  if (n > 0)
    WideCharToMultiByte(CP_UTF8, 0, w.data(), static_cast<int>(w.size()), &s[0], n, nullptr,
                        nullptr);
  return s;
}

// The system's message for a GetLastError() code.
std::string SystemMessage(DWORD code) {
  wchar_t* text = nullptr;
  const DWORD n = FormatMessageW(
      FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
      nullptr, code, 0, reinterpret_cast<wchar_t*>(&text), 0, nullptr);
  std::wstring message = n && text ? std::wstring(text, n) : std::wstring();
  if (text) LocalFree(text);
  while (!message.empty() && (message.back() == L'\n' || message.back() == L'\r' ||
                              message.back() == L' ' || message.back() == L'.'))
    message.pop_back();
  return message.empty() ? "error " + std::to_string(code) : Narrow(message);
}

// The directory of this library (where rnncore\ is), or "." if unknown.
std::string OwnDirectory() {
  HMODULE self = nullptr;
  if (!GetModuleHandleExW(
          GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
          reinterpret_cast<LPCWSTR>(&rnncore_version), &self))
    return ".";
  std::wstring path(MAX_PATH, L'\0');
  for (;;) {  // long paths: a larger buffer until the name fits
    const DWORD n = GetModuleFileNameW(self, &path[0], static_cast<DWORD>(path.size()));
    if (n == 0) return ".";
    if (n < path.size()) {
      path.resize(n);
      break;
    }
    if (path.size() >= 32768) return ".";
    path.resize(path.size() * 2);
  }
  const size_t slash = path.find_last_of(L"\\/");
  return slash == std::wstring::npos ? "." : Narrow(path.substr(0, slash));
}

constexpr char kSeparator = '\\';

// The library at path, or null with why set.
void* OpenLibrary(const std::string& path, std::string* why) {
  // With an absolute path, the backend's own dependencies are looked for
  // beside it first (the flag is undefined for relative paths).
  const bool absolute = (path.size() > 2 && path[1] == ':') || path.rfind("\\\\", 0) == 0;
  HMODULE h =
      LoadLibraryExW(Widen(path).c_str(), nullptr, absolute ? LOAD_WITH_ALTERED_SEARCH_PATH : 0);
  if (!h) *why = SystemMessage(GetLastError());
  return reinterpret_cast<void*>(h);
}

void* FindSymbol(void* library, const char* name) {
  return reinterpret_cast<void*>(GetProcAddress(static_cast<HMODULE>(library), name));
}
#else
// The directory of this library (where rnncore/ is), or "." if unknown.
std::string OwnDirectory() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&rnncore_version), &info) == 0 || !info.dli_fname)
    return ".";
  const std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

constexpr char kSeparator = '/';

// The library at path, or null with why set.
void* OpenLibrary(const std::string& path, std::string* why) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* error = dlerror();
    *why = error ? error : "unknown error";
  }
  return handle;
}

void* FindSymbol(void* library, const char* name) { return dlsym(library, name); }
#endif

void LoadBackend() {
  const rnncore::cpu::Choice choice = rnncore::cpu::ChooseIsa(RNNCORE_ISAS);
  if (choice.status != rnncore::cpu::Choice::kOk)
    return LoadFailed(choice.status == rnncore::cpu::Choice::kBadOverride ? RNNCORE_ERROR_ARGUMENT
                                                                          : RNNCORE_ERROR_INTERNAL,
                      choice.error);
  const std::string path = OwnDirectory() + kSeparator + "rnncore" + kSeparator +
                           RNNCORE_BACKEND_PREFIX + choice.isa + RNNCORE_BACKEND_SUFFIX;
  std::string why;
  void* handle = OpenLibrary(path, &why);
  if (!handle)
    return LoadFailed(RNNCORE_ERROR_FILE, "cannot load the rnncore backend " + path + ": " + why);
  const auto get =
      reinterpret_cast<rnncore_backend_v1_fn>(FindSymbol(handle, RNNCORE_BACKEND_SYMBOL));
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
