// One normalization site of a cell direction (the input term, the recurrent
// term, or the LSTM cell state): its mode, parameters, running statistics and
// tape, with forward and backward over a step's rows or over the whole
// position-ordered sequence. Chosen once per call, outside the time loop.
#ifndef RNNCORE_NORM_SITE_H_
#define RNNCORE_NORM_SITE_H_

#include <algorithm>
#include <vector>

#include "kernels/norm.h"
#include "parallel_chunks.h"
#include "rnncore/allocator.h"
#include "rnncore/cell.h"
#include "rnncore/common.h"
#include "tape_rows.h"

namespace rnncore {
namespace internal {

enum class SiteKind {
  kNone,       // identity
  kLayer,      // layer norm of each row
  kBatchStep,  // batch norm over the sequences active at each step
  kBatchSeq,   // batch norm over every active (t, b) position at once
};

// The site kinds of a cell under a norm (docs/normalization.md section 3).
struct SiteKinds {
  SiteKind x, h, c;
};

inline SiteKinds Sites(Norm norm, CellKind cell) {
  switch (norm) {
    case Norm::kLayer:  // the RNN normalizes the sum of both terms: its h site
      if (cell == CellKind::kRnn) return {SiteKind::kNone, SiteKind::kLayer, SiteKind::kNone};
      return {SiteKind::kLayer, SiteKind::kLayer,
              cell == CellKind::kLstm ? SiteKind::kLayer : SiteKind::kNone};
    case Norm::kBatch:
      return {SiteKind::kBatchStep, SiteKind::kBatchStep,
              cell == CellKind::kLstm ? SiteKind::kBatchStep : SiteKind::kNone};
    case Norm::kBatchInput:
      return {SiteKind::kBatchSeq, SiteKind::kNone, SiteKind::kNone};
    case Norm::kNone:
      break;
  }
  return {SiteKind::kNone, SiteKind::kNone, SiteKind::kNone};
}

// Rows of one step handed to a site: the active sequences' rows, in batch
// order, and their positions (rows of the (T*B, .) tape matrices).
template <typename T>
struct StepRows {
  std::vector<T*> rows;
  std::vector<Index> positions;
  void Clear() {
    rows.clear();
    positions.clear();
  }
  Index count() const { return static_cast<Index>(rows.size()); }
  // The active sequences' rows of a (B, ld) step matrix at step k.
  void FromStep(const StepIndex& seq, Index k, T* base, Index ld) {
    Clear();
    for (Index b = 0; b < seq.batch(); ++b) {
      const Index r = seq.Row(k, b);
      if (r < 0) continue;
      rows.push_back(base + b * ld);
      positions.push_back(r);
    }
  }
  // Copies each row to its position in a (T*B, n) matrix.
  void ScatterTo(T* dst, Index n) const {
    for (size_t i = 0; i < rows.size(); ++i)
      std::copy(rows[i], rows[i] + n, dst + positions[i] * n);
  }
};

template <typename T>
class NormSite {
 public:
  // width: values per row. rows_total: T*B. steps: T; active_steps: the
  // longest sequence. gamma/beta: parameters
  // (beta may be null: no shift). stats: running statistics (batch kinds).
  // tape: null when nothing is recorded.
  NormSite(SiteKind kind, const StepIndex& seq, Index width, const T* gamma, const T* beta,
           const CellConfig& config, RunningStats<T>* stats, NormTape<T>* tape)
      : NormSite(kind, width, seq.steps() * seq.batch(), seq.steps(), seq.MaxLength(), gamma, beta,
                 kind == SiteKind::kLayer ? config.ln_eps : config.bn_eps, config.bn_momentum,
                 config.training, stats, tape) {
    if (!training_) offset_ = config.step_offset;
  }

  // For backward: reads (and never changes) the tape a forward pass
  // recorded, and touches no running statistics.
  NormSite(SiteKind kind, const StepIndex& seq, Index width, const T* gamma, const T* beta,
           const CellConfig& config, const NormTape<T>& recorded)
      : NormSite(kind, seq, width, gamma, beta, config, nullptr, nullptr) {
    recorded_ = &recorded;
  }

  // active_steps: the longest sequence (running statistics grow to it).
  NormSite(SiteKind kind, Index width, Index rows_total, Index steps, Index active_steps,
           const T* gamma, const T* beta, double eps, double momentum, bool training,
           RunningStats<T>* stats, NormTape<T>* tape)
      : kind_(kind),
        n_(width),
        gamma_(gamma),
        beta_(beta),
        eps_(static_cast<T>(eps)),
        momentum_(static_cast<T>(momentum)),
        training_(training),
        stats_(stats),
        tape_(tape),
        recorded_(tape) {
    if (kind_ == SiteKind::kNone) return;
    mean_.resize(static_cast<size_t>(width));
    var_.resize(static_cast<size_t>(width));
    r_.resize(static_cast<size_t>(width));
    if (tape_) {
      // Written at every active position; padding rows are never read.
      tape_->xhat.resize(static_cast<size_t>(rows_total * n_));
      const Index r_size = kind_ == SiteKind::kLayer      ? rows_total
                           : kind_ == SiteKind::kBatchSeq ? n_
                                                          : steps * n_;
      tape_->rstd.assign(static_cast<size_t>(r_size), T(0));
    }
    if (stats_ && training_) {
      // One row per step some sequence reaches: the longest sequence, not the
      // padded T, so the module's state never depends on padding.
      stats_->Grow(kind_ == SiteKind::kBatchSeq ? 1 : active_steps);
    }
  }

  bool active() const { return kind_ != SiteKind::kNone; }

  // Layer norm of one row, in place: the row of position pos.
  void ForwardRow(T* row, Index pos) {
    T* xh = tape_ ? XhatOut(pos) : nullptr;
    const T r = kernels::LayerNormForward(n_, row, gamma_, beta_, eps_, xh, row);
    if (tape_) tape_->rstd[static_cast<size_t>(pos)] = r;
  }

  // Whether a cell can normalize step k's rows inside its own row loop, with
  // no pass of their own: layer norm, and batch norm in eval mode without a
  // tape (a fixed affine map per step). The cell calls BeginStep(k) before
  // the loop and StepRow for each active row (any thread).
  bool step_row_local() const {
    return kind_ == SiteKind::kLayer || (kind_ != SiteKind::kNone && !training_ && !tape_);
  }
  // The running statistics of step k, for StepRow (batch norm in eval mode).
  void BeginStep(Index k) {
    if ((kind_ == SiteKind::kBatchStep || kind_ == SiteKind::kBatchSeq) && !training_)
      stats_->EvalRow(kind_ == SiteKind::kBatchSeq ? 0 : k + offset_, eps_, mean_.data(),
                      r_.data());
  }
  // Normalizes in place the row of position pos (step_row_local sites): the
  // same values ForwardStep gives it.
  void StepRow(T* row, Index pos) {
    if (kind_ == SiteKind::kLayer) {
      ForwardRow(row, pos);
      return;
    }
    kernels::BatchNormApply(n_, row, mean_.data(), r_.data(), gamma_, beta_,
                            static_cast<T*>(nullptr), row);
  }

  // Normalizes in place the rows of step k (y = γ â + β).
  void ForwardStep(Index k, const StepRows<T>& s) {
    if (kind_ == SiteKind::kNone || s.count() == 0) return;
    if (kind_ == SiteKind::kLayer) {
      // Rows are independent: split like the cells' row loops.
      ForRows(s.count(), n_, [&](Index i) { ForwardRow(s.rows[i], s.positions[i]); });
      return;
    }
    // Batch norm over this step's rows (kBatchStep) or with whole-sequence
    // statistics computed beforehand (kBatchSeq), split over columns.
    const Index count = s.count();
    const bool step_stats = kind_ == SiteKind::kBatchStep && training_;
    BeginStep(k);  // eval mode: the running statistics
    ForColumns(count, n_, [&](Index c0, Index n) {
      if (step_stats) {
        kernels::BatchStats(count, s.rows.data(), c0, n, mean_.data() + c0, var_.data() + c0);
        Update(k, count, c0, c0 + n);
        kernels::InverseStd(n, var_.data() + c0, eps_, r_.data() + c0);
      }
      if (tape_) std::copy(r_.data() + c0, r_.data() + c0 + n, RstdOut(k) + c0);
      for (Index i = 0; i < count; ++i)
        kernels::BatchNormApply(n, s.rows[i] + c0, mean_.data() + c0, r_.data() + c0, gamma_ + c0,
                                beta_ ? beta_ + c0 : nullptr,
                                tape_ ? XhatOut(s.positions[i]) + c0 : nullptr, s.rows[i] + c0);
    });
  }

  // Normalizes in place a whole position-ordered (T*B, width) matrix a whose
  // step-k rows seq says (the hoisted input term).
  void ForwardAll(const StepIndex& seq, T* a) {
    if (kind_ == SiteKind::kNone) return;
    StepRows<T> s;
    if (kind_ == SiteKind::kBatchSeq && training_) {
      std::vector<const T*> all;
      for (Index k = 0; k < seq.steps(); ++k)
        for (Index b = 0; b < seq.batch(); ++b) {
          const Index row = seq.Row(k, b);
          if (row >= 0) all.push_back(a + row * n_);
        }
      const auto count = static_cast<Index>(all.size());
      ForColumns(count, n_, [&](Index c0, Index n) {
        kernels::BatchStats(count, all.data(), c0, n, mean_.data() + c0, var_.data() + c0);
        Update(0, count, c0, c0 + n);
        kernels::InverseStd(n, var_.data() + c0, eps_, r_.data() + c0);
      });
    }
    if (step_row_local()) {
      // Each row on its own (layer norm, or batch norm in eval mode: a fixed
      // affine map of each step's rows): all rows at once, in chunks of about
      // kRowChunk rows. A batch-norm chunk keeps its own copy of its steps'
      // running statistics (the values StepRow gives a row); step by step,
      // split over columns, it was a parallel region per step for a few
      // microseconds of work each.
      const bool layer = kind_ == SiteKind::kLayer;
      const Index steps_per_chunk = std::max<Index>(1, kRowChunk / seq.batch());
      ForChunks(seq.steps(), steps_per_chunk, [&](Index k0, Index n) {
        Buffer<T> mean(layer ? 0 : static_cast<size_t>(n_)), r(mean.size());
        for (Index k = k0; k < k0 + n; ++k) {
          if (!layer)
            stats_->EvalRow(kind_ == SiteKind::kBatchSeq ? 0 : k + offset_, eps_, mean.data(),
                            r.data());
          for (Index b = 0; b < seq.batch(); ++b) {
            const Index row = seq.Row(k, b);
            if (row < 0) continue;
            T* ar = a + row * n_;
            if (layer)
              ForwardRow(ar, row);
            else
              kernels::BatchNormApply(n_, ar, mean.data(), r.data(), gamma_, beta_,
                                      static_cast<T*>(nullptr), ar);
          }
        }
      });
      return;
    }
    for (Index k = 0; k < seq.steps(); ++k) {
      Gather(seq, k, a, &s);
      ForwardStep(k, s);
    }
  }

  // Backward of step k: dy rows (gradients of this site's output) become the
  // gradients of its input, in place. Parameter gradients are added: at once
  // for batch statistics, else (rows normalized on their own) per slot, and
  // FinishBackward adds the slots to dgamma and dbeta.
  void BackwardStep(Index k, const StepRows<T>& dy, T* dgamma, T* dbeta) {
    if (kind_ == SiteKind::kNone || dy.count() == 0) return;
    if (backward_row_local()) {
      BeginRowBackward(dgamma, dbeta, NumChunks(dy.count(), kStepRows));
      ForRows(dy.count(), n_,
              [&](Index i) { BackwardRow(k, dy.rows[i], dy.positions[i], i / kStepRows); });
      return;
    }
    const T* r = RstdIn(k);
    if (kind_ == SiteKind::kBatchStep && training_) {
      std::vector<const T*> dys(dy.rows.begin(), dy.rows.end()), xhs;
      for (Index pos : dy.positions) xhs.push_back(XhatIn(pos));
      GroupBackward(dy.count(), dys.data(), xhs.data(), r, dy.rows.data(), dgamma, dbeta);
    }
    // kBatchSeq in training: done in BackwardAll.
  }

  // Whether the backward pass treats each row on its own: layer norm, and
  // batch norm in eval mode (a fixed affine map).
  bool backward_row_local() const {
    return kind_ == SiteKind::kLayer || (kind_ != SiteKind::kNone && !training_);
  }

  // Row-by-row backward (backward_row_local sites), which a cell may run
  // inside its own row loop: BeginRowBackward before the loop with the slots
  // its rows use, BackwardRow for each active row (any thread; each slot is
  // used by one thread at a time, its rows in a fixed order), then
  // FinishBackward after the time loop. Slots depend only on the problem, so
  // the parameter gradients do not depend on the thread count.
  void BeginRowBackward(T* dgamma, T* dbeta, Index slots) {
    dgamma_ = dgamma;
    dbeta_ = dbeta;
    slots_ = std::max(slots_, slots);
    const auto size = static_cast<size_t>(slots_ * n_);
    if (slot_gamma_.size() < size) slot_gamma_.resize(size, T(0));
    if (dbeta && slot_beta_.size() < size) slot_beta_.resize(size, T(0));
  }

  // Backward of the row of position pos at step k, in place.
  void BackwardRow(Index k, T* row, Index pos, Index slot) { BackwardRow(k, row, row, pos, slot); }
  // The same from dy into da (da may be dy).
  void BackwardRow(Index k, const T* dy, T* da, Index pos, Index slot) {
    T* dg = slot_gamma_.data() + slot * n_;
    T* db = dbeta_ ? slot_beta_.data() + slot * n_ : nullptr;
    if (kind_ == SiteKind::kLayer)
      kernels::LayerNormBackward(n_, dy, XhatIn(pos), recorded_->rstd[static_cast<size_t>(pos)],
                                 gamma_, da, false, dg, db);
    else
      kernels::BatchNormAffineBackward(n_, dy, XhatIn(pos), RstdIn(k), gamma_, da, false, dg, db);
  }

  // Adds the slots' parameter gradients, in slot order, and clears them.
  void FinishBackward() {
    for (Index s = 0; s < slots_; ++s) {
      T* dg = slot_gamma_.data() + s * n_;
      VectorMap<T>(dgamma_, n_) += ConstVectorMap<T>(dg, n_);
      std::fill(dg, dg + n_, T(0));
      if (!dbeta_) continue;
      T* db = slot_beta_.data() + s * n_;
      VectorMap<T>(dbeta_, n_) += ConstVectorMap<T>(db, n_);
      std::fill(db, db + n_, T(0));
    }
  }

  // BackwardStep over the active rows of a (B, width) step matrix, in place,
  // also copying the results to their positions in a (T*B, width) matrix.
  void BackwardStepRows(const StepIndex& seq, Index k, T* step, T* dgamma, T* dbeta,
                        T* positioned) {
    StepRows<T> s;
    s.FromStep(seq, k, step, n_);
    BackwardStep(k, s, dgamma, dbeta);
    s.ScatterTo(positioned, n_);
  }

  // Backward over a whole position-ordered gradient matrix (the input term):
  // da from dy, which may be the same matrix unless the site uses batch
  // statistics (their backward works in place, da == dy).
  void BackwardAll(const StepIndex& seq, const T* dy, T* da, T* dgamma, T* dbeta) {
    if (kind_ == SiteKind::kNone) return;
    StepRows<T> s;
    if (kind_ == SiteKind::kBatchSeq && training_) {
      // One normalization group over every active position of the sequence.
      std::vector<T*> rows;
      std::vector<const T*> dys, xhs;
      for (Index k = 0; k < seq.steps(); ++k) {
        Gather(seq, k, da, &s);
        for (Index i = 0; i < s.count(); ++i) {
          rows.push_back(s.rows[static_cast<size_t>(i)]);
          dys.push_back(s.rows[static_cast<size_t>(i)]);
          xhs.push_back(XhatIn(s.positions[static_cast<size_t>(i)]));
        }
      }
      GroupBackward(static_cast<Index>(rows.size()), dys.data(), xhs.data(), RstdIn(0), rows.data(),
                    dgamma, dbeta);
      return;
    }
    if (backward_row_local()) {  // in chunks of steps, one slot each
      const Index steps_per_chunk = std::max<Index>(1, kRowChunk / seq.batch());
      BeginRowBackward(dgamma, dbeta, NumChunks(seq.steps(), steps_per_chunk));
      ForChunks(seq.steps(), steps_per_chunk, [&](Index k0, Index n) {
        for (Index k = k0; k < k0 + n; ++k)
          for (Index b = 0; b < seq.batch(); ++b) {
            const Index row = seq.Row(k, b);
            if (row >= 0) BackwardRow(k, dy + row * n_, da + row * n_, row, k0 / steps_per_chunk);
          }
      });
      FinishBackward();
      return;
    }
    for (Index k = 0; k < seq.steps(); ++k) {
      Gather(seq, k, da, &s);
      BackwardStep(k, s, dgamma, dbeta);
    }
  }

  // The gradient of the un-normalized input term, from d (the gradient of
  // this site's output, position-ordered): d itself when the site is the
  // identity, else *scratch, through BackwardAll (rows normalized on their
  // own are read from d; batch statistics work on a copy). When the site is
  // active and sums is not null, the column sums of d are added to sums (in
  // the same pass: the input site has no shift, so its dbeta channel, which
  // sums the rows of dy, is free to carry them).
  const T* InputGradient(const StepIndex& seq, const Buffer<T>& d, Buffer<T>* scratch, T* dgamma,
                         T* sums = nullptr) {
    if (kind_ == SiteKind::kNone) return d.data();
    if (backward_row_local()) {
      ResizePositions(*scratch, seq, n_);  // padding rows zero, as in d
      BackwardAll(seq, d.data(), scratch->data(), dgamma, sums);
    } else {
      *scratch = d;
      BackwardAll(seq, scratch->data(), scratch->data(), dgamma, sums);
    }
    return scratch->data();
  }

  // The rows of step k of a position-ordered matrix a.
  void Gather(const StepIndex& seq, Index k, T* a, StepRows<T>* s) const {
    s->Clear();
    for (Index b = 0; b < seq.batch(); ++b) {
      const Index row = seq.Row(k, b);
      if (row < 0) continue;
      s->rows.push_back(a + row * n_);
      s->positions.push_back(row);
    }
  }

 private:
  // The tape being recorded (forward) ...
  T* XhatOut(Index pos) { return tape_->xhat.data() + pos * n_; }
  T* RstdOut(Index k) {
    if (!tape_) return r_.data();
    return tape_->rstd.data() + (kind_ == SiteKind::kBatchSeq ? 0 : k * n_);
  }
  // ... and the one backward reads (the same tape within a forward pass).
  const T* XhatIn(Index pos) const { return recorded_->xhat.data() + pos * n_; }
  const T* RstdIn(Index k) const {
    if (!recorded_) return r_.data();
    return recorded_->rstd.data() + (kind_ == SiteKind::kBatchSeq ? 0 : k * n_);
  }

  // Running statistics, PyTorch's rule: a step with fewer than 2 sequences
  // updates nothing; the variance is the unbiased one.
  void Update(Index row, Index count, Index c0, Index c1) {
    if (!stats_ || count < 2) return;
    stats_->Update(row, momentum_, mean_.data(), var_.data(), count, c0, c1);
  }

  // Training-mode batch-norm backward of one group, in place, split over
  // columns (each column's sums are over the rows in order either way).
  void GroupBackward(Index count, const T* const* dy, const T* const* xhat, const T* r,
                     T* const* da, T* dgamma, T* dbeta) {
    Buffer<T> scratch(static_cast<size_t>(2 * n_));
    ForColumns(count, n_, [&](Index c0, Index n) {
      kernels::BatchNormBackward(count, dy, xhat, c0, n, r + c0, gamma_ + c0, da, false,
                                 dgamma + c0, dbeta ? dbeta + c0 : nullptr,
                                 scratch.data() + 2 * c0);
    });
  }

  SiteKind kind_;
  Index n_;
  const T* gamma_;
  const T* beta_;
  T eps_, momentum_;
  bool training_;
  Index offset_ = 0;  // eval mode: the step of position 0 (CellConfig::step_offset)
  RunningStats<T>* stats_;
  NormTape<T>* tape_;            // written: the forward pass's record, or null
  const NormTape<T>* recorded_;  // read by backward: a recorded tape, or null
  Buffer<T> mean_, var_, r_;
  // Row-by-row backward: parameter-gradient slots and where they go.
  Buffer<T> slot_gamma_, slot_beta_;
  Index slots_ = 0;
  T* dgamma_ = nullptr;
  T* dbeta_ = nullptr;
};

}  // namespace internal
}  // namespace rnncore

#endif  // RNNCORE_NORM_SITE_H_
