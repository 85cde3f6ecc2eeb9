// rnncore's C++ API: load a recurrent model saved by Python's rnncore.save,
// run sequences and step streams, with exceptions. C++11 or newer.
//
// A header over the C API (rnncore/c_api.h): the library exports C symbols
// only, so this header works with any C++ compiler and standard library,
// needs no Eigen, and the library can change its internals (and choose its
// instruction set at run time) without breaking programs built against it.
// Shapes, threads and semantics are the C API's (docs/c_api.md); arrays are
// float32, row-major and time-major.
//
//   auto model = rnncore::load("model.safetensors");        // or load(path, "encoder")
//   rnncore::ForwardResult r = model.forward(x, T, B);      // r.out, r.h_n, r.c_n
//   rnncore::ModelStream s = model.stream(1);               // one sequence
//   std::vector<float> y = s.step(frame);                   // (H_out) per frame
//
// Errors throw std::invalid_argument (bad arguments, bad model files, an
// unknown module name) or std::runtime_error (files that cannot be read,
// out of memory), with the C API's messages.
#ifndef RNNCORE_RNNCORE_HPP_
#define RNNCORE_RNNCORE_HPP_

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "rnncore/c_api.h"

namespace rnncore {

namespace detail {

inline void Throw(int code) {
  const std::string message = rnncore_last_error();
  if (code == RNNCORE_ERROR_ARGUMENT || code == RNNCORE_ERROR_FORMAT)
    throw std::invalid_argument(message);
  throw std::runtime_error(message);
}

inline void Check(int code) {
  if (code != RNNCORE_OK) Throw(code);
}

struct ModelDeleter {
  void operator()(rnncore_model* m) const { rnncore_model_free(m); }
};
struct StreamDeleter {
  void operator()(rnncore_stream* s) const { rnncore_stream_free(s); }
};

}  // namespace detail

// What LoadedModel::forward returns: out (T, B, output_size()), h_n
// (B * state_size(0) values: (L * D, B, H_out)), c_n (LSTM: (L * D, B, H);
// empty otherwise).
struct ForwardResult {
  std::vector<float> out, h_n, c_n;
};

class ModelStream;

// A loaded model: immutable, and safe to use from many threads at once.
// Copies share the model (a reference-counted handle).
class LoadedModel {
 public:
  // Adopts a handle from rnncore_model_load (not null).
  explicit LoadedModel(rnncore_model* handle) : handle_(handle, detail::ModelDeleter()) {
    if (!handle) throw std::invalid_argument("rnncore::LoadedModel: null handle");
  }

  std::int64_t input_size() const { return rnncore_model_input_size(get()); }
  // D * H_out: the width of a row of out.
  std::int64_t output_size() const { return rnncore_model_output_size(get()); }
  // Values of one sequence's final state: which 0: h, 1: c (0 unless LSTM).
  std::int64_t state_size(int which) const {
    const std::int64_t n = rnncore_model_state_size(get(), which);
    if (n < 0) detail::Throw(rnncore_last_error_code());
    return n;
  }

  // T steps of B sequences into caller-provided arrays (as
  // rnncore_model_forward_from; lengths, h_0, c_0, h_n, c_n may be null).
  void forward(const float* x, std::int64_t T, std::int64_t B, const std::int64_t* lengths,
               float* out, float* h_n = nullptr, float* c_n = nullptr,
               const float* h_0 = nullptr, const float* c_0 = nullptr) const {
    detail::Check(rnncore_model_forward_from(get(), x, T, B, lengths, h_0, c_0, out, h_n, c_n));
  }

  // x (T, B, input_size()); lengths empty (all T) or B values in 1..T.
  ForwardResult forward(const std::vector<float>& x, std::int64_t T, std::int64_t B,
                        const std::vector<std::int64_t>& lengths = {}) const {
    if (T < 1 || B < 1)
      throw std::invalid_argument("T and B must be >= 1, got T = " + std::to_string(T) +
                                  ", B = " + std::to_string(B));
    if (static_cast<std::uint64_t>(x.size()) != static_cast<std::uint64_t>(T * B * input_size()))
      throw std::invalid_argument("x has " + std::to_string(x.size()) + " values, expected T * B * "
                                  "input_size = " + std::to_string(T * B * input_size()));
    if (!lengths.empty() && static_cast<std::int64_t>(lengths.size()) != B)
      throw std::invalid_argument("lengths has " + std::to_string(lengths.size()) +
                                  " values, expected B = " + std::to_string(B));
    ForwardResult r;
    r.out.resize(static_cast<std::size_t>(T * B * output_size()));
    r.h_n.resize(static_cast<std::size_t>(B * state_size(0)));
    r.c_n.resize(static_cast<std::size_t>(B * state_size(1)));
    forward(x.data(), T, B, lengths.empty() ? nullptr : lengths.data(), r.out.data(),
            r.h_n.data(), r.c_n.empty() ? nullptr : r.c_n.data());
    return r;
  }

  // A stream of batch sequences (a unidirectional model only).
  inline ModelStream stream(std::int64_t batch = 1) const;

  rnncore_model* get() const { return handle_.get(); }

 private:
  std::shared_ptr<rnncore_model> handle_;
};

// Loads a recurrent module of a model file (name: a mapping's key; empty:
// the file's only recurrent module).
inline LoadedModel load(const std::string& path, const std::string& name = std::string()) {
  rnncore_model* m = rnncore_model_load(path.c_str(), name.empty() ? nullptr : name.c_str());
  if (!m) detail::Throw(rnncore_last_error_code());
  return LoadedModel(m);
}

// The state of batch sequences, stepped a frame (or a chunk) at a time. One
// thread at a time per stream; streams of one model may step concurrently.
// Keeps its model alive. Movable, not copyable.
class ModelStream {
 public:
  ModelStream(const LoadedModel& model, std::int64_t batch)
      : stream_(rnncore_stream_new(model.get(), batch)), model_(model) {
    if (!stream_) detail::Throw(rnncore_last_error_code());
  }

  std::int64_t batch() const { return rnncore_stream_batch(stream_.get()); }
  const LoadedModel& model() const { return model_; }

  // One step of every row: x (B, input_size) -> y (B, H_out).
  void step(const float* x, float* y) { detail::Check(rnncore_stream_step(stream_.get(), x, y)); }
  // T steps: x (T, B, input_size) -> y (T, B, H_out).
  void step(const float* x, std::int64_t T, float* y) {
    detail::Check(rnncore_stream_step_many(stream_.get(), x, T, y));
  }
  // One step (x.size() == B * input_size) or T steps (T * B * input_size).
  std::vector<float> step(const std::vector<float>& x) {
    const std::int64_t row = batch() * model_.input_size();
    if (x.empty() || static_cast<std::int64_t>(x.size()) % row != 0)
      throw std::invalid_argument("x has " + std::to_string(x.size()) +
                                  " values, expected a multiple of B * input_size = " +
                                  std::to_string(row));
    const std::int64_t T = static_cast<std::int64_t>(x.size()) / row;
    const std::int64_t out_width = model_.output_size();  // H_out: streams are unidirectional
    std::vector<float> y(static_cast<std::size_t>(T * batch() * out_width));
    step(x.data(), T, y.data());
    return y;
  }

  void reset() { rnncore_stream_reset(stream_.get()); }
  void reset(std::int64_t row) { detail::Check(rnncore_stream_reset_row(stream_.get(), row)); }

  rnncore_stream* get() const { return stream_.get(); }

 private:
  std::unique_ptr<rnncore_stream, detail::StreamDeleter> stream_;
  LoadedModel model_;
};

inline ModelStream LoadedModel::stream(std::int64_t batch) const {
  return ModelStream(*this, batch);
}

}  // namespace rnncore

#endif  // RNNCORE_RNNCORE_HPP_
