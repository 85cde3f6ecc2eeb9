// The table of functions one instruction-set variant of the library
// (lib/rnncore/librnncore_<isa>.so.<version>; on Windows
// rnncore/rnncore_<isa>.dll beside rnncore.dll) hands to the dispatching
// front library (librnncore.so, rnncore.dll: dispatch.cc). Internal: the
// front and its backends are built and installed together, and the front
// checks the version and the table's size before it uses one.
#ifndef RNNCORE_CAPI_BACKEND_H_
#define RNNCORE_CAPI_BACKEND_H_

#include <stddef.h>
#include <stdint.h>

#include "rnncore/c_api.h"

#ifdef __cplusplus
extern "C" {
#endif

struct rnncore_backend_v1 {
  size_t size;          /* sizeof(struct rnncore_backend_v1) */
  const char* version;  /* the project's version: must equal the front's */
  const char* isa;      /* "baseline", "avx2", "avx512" */
  const char* (*last_error)(void);
  int (*last_error_code)(void);
  rnncore_model* (*model_load)(const char*, const char*);
  void (*model_free)(rnncore_model*);
  int64_t (*model_input_size)(const rnncore_model*);
  int64_t (*model_output_size)(const rnncore_model*);
  int64_t (*model_state_size)(const rnncore_model*, int);
  int (*model_forward_from)(const rnncore_model*, const float*, int64_t, int64_t,
                            const int64_t*, const float*, const float*, float*, float*, float*);
  rnncore_stream* (*stream_new)(const rnncore_model*, int64_t);
  int (*stream_step_many)(rnncore_stream*, const float*, int64_t, float*);
  void (*stream_reset)(rnncore_stream*);
  int (*stream_reset_row)(rnncore_stream*, int64_t);
  int64_t (*stream_batch)(const rnncore_stream*);
  void (*stream_free)(rnncore_stream*);
  int (*set_num_threads)(int);
  int (*get_num_threads)(void);
};

/* How a backend exports it. */
#if defined(_WIN32)
#define RNNCORE_BACKEND_EXPORT __declspec(dllexport)
#elif defined(__GNUC__)
#define RNNCORE_BACKEND_EXPORT __attribute__((visibility("default")))
#else
#define RNNCORE_BACKEND_EXPORT
#endif

/* The one symbol a backend exports. */
typedef const struct rnncore_backend_v1* (*rnncore_backend_v1_fn)(void);
#define RNNCORE_BACKEND_SYMBOL "rnncore_backend_v1_table"

#ifdef __cplusplus
}
#endif

#endif /* RNNCORE_CAPI_BACKEND_H_ */
