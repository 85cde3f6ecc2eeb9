// A stack of recurrent layers, optionally bidirectional: the unit the Python
// classes wrap. Owns its parameters and their gradients as flat buffers laid
// out as ParameterLayout says (PyTorch's names, shapes and order).
//
// Shapes (L layers, Dn = 2 if bidirectional else 1, P = out width):
//   x    (T, B, input)        time-major, contiguous
//   h0   (L * Dn, B, P)       layer-major, direction-minor; null = zeros
//   c0   (L * Dn, B, H)       LSTM only; null = zeros
//   out  (T, B, Dn * P)       last layer, directions concatenated
//   lengths (B) in 1..T, or null (all T)
#ifndef RNNCORE_MODEL_H_
#define RNNCORE_MODEL_H_

#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "rnncore/allocator.h"
#include "rnncore/cell.h"
#include "rnncore/common.h"

namespace rnncore {

struct ModelConfig {
  CellKind cell = CellKind::kLstm;
  Index input_size = 0;
  Index hidden_size = 0;
  Index num_layers = 1;
  bool bidirectional = false;
  // One direction that runs backward in time: each sequence from its last
  // valid step to its first (as ONNX direction="reverse"); out stays in time
  // order. Not with bidirectional.
  bool reverse = false;
  bool bias = true;
  Index proj_size = 0;                        // LSTM only
  // Options for fidelity with ONNX, TFLite and oneDNN (0 / false: off).
  // clip: every gate activation's input is clamped to [-clip, clip] (ONNX's
  // clip; not the tanh of the LSTM cell state). LSTM only: peephole adds
  // w_ci c_{t-1}, w_cf c_{t-1} to the input and forget gates and w_co c_t to
  // the output gate (parameters weight_ci/cf/co, (H,) each); cell_clip clamps
  // c_t to [-cell_clip, cell_clip] after its update (TFLite's); input_forget
  // couples the gates, f = 1 - i (ONNX's; the forget gate's parameters are
  // then unused). The gradient is zero where a value was clamped.
  double clip = 0;
  double cell_clip = 0;
  bool peephole = false;
  bool input_forget = false;
  Activation activation = Activation::kTanh;  // RNN only
  bool reset_after = true;                    // GRU only
  Norm norm = Norm::kNone;
  double ln_eps = 1e-5;
  double bn_eps = 1e-5;
  double bn_momentum = 0.1;
  // Regularization, each a probability in [0, 1). dropout: PyTorch's, on the
  // outputs of every layer but the last. input_dropout, recurrent_dropout:
  // variational (one mask per sequence) on each layer's input and on h_{t-1}
  // in the recurrent product. These three act in training mode only.
  // zoneout: h (and the LSTM cell) keep their previous value per unit with
  // this probability in training; eval mode blends with the expectation.
  double dropout = 0;
  double input_dropout = 0;
  double recurrent_dropout = 0;
  double zoneout = 0;

  Index gates() const { return GateCount(cell); }
  Index directions() const { return bidirectional ? 2 : 1; }
  Index out_size() const { return proj_size > 0 ? proj_size : hidden_size; }
  Index layer_input(Index layer) const {
    return layer == 0 ? input_size : directions() * out_size();
  }
  // Checks the sizes and combinations; throws InvalidArgument.
  void Validate() const;
};

// One named parameter tensor inside the flat buffer.
struct ParamInfo {
  std::string name;
  std::vector<Index> shape;
  Index offset = 0;
  Index size() const;
};

std::vector<ParamInfo> ParameterLayout(const ModelConfig& config);

// One running-statistics buffer (batch norms): its name, which site of which
// layer and direction it belongs to, and whether it is the variance.
struct BufferInfo {
  std::string name;
  Index stats = 0;  // index into the model's running statistics
  bool variance = false;
  bool one_row = false;  // norm="batch_input": shape (width,), else (S, width)
  Index width = 0;
};

std::vector<BufferInfo> BufferLayout(const ModelConfig& config);

// The draws behind the regularization masks (see src/regularize.h), exposed
// so that tests and references can rebuild them: out[j] = 1 when element
// start + j of the mask of (seed, layer, dir, site) is a hit (probability p:
// dropped by dropout, kept by zoneout), else 0.
void MaskHits(std::uint64_t seed, Index layer, Index dir, MaskSite site, double p,
              std::uint64_t start, Index n, std::uint8_t* out);

template <typename T>
class Model;

// The running statistics of a model's batch norms and the lock that orders
// the calls that use them: training-mode forward passes of a batch-normalized
// model update them (exclusive), eval-mode passes and Backward read them
// (shared). A copy reads the source under its lock and has a lock of its own.
template <typename T>
struct GuardedStats {
  std::vector<RunningStats<T>> sets;
  mutable std::shared_mutex mutex;

  GuardedStats() = default;
  GuardedStats(const GuardedStats& other) {
    std::shared_lock<std::shared_mutex> lock(other.mutex);
    sets = other.sets;
  }
  GuardedStats& operator=(const GuardedStats&) = delete;
};

// A mutex that a copy of its owner does not share.
struct OwnMutex {
  std::mutex mutex;
  OwnMutex() = default;
  OwnMutex(const OwnMutex&) {}
  OwnMutex& operator=(const OwnMutex&) = delete;
};

// What Model::Forward records for Model::Backward. Single use, bound to the
// model that made it.
template <typename T>
class ModelTape {
 public:
  bool consumed() const { return consumed_; }
  const void* owner() const { return owner_; }
  Index steps() const { return steps_; }
  Index batch() const { return batch_; }
  bool training() const { return training_; }
  std::uint64_t seed() const { return seed_; }

 private:
  friend class Model<T>;
  const void* owner_ = nullptr;
  bool consumed_ = false;
  bool training_ = true;    // the mode of the forward pass (batch norm statistics)
  std::uint64_t seed_ = 0;  // of the regularization masks
  Index steps_ = 0, batch_ = 0;
  std::vector<std::int64_t> lengths_;  // empty: all sequences have length T
  std::vector<Buffer<T>> inputs_;      // per layer (T*B, layer_input), padding zeroed
  std::vector<CellTape<T>> cells_;     // per layer * direction
};

template <typename T>
class Model {
 public:
  // A model of config: zero parameters, zero gradients, empty running
  // statistics. With zero_parameters false the parameter buffer is left
  // unset (not cleared): for a caller that writes every parameter before the
  // model is used, such as a model file's loader.
  explicit Model(const ModelConfig& config, bool zero_parameters = true);

  const ModelConfig& config() const { return config_; }
  const std::vector<ParamInfo>& layout() const { return layout_; }
  Index num_parameters() const { return static_cast<Index>(params_.size()); }
  T* parameters() { return params_.data(); }
  const T* parameters() const { return params_.data(); }
  T* gradients() { return grads_.data(); }

  // Stores the weight matrices (W_ih, W_hh, W_hr) of a float32 model in
  // IEEE float16 as well, for inference: their float32 values are rounded to
  // float16 (to nearest, ties to even) in place, and the products that read
  // them as dot products (the steps of sequences of 1-2 rows, single steps
  // of at most 8 rows; see StepMatrix) read the float16 copies, half the
  // bytes (kernels/dots.h). Every other product reads the rounded float32
  // values, so both give the same model.
  // The copies are a snapshot: after changing the weights through
  // parameters(), call this again. Throws InvalidArgument for a float64
  // model.
  void UseHalfWeights();
  bool HasHalfWeights() const { return !half_.empty(); }

  // The forward pass. training selects batch statistics (and updates the
  // running statistics of the batch norms) over the running ones; with a
  // tape, records what Backward needs. Calls in eval mode (training false)
  // change nothing and run concurrently on one model; training-mode calls of
  // a batch-normalized model update its running statistics one at a time
  // (each sees the statistics some serial order of the calls would). seed
  // draws the regularization masks of a training-mode call (the tape keeps
  // it, so that Backward replays them). step_offset (eval mode, no tape):
  // the sequence's time step at x's first position, for a stream continuing
  // a sequence (batch norm reads running-statistics row step_offset + k).
  void Forward(Index steps, Index batch, const T* x, const T* h0, const T* c0,
               const std::int64_t* lengths, T* out, T* h_n, T* c_n, bool training,
               ModelTape<T>* tape, std::uint64_t seed = 0, Index step_offset = 0) const;

  // Running statistics buffers (see BufferLayout), copied out and in. Set
  // takes rows x width values of the mean and the variance of one site.
  const std::vector<BufferInfo>& buffer_layout() const { return buffers_; }
  RunningStats<T> running(Index stats) const {
    std::shared_lock<std::shared_mutex> lock(running_.mutex);
    return running_.sets[static_cast<size_t>(stats)];
  }
  void SetRunning(Index stats, Index rows, const T* mean, const T* var);
  // The most rows of running statistics any site has (0 without batch norm):
  // eval-mode steps at or past RunningRows() - 1 all read the last row.
  Index RunningRows() const;

  // Backpropagation through time. dout (T, B, Dn*P) or null; dh_n, dc_n as
  // h0 / c0 or null. Writes dx (T, B, input), dh0, dc0 (c0 for LSTM only, may
  // be null otherwise) and ADDS parameter gradients into gradients(); calls
  // on one model run one at a time, so concurrent ones sum correctly. Marks
  // the tape consumed; throws InvalidArgument for a used or foreign tape.
  // step_norms (L * Dn, T), when not null, receives the diagnostics: the
  // Euclidean norm over batch and units of the gradient of each layer's and
  // direction's step output h_t, for every time position t.
  void Backward(ModelTape<T>* tape, const T* dout, const T* dh_n, const T* dc_n, T* dx, T* dh0,
                T* dc0, T* step_norms = nullptr);

 private:
  CellConfig LayerConfig(Index layer, Index dir, bool training, std::uint64_t seed,
                         Index step_offset = 0) const;
  CellWeights<T> Weights(Index layer, Index dir) const;
  CellGrads<T> Grads(Index layer, Index dir);

  ModelConfig config_;
  std::vector<ParamInfo> layout_;
  Buffer<T> params_, grads_;
  Buffer<Eigen::half> half_;  // UseHalfWeights: params_ in float16 (weight matrices only)
  // Per layer * direction: offsets of each parameter slot (-1: absent).
  std::vector<std::vector<Index>> offsets_;
  std::vector<BufferInfo> buffers_;
  // Per layer * direction * site (input, recurrent, cell). Updated by
  // training-mode forward passes, which is why it is mutable.
  mutable GuardedStats<T> running_;
  OwnMutex backward_mutex_;  // one Backward at a time (gradient accumulation)
  Buffer<T> zero_bias_;       // stands in for absent biases
  Buffer<T> bias_grad_sink_;  // receives their gradients
};

}  // namespace rnncore

#endif  // RNNCORE_MODEL_H_
