// The C API (rnncore/c_api.h) over the core's Model<float>, Stream<float>
// and model-file loader, compiled once per instruction set into a backend
// (backend.cc) that the front library (dispatch.cc) chooses at run time. Every entry point catches everything: no exception
// crosses into C; the message goes to a thread-local buffer that needs no
// allocation (so even std::bad_alloc is reported).
#include "rnncore/c_api.h"

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "../src/portable.h"  // relative: the baseline backend has no src/ include path
#include "rnncore/limits.h"
#include "rnncore/loader.h"
#include "rnncore/model.h"
#include "rnncore/model_file.h"
#include "rnncore/stream.h"
#include "rnncore/thread_pool.h"

#ifndef RNNCORE_VERSION
#define RNNCORE_VERSION "0.0.0"
#endif

struct rnncore_model {
  std::shared_ptr<const rnncore::Model<float>> model;
};

struct rnncore_stream {
  explicit rnncore_stream(std::shared_ptr<const rnncore::Model<float>> m, rnncore::Index batch)
      : stream(std::move(m), batch) {}
  rnncore::Stream<float> stream;
};

namespace {

using rnncore::Index;

thread_local char t_error[2048] = "";
thread_local int t_code = RNNCORE_OK;

int SetError(int code, const char* message) {
  t_code = code;
  std::snprintf(t_error, sizeof t_error, "%s", message);
  return code;
}

// A caller's mistake found by the C layer itself.
struct ArgumentError {
  std::string message;
};

// What is wrong with a model file's contents.
struct FormatError {
  std::string message;
};

[[noreturn]] void Bad(const std::string& message) { throw ArgumentError{message}; }

// Runs fn, turning every exception into an error code and message.
template <typename F>
int Guard(F&& fn) {
  try {
    fn();
    return RNNCORE_OK;
  } catch (const ArgumentError& e) {
    return SetError(RNNCORE_ERROR_ARGUMENT, e.message.c_str());
  } catch (const FormatError& e) {
    return SetError(RNNCORE_ERROR_FORMAT, e.message.c_str());
  } catch (const rnncore::ModuleNotFound& e) {
    return SetError(RNNCORE_ERROR_ARGUMENT, e.what());
  } catch (const rnncore::model_file::FileError& e) {
    return SetError(RNNCORE_ERROR_FILE, e.what());
  } catch (const std::bad_alloc&) {
    return SetError(RNNCORE_ERROR_MEMORY, "out of memory");
  } catch (const std::length_error&) {
    return SetError(RNNCORE_ERROR_MEMORY, "out of memory (a size beyond what can be allocated)");
  } catch (const std::invalid_argument& e) {
    return SetError(RNNCORE_ERROR_ARGUMENT, e.what());
  } catch (const std::exception& e) {
    return SetError(RNNCORE_ERROR_INTERNAL, e.what());
  } catch (...) {
    return SetError(RNNCORE_ERROR_INTERNAL, "unknown error");
  }
}

const rnncore::ModelConfig& Config(const rnncore_model* m) { return m->model->config(); }

// a * b for sizes already known to be >= 0, or an error naming what.
Index Mul(Index a, Index b, const char* what) {
  Index r;
  if (rnncore::portable::MulOverflow(a, b, &r)) Bad(std::string(what) + " is too large");
  return r;
}

void CheckModel(const rnncore_model* m) {
  if (!m) Bad("model is NULL");
}

int Forward(const rnncore_model* m, const float* x, int64_t T, int64_t B, const int64_t* lengths,
            const float* h0, const float* c0, float* out, float* h_n, float* c_n) {
  return Guard([&] {
    CheckModel(m);
    if (!x) Bad("x is NULL");
    if (!out) Bad("out is NULL");
    if (T < 1) Bad("T must be >= 1, got " + std::to_string(T));
    if (B < 1) Bad("B must be >= 1, got " + std::to_string(B));
    const rnncore::ModelConfig& c = Config(m);
    const Index rows = Mul(T, B, "T * B");
    Mul(rows, std::max(c.input_size, c.directions() * c.out_size()), "T * B * width");
    if (lengths)
      for (Index b = 0; b < B; ++b)
        if (lengths[b] < 1 || lengths[b] > T)
          Bad("lengths[" + std::to_string(b) + "] = " + std::to_string(lengths[b]) +
              " is not in 1..T (T = " + std::to_string(T) + ")");
    const bool lstm = c.cell == rnncore::CellKind::kLstm;
    const Index S = c.num_layers * c.directions();
    std::vector<float> h_scratch, c_scratch;
    if (!h_n) {
      h_scratch.resize(static_cast<size_t>(Mul(S * c.out_size(), B, "the state")));
      h_n = h_scratch.data();
    }
    if (lstm && !c_n) {
      c_scratch.resize(static_cast<size_t>(Mul(S * c.hidden_size, B, "the state")));
      c_n = c_scratch.data();
    }
    m->model->Forward(T, B, x, h0, lstm ? c0 : nullptr, lengths, out, h_n, lstm ? c_n : nullptr,
                      /*training=*/false, /*tape=*/nullptr);
  });
}

}  // namespace

extern "C" {

const char* rnncore_version(void) { return RNNCORE_VERSION; }

const char* rnncore_isa(void) {
#if defined(RNNCORE_ISA_NAME)
  return RNNCORE_ISA_NAME;
#elif defined(__AVX512F__)
  return "avx512";
#elif defined(__AVX2__)
  return "avx2";
#elif defined(__x86_64__) || defined(_M_X64)
  return "baseline";
#elif defined(__aarch64__)
  return "neon";
#else
  return "generic";
#endif
}

const char* rnncore_last_error(void) { return t_error; }

int rnncore_last_error_code(void) { return t_code; }

rnncore_model* rnncore_model_load(const char* path, const char* name) {
  rnncore_model* out = nullptr;
  Guard([&] {
    if (!path) Bad("path is NULL");
    if (!*path) Bad("path is empty");
    std::shared_ptr<rnncore::Model<float>> model;
    try {
      model = rnncore::LoadModel(path, name);
    } catch (const rnncore::ModuleNotFound&) {
      throw;  // the caller's name: an argument error
    } catch (const rnncore::InvalidArgument& e) {
      throw FormatError{e.what()};  // the file's contents
    }
    out = new rnncore_model{std::move(model)};
  });
  return out;
}

void rnncore_model_free(rnncore_model* model) { delete model; }

int64_t rnncore_model_input_size(const rnncore_model* model) {
  if (!model) {
    SetError(RNNCORE_ERROR_ARGUMENT, "model is NULL");
    return -1;
  }
  return Config(model).input_size;
}

int64_t rnncore_model_output_size(const rnncore_model* model) {
  if (!model) {
    SetError(RNNCORE_ERROR_ARGUMENT, "model is NULL");
    return -1;
  }
  return Config(model).directions() * Config(model).out_size();
}

int64_t rnncore_model_state_size(const rnncore_model* model, int which) {
  if (!model) {
    SetError(RNNCORE_ERROR_ARGUMENT, "model is NULL");
    return -1;
  }
  const rnncore::ModelConfig& c = Config(model);
  const Index S = c.num_layers * c.directions();
  if (which == 0) return S * c.out_size();
  if (which == 1) return c.cell == rnncore::CellKind::kLstm ? S * c.hidden_size : 0;
  SetError(RNNCORE_ERROR_ARGUMENT,
           ("which must be 0 (h) or 1 (c), got " + std::to_string(which)).c_str());
  return -1;
}

int rnncore_model_forward(const rnncore_model* model, const float* x, int64_t T, int64_t B,
                          const int64_t* lengths, float* out, float* h_n, float* c_n) {
  return Forward(model, x, T, B, lengths, nullptr, nullptr, out, h_n, c_n);
}

int rnncore_model_forward_from(const rnncore_model* model, const float* x, int64_t T, int64_t B,
                               const int64_t* lengths, const float* h_0, const float* c_0,
                               float* out, float* h_n, float* c_n) {
  return Forward(model, x, T, B, lengths, h_0, c_0, out, h_n, c_n);
}

rnncore_stream* rnncore_stream_new(const rnncore_model* model, int64_t batch) {
  rnncore_stream* out = nullptr;
  Guard([&] {
    CheckModel(model);
    if (batch < 1) Bad("batch must be >= 1, got " + std::to_string(batch));
    const rnncore::ModelConfig& c = Config(model);
    Mul(batch, std::max(c.input_size, c.num_layers * std::max(c.out_size(), c.hidden_size)),
        "the stream's state");
    out = new rnncore_stream(model->model, batch);
  });
  return out;
}

int rnncore_stream_step_many(rnncore_stream* stream, const float* x, int64_t T, float* y) {
  return Guard([&] {
    if (!stream) Bad("stream is NULL");
    if (!x) Bad("x is NULL");
    if (!y) Bad("y is NULL");
    if (T < 1) Bad("T must be >= 1, got " + std::to_string(T));
    const rnncore::ModelConfig& c = stream->stream.model().config();
    Mul(Mul(T, stream->stream.batch(), "T * B"), std::max(c.input_size, c.out_size()),
        "T * B * width");
    stream->stream.Step(T, x, y);
  });
}

int rnncore_stream_step(rnncore_stream* stream, const float* x, float* y) {
  return rnncore_stream_step_many(stream, x, 1, y);
}

void rnncore_stream_reset(rnncore_stream* stream) {
  if (stream) stream->stream.Reset();
}

int rnncore_stream_reset_row(rnncore_stream* stream, int64_t row) {
  return Guard([&] {
    if (!stream) Bad("stream is NULL");
    if (row < 0 || row >= stream->stream.batch())
      Bad("row must be in 0..B-1 (B = " + std::to_string(stream->stream.batch()) + "), got " +
          std::to_string(row));
    stream->stream.ResetRow(row);
  });
}

int64_t rnncore_stream_batch(const rnncore_stream* stream) {
  if (!stream) {
    SetError(RNNCORE_ERROR_ARGUMENT, "stream is NULL");
    return -1;
  }
  return stream->stream.batch();
}

void rnncore_stream_free(rnncore_stream* stream) { delete stream; }

int rnncore_set_num_threads(int n) {
  return Guard([&] {
    if (n < 1 || n > rnncore::kMaxThreads)
      Bad("the number of threads must be in 1.." + std::to_string(rnncore::kMaxThreads) +
          ", got " + std::to_string(n));
    rnncore::SetNumThreads(n);
  });
}

int rnncore_get_num_threads(void) {
  int n = 1;
  Guard([&] { n = rnncore::GetNumThreads(); });
  return n;
}

}  // extern "C"
