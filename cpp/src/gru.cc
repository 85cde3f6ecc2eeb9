#include "rnncore/gru.h"

#include <optional>

#include "cell_pass.h"
#include "kernels/gate_options.h"
#include "kernels/pointwise.h"
#include "norm_site.h"
#include "parallel_chunks.h"
#include "regularize.h"
#include "sequence_gemm.h"
#include "step_products.h"
#include "tape_rows.h"

namespace rnncore {
namespace internal {

template <typename T>
void ForwardSequence(CellTag<CellKind::kGru>, const CellConfig& config, const CellWeights<T>& w,
                     const StepIndex& seq, const T* x, Index ldx, const T* h0, T* y, Index ldy,
                     T* h_n, CellTape<T>* tape) {
  CellScope<T> scope(CellKind::kGru, seq, config, w, tape);
  const Index steps = scope.steps, B = scope.batch, D = scope.input, H = scope.hidden;
  const Index G = scope.gates, rows = scope.rows;
  NormSite<T>& nx = scope.nx;
  NormSite<T>& nh = scope.nh;
  const bool after = config.reset_after;

  Buffer<T> h = InitialState(h0, B, H);
  Buffer<T> ah(static_cast<size_t>(B * G));
  RecurrentDropout<T> rd(config, B, H);
  // W_hh^T; reset_before: its r, z rows and its n rows apart.
  std::optional<StepMatrix<T>> whh, wrz, wn;
  if (after) {
    whh.emplace(w.w_hh, H, G, 1, H, B, w.w_hh16, steps == 1);
  } else {
    wrz.emplace(w.w_hh, H, 2 * H, 1, H, B, w.w_hh16, steps == 1);
    wn.emplace(w.w_hh + 2 * H * H, H, H, 1, H, B, w.w_hh16 ? w.w_hh16 + 2 * H * H : nullptr,
               steps == 1);
  }
  Buffer<T> ax(static_cast<size_t>(rows * G));
  // fused: a single step's recurrent product came with the input projection
  // (reset_after: one product of all gates).
  const bool fused =
      ProjectInput(x, steps, B, D, ldx, w.w_ih, G, ax.data(), after ? &*whh : nullptr,
                   rd.Apply(h.data()), H, ah.data(), G, w.w_ih16);
  nx.ForwardAll(seq, ax.data());
  Buffer<T> h_new(static_cast<size_t>(B * H));
  Buffer<T> rh(after ? 0 : static_cast<size_t>(B * H));
  Buffer<T> gates_buf(static_cast<size_t>(B * G)), aux_buf(static_cast<size_t>(B * H));
  const Zoneout<T> zone(config, MaskSite::kZoneH, H);
  StepRows<T> step_rows;
  const T clip = static_cast<T>(config.clip);
  if (tape) {
    ResizePositions(tape->gates, seq, G);
    ResizePositions(tape->h_prev, seq, H);
    ResizePositions(tape->aux, seq, H);
    if (clip > 0) ResizePositions(tape->keep, seq, G);
  }
  auto keep_at = [&](Index r) { return tape && clip > 0 ? tape->keep.data() + r * G : nullptr; };
  // Where step rows go: the tape when training, a step buffer otherwise.
  auto gates_at = [&](Index r, Index b) {
    return tape ? tape->gates.data() + r * G : gates_buf.data() + b * G;
  };
  auto aux_at = [&](Index r, Index b) {
    return tape ? tape->aux.data() + r * H : aux_buf.data() + b * H;
  };

  // Layer norm and eval-mode batch norm of the recurrent term inside the
  // step's row loop; batch norm in training over the whole step first.
  const bool nh_rows = nh.active() && nh.step_row_local();
  for (Index k = 0; k < steps; ++k) {
    // u: the recurrent products' input; the state update uses h itself.
    const T* u = rd.Apply(h.data());
    if (after) {
      const bool product = k > 0 || !fused;
      if (nh_rows) nh.BeginStep(k);
      auto row = [&](Index b) {
        const Index r = seq.Row(k, b);
        if (r < 0) return;
        if (nh_rows) nh.StepRow(ah.data() + b * G, r);
        if (clip > 0)
          kernels::GruForwardClip(H, clip, ax.data() + r * G, ah.data() + b * G, w.b_ih, w.b_hh,
                                  h.data() + b * H, gates_at(r, b), aux_at(r, b),
                                  h_new.data() + b * H, keep_at(r));
        else
          kernels::GruForward(H, ax.data() + r * G, ah.data() + b * G, w.b_ih, w.b_hh,
                              h.data() + b * H, gates_at(r, b), aux_at(r, b),
                              h_new.data() + b * H);
      };
      auto whole_step = [&] {  // batch norm in training of the recurrent term
        step_rows.FromStep(seq, k, ah.data(), G);
        nh.ForwardStep(k, step_rows);
      };
      StepProductThenRows(*whh, product, u, H, ah.data(), G, G, !nh.active() || nh_rows, whole_step,
                          row);
    } else {  // reset_before: plain cells only
      wrz->Product(u, H, ah.data(), 2 * H);
      for (Index b = 0; b < B; ++b) {
        const Index r = seq.Row(k, b);
        if (r < 0) continue;
        if (clip > 0)
          kernels::GruResetBeforeGatesClip(H, clip, ax.data() + r * G, ah.data() + b * 2 * H,
                                           w.b_ih, w.b_hh, u + b * H, gates_at(r, b),
                                           rh.data() + b * H, keep_at(r));
        else
          kernels::GruResetBeforeGates(H, ax.data() + r * G, ah.data() + b * 2 * H, w.b_ih,
                                       w.b_hh, u + b * H, gates_at(r, b), rh.data() + b * H);
      }
      // ah now (B, H): (r h) W_hn^T.
      wn->Product(rh.data(), H, ah.data(), H);
      for (Index b = 0; b < B; ++b) {
        const Index r = seq.Row(k, b);
        if (r < 0) continue;
        if (tape) CopyRow(rh.data() + b * H, tape->aux.data() + r * H, H);
        if (clip > 0)
          kernels::GruResetBeforeOutputClip(H, clip, ax.data() + r * G, ah.data() + b * H, w.b_ih,
                                            w.b_hh, h.data() + b * H, gates_at(r, b),
                                            h_new.data() + b * H, keep_at(r));
        else
          kernels::GruResetBeforeOutput(H, ax.data() + r * G, ah.data() + b * H, w.b_ih, w.b_hh,
                                        h.data() + b * H, gates_at(r, b), h_new.data() + b * H);
      }
    }
    for (Index b = 0; b < B; ++b) {
      const Index r = seq.Row(k, b);
      if (r < 0) continue;
      if (tape) CopyRow(h.data() + b * H, tape->h_prev.data() + r * H, H);
      if (zone.active()) zone.Blend(r, h.data() + b * H, h_new.data() + b * H);
      CopyRow(h_new.data() + b * H, h.data() + b * H, H);
      CopyRow(h_new.data() + b * H, y + r * ldy, H);
    }
  }
  std::copy(h.begin(), h.end(), h_n);
}

template <typename T>
void BackwardSequence(CellTag<CellKind::kGru>, const CellConfig& config, const CellWeights<T>& w,
                      const StepIndex& seq, const T* x, Index ldx, const CellTape<T>& tape,
                      const T* dy, Index ldy, T* dh, T* dx, Index lddx, const CellGrads<T>& grads) {
  CellScope<T> scope(CellKind::kGru, seq, config, w, tape);
  const Index steps = scope.steps, B = scope.batch, D = scope.input, H = scope.hidden;
  const Index G = scope.gates, rows = scope.rows;
  NormSite<T>& nx = scope.nx;
  NormSite<T>& nh = scope.nh;
  const bool after = config.reset_after;

  // Gradients of the gates' input-side term X and recurrent-side term R (they
  // differ only in the n block of the reset_after form), and, when the
  // recurrent term is normalized, of h W_hh^T.
  Buffer<T> dax, dah, dah_pre;
  ResizePositions(dax, seq, G);
  if (after) ResizePositions(dah, seq, G);
  if (nh.active()) ResizePositions(dah_pre, seq, G);
  Buffer<T> dax_step(static_cast<size_t>(B * G)), dah_step(static_cast<size_t>(B * G));
  Buffer<T> direct(static_cast<size_t>(B * H)), drh(after ? 0 : static_cast<size_t>(B * H));
  Buffer<T> dh_new(static_cast<size_t>(B * H));
  const RecurrentDropout<T> rd(config, B, H);
  const Zoneout<T> zone(config, MaskSite::kZoneH, H);
  Buffer<T> zdirect(zone.active() ? static_cast<size_t>(B * H) : 0);
  Buffer<T> du(after ? 0 : static_cast<size_t>(B * H)), u_row(static_cast<size_t>(H));
  // W_hh; reset_before: its r, z rows and its n rows apart.
  std::optional<StepMatrix<T>> whh, wrz, wn;
  if (after) {
    whh.emplace(w.w_hh, G, H, H, 1, B);
  } else {
    wrz.emplace(w.w_hh, 2 * H, H, H, 1, B);
    wn.emplace(w.w_hh + 2 * H * H, H, H, H, 1, B);
  }

  // clip: the mask of the clamped pre-activations.
  const bool clip = config.clip > 0;
  auto keep_at = [&](Index r) { return clip ? tape.keep.data() + r * G : nullptr; };
  for (Index k = steps - 1; k >= 0; --k) {
    for (Index b = 0; b < B; ++b) {
      const Index r = seq.Row(k, b);
      if (r < 0) continue;
      VectorMap<T>(dh + b * H, H) += ConstVectorMap<T>(dy + r * ldy, H);
      AddSquaredNorm(grads.dh_sq, r, B, dh + b * H, H);
      // Zoneout: from here on dh is the gradient of the new value h~.
      if (zone.active()) zone.Split(r, dh + b * H, zdirect.data() + b * H);
    }
    if (after) {
      ForRows(B, G, [&](Index b) {  // rows are independent
        const Index r = seq.Row(k, b);
        T* ds = dah_step.data() + b * G;
        if (r < 0) {
          std::fill(ds, ds + G, T(0));
          return;
        }
        kernels::GruBackward(H, tape.gates.data() + r * G, tape.aux.data() + r * H,
                             tape.h_prev.data() + r * H, dh + b * H, dax.data() + r * G, ds,
                             direct.data() + b * H, keep_at(r));
        CopyRow(ds, dah.data() + r * G, G);
      });
      if (nh.active())
        nh.BackwardStepRows(seq, k, dah_step.data(), grads.gh, nullptr, dah_pre.data());
      whh->Product(dah_step.data(), G, dh_new.data(), H);
    } else {
      for (Index b = 0; b < B; ++b) {
        const Index r = seq.Row(k, b);
        T* ds = dax_step.data() + b * G;
        if (r < 0) {
          std::fill(ds, ds + G, T(0));
          continue;
        }
        kernels::GruResetBeforeBackwardOutput(H, tape.gates.data() + r * G,
                                              tape.h_prev.data() + r * H, dh + b * H, ds);
        if (clip) kernels::A(ds + H, 2 * H) *= kernels::A(keep_at(r) + H, 2 * H);  // z, n
      }
      // drh (B, H) = da_n W_hn
      wn->Product(dax_step.data() + 2 * H, G, drh.data(), H);
      for (Index b = 0; b < B; ++b) {
        const Index r = seq.Row(k, b);
        if (r < 0) continue;
        T* ds = dax_step.data() + b * G;
        const T* u = tape.h_prev.data() + r * H;
        if (rd.active()) {
          rd.ApplyRow(b, u, u_row.data());
          u = u_row.data();
        }
        kernels::GruResetBeforeBackwardGates(H, tape.gates.data() + r * G, u, dh + b * H,
                                             drh.data() + b * H, ds, direct.data() + b * H,
                                             du.data() + b * H);
        if (clip) kernels::A(ds, H) *= kernels::A(keep_at(r), H);  // r
        CopyRow(ds, dax.data() + r * G, G);
      }
      wrz->Product(dax_step.data(), G, dh_new.data(), H);
      for (Index b = 0; b < B; ++b)
        if (seq.Row(k, b) >= 0)
          VectorMap<T>(dh_new.data() + b * H, H) += ConstVectorMap<T>(du.data() + b * H, H);
    }
    // dh_new is the gradient of the recurrent input u; through its mask, of h.
    rd.MaskGradient(dh_new.data());
    for (Index b = 0; b < B; ++b) {
      if (seq.Row(k, b) < 0) continue;
      VectorMap<T>(dh + b * H, H) =
          ConstVectorMap<T>(dh_new.data() + b * H, H) + ConstVectorMap<T>(direct.data() + b * H, H);
      if (zone.active())
        VectorMap<T>(dh + b * H, H) += ConstVectorMap<T>(zdirect.data() + b * H, H);
    }
  }

  nh.FinishBackward();

  // Bias gradients come from the terms as they enter the gates; the weight
  // gradients from those terms before normalization.
  const T* dbh = after ? dah.data() : dax.data();
  const T* dwh = nh.active() ? dah_pre.data() : dbh;
  Buffer<T> dax_pre;
  Buffer<T> dbx_sums(static_cast<size_t>(nx.active() ? G : 0), T(0));
  const T* dwx = nx.InputGradient(seq, dax, &dax_pre, grads.gx, dbx_sums.data());
  InputSideTerms<T> terms;
  terms.rows = rows;
  terms.input = D;
  terms.width = G;
  terms.x = x;
  terms.ldx = ldx;
  terms.dax = dwx;
  terms.dbx = dax.data();
  terms.dbh = dbh;
  terms.dbx_sums = nx.active() ? dbx_sums.data() : nullptr;
  // reset_before (no norms): both terms are X, whose gradient dax is.
  terms.biases = after ? BiasGradients::kTwoTerms : BiasGradients::kOneTermWithWeights;
  terms.recurrent = RecurrentWeights::kByCaller;  // below
  InputSideGradients(terms, w, grads, dx, lddx);
  Buffer<T> scratch;
  const T* history = rd.History(tape.h_prev.data(), rows, &scratch);
  if (after) {
    WeightGradient(dwh, rows, G, G, history, H, H, grads.w_hh);
  } else {
    WeightGradient(dax.data(), rows, 2 * H, G, history, H, H, grads.w_hh);
    WeightGradient(dax.data() + 2 * H, rows, H, G, tape.aux.data(), H, H, grads.w_hh + 2 * H * H);
  }
}

}  // namespace internal

template class HiddenStateForwardPass<CellKind::kGru, float>;
template class HiddenStateForwardPass<CellKind::kGru, double>;
template class HiddenStateBackwardPass<CellKind::kGru, float>;
template class HiddenStateBackwardPass<CellKind::kGru, double>;

}  // namespace rnncore
