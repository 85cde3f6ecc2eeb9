#include "rnncore/gru.h"

#include <optional>

#include "kernels/pointwise.h"
#include "norm_site.h"
#include "parallel_chunks.h"
#include "regularize.h"
#include "sequence_gemm.h"
#include "step_products.h"
#include "tape_rows.h"

namespace rnncore {
namespace gru {

using internal::CopyRow;
using internal::NormSite;
using internal::RecurrentDropout;
using internal::StepRows;
using internal::Zoneout;

template <typename T>
void ForwardPass<T>::Run(const StepIndex& seq, const T* x, Index ldx, const T* h0, T* y, Index ldy,
                         T* h_n, CellTape<T>* tape) const {
  const Index steps = seq.steps(), B = seq.batch(), D = config_.input, H = config_.hidden;
  const Index G = kGates * H, rows = steps * B;
  const bool after = config_.reset_after;
  const auto sites = internal::Sites(config_.norm, CellKind::kGru);
  NormSite<T> nx(sites.x, seq, G, w_.gx, nullptr, config_, w_.rx, tape ? &tape->nx : nullptr);
  NormSite<T> nh(sites.h, seq, G, w_.gh, nullptr, config_, w_.rh, tape ? &tape->nh : nullptr);

  Buffer<T> h = internal::InitialState(h0, B, H);
  Buffer<T> ah(static_cast<size_t>(B * G));
  RecurrentDropout<T> rd(config_, B, H);
  // W_hh^T; reset_before: its r, z rows and its n rows apart.
  std::optional<internal::StepMatrix<T>> whh, wrz, wn;
  if (after) {
    whh.emplace(w_.w_hh, H, G, 1, H, B, w_.w_hh16, steps == 1);
  } else {
    wrz.emplace(w_.w_hh, H, 2 * H, 1, H, B, w_.w_hh16, steps == 1);
    wn.emplace(w_.w_hh + 2 * H * H, H, H, 1, H, B, w_.w_hh16 ? w_.w_hh16 + 2 * H * H : nullptr,
               steps == 1);
  }
  Buffer<T> ax(static_cast<size_t>(rows * G));
  // fused: a single step's recurrent product came with the input projection
  // (reset_after: one product of all gates).
  const bool fused =
      internal::ProjectInput(x, steps, B, D, ldx, w_.w_ih, G, ax.data(), after ? &*whh : nullptr,
                             rd.Apply(h.data()), H, ah.data(), G, w_.w_ih16);
  nx.ForwardAll(seq, ax.data());
  Buffer<T> h_new(static_cast<size_t>(B * H));
  Buffer<T> rh(after ? 0 : static_cast<size_t>(B * H));
  Buffer<T> gates_buf(static_cast<size_t>(B * G)), aux_buf(static_cast<size_t>(B * H));
  const Zoneout<T> zone(config_, MaskSite::kZoneH, H);
  StepRows<T> step_rows;
  if (tape) {
    internal::ResizePositions(tape->gates, seq, G);
    internal::ResizePositions(tape->h_prev, seq, H);
    internal::ResizePositions(tape->aux, seq, H);
  }
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
        kernels::GruForward(H, ax.data() + r * G, ah.data() + b * G, w_.b_ih, w_.b_hh,
                            h.data() + b * H, gates_at(r, b), aux_at(r, b), h_new.data() + b * H);
      };
      auto whole_step = [&] {  // batch norm in training of the recurrent term
        step_rows.FromStep(seq, k, ah.data(), G);
        nh.ForwardStep(k, step_rows);
      };
      internal::StepProductThenRows(*whh, product, u, H, ah.data(), G, G, !nh.active() || nh_rows,
                                    whole_step, row);
    } else {  // reset_before: plain cells only
      wrz->Product(u, H, ah.data(), 2 * H);
      for (Index b = 0; b < B; ++b) {
        const Index r = seq.Row(k, b);
        if (r < 0) continue;
        kernels::GruResetBeforeGates(H, ax.data() + r * G, ah.data() + b * 2 * H, w_.b_ih, w_.b_hh,
                                     u + b * H, gates_at(r, b), rh.data() + b * H);
      }
      // ah now (B, H): (r h) W_hn^T.
      wn->Product(rh.data(), H, ah.data(), H);
      for (Index b = 0; b < B; ++b) {
        const Index r = seq.Row(k, b);
        if (r < 0) continue;
        if (tape) CopyRow(rh.data() + b * H, tape->aux.data() + r * H, H);
        kernels::GruResetBeforeOutput(H, ax.data() + r * G, ah.data() + b * H, w_.b_ih, w_.b_hh,
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
void ForwardPass<T>::Iterate(Index batch, const T* x, const T* h_prev, T* h) const {
  const StepIndex seq(1, batch, nullptr, false);
  Buffer<T> y(static_cast<size_t>(batch * config_.hidden));
  Run(seq, x, config_.input, h_prev, y.data(), config_.hidden, h, nullptr);
}

template <typename T>
void BackwardPass<T>::Run(const StepIndex& seq, const T* x, Index ldx, const CellTape<T>& tape,
                          const T* dy, Index ldy, T* dh, T* dx, Index lddx, bool accumulate_dx,
                          const CellGrads<T>& grads) const {
  const Index steps = seq.steps(), B = seq.batch(), D = config_.input, H = config_.hidden;
  const Index G = kGates * H, rows = steps * B;
  const bool after = config_.reset_after;
  const auto sites = internal::Sites(config_.norm, CellKind::kGru);
  // The sites only read the tape here (and never touch running statistics).
  auto& mtape = const_cast<CellTape<T>&>(tape);
  NormSite<T> nx(sites.x, seq, G, w_.gx, nullptr, config_, nullptr, nullptr);
  NormSite<T> nh(sites.h, seq, G, w_.gh, nullptr, config_, nullptr, nullptr);
  nx.AttachTape(&mtape.nx);
  nh.AttachTape(&mtape.nh);

  // Gradients of the gates' input-side term X and recurrent-side term R (they
  // differ only in the n block of the reset_after form), and, when the
  // recurrent term is normalized, of h W_hh^T.
  Buffer<T> dax, dah, dah_pre;
  internal::ResizePositions(dax, seq, G);
  if (after) internal::ResizePositions(dah, seq, G);
  if (nh.active()) internal::ResizePositions(dah_pre, seq, G);
  Buffer<T> dax_step(static_cast<size_t>(B * G)), dah_step(static_cast<size_t>(B * G));
  Buffer<T> direct(static_cast<size_t>(B * H)), drh(after ? 0 : static_cast<size_t>(B * H));
  Buffer<T> dh_new(static_cast<size_t>(B * H));
  const RecurrentDropout<T> rd(config_, B, H);
  const Zoneout<T> zone(config_, MaskSite::kZoneH, H);
  Buffer<T> zdirect(zone.active() ? static_cast<size_t>(B * H) : 0);
  Buffer<T> du(after ? 0 : static_cast<size_t>(B * H)), u_row(static_cast<size_t>(H));
  // W_hh; reset_before: its r, z rows and its n rows apart.
  std::optional<internal::StepMatrix<T>> whh, wrz, wn;
  if (after) {
    whh.emplace(w_.w_hh, G, H, H, 1, B);
  } else {
    wrz.emplace(w_.w_hh, 2 * H, H, H, 1, B);
    wn.emplace(w_.w_hh + 2 * H * H, H, H, H, 1, B);
  }

  for (Index k = steps - 1; k >= 0; --k) {
    for (Index b = 0; b < B; ++b) {
      const Index r = seq.Row(k, b);
      if (r < 0) continue;
      VectorMap<T>(dh + b * H, H) += ConstVectorMap<T>(dy + r * ldy, H);
      internal::AddSquaredNorm(grads.dh_sq, r, B, dh + b * H, H);
      // Zoneout: from here on dh is the gradient of the new value h~.
      if (zone.active()) zone.Split(r, dh + b * H, zdirect.data() + b * H);
    }
    if (after) {
      internal::ForRows(B, G, [&](Index b) {  // rows are independent
        const Index r = seq.Row(k, b);
        T* ds = dah_step.data() + b * G;
        if (r < 0) {
          std::fill(ds, ds + G, T(0));
          return;
        }
        kernels::GruBackward(H, tape.gates.data() + r * G, tape.aux.data() + r * H,
                             tape.h_prev.data() + r * H, dh + b * H, dax.data() + r * G, ds,
                             direct.data() + b * H);
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
  internal::InputSideGradients(rows, D, G, x, ldx, dwx, dax.data(), dbh, w_, grads, dx, lddx,
                               accumulate_dx, static_cast<const T*>(nullptr),
                               static_cast<const T*>(nullptr), 0,
                               nx.active() ? dbx_sums.data() : nullptr);
  Buffer<T> scratch;
  const T* history = rd.History(tape.h_prev.data(), rows, &scratch);
  if (after) {
    internal::WeightGradient(dwh, rows, G, G, history, H, H, grads.w_hh);
  } else {
    internal::WeightGradient(dax.data(), rows, 2 * H, G, history, H, H, grads.w_hh);
    internal::WeightGradient(dax.data() + 2 * H, rows, H, G, tape.aux.data(), H, H,
                             grads.w_hh + 2 * H * H);
  }
}

template class ForwardPass<float>;
template class ForwardPass<double>;
template class BackwardPass<float>;
template class BackwardPass<double>;

}  // namespace gru
}  // namespace rnncore
