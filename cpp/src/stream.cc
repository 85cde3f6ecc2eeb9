// Stream: step-by-step inference over a model's eval-mode forward pass.
#include "rnncore/stream.h"

#include <algorithm>
#include <utility>

namespace rnncore {

template <typename T>
Stream<T>::Stream(std::shared_ptr<const Model<T>> model, Index batch) : model_(std::move(model)) {
  Require(model_ != nullptr, "a stream needs a model");
  Require(!model_->config().bidirectional,
          "a stream needs a unidirectional model (a bidirectional one reads the whole sequence)");
  Require(!model_->config().reverse,
          "a stream needs a forward model (a reverse one starts from the sequence's end)");
  Resize(batch);
}

template <typename T>
void Stream<T>::Resize(Index batch) {
  Require(batch >= 1, "a stream needs at least one row");
  const Index L = layers(), P = out_size(), H = hidden(), keep = std::min(batch_, batch);
  Buffer<T> h(static_cast<size_t>(L * batch * P), T(0));
  Buffer<T> c(lstm() ? static_cast<size_t>(L * batch * H) : 0, T(0));
  for (Index l = 0; l < L && keep > 0; ++l) {
    std::copy_n(h_.data() + l * batch_ * P, keep * P, h.data() + l * batch * P);
    if (lstm()) std::copy_n(c_.data() + l * batch_ * H, keep * H, c.data() + l * batch * H);
  }
  steps_.resize(static_cast<size_t>(batch), 0);
  h_.swap(h);
  c_.swap(c);
  batch_ = batch;
}

template <typename T>
Index Stream<T>::Offset(std::int64_t k, Index running_rows) const {
  if (model_->config().norm != Norm::kBatch || running_rows <= 1) return 0;
  return static_cast<Index>(std::min<std::int64_t>(k, running_rows - 1));
}

template <typename T>
void Stream<T>::Step(Index steps, const T* x, T* out) {
  Require(steps >= 1, "a step needs at least one time step");
  const Index running_rows = model_->config().norm == Norm::kBatch ? model_->RunningRows() : 0;
  const Index first = Offset(steps_[0], running_rows);
  const bool one_group = std::all_of(steps_.begin(), steps_.end(), [&](std::int64_t k) {
    return Offset(k, running_rows) == first;
  });
  if (!one_group) {  // rows at different running-statistics rows: a call per group
    std::vector<Index> all(static_cast<size_t>(batch_));
    for (Index b = 0; b < batch_; ++b) all[static_cast<size_t>(b)] = b;
    StepRows(steps, batch_, all.data(), x, out);
    return;
  }
  h_next_.resize(h_.size());
  c_next_.resize(c_.size());
  model_->Forward(steps, batch_, x, h_.data(), lstm() ? c_.data() : nullptr, nullptr, out,
                  h_next_.data(), lstm() ? c_next_.data() : nullptr, false, nullptr, 0, first);
  h_.swap(h_next_);
  c_.swap(c_next_);
  for (auto& k : steps_) k += steps;
}

template <typename T>
void Stream<T>::StepRows(Index steps, Index n, const Index* rows, const T* x, T* out) {
  Require(steps >= 1, "a step needs at least one time step");
  Require(n >= 1 && n <= batch_, "a step needs 1 to B of the stream's rows");
  std::vector<char> seen(static_cast<size_t>(batch_), 0);
  for (Index i = 0; i < n; ++i) {
    Require(rows[i] >= 0 && rows[i] < batch_, "stream row out of range");
    Require(!seen[static_cast<size_t>(rows[i])], "a row can take only one step at a time");
    seen[static_cast<size_t>(rows[i])] = 1;
  }
  const Index L = layers(), P = out_size(), H = hidden(), D = model_->config().input_size;
  const Index running_rows = model_->config().norm == Norm::kBatch ? model_->RunningRows() : 0;
  // Positions in x ordered by the running-statistics row they start from;
  // each run of equal offsets is one call of the model.
  std::vector<std::pair<Index, Index>> order(static_cast<size_t>(n));
  for (Index i = 0; i < n; ++i)
    order[static_cast<size_t>(i)] = {Offset(steps_[static_cast<size_t>(rows[i])], running_rows), i};
  std::stable_sort(order.begin(), order.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  // Group g0..g1 keeps its gathered rows and results in blocks starting at
  // g0 rows into each buffer; the state changes only once all have run.
  gx_.resize(static_cast<size_t>(steps * n * D));
  gh_.resize(static_cast<size_t>(L * n * P));
  gc_.resize(lstm() ? static_cast<size_t>(L * n * H) : 0);
  gout_.resize(static_cast<size_t>(steps * n * P));
  ghn_.resize(gh_.size());
  gcn_.resize(gc_.size());
  for (Index g0 = 0; g0 < n;) {
    Index g1 = g0 + 1;
    while (g1 < n && order[static_cast<size_t>(g1)].first == order[static_cast<size_t>(g0)].first)
      ++g1;
    const Index g = g1 - g0;
    T* xg = gx_.data() + steps * g0 * D;
    T* hg = gh_.data() + L * g0 * P;
    T* cg = lstm() ? gc_.data() + L * g0 * H : nullptr;
    for (Index j = 0; j < g; ++j) {
      const Index pos = order[static_cast<size_t>(g0 + j)].second, row = rows[pos];
      for (Index t = 0; t < steps; ++t) std::copy_n(x + (t * n + pos) * D, D, xg + (t * g + j) * D);
      for (Index l = 0; l < L; ++l) {
        std::copy_n(h_.data() + (l * batch_ + row) * P, P, hg + (l * g + j) * P);
        if (cg) std::copy_n(c_.data() + (l * batch_ + row) * H, H, cg + (l * g + j) * H);
      }
    }
    model_->Forward(steps, g, xg, hg, cg, nullptr, gout_.data() + steps * g0 * P,
                    ghn_.data() + L * g0 * P, cg ? gcn_.data() + L * g0 * H : nullptr, false,
                    nullptr, 0, order[static_cast<size_t>(g0)].first);
    g0 = g1;
  }
  // Scatter the results: out in the order of rows, the new state to its rows.
  for (Index g0 = 0; g0 < n;) {
    Index g1 = g0 + 1;
    while (g1 < n && order[static_cast<size_t>(g1)].first == order[static_cast<size_t>(g0)].first)
      ++g1;
    const Index g = g1 - g0;
    for (Index j = 0; j < g; ++j) {
      const Index pos = order[static_cast<size_t>(g0 + j)].second, row = rows[pos];
      for (Index t = 0; t < steps; ++t)
        std::copy_n(gout_.data() + steps * g0 * P + (t * g + j) * P, P, out + (t * n + pos) * P);
      for (Index l = 0; l < L; ++l) {
        std::copy_n(ghn_.data() + L * g0 * P + (l * g + j) * P, P,
                    h_.data() + (l * batch_ + row) * P);
        if (lstm())
          std::copy_n(gcn_.data() + L * g0 * H + (l * g + j) * H, H,
                      c_.data() + (l * batch_ + row) * H);
      }
      steps_[static_cast<size_t>(row)] += steps;
    }
    g0 = g1;
  }
}

template <typename T>
void Stream<T>::SetState(const T* h, const T* c) {
  if (h)
    std::copy(h, h + h_.size(), h_.begin());
  else
    std::fill(h_.begin(), h_.end(), T(0));
  if (!lstm()) return;
  if (c)
    std::copy(c, c + c_.size(), c_.begin());
  else
    std::fill(c_.begin(), c_.end(), T(0));
}

template <typename T>
void Stream<T>::ResetRow(Index b) {
  Require(b >= 0 && b < batch_, "stream row out of range");
  const Index P = out_size(), H = hidden();
  for (Index l = 0; l < layers(); ++l) {
    std::fill_n(h_.data() + (l * batch_ + b) * P, P, T(0));
    if (lstm()) std::fill_n(c_.data() + (l * batch_ + b) * H, H, T(0));
  }
  steps_[static_cast<size_t>(b)] = 0;
}

template <typename T>
void Stream<T>::StartRow(Index b, const T* h, const T* c) {
  ResetRow(b);
  const Index P = out_size(), H = hidden();
  for (Index l = 0; l < layers(); ++l) {
    if (h) std::copy_n(h + l * P, P, h_.data() + (l * batch_ + b) * P);
    if (c && lstm()) std::copy_n(c + l * H, H, c_.data() + (l * batch_ + b) * H);
  }
}

template <typename T>
void Stream<T>::Reset() {
  std::fill(h_.begin(), h_.end(), T(0));
  std::fill(c_.begin(), c_.end(), T(0));
  std::fill(steps_.begin(), steps_.end(), 0);
}

template class Stream<float>;
template class Stream<double>;

}  // namespace rnncore
