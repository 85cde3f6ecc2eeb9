// Model: a stack of recurrent layers, forward and backward.
#include "rnncore/model.h"

#include <algorithm>
#include <cmath>

#include "layout.h"
#include "regularize.h"
#include "rnncore/allocator.h"
#include "rnncore/gru.h"
#include "rnncore/lstm.h"
#include "rnncore/rnn.h"
#include "rnncore/thread_pool.h"

namespace rnncore {

namespace {

using internal::kBc;
using internal::kBhh;
using internal::kBih;
using internal::kGc;
using internal::kGh;
using internal::kGx;
using internal::kNumSites;
using internal::kNumSlots;
using internal::kPeep;
using internal::kSiteC;
using internal::kSiteH;
using internal::kSiteX;
using internal::kWhh;
using internal::kWhr;
using internal::kWih;
using internal::LayerOutputDropout;
using internal::MaskedInput;

// Clears the rows of positions past each sequence's length in a
// position-ordered (T*B, width) matrix (lengths may be null: no padding).
template <typename T>
void ZeroPadding(T* a, Index steps, Index batch, const std::int64_t* lengths, Index width) {
  if (!lengths) return;
  for (Index b = 0; b < batch; ++b)
    for (Index t = lengths[b]; t < steps; ++t)
      std::fill_n(a + (t * batch + b) * width, width, T(0));
}

}  // namespace

template <typename T>
Model<T>::Model(const ModelConfig& config, bool zero_parameters)
    : config_(config), layout_(ParameterLayout(config)), buffers_(BufferLayout(config)) {
  Index total = 0;
  for (const auto& p : layout_) total = std::max(total, p.offset + p.size());
  if (zero_parameters) {
    params_.assign(static_cast<size_t>(total), T(0));
  } else {
    params_.resize(static_cast<size_t>(total));  // Buffer: default-initialized
  }
  grads_.assign(static_cast<size_t>(total), T(0));
  const Index gh = config_.gates() * config_.hidden_size;
  const Index sets = config_.num_layers * config_.directions();
  zero_bias_.assign(static_cast<size_t>(gh), T(0));
  bias_grad_sink_.assign(static_cast<size_t>(gh * sets), T(0));
  running_.sets.resize(static_cast<size_t>(sets * kNumSites));
  for (const auto& b : buffers_)
    running_.sets[static_cast<size_t>(b.stats)].Reset(b.width, b.one_row ? 1 : 0);
  // Parameters come in layout order, layer by layer, direction by direction.
  const auto norm_params = internal::NormParams(config_);
  size_t i = 0;
  for (Index l = 0; l < config_.num_layers; ++l) {
    for (Index d = 0; d < config_.directions(); ++d) {
      std::vector<Index> off(kNumSlots, -1);
      off[kWih] = layout_[i++].offset;
      off[kWhh] = layout_[i++].offset;
      if (config_.bias) {
        off[kBih] = layout_[i++].offset;
        off[kBhh] = layout_[i++].offset;
      }
      if (config_.proj_size > 0) off[kWhr] = layout_[i++].offset;
      if (config_.peephole) {
        off[kPeep] = layout_[i].offset;
        i += 3;
      }
      for (const auto& np : norm_params) off[np.slot] = layout_[i++].offset;
      offsets_.push_back(std::move(off));
    }
  }
}

template <typename T>
void Model<T>::SetRunning(Index stats, Index rows, const T* mean, const T* var) {
  Require(stats >= 0 && stats < static_cast<Index>(running_.sets.size()), "no such buffer");
  Require(rows >= 0, "buffer rows must be >= 0");
  std::unique_lock<std::shared_mutex> lock(running_.mutex);
  running_.sets[static_cast<size_t>(stats)].Set(rows, mean, var);
}

template <typename T>
Index Model<T>::RunningRows() const {
  std::shared_lock<std::shared_mutex> lock(running_.mutex);
  Index rows = 0;
  for (const auto& set : running_.sets) rows = std::max(rows, set.rows());
  return rows;
}

template <typename T>
CellConfig Model<T>::LayerConfig(Index layer, Index dir, bool training, std::uint64_t seed,
                                 Index step_offset) const {
  CellConfig c;
  c.step_offset = step_offset;
  c.layer = layer;
  c.direction = dir;
  c.seed = seed;
  c.recurrent_dropout = config_.recurrent_dropout;
  c.zoneout = config_.zoneout;
  c.input = config_.layer_input(layer);
  c.hidden = config_.hidden_size;
  c.proj = config_.proj_size;
  c.activation = config_.activation;
  c.reset_after = config_.reset_after;
  c.norm = config_.norm;
  c.training = training;
  c.ln_eps = config_.ln_eps;
  c.bn_eps = config_.bn_eps;
  c.bn_momentum = config_.bn_momentum;
  c.clip = config_.clip;
  c.cell_clip = config_.cell_clip;
  c.input_forget = config_.input_forget;
  return c;
}

template <typename T>
void Model<T>::UseHalfWeights() {
  if constexpr (!std::is_same_v<T, float>) {
    throw InvalidArgument("float16 weights need a float32 model");
  } else {
    half_.assign(params_.size(), Eigen::half(0.0f));
    // The weight matrices: weight_ih, weight_hh, weight_hr (the peephole
    // vectors weight_c* stay float32, as biases and norm parameters do).
    for (const auto& p : layout_) {
      if (p.shape.size() != 2) continue;
      for (Index i = p.offset; i < p.offset + p.size(); ++i) {
        half_[static_cast<size_t>(i)] = Eigen::half(params_[static_cast<size_t>(i)]);
        params_[static_cast<size_t>(i)] = static_cast<float>(half_[static_cast<size_t>(i)]);
      }
    }
  }
}

template <typename T>
CellWeights<T> Model<T>::Weights(Index layer, Index dir) const {
  const Index set = layer * config_.directions() + dir;
  const auto& off = offsets_[static_cast<size_t>(set)];
  auto at = [&](int slot) { return off[slot] < 0 ? nullptr : params_.data() + off[slot]; };
  auto half_at = [&](int slot) {
    return off[slot] < 0 || half_.empty() ? nullptr : half_.data() + off[slot];
  };
  CellWeights<T> w;
  w.w_ih = at(kWih);
  w.w_hh = at(kWhh);
  w.w_ih16 = half_at(kWih);
  w.w_hh16 = half_at(kWhh);
  w.w_hr16 = half_at(kWhr);
  w.b_ih = config_.bias ? at(kBih) : zero_bias_.data();
  w.b_hh = config_.bias ? at(kBhh) : zero_bias_.data();
  w.w_hr = at(kWhr);
  w.peep = at(kPeep);
  w.gx = at(kGx);
  w.gh = at(kGh);
  w.gc = at(kGc);
  w.bc = at(kBc);
  RunningStats<T>* rs = running_.sets.data() + set * kNumSites;
  w.rx = rs + kSiteX;
  w.rh = rs + kSiteH;
  w.rc = rs + kSiteC;
  return w;
}

template <typename T>
CellGrads<T> Model<T>::Grads(Index layer, Index dir) {
  const Index set = layer * config_.directions() + dir;
  const auto& off = offsets_[static_cast<size_t>(set)];
  auto at = [&](int slot) { return off[slot] < 0 ? nullptr : grads_.data() + off[slot]; };
  CellGrads<T> g;
  g.w_ih = at(kWih);
  g.w_hh = at(kWhh);
  // Without biases, each direction's bias gradients go to a sink of its own
  // (directions run concurrently).
  T* sink = bias_grad_sink_.data() + set * config_.gates() * config_.hidden_size;
  g.b_ih = config_.bias ? at(kBih) : sink;
  g.b_hh = config_.bias ? at(kBhh) : sink;
  g.w_hr = at(kWhr);
  g.peep = at(kPeep);
  g.gx = at(kGx);
  g.gh = at(kGh);
  g.gc = at(kGc);
  g.bc = at(kBc);
  return g;
}

template <typename T>
void Model<T>::Forward(Index steps, Index batch, const T* x, const T* h0, const T* c0,
                       const std::int64_t* lengths, T* out, T* h_n, T* c_n, bool training,
                       ModelTape<T>* tape, std::uint64_t seed, Index step_offset) const {
  Require(steps > 0 && batch > 0, "sequence length and batch size must be positive");
  Require(step_offset >= 0, "step_offset must be >= 0");
  Require(step_offset == 0 || (!training && !tape),
          "a step offset needs an eval-mode call without a tape");
  if (lengths)
    for (Index b = 0; b < batch; ++b)
      Require(lengths[b] >= 1 && lengths[b] <= steps, "lengths must be in 1..T");
  Require(!training || batch >= 2 ||
              (config_.norm != Norm::kBatch && config_.norm != Norm::kBatchInput),
          "batch normalization in training mode needs at least 2 sequences in the batch");
  // Training-mode passes of a batch-normalized model write the running
  // statistics; eval-mode passes read them.
  std::unique_lock<std::shared_mutex> write_stats(running_.mutex, std::defer_lock);
  std::shared_lock<std::shared_mutex> read_stats(running_.mutex, std::defer_lock);
  if (config_.norm == Norm::kBatch || config_.norm == Norm::kBatchInput) {
    if (training)
      write_stats.lock();
    else
      read_stats.lock();
  }
  const Index L = config_.num_layers, Dn = config_.directions();
  const Index P = config_.out_size(), H = config_.hidden_size, rows = steps * batch;

  if (tape) {
    tape->owner_ = this;
    tape->consumed_ = false;
    tape->training_ = training;
    tape->seed_ = seed;
    tape->steps_ = steps;
    tape->batch_ = batch;
    tape->lengths_.assign(lengths ? lengths : nullptr, lengths ? lengths + batch : nullptr);
    tape->inputs_.assign(static_cast<size_t>(L), {});
    tape->cells_.assign(static_cast<size_t>(L * Dn), {});
    // Layer 0's input, with padded positions zeroed so that padding (which
    // may hold anything, NaN included) never reaches a gradient.
    auto& in0 = tape->inputs_[0];
    in0.assign(x, x + rows * config_.input_size);
    ZeroPadding(in0.data(), steps, batch, lengths, config_.input_size);
  }

  Buffer<T> bufs[2];
  const T* layer_in = tape ? tape->inputs_[0].data() : x;
  for (Index l = 0; l < L; ++l) {
    const Index width = Dn * P;
    T* layer_out;
    // The cells write every active position; the padding is cleared here.
    if (l == L - 1) {
      layer_out = out;
    } else {
      Buffer<T>& b = tape ? tape->inputs_[static_cast<size_t>(l + 1)] : bufs[l % 2];
      b.resize(static_cast<size_t>(rows * width));
      layer_out = b.data();
    }
    ZeroPadding(layer_out, steps, batch, lengths, width);
    // The directions are independent: run them side by side.
    ParallelFor(Dn, [&](Index d) {
      const CellConfig cc = LayerConfig(l, d, training, seed, step_offset);
      const Index s = l * Dn + d;
      const StepIndex seq(steps, batch, lengths, d == 1 || config_.reverse);
      CellTape<T>* ct = tape ? &tape->cells_[static_cast<size_t>(s)] : nullptr;
      Buffer<T> mask, masked;
      const T* xin = layer_in;
      if (training && config_.input_dropout > 0)
        xin = MaskedInput(layer_in, rows, batch, cc.input, config_.input_dropout, seed, l, d, &mask,
                          &masked);
      const T* hs0 = h0 ? h0 + s * batch * P : nullptr;
      T* y = layer_out + d * P;
      T* hn = h_n + s * batch * P;
      const CellWeights<T> w = Weights(l, d);
      switch (config_.cell) {
        case CellKind::kRnn:
          rnn::ForwardPass<T>(cc, w).Run(seq, xin, cc.input, hs0, y, width, hn, ct);
          break;
        case CellKind::kGru:
          gru::ForwardPass<T>(cc, w).Run(seq, xin, cc.input, hs0, y, width, hn, ct);
          break;
        case CellKind::kLstm:
          lstm::ForwardPass<T>(cc, w).Run(seq, xin, cc.input, hs0,
                                          c0 ? c0 + s * batch * H : nullptr, y, width, hn,
                                          c_n + s * batch * H, ct);
          break;
      }
    });
    if (l < L - 1 && training && config_.dropout > 0)
      LayerOutputDropout(layer_out, rows, width, config_.dropout, seed, l);
    layer_in = layer_out;
  }
}

template <typename T>
void Model<T>::Backward(ModelTape<T>* tape, const T* dout, const T* dh_n, const T* dc_n, T* dx,
                        T* dh0, T* dc0, T* step_norms) {
  Require(tape != nullptr, "tape is required");
  // One Backward at a time: each adds into the same gradients (and may
  // consume the same tape). It reads the running statistics, which a
  // training-mode Forward of another thread may be growing.
  std::lock_guard<std::mutex> one_at_a_time(backward_mutex_.mutex);
  std::shared_lock<std::shared_mutex> read_stats(running_.mutex);
  Require(tape->owner_ == this, "tape was recorded by another module");
  Require(!tape->consumed_, "tape has already been used by backward()");
  tape->consumed_ = true;
  const Index steps = tape->steps_, batch = tape->batch_;
  const Index L = config_.num_layers, Dn = config_.directions();
  const Index P = config_.out_size(), H = config_.hidden_size, rows = steps * batch;
  const std::int64_t* lengths = tape->lengths_.empty() ? nullptr : tape->lengths_.data();

  // Gradient of the current layer's output: dout itself for the top layer
  // (zeros when there is none), then the layer inputs' gradients in dy. The
  // cells read it at active positions only.
  Buffer<T> dy;
  if (!dout) dy.assign(static_cast<size_t>(rows * Dn * P), T(0));
  const T* dtop = dout ? dout : dy.data();
  Buffer<T> dlayer_in, dx_rev;
  const bool training = tape->training_;
  const std::uint64_t seed = tape->seed_;
  for (Index l = L - 1; l >= 0; --l) {
    const Index in = config_.layer_input(l);
    T* dxl;
    if (l == 0) {
      dxl = dx;
    } else {
      dlayer_in.resize(static_cast<size_t>(rows * in));  // written whole by the cells
      dxl = dlayer_in.data();
    }
    const T* xl = tape->inputs_[static_cast<size_t>(l)].data();
    // Directions run side by side; the reverse one writes its input gradient
    // to its own buffer, added afterwards (always in this order).
    if (Dn == 2) dx_rev.resize(static_cast<size_t>(rows * in));  // written whole
    ParallelFor(Dn, [&](Index d) {
      const CellConfig cc = LayerConfig(l, d, training, seed);
      T* dxd = d == 0 ? dxl : dx_rev.data();
      const Index s = l * Dn + d;
      const StepIndex seq(steps, batch, lengths, d == 1 || config_.reverse);
      const CellTape<T>& ct = tape->cells_[static_cast<size_t>(s)];
      // The input the cell saw: the layer input under this direction's mask.
      Buffer<T> mask, masked;
      const bool in_drop = training && config_.input_dropout > 0;
      const T* xin = xl;
      if (in_drop)
        xin = MaskedInput(xl, rows, batch, in, config_.input_dropout, seed, l, d, &mask, &masked);
      T* dh = dh0 + s * batch * P;
      if (dh_n)
        std::copy(dh_n + s * batch * P, dh_n + (s + 1) * batch * P, dh);
      else
        std::fill_n(dh, batch * P, T(0));
      const T* dyd = (l == L - 1 ? dtop : dy.data()) + d * P;
      const CellWeights<T> w = Weights(l, d);
      CellGrads<T> g = Grads(l, d);
      Buffer<T> dh_sq(step_norms ? static_cast<size_t>(steps) : 0, T(0));
      if (step_norms) g.dh_sq = dh_sq.data();
      switch (config_.cell) {
        case CellKind::kRnn:
          rnn::BackwardPass<T>(cc, w).Run(seq, xin, in, ct, dyd, Dn * P, dh, dxd, in, g);
          break;
        case CellKind::kGru:
          gru::BackwardPass<T>(cc, w).Run(seq, xin, in, ct, dyd, Dn * P, dh, dxd, in, g);
          break;
        case CellKind::kLstm: {
          T* dc = dc0 + s * batch * H;
          if (dc_n)
            std::copy(dc_n + s * batch * H, dc_n + (s + 1) * batch * H, dc);
          else
            std::fill_n(dc, batch * H, T(0));
          lstm::BackwardPass<T>(cc, w).Run(seq, xin, in, ct, dyd, Dn * P, dh, dc, dxd, in, g);
          break;
        }
      }
      if (in_drop) internal::MaskSequenceRows(dxd, rows, batch, in, mask.data(), dxd);
      if (step_norms)
        for (Index t = 0; t < steps; ++t)
          step_norms[s * steps + t] = std::sqrt(dh_sq[static_cast<size_t>(t)]);
    });
    if (Dn == 2) VectorMap<T>(dxl, rows * in) += ConstVectorMap<T>(dx_rev.data(), rows * in);
    if (l > 0) {
      dy.swap(dlayer_in);
      // dy is now the gradient of layer l - 1's output after its dropout.
      if (training && config_.dropout > 0)
        LayerOutputDropout(dy.data(), rows, Dn * P, config_.dropout, seed, l - 1);
    }
  }
  // The tape's memory is no longer needed.
  tape->inputs_.clear();
  tape->inputs_.shrink_to_fit();
  tape->cells_.clear();
  tape->cells_.shrink_to_fit();
}

template class Model<float>;
template class Model<double>;

}  // namespace rnncore
