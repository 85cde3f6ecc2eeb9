/* rnncore's C API: load a recurrent model saved by Python's rnncore.save,
 * run sequences, and step streams. C99; no C++ types cross it. The contract
 * is docs/c_api.md (and the project's deploy spec, section 4).
 *
 * Arrays are float32, dense, row-major and TIME-MAJOR, whatever batch_first
 * the Python module had:
 *   x    (T, B, input_size)            out  (T, B, D * H_out)
 *   h_n  (L * D, B, H_out)             c_n  (L * D, B, H)   (LSTM only)
 * with L layers, D = 2 for a bidirectional model (else 1), H the hidden size
 * and H_out the output width (proj_size when set, else H).
 *
 * Errors: functions returning int return 0 on success and a non-zero
 * rnncore_error code on failure; functions returning a pointer return NULL;
 * size queries return -1 for a NULL model or an unknown `which`. Then
 * rnncore_last_error() says why (this thread's last error; other threads'
 * errors never overwrite it). No function aborts, throws or prints on bad
 * input. Passing a freed handle is undefined.
 *
 * Instruction sets: the library loads, on first use, the variant of its
 * core built for the best instruction set this CPU runs (RNNCORE_ISA forces
 * one); see rnncore_isa().
 *
 * Threads: a model is immutable once loaded; every function that takes a
 * model may be called on one model from many threads at once. A stream is
 * not thread-safe: one thread at a time per stream (different streams of one
 * model may step concurrently). A stream keeps its model alive: the model
 * may be freed before its streams.
 */
#ifndef RNNCORE_C_API_H_
#define RNNCORE_C_API_H_

#include <stdint.h>

#if defined(RNNCORE_BUILDING_BACKEND)
#define RNNCORE_API /* internal: a backend exports its table only */
#elif defined(_WIN32)
#if defined(RNNCORE_BUILDING_LIBRARY)
#define RNNCORE_API __declspec(dllexport)
#else
#define RNNCORE_API __declspec(dllimport)
#endif
#elif defined(__GNUC__)
#define RNNCORE_API __attribute__((visibility("default")))
#else
#define RNNCORE_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes (what the int-returning functions return, and
 * rnncore_last_error_code()). */
enum rnncore_error {
  RNNCORE_OK = 0,
  RNNCORE_ERROR_ARGUMENT = 1, /* a bad argument: NULL, a size out of range, an unknown name */
  RNNCORE_ERROR_FILE = 2,     /* a file that cannot be opened or read (missing, a directory) */
  RNNCORE_ERROR_FORMAT = 3,   /* a file that is not a valid rnncore model file */
  RNNCORE_ERROR_MEMORY = 4,   /* out of memory */
  RNNCORE_ERROR_INTERNAL = 5  /* anything else (a bug: please report it) */
};

typedef struct rnncore_model rnncore_model;   /* immutable once loaded */
typedef struct rnncore_stream rnncore_stream; /* state of B sequences of one model */

/* The library's version, "major.minor.patch". */
RNNCORE_API const char* rnncore_version(void);
/* The instruction set the library computes with: "avx512", "avx2" or
 * "baseline" (x86-64; elsewhere "baseline"), the best one this CPU runs,
 * or the one the environment variable RNNCORE_ISA names. The choice is made
 * once, by the first call that needs it; "" (and an error) when the
 * variant cannot be used (RNNCORE_ISA names one not built or that this CPU
 * cannot run: every call then fails with that message). */
RNNCORE_API const char* rnncore_isa(void);

/* This thread's last error message ("" if none); valid until this thread's
 * next failing call. */
RNNCORE_API const char* rnncore_last_error(void);
/* This thread's last error code (RNNCORE_OK if none). */
RNNCORE_API int rnncore_last_error_code(void);

/* Loads one recurrent module (RNN, LSTM, GRU or one of their cells) of a
 * file written by rnncore.save: options, parameters and running statistics;
 * the model computes in eval mode (running statistics, no dropout; zoneout
 * by its expectation). name: the module's key in a file saved from a
 * mapping; NULL (or ""): the file's only recurrent module. A float64 module
 * is rounded to float32; a half_weights() copy loads as one. */
RNNCORE_API rnncore_model* rnncore_model_load(const char* path, const char* name);
/* Frees a model (NULL: nothing). Its streams stay valid. */
RNNCORE_API void rnncore_model_free(rnncore_model* model);

RNNCORE_API int64_t rnncore_model_input_size(const rnncore_model* model);
/* D * H_out: the width of a row of out. */
RNNCORE_API int64_t rnncore_model_output_size(const rnncore_model* model);
/* Elements of one sequence's final state: which 0: h (L * D * H_out);
 * 1: c (L * D * H) for an LSTM, 0 otherwise. Multiply by B for h_n / c_n. */
RNNCORE_API int64_t rnncore_model_state_size(const rnncore_model* model, int which);

/* Runs T steps of B sequences: x (T, B, input_size) -> out (T, B, D * H_out),
 * and the final states into h_n (L * D, B, H_out) and c_n (L * D, B, H)
 * when not NULL (c_n: LSTM only; ignored otherwise). lengths (B), or NULL
 * for all T: each sequence b stops after lengths[b] steps (1..T), the
 * reverse direction starts at its own last step, out is zero past its end
 * and h_n / c_n hold its state at its last step. The states start at zero. */
RNNCORE_API int rnncore_model_forward(const rnncore_model* model, const float* x, int64_t T,
                                      int64_t B, const int64_t* lengths, float* out, float* h_n,
                                      float* c_n);
/* As rnncore_model_forward, starting from the states h_0 (L * D, B, H_out)
 * and c_0 (L * D, B, H) (LSTM only); NULL: zeros. */
RNNCORE_API int rnncore_model_forward_from(const rnncore_model* model, const float* x,
                                           int64_t T, int64_t B, const int64_t* lengths,
                                           const float* h_0, const float* c_0, float* out,
                                           float* h_n, float* c_n);

/* A stream of B >= 1 sequences (rows) of a unidirectional model (not
 * bidirectional, not reverse), each starting at state zero. Stepping a
 * stream through a sequence, frame by frame, gives what
 * rnncore_model_forward gives for the whole sequence (to float rounding). */
RNNCORE_API rnncore_stream* rnncore_stream_new(const rnncore_model* model, int64_t batch);
/* One step of every row: x (B, input_size) -> y (B, H_out). On an error the
 * state is unchanged. */
RNNCORE_API int rnncore_stream_step(rnncore_stream* stream, const float* x, float* y);
/* T steps at once: x (T, B, input_size) -> y (T, B, H_out). */
RNNCORE_API int rnncore_stream_step_many(rnncore_stream* stream, const float* x, int64_t T,
                                         float* y);
/* Zeroes the state and step count of every row (NULL: nothing). */
RNNCORE_API void rnncore_stream_reset(rnncore_stream* stream);
/* Zeroes the state and step count of one row (0 <= row < B). */
RNNCORE_API int rnncore_stream_reset_row(rnncore_stream* stream, int64_t row);
/* B, or -1 for NULL. */
RNNCORE_API int64_t rnncore_stream_batch(const rnncore_stream* stream);
/* Frees a stream (NULL: nothing). */
RNNCORE_API void rnncore_stream_free(rnncore_stream* stream);

/* The threads each compute call may use (default: the environment variable
 * RNNCORE_NUM_THREADS, else the cores the process may use); n >= 1. Results
 * are bitwise the same for any count. A server running one stream per
 * worker thread usually wants 1. */
RNNCORE_API int rnncore_set_num_threads(int n);
RNNCORE_API int rnncore_get_num_threads(void);

#ifdef __cplusplus
}
#endif

#endif /* RNNCORE_C_API_H_ */
