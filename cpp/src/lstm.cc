#include "rnncore/lstm.h"

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
namespace lstm {

using internal::CopyRow;
using internal::NormSite;
using internal::RecurrentDropout;
using internal::StepRows;
using internal::Zoneout;

namespace {

template <typename T>
kernels::GateOptions<T> Options(const CellConfig& c, const CellWeights<T>& w) {
  kernels::GateOptions<T> o;
  o.clip = static_cast<T>(c.clip);
  o.cell_clip = static_cast<T>(c.cell_clip);
  o.peep = w.peep;
  o.input_forget = c.input_forget;
  return o;
}

}  // namespace

template <typename T>
void ForwardPass<T>::Run(const StepIndex& seq, const T* x, Index ldx, const T* h0, const T* c0,
                         T* y, Index ldy, T* h_n, T* c_n, CellTape<T>* tape) const {
  internal::CellScope<T> scope(CellKind::kLstm, seq, config_, w_, tape);
  const Index steps = scope.steps, B = scope.batch, D = scope.input, H = scope.hidden;
  const Index P = scope.out, G = scope.gates, rows = scope.rows;
  NormSite<T>& nx = scope.nx;
  NormSite<T>& nh = scope.nh;
  NormSite<T>& nc = scope.nc;
  const bool proj = config_.proj > 0;

  Buffer<T> h = internal::InitialState(h0, B, P);
  Buffer<T> c = internal::InitialState(c0, B, H);
  Buffer<T> ah(static_cast<size_t>(B * G)), m(static_cast<size_t>(B * H));
  RecurrentDropout<T> rd(config_, B, P);
  internal::StepMatrix<T> whh(w_.w_hh, P, G, 1, P, B, w_.w_hh16, steps == 1);  // W_hh^T
  Buffer<T> ax(static_cast<size_t>(rows * G));
  // fused: a single step's recurrent product came with the input projection.
  const bool fused = internal::ProjectInput(x, steps, B, D, ldx, w_.w_ih, G, ax.data(), &whh,
                                            rd.Apply(h.data()), P, ah.data(), G, w_.w_ih16);
  nx.ForwardAll(seq, ax.data());
  Buffer<T> bias(static_cast<size_t>(G));
  VectorMap<T>(bias.data(), G) = ConstVectorMap<T>(w_.b_ih, G) + ConstVectorMap<T>(w_.b_hh, G);

  Buffer<T> hp(proj ? static_cast<size_t>(B * P) : 0);
  Buffer<T> cn(nc.active() ? static_cast<size_t>(B * H) : 0);
  Buffer<T> gates_buf(static_cast<size_t>(B * G)), tc_buf(static_cast<size_t>(B * H));
  // Zoneout (Krueger et al. 2017): h~ = o tanh(c~) from the new cell value
  // c~; then c and h each keep their previous values where zoned out.
  const Zoneout<T> zh(config_, MaskSite::kZoneH, P), zc(config_, MaskSite::kZoneC, H);
  Buffer<T> c_old(zc.active() ? static_cast<size_t>(B * H) : 0);
  StepRows<T> step_rows;
  std::optional<internal::StepMatrix<T>> whr;  // W_hr^T
  if (proj) whr.emplace(w_.w_hr, H, P, 1, H, B, w_.w_hr16, steps == 1);
  // Gate options: the clip's mask and c_t (peepholes, cell_clip) go to the tape.
  const kernels::GateOptions<T> opt = Options(config_, w_);
  const bool opts = opt.any();
  const bool keep_c = opt.peep || opt.cell_clip > 0;
  if (tape) {
    internal::ResizePositions(tape->gates, seq, G);
    internal::ResizePositions(tape->h_prev, seq, P);
    internal::ResizePositions(tape->c_prev, seq, H);
    internal::ResizePositions(tape->aux, seq, H);
    if (opt.clip > 0) internal::ResizePositions(tape->keep, seq, G);
    if (keep_c) internal::ResizePositions(tape->c_new, seq, H);
  }

  // Where step rows go: the tape when training, step buffers otherwise.
  auto gates_at = [&](Index r, Index b) {
    return tape ? tape->gates.data() + r * G : gates_buf.data() + b * G;
  };
  auto tc_at = [&](Index r, Index b) {
    return tape ? tape->aux.data() + r * H : tc_buf.data() + b * H;
  };
  auto keep_at = [&](Index r) {
    return tape && opt.clip > 0 ? tape->keep.data() + r * G : nullptr;
  };
  auto c_new_at = [&](Index r) { return tape && keep_c ? tape->c_new.data() + r * H : nullptr; };
  // c_t from the step's sums: the plain kernel or the options' one.
  auto gates_and_c = [&](Index r, Index b, T* cb) {
    if (opts)
      kernels::LstmGatesOpt(H, opt, ax.data() + r * G, ah.data() + b * G, bias.data(), cb,
                            gates_at(r, b), cb, keep_at(r), c_new_at(r));
    else
      kernels::LstmGates(H, ax.data() + r * G, ah.data() + b * G, bias.data(), cb, gates_at(r, b),
                         cb);
  };  // Without a projection or zoneout the step's output m is the new h: the
  // kernels write it there (the step's product has read the old h already).
  const bool m_is_h = !proj && !zh.active();
  auto m_at = [&](Index b) { return m_is_h ? h.data() + b * P : m.data() + b * H; };
  // Row b's output once the kernels have written it, when it is h: into y
  // by the row's own thread (otherwise y is written after the step's
  // projection or zoneout).
  auto h_to_y = [&](Index r, Index b) {
    if (m_is_h) CopyRow(m_at(b), y + r * ldy, P);
  };

  // Layer norm and eval-mode batch norm normalize each row on its own, so a
  // step is one pass over its rows (one parallel region); batch norm in
  // training needs the whole step first.
  const bool row_norms =
      (!nh.active() || nh.step_row_local()) && (!nc.active() || nc.step_row_local());
  for (Index k = 0; k < steps; ++k) {
    const bool product = k > 0 || !fused;
    if (row_norms) {
      nh.BeginStep(k);
      nc.BeginStep(k);
    }
    auto row = [&](Index b) {
      const Index r = seq.Row(k, b);
      if (r < 0) return;
      if (tape) {
        CopyRow(h.data() + b * P, tape->h_prev.data() + r * P, P);
        CopyRow(c.data() + b * H, tape->c_prev.data() + r * H, H);
      }
      T* cb = c.data() + b * H;
      if (zc.active()) CopyRow(cb, c_old.data() + b * H, H);
      if (row_norms && nh.active()) nh.StepRow(ah.data() + b * G, r);
      if (nc.active()) {
        gates_and_c(r, b, cb);
        if (row_norms) {  // h = o tanh(N_c(c)); c itself is carried un-normalized
          T* cnb = cn.data() + b * H;
          CopyRow(cb, cnb, H);
          nc.StepRow(cnb, r);
          kernels::LstmOutput(H, gates_at(r, b), cnb, tc_at(r, b), m_at(b));
          h_to_y(r, b);
        }
      } else if (opts) {
        gates_and_c(r, b, cb);
        kernels::LstmOutput(H, gates_at(r, b), cb, tc_at(r, b), m_at(b));
        h_to_y(r, b);
      } else {
        kernels::LstmForward(H, ax.data() + r * G, ah.data() + b * G, bias.data(), cb,
                             gates_at(r, b), cb, tc_at(r, b), m_at(b));
        h_to_y(r, b);
      }
    };
    auto whole_step = [&] {  // batch norm in training of the recurrent term
      if (!nh.active()) return;
      step_rows.FromStep(seq, k, ah.data(), G);
      nh.ForwardStep(k, step_rows);
    };
    internal::StepProductThenRows(whh, product, rd.Apply(h.data()), P, ah.data(), G, G, row_norms,
                                  whole_step, row);
    if (nc.active() && !row_norms) {  // h = o tanh(N_c(c)) over the step's rows
      for (Index b = 0; b < B; ++b) CopyRow(c.data() + b * H, cn.data() + b * H, H);
      step_rows.FromStep(seq, k, cn.data(), H);
      nc.ForwardStep(k, step_rows);
      internal::ForRows(B, H, [&](Index b) {
        const Index r = seq.Row(k, b);
        if (r < 0) return;
        kernels::LstmOutput(H, gates_at(r, b), cn.data() + b * H, tc_at(r, b), m_at(b));
        h_to_y(r, b);
      });
    }
    if (m_is_h && !zc.active()) continue;  // the rows have written y already
    T* out = m_is_h ? h.data() : m.data();
    if (proj) {
      whr->Product(m.data(), H, hp.data(), P);
      out = hp.data();
    }
    for (Index b = 0; b < B; ++b) {
      const Index r = seq.Row(k, b);
      if (r < 0) continue;
      T* ob = out + b * P;
      if (zc.active()) zc.Blend(r, c_old.data() + b * H, c.data() + b * H);
      if (zh.active()) zh.Blend(r, h.data() + b * P, ob);
      if (m_is_h) continue;  // y is written
      CopyRow(ob, h.data() + b * P, P);
      CopyRow(ob, y + r * ldy, P);
    }
  }
  std::copy(h.begin(), h.end(), h_n);
  std::copy(c.begin(), c.end(), c_n);
}

template <typename T>
void ForwardPass<T>::Iterate(Index batch, const T* x, const T* h_prev, const T* c_prev, T* h,
                             T* c) const {
  const StepIndex seq(1, batch, nullptr, false);
  Buffer<T> y(static_cast<size_t>(batch * config_.out()));
  Run(seq, x, config_.input, h_prev, c_prev, y.data(), config_.out(), h, c, nullptr);
}

template <typename T>
void BackwardPass<T>::Run(const StepIndex& seq, const T* x, Index ldx, const CellTape<T>& tape,
                          const T* dy, Index ldy, T* dh, T* dc, T* dx, Index lddx,
                          const CellGrads<T>& grads) const {
  internal::CellScope<T> scope(CellKind::kLstm, seq, config_, w_, tape);
  const Index steps = scope.steps, B = scope.batch, D = scope.input, H = scope.hidden;
  const Index P = scope.out, G = scope.gates, rows = scope.rows;
  NormSite<T>& nx = scope.nx;
  NormSite<T>& nh = scope.nh;
  NormSite<T>& nc = scope.nc;
  const bool proj = config_.proj > 0;

  // dz: gradient of the gates' pre-activations (= of both normalized terms
  // and of the biases). dah: of h W_hh^T (dz after the recurrent-side norm).
  Buffer<T> dz, dah;
  internal::ResizePositions(dz, seq, G);
  if (nh.active()) internal::ResizePositions(dah, seq, G);
  Buffer<T> dstep(static_cast<size_t>(B * G)), dh_new(static_cast<size_t>(B * P));
  Buffer<T> dm_buf(proj ? static_cast<size_t>(B * H) : 0);
  Buffer<T> dh_out;
  if (proj) internal::ResizePositions(dh_out, seq, P);
  Buffer<T> dcn(nc.active() ? static_cast<size_t>(B * H) : 0);
  StepRows<T> step_rows;
  const RecurrentDropout<T> rd(config_, B, P);
  const Zoneout<T> zh(config_, MaskSite::kZoneH, P), zc(config_, MaskSite::kZoneC, H);
  Buffer<T> dh_direct(zh.active() ? static_cast<size_t>(B * P) : 0);
  Buffer<T> dc_direct(zc.active() ? static_cast<size_t>(B * H) : 0);
  internal::StepMatrix<T> whh(w_.w_hh, G, P, P, 1, B);  // W_hh
  std::optional<internal::StepMatrix<T>> whr;           // W_hr
  if (proj) whr.emplace(w_.w_hr, P, H, H, 1, B);

  const kernels::GateOptions<T> opt = Options(config_, w_);
  const bool opts = opt.any();
  auto keep_at = [&](Index r) { return opt.clip > 0 ? tape.keep.data() + r * G : nullptr; };
  auto c_new_at = [&](Index r) {
    return opt.peep || opt.cell_clip > 0 ? tape.c_new.data() + r * H : nullptr;
  };
  const bool nc_rows = nc.active() && nc.backward_row_local();
  const bool nh_rows = nh.active() && nh.backward_row_local();
  const Index slots = internal::NumChunks(B, internal::kStepRows);
  if (nc_rows) nc.BeginRowBackward(grads.gc, grads.bc, slots);
  if (nh_rows) nh.BeginRowBackward(grads.gh, nullptr, slots);

  for (Index k = steps - 1; k >= 0; --k) {
    for (Index b = 0; b < B; ++b) {
      const Index r = seq.Row(k, b);
      if (r < 0) continue;
      VectorMap<T>(dh + b * P, P) += ConstVectorMap<T>(dy + r * ldy, P);
      internal::AddSquaredNorm(grads.dh_sq, r, B, dh + b * P, P);
      // Zoneout: from here on dh and dc are the gradients of h~ and c~.
      if (zh.active()) zh.Split(r, dh + b * P, dh_direct.data() + b * P);
      if (zc.active()) zc.Split(r, dc + b * H, dc_direct.data() + b * H);
    }
    const T* dm = dh;
    if (proj) {
      whr->Product(dh, P, dm_buf.data(), H);
      dm = dm_buf.data();
      for (Index b = 0; b < B; ++b) {
        const Index r = seq.Row(k, b);
        if (r >= 0) CopyRow(dh + b * P, dh_out.data() + r * P, P);
      }
    }
    // Sites whose backward treats rows on their own (layer norm, batch norm
    // in eval mode) run inside the row pass; batch statistics need the step.
    if (nc.active() && !nc_rows) {  // the output path's gradient into c goes through N_c
      for (Index b = 0; b < B; ++b) {
        const Index r = seq.Row(k, b);
        if (r < 0) continue;
        kernels::LstmOutputBackward(H, tape.gates.data() + r * G, tape.aux.data() + r * H,
                                    dm + b * H, dcn.data() + b * H);
      }
      step_rows.FromStep(seq, k, dcn.data(), H);
      nc.BackwardStep(k, step_rows, grads.gc, grads.bc);
    }
    internal::ForRows(B, G, [&](Index b) {  // rows are independent
      const Index r = seq.Row(k, b);
      T* ds = dstep.data() + b * G;
      if (r < 0) {
        std::fill(ds, ds + G, T(0));
        return;
      }
      const T* gates = tape.gates.data() + r * G;
      const Index slot = b / internal::kStepRows;
      if (nc.active()) {
        T* dcnb = dcn.data() + b * H;
        if (nc_rows) {
          kernels::LstmOutputBackward(H, gates, tape.aux.data() + r * H, dm + b * H, dcnb);
          nc.BackwardRow(k, dcnb, r, slot);
        }
        VectorMap<T>(dc + b * H, H) += ConstVectorMap<T>(dcnb, H);
        if (opts)
          kernels::LstmGatesBackwardOpt(H, opt, gates, tape.c_prev.data() + r * H, c_new_at(r),
                                        tape.aux.data() + r * H, dm + b * H, keep_at(r),
                                        dc + b * H, ds);
        else
          kernels::LstmGatesBackward(H, gates, tape.c_prev.data() + r * H,
                                     tape.aux.data() + r * H, dm + b * H, dc + b * H, ds);
      } else if (opts) {
        kernels::LstmBackwardOpt(H, opt, gates, tape.c_prev.data() + r * H, c_new_at(r),
                                 tape.aux.data() + r * H, dm + b * H, keep_at(r), dc + b * H, ds);
      } else {
        kernels::LstmBackward(H, gates, tape.c_prev.data() + r * H, tape.aux.data() + r * H,
                              dm + b * H, dc + b * H, ds);
      }
      CopyRow(ds, dz.data() + r * G, G);
      if (nh_rows) {
        nh.BackwardRow(k, ds, r, slot);
        CopyRow(ds, dah.data() + r * G, G);
      }
    });
    if (nh.active() && !nh_rows)
      nh.BackwardStepRows(seq, k, dstep.data(), grads.gh, nullptr, dah.data());
    whh.Product(dstep.data(), G, dh_new.data(), P);
    rd.MaskGradient(dh_new.data());
    for (Index b = 0; b < B; ++b) {
      if (seq.Row(k, b) < 0) continue;
      CopyRow(dh_new.data() + b * P, dh + b * P, P);
      if (zh.active())
        VectorMap<T>(dh + b * P, P) += ConstVectorMap<T>(dh_direct.data() + b * P, P);
      if (zc.active())
        VectorMap<T>(dc + b * H, H) += ConstVectorMap<T>(dc_direct.data() + b * H, H);
    }
  }

  nc.FinishBackward();
  nh.FinishBackward();
  if (opt.peep) {  // a_i, a_f read w_ci c_{t-1}, w_cf c_{t-1}; a_o reads w_co c_t
    auto gi = VectorMap<T>(grads.peep, H), gf = VectorMap<T>(grads.peep + H, H);
    auto go = VectorMap<T>(grads.peep + 2 * H, H);
    for (Index r = 0; r < rows; ++r) {
      const auto c_prev = ConstVectorMap<T>(tape.c_prev.data() + r * H, H);
      const T* dzr = dz.data() + r * G;
      gi.array() += ConstVectorMap<T>(dzr, H).array() * c_prev.array();
      gf.array() += ConstVectorMap<T>(dzr + H, H).array() * c_prev.array();
      go.array() += ConstVectorMap<T>(dzr + 3 * H, H).array() *
                    ConstVectorMap<T>(tape.c_new.data() + r * H, H).array();
    }
  }

  const T* dwh = nh.active() ? dah.data() : dz.data();
  Buffer<T> dax;
  Buffer<T> dz_sums(static_cast<size_t>(nx.active() ? G : 0), T(0));  // the bias gradient
  const T* dwx = nx.InputGradient(seq, dz, &dax, grads.gx, dz_sums.data());
  Buffer<T> scratch;
  internal::InputSideTerms<T> terms;
  terms.rows = rows;
  terms.input = D;
  terms.width = G;
  terms.x = x;
  terms.ldx = ldx;
  terms.dax = dwx;
  terms.dbx = dz.data();
  terms.dbx_sums = nx.active() ? dz_sums.data() : nullptr;
  // Without norms, dz is the gradient of both products, and of both biases.
  terms.biases = nx.active() ? internal::BiasGradients::kOneTerm
                             : internal::BiasGradients::kOneTermWithWeights;
  terms.dah = dwh;
  terms.h = rd.History(tape.h_prev.data(), rows, &scratch);
  terms.hidden = P;
  terms.recurrent = nx.active() || nh.active() ? internal::RecurrentWeights::kSeparate
                                               : internal::RecurrentWeights::kWithWeights;
  internal::InputSideGradients(terms, w_, grads, dx, lddx);
  if (proj) {
    // m = o * tanh(N_c(c)), zero at inactive positions (their gates are zero).
    Buffer<T> m(static_cast<size_t>(rows * H));
    for (Index r = 0; r < rows; ++r)
      kernels::A(m.data() + r * H, H) =
          kernels::A(tape.gates.data() + r * G + 3 * H, H) * kernels::A(tape.aux.data() + r * H, H);
    internal::WeightGradient(dh_out.data(), rows, P, P, m.data(), H, H, grads.w_hr);
  }
}

template class ForwardPass<float>;
template class ForwardPass<double>;
template class BackwardPass<float>;
template class BackwardPass<double>;

}  // namespace lstm
}  // namespace rnncore
