// Regularization of the recurrent cells: dropout between layers, variational
// dropout of the input and of the recurrent input, and zoneout.
//
// Masks are never stored. Every draw is a pure function of (key, element
// index): a counter-based generator. The backward pass recomputes the masks
// the forward pass used, bit for bit, and no result depends on the number of
// threads or on the order positions are visited in.
//
// A mask's key comes from the call's seed, the layer, the direction and the
// site (MaskKey); its elements are indexed as documented at each site:
//   kInput       (B, D_l)        variational input mask, index b * D_l + j
//   kRecurrent   (B, P)          variational mask of h_{t-1}, index b * P + j
//   kZoneH       (T*B, P)        zoneout of h, index (t * B + b) * P + j
//   kZoneC       (T*B, H)        zoneout of the LSTM cell, same layout
//   kLayerOutput (T*B, Dn * P)   dropout of a layer's output (direction 0)
// rnncore.reference builds the same masks through the binding of MaskHits to
// check the math independently of this file.
#ifndef RNNCORE_REGULARIZE_H_
#define RNNCORE_REGULARIZE_H_

#include <cstdint>

#include "parallel_chunks.h"
#include "rnncore/allocator.h"
#include "rnncore/cell.h"
#include "rnncore/common.h"

namespace rnncore {
namespace internal {

// splitmix64's finalizer: a bijection of 64-bit words with full avalanche.
inline std::uint64_t Mix64(std::uint64_t z) {
  z ^= z >> 30;
  z *= 0xbf58476d1ce4e5b9ULL;
  z ^= z >> 27;
  z *= 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return z;
}

inline std::uint64_t MaskKey(std::uint64_t seed, Index layer, Index dir, MaskSite site) {
  const std::uint64_t where = (static_cast<std::uint64_t>(layer) << 8) |
                              (static_cast<std::uint64_t>(dir) << 4) |
                              static_cast<std::uint64_t>(site);
  return Mix64(Mix64(seed ^ 0x5851f42d4c957f2dULL) + where);
}

// Independent Bernoulli(p) events, one per element index: a "hit" has
// probability p (to the resolution 2^-53).
class Bernoulli {
 public:
  Bernoulli() = default;
  Bernoulli(std::uint64_t key, double p)
      : key_(key), threshold_(static_cast<std::uint64_t>(p * 9007199254740992.0)) {}
  bool active() const { return threshold_ > 0; }
  bool Hit(std::uint64_t i) const {
    return (Mix64(key_ + i * 0x9e3779b97f4a7c15ULL) >> 11) < threshold_;
  }
  // out[j] = hit ? on_hit : on_miss for elements i0 .. i0 + n - 1.
  template <typename T>
  void Fill(std::uint64_t i0, Index n, T on_hit, T on_miss, T* out) const {
    for (Index j = 0; j < n; ++j)
      out[j] = Hit(i0 + static_cast<std::uint64_t>(j)) ? on_hit : on_miss;
  }

 private:
  std::uint64_t key_ = 0;
  std::uint64_t threshold_ = 0;
};

// Inverted dropout mask values: 0 with probability p, else 1 / (1 - p).
template <typename T>
void DropoutMask(const Bernoulli& draw, double p, std::uint64_t i0, Index n, T* out) {
  draw.Fill(i0, n, T(0), static_cast<T>(1.0 / (1.0 - p)), out);
}

// A variational mask applied to position-ordered rows: dst row r = src row r
// times mask row r % batch (the row's sequence), width values each, rows
// [0, rows). dst may be src. Split over fixed row chunks.
template <typename T>
void MaskSequenceRows(const T* src, Index rows, Index batch, Index width, const T* mask, T* dst) {
  ForChunks(rows, kRowChunk, [&](Index r0, Index n) {
    for (Index r = r0; r < r0 + n; ++r)
      VectorMap<T>(dst + r * width, width) =
          ConstVectorMap<T>(src + r * width, width)
              .cwiseProduct(ConstVectorMap<T>(mask + (r % batch) * width, width));
  });
}

// Variational dropout of the recurrent input: the product with W_hh sees
// u = h_{t-1} * m, one mask row m (P) per sequence for the whole sequence.
// Inactive unless training with recurrent_dropout > 0.
template <typename T>
class RecurrentDropout {
 public:
  RecurrentDropout(const CellConfig& c, Index batch, Index width) : batch_(batch), width_(width) {
    if (!c.training || c.recurrent_dropout <= 0) return;
    const Bernoulli draw(MaskKey(c.seed, c.layer, c.direction, MaskSite::kRecurrent),
                         c.recurrent_dropout);
    mask_.resize(static_cast<size_t>(batch * width));
    DropoutMask(draw, c.recurrent_dropout, 0, batch * width, mask_.data());
    u_.resize(mask_.size());
  }
  bool active() const { return !mask_.empty(); }
  const T* mask(Index b) const { return mask_.data() + b * width_; }

  // The recurrent product's input for step states h (B, P).
  const T* Apply(const T* h) {
    if (!active()) return h;
    MaskSequenceRows(h, batch_, batch_, width_, mask_.data(), u_.data());
    return u_.data();
  }
  // One row: u = h * m for sequence b.
  void ApplyRow(Index b, const T* h, T* u) const {
    VectorMap<T>(u, width_) =
        ConstVectorMap<T>(h, width_).cwiseProduct(ConstVectorMap<T>(mask(b), width_));
  }
  // d (B, P) *= m: the gradient of u turned into that of h.
  void MaskGradient(T* d) const {
    if (active()) MaskSequenceRows(d, batch_, batch_, width_, mask_.data(), d);
  }
  // The position-ordered recurrent inputs (rows, P) for the weight gradient:
  // h_prev itself, or h_prev * m in scratch.
  const T* History(const T* h_prev, Index rows, Buffer<T>* scratch) const {
    if (!active()) return h_prev;
    scratch->resize(static_cast<size_t>(rows * width_));
    MaskSequenceRows(h_prev, rows, batch_, width_, mask_.data(), scratch->data());
    return scratch->data();
  }

 private:
  Index batch_, width_;
  Buffer<T> mask_, u_;
};

// Zoneout of a state s (h, or the LSTM cell c), width W:
//   s_t = d * s_{t-1} + (1 - d) * s~_t,
// with d a Bernoulli(p) draw per position and unit in training mode and
// d = p (the expectation) in eval mode.
template <typename T>
class Zoneout {
 public:
  Zoneout(const CellConfig& c, MaskSite site, Index width)
      : p_(static_cast<T>(c.zoneout)), width_(width), training_(c.training) {
    if (c.zoneout > 0 && c.training)
      draw_ = Bernoulli(MaskKey(c.seed, c.layer, c.direction, site), c.zoneout);
  }
  bool active() const { return p_ > T(0); }

  // cur <- d * prev + (1 - d) * cur at position row r.
  void Blend(Index r, const T* prev, T* cur) const {
    if (!training_) {
      VectorMap<T>(cur, width_) =
          p_ * ConstVectorMap<T>(prev, width_) + (T(1) - p_) * ConstVectorMap<T>(cur, width_);
      return;
    }
    const std::uint64_t i0 = static_cast<std::uint64_t>(r * width_);
    for (Index j = 0; j < width_; ++j)
      if (draw_.Hit(i0 + static_cast<std::uint64_t>(j))) cur[j] = prev[j];
  }
  // Backward of Blend at row r: g (the gradient of s_t) -> direct = d * g
  // (the part that reaches s_{t-1} directly) and g <- (1 - d) * g (the
  // gradient of s~_t).
  void Split(Index r, T* g, T* direct) const {
    if (!training_) {
      VectorMap<T>(direct, width_) = p_ * ConstVectorMap<T>(g, width_);
      VectorMap<T>(g, width_) *= (T(1) - p_);
      return;
    }
    const std::uint64_t i0 = static_cast<std::uint64_t>(r * width_);
    for (Index j = 0; j < width_; ++j) {
      const bool hit = draw_.Hit(i0 + static_cast<std::uint64_t>(j));
      direct[j] = hit ? g[j] : T(0);
      if (hit) g[j] = T(0);
    }
  }

 private:
  T p_;
  Index width_;
  bool training_;
  Bernoulli draw_;
};

// x (rows, D) under the variational input mask of (layer, dir): row r is
// multiplied by mask row r % B. Returns the masked copy, kept in *scratch;
// the mask is kept in *mask for the backward (MaskSequenceRows).
template <typename T>
const T* MaskedInput(const T* x, Index rows, Index batch, Index D, double p, std::uint64_t seed,
                     Index layer, Index dir, Buffer<T>* mask, Buffer<T>* scratch) {
  const Bernoulli draw(MaskKey(seed, layer, dir, MaskSite::kInput), p);
  mask->resize(static_cast<size_t>(batch * D));
  DropoutMask(draw, p, 0, batch * D, mask->data());
  scratch->resize(static_cast<size_t>(rows * D));
  MaskSequenceRows(x, rows, batch, D, mask->data(), scratch->data());
  return scratch->data();
}

// a (rows, width) *= the dropout mask of layer's output: elementwise, so the
// same call is the forward pass and its backward.
template <typename T>
void LayerOutputDropout(T* a, Index rows, Index width, double p, std::uint64_t seed, Index layer) {
  const Bernoulli draw(MaskKey(seed, layer, 0, MaskSite::kLayerOutput), p);
  const T scale = static_cast<T>(1.0 / (1.0 - p));
  ForChunks(rows, kRowChunk, [&](Index r0, Index n) {
    for (Index i = r0 * width; i < (r0 + n) * width; ++i)
      a[i] = draw.Hit(static_cast<std::uint64_t>(i)) ? T(0) : a[i] * scale;
  });
}

}  // namespace internal
}  // namespace rnncore

#endif  // RNNCORE_REGULARIZE_H_
