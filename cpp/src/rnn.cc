#include "rnncore/rnn.h"

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
void ForwardSequence(CellTag<CellKind::kRnn>, const CellConfig& config, const CellWeights<T>& w,
                     const StepIndex& seq, const T* x, Index ldx, const T* h0, T* y, Index ldy,
                     T* h_n, CellTape<T>* tape) {
  CellScope<T> scope(CellKind::kRnn, seq, config, w, tape);
  const Index steps = scope.steps, B = scope.batch, D = scope.input, H = scope.hidden;
  const Index rows = scope.rows;
  NormSite<T>& nx = scope.nx;
  NormSite<T>& nh = scope.nh;
  // norm="layer" normalizes the sum of both terms, at the h site.
  const bool norm_sum = config.norm == Norm::kLayer;

  Buffer<T> h = InitialState(h0, B, H);
  Buffer<T> ah(static_cast<size_t>(B * H));
  RecurrentDropout<T> rd(config, B, H);
  StepMatrix<T> whh(w.w_hh, H, H, 1, H, B, w.w_hh16, steps == 1);  // W_hh^T
  Buffer<T> ax(static_cast<size_t>(rows * H));
  // fused: a single step's recurrent product came with the input projection.
  const bool fused = ProjectInput(x, steps, B, D, ldx, w.w_ih, H, ax.data(), &whh,
                                  rd.Apply(h.data()), H, ah.data(), H, w.w_ih16);
  nx.ForwardAll(seq, ax.data());
  Buffer<T> bias(static_cast<size_t>(H));
  VectorMap<T>(bias.data(), H) = ConstVectorMap<T>(w.b_ih, H) + ConstVectorMap<T>(w.b_hh, H);
  const Buffer<T> zeros(static_cast<size_t>(H), T(0));

  const Zoneout<T> zone(config, MaskSite::kZoneH, H);
  Buffer<T> h_new(zone.active() ? static_cast<size_t>(B * H) : 0);
  StepRows<T> step_rows;
  const T clip = static_cast<T>(config.clip);
  if (tape) {
    ResizePositions(tape->h_prev, seq, H);
    ResizePositions(tape->aux, seq, H);
    if (clip > 0) ResizePositions(tape->keep, seq, H);
  }
  // Layer norm (of the sum of both terms) and eval-mode batch norm inside the
  // step's row loop; batch norm in training over the whole step first.
  const bool nh_rows = nh.active() && nh.step_row_local();
  for (Index k = 0; k < steps; ++k) {
    const bool product = k > 0 || !fused;
    if (nh_rows) nh.BeginStep(k);
    auto row = [&](Index b) {
      const Index r = seq.Row(k, b);
      if (r < 0) return;
      if (norm_sum) VectorMap<T>(ah.data() + b * H, H) += ConstVectorMap<T>(ax.data() + r * H, H);
      if (nh_rows) nh.StepRow(ah.data() + b * H, r);
      T* hb = h.data() + b * H;
      if (tape) CopyRow(hb, tape->h_prev.data() + r * H, H);
      // With zoneout the new value h~ is blended with the old one.
      T* out = zone.active() ? h_new.data() + b * H : hb;
      const T* axr = norm_sum ? zeros.data() : ax.data() + r * H;
      if (clip > 0)
        kernels::RnnForwardClip(H, config.activation, clip, axr, ah.data() + b * H, bias.data(),
                                out, tape ? tape->keep.data() + r * H : nullptr);
      else
        kernels::RnnForward(H, config.activation, axr, ah.data() + b * H, bias.data(), out);
      if (tape) CopyRow(out, tape->aux.data() + r * H, H);
      if (zone.active()) {
        zone.Blend(r, hb, out);
        CopyRow(out, hb, H);
      }
      CopyRow(hb, y + r * ldy, H);
    };
    auto whole_step = [&] {  // batch norm in training (norm_sum is layer norm only)
      step_rows.FromStep(seq, k, ah.data(), H);
      nh.ForwardStep(k, step_rows);
    };
    StepProductThenRows(whh, product, rd.Apply(h.data()), H, ah.data(), H, H,
                        !nh.active() || nh_rows, whole_step, row);
  }
  std::copy(h.begin(), h.end(), h_n);
}

template <typename T>
void BackwardSequence(CellTag<CellKind::kRnn>, const CellConfig& config, const CellWeights<T>& w,
                      const StepIndex& seq, const T* x, Index ldx, const CellTape<T>& tape,
                      const T* dy, Index ldy, T* dh, T* dx, Index lddx, const CellGrads<T>& grads) {
  CellScope<T> scope(CellKind::kRnn, seq, config, w, tape);
  const Index steps = scope.steps, B = scope.batch, D = scope.input, H = scope.hidden;
  const Index rows = scope.rows;
  NormSite<T>& nx = scope.nx;
  NormSite<T>& nh = scope.nh;
  const bool norm_sum = config.norm == Norm::kLayer;

  // dz: gradient of the activation's input (= of both normalized terms, and
  // of the biases). dah: of h W_hh^T (dz after the recurrent-side norm).
  Buffer<T> dz, dah;
  ResizePositions(dz, seq, H);
  if (nh.active()) ResizePositions(dah, seq, H);
  Buffer<T> dstep(static_cast<size_t>(B * H)), dh_new(static_cast<size_t>(B * H));
  const RecurrentDropout<T> rd(config, B, H);
  const Zoneout<T> zone(config, MaskSite::kZoneH, H);
  Buffer<T> direct(zone.active() ? static_cast<size_t>(B * H) : 0);
  StepMatrix<T> whh(w.w_hh, H, H, H, 1, B);  // W_hh
  for (Index k = steps - 1; k >= 0; --k) {
    for (Index b = 0; b < B; ++b) {  // serial: the step norms are shared
      const Index r = seq.Row(k, b);
      if (r < 0) continue;
      VectorMap<T>(dh + b * H, H) += ConstVectorMap<T>(dy + r * ldy, H);
      AddSquaredNorm(grads.dh_sq, r, B, dh + b * H, H);
    }
    ForRows(B, H, [&](Index b) {  // rows are independent
      const Index r = seq.Row(k, b);
      T* ds = dstep.data() + b * H;
      if (r < 0) {
        std::fill(ds, ds + H, T(0));
        return;
      }
      if (zone.active()) zone.Split(r, dh + b * H, direct.data() + b * H);
      kernels::RnnBackward(H, config.activation, tape.aux.data() + r * H, dh + b * H, ds);
      if (config.clip > 0) kernels::A(ds, H) *= kernels::A(tape.keep.data() + r * H, H);
      CopyRow(ds, dz.data() + r * H, H);
    });
    if (nh.active()) nh.BackwardStepRows(seq, k, dstep.data(), grads.gh, nullptr, dah.data());
    whh.Product(dstep.data(), H, dh_new.data(), H);
    rd.MaskGradient(dh_new.data());
    for (Index b = 0; b < B; ++b) {
      if (seq.Row(k, b) < 0) continue;
      CopyRow(dh_new.data() + b * H, dh + b * H, H);
      if (zone.active()) VectorMap<T>(dh + b * H, H) += ConstVectorMap<T>(direct.data() + b * H, H);
    }
  }
  nh.FinishBackward();

  const T* dwh = nh.active() ? dah.data() : dz.data();
  // The input term's gradient: the normalized sum's (norm="layer", where the
  // input site is the identity), or dz through the input-side norm.
  Buffer<T> dax;
  const bool summed = !norm_sum && nx.active();  // dz's column sums come with nx's pass
  Buffer<T> dz_sums(static_cast<size_t>(summed ? H : 0), T(0));
  const T* dwx = norm_sum ? dah.data() : nx.InputGradient(seq, dz, &dax, grads.gx, dz_sums.data());
  Buffer<T> scratch;
  InputSideTerms<T> terms;
  terms.rows = rows;
  terms.input = D;
  terms.width = H;
  terms.x = x;
  terms.ldx = ldx;
  terms.dax = dwx;
  terms.dbx = dz.data();
  terms.dbx_sums = summed ? dz_sums.data() : nullptr;
  // Without norms, dz is the gradient of both products, and of both biases.
  const bool plain = !norm_sum && !nx.active();
  terms.biases = plain ? BiasGradients::kOneTermWithWeights : BiasGradients::kOneTerm;
  terms.dah = dwh;
  terms.h = rd.History(tape.h_prev.data(), rows, &scratch);
  terms.hidden = H;
  // norm="layer": one normalized sum, whose gradient is both products'.
  terms.recurrent = norm_sum || (plain && !nh.active()) ? RecurrentWeights::kWithWeights
                                                        : RecurrentWeights::kSeparate;
  InputSideGradients(terms, w, grads, dx, lddx);
}

}  // namespace internal

template class HiddenStateForwardPass<CellKind::kRnn, float>;
template class HiddenStateForwardPass<CellKind::kRnn, double>;
template class HiddenStateBackwardPass<CellKind::kRnn, float>;
template class HiddenStateBackwardPass<CellKind::kRnn, double>;

}  // namespace rnncore
