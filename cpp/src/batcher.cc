// StreamBatcher: many streams' steps from many threads as batched steps.
#include "rnncore/batcher.h"

#include <algorithm>
#include <string>
#include <utility>

namespace rnncore {

namespace {

template <typename T>
std::vector<T> CopyOrEmpty(const T* p, Index n) {
  return p ? std::vector<T>(p, p + n) : std::vector<T>();
}

}  // namespace

template <typename T>
StreamBatcher<T>::StreamBatcher(std::shared_ptr<const Model<T>> model,
                                const BatcherOptions& options)
    : options_(options), stream_(std::move(model), std::min<Index>(options.max_batch, 64)) {
  Require(options_.max_batch >= 1, "max_batch must be >= 1");
  Require(options_.max_delay_ms >= 0 && options_.max_delay_ms <= 60000,
          "max_delay_ms must be in [0, 60000]");
  Require(options_.max_pending >= 1, "max_pending must be >= 1");
  for (Index r = stream_.batch() - 1; r >= 0; --r) free_rows_.push_back(r);
  worker_ = std::thread([this] { Run(); });
}

template <typename T>
StreamBatcher<T>::~StreamBatcher() {
  CloseAll();
  if (worker_.joinable()) worker_.detach();  // destroyed on its own thread: it is ending
}

template <typename T>
void StreamBatcher<T>::Unknown(std::int64_t sid) const {
  throw UnknownStream("no open stream " + std::to_string(sid) + " in this StreamBatcher");
}

template <typename T>
std::int64_t StreamBatcher<T>::Open(const T* h0, const T* c0) {
  std::unique_lock<std::mutex> lock(mu_);
  if (closing_) throw BatcherClosed("this StreamBatcher is closed");
  if (free_rows_.empty()) {
    const Index old = stream_.batch();
    {
      std::lock_guard<std::mutex> s(stream_mu_);
      stream_.Resize(2 * old);
    }
    for (Index r = 2 * old - 1; r >= old; --r) free_rows_.push_back(r);
  }
  const Index row = free_rows_.back();
  {
    std::lock_guard<std::mutex> s(stream_mu_);
    stream_.StartRow(row, h0, c0);
  }
  free_rows_.pop_back();
  const std::int64_t sid = next_sid_++;
  entries_[sid].row = row;
  ++open_count_;
  return sid;
}

template <typename T>
void StreamBatcher<T>::Push(Entry& e, std::int64_t sid, Request* r) {
  r->row = e.row;
  if (e.queue.empty()) {
    if (ready_.empty()) first_at_ = std::chrono::steady_clock::now();
    ready_.push_back(sid);
  }
  e.queue.push_back(r);
  ++pending_;
  // Wake the worker only when it may go: a first entry, or a full batch.
  if (ready_.size() == 1 || static_cast<Index>(ready_.size()) >= Goal()) work_cv_.notify_one();
}

template <typename T>
void StreamBatcher<T>::Enqueue(std::unique_lock<std::mutex>& lock, std::int64_t sid, Request* r) {
  for (;;) {
    if (closing_) throw BatcherClosed("this StreamBatcher is closed");
    auto it = entries_.find(sid);
    if (it == entries_.end() || !it->second.open) Unknown(sid);
    if (pending_ < options_.max_pending) {
      Push(it->second, sid, r);
      return;
    }
    space_cv_.wait(lock);
  }
}

template <typename T>
void StreamBatcher<T>::Step(std::int64_t sid, const T* x, T* out) {
  Request r;
  r.x.assign(x, x + model().config().input_size);
  r.out = out;
  std::unique_lock<std::mutex> lock(mu_);
  Enqueue(lock, sid, &r);
  r.done.wait(lock, [&] { return r.finished; });
  if (r.error) std::rethrow_exception(r.error);
}

template <typename T>
void StreamBatcher<T>::Submit(std::int64_t sid, const T* x, T* out, Callbacks callbacks) {
  auto r = std::make_unique<Request>();
  r->x.assign(x, x + model().config().input_size);
  r->out = out;
  r->callbacks = std::move(callbacks);
  r->owned = true;
  std::unique_lock<std::mutex> lock(mu_);
  Enqueue(lock, sid, r.get());
  r.release();  // the worker deletes it
}

template <typename T>
void StreamBatcher<T>::Reset(std::int64_t sid, const T* h0, const T* c0) {
  const ModelConfig& c = model().config();
  auto r = std::make_unique<Request>();
  r->kind = Kind::kReset;
  r->h0 = CopyOrEmpty(h0, c.num_layers * c.out_size());
  r->c0 = CopyOrEmpty(c.cell == CellKind::kLstm ? c0 : nullptr, c.num_layers * c.hidden_size);
  r->owned = true;
  std::unique_lock<std::mutex> lock(mu_);
  Enqueue(lock, sid, r.get());
  r.release();
}

template <typename T>
void StreamBatcher<T>::Close(std::int64_t sid) {
  std::unique_lock<std::mutex> lock(mu_);
  if (closing_) throw BatcherClosed("this StreamBatcher is closed");
  auto it = entries_.find(sid);
  if (it == entries_.end() || !it->second.open) Unknown(sid);
  it->second.open = false;
  --open_count_;
  if (it->second.queue.empty()) {  // nothing queued: the row is free now
    free_rows_.push_back(it->second.row);
    entries_.erase(it);
    work_cv_.notify_one();  // one stream fewer to wait for
    return;
  }
  auto r = std::make_unique<Request>();  // the row is freed after the queued entries
  r->kind = Kind::kClose;
  r->owned = true;
  Push(it->second, sid, r.release());
}

template <typename T>
void StreamBatcher<T>::CloseAll() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
  }
  work_cv_.notify_all();
  space_cv_.notify_all();
  if (worker_.joinable() && std::this_thread::get_id() != worker_.get_id()) worker_.join();
}

template <typename T>
Index StreamBatcher<T>::open_streams() const {
  std::lock_guard<std::mutex> lock(mu_);
  return open_count_;
}

template <typename T>
bool StreamBatcher<T>::closed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return closing_;
}

template <typename T>
Index StreamBatcher<T>::Goal() const {
  return std::min<Index>(options_.max_batch, static_cast<Index>(entries_.size()));
}

template <typename T>
void StreamBatcher<T>::Run() {
  const auto delay = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double, std::milli>(options_.max_delay_ms));
  std::vector<Request*> batch;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return !ready_.empty() || closing_; });
      if (ready_.empty()) return;  // closing, and everything has run
      const auto deadline = first_at_ + delay;
      while (!closing_ && static_cast<Index>(ready_.size()) < Goal())
        if (work_cv_.wait_until(lock, deadline) == std::cv_status::timeout) break;
      batch.clear();
      const Index n = std::min<Index>(options_.max_batch, static_cast<Index>(ready_.size()));
      for (Index i = 0; i < n; ++i) {
        const std::int64_t sid = ready_.front();
        ready_.pop_front();
        Entry& e = entries_[sid];
        Request* r = e.queue.front();
        e.queue.pop_front();
        batch.push_back(r);
        if (r->kind == Kind::kClose)
          entries_.erase(sid);  // its last entry; the row is freed after the batch
        else if (!e.queue.empty())
          ready_.push_back(sid);  // its next entry goes into a later batch
      }
      const bool full = pending_ >= options_.max_pending;
      pending_ -= n;
      first_at_ = std::chrono::steady_clock::time_point();  // what is left goes at once
      if (full) space_cv_.notify_all();
    }
    RunBatch(batch);
  }
}

template <typename T>
void StreamBatcher<T>::RunBatch(std::vector<Request*>& batch) {
  const ModelConfig& c = model().config();
  const Index D = c.input_size, P = c.out_size();
  std::vector<Request*> steps;
  std::vector<Index> rows, freed;
  std::vector<char> go(batch.size(), 1);
  bool any_start = false;
  for (Request* r : batch) any_start = any_start || (r->kind == Kind::kStep && r->callbacks.start);
  if (any_start) {
    const auto starts = [&] {
      for (size_t i = 0; i < batch.size(); ++i) {
        Request* r = batch[i];
        if (r->kind != Kind::kStep || !r->callbacks.start) continue;
        try {
          go[i] = r->callbacks.start();
        } catch (...) {
          go[i] = 0;
          r->error = std::current_exception();
        }
      }
    };
    try {
      if (scope_)
        scope_(starts);
      else
        starts();
    } catch (...) {  // the scope itself failed: none of them runs
      for (size_t i = 0; i < batch.size(); ++i)
        if (batch[i]->kind == Kind::kStep && batch[i]->callbacks.start) {
          go[i] = 0;
          batch[i]->error = std::current_exception();
        }
    }
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    Request* r = batch[i];
    if (r->kind == Kind::kClose) freed.push_back(r->row);
    if (r->kind != Kind::kStep || !go[i]) continue;  // skipped steps finish without running
    steps.push_back(r);
    rows.push_back(r->row);
  }
  std::exception_ptr error;
  try {
    Buffer<T> x(static_cast<size_t>(steps.size()) * static_cast<size_t>(D));
    Buffer<T> out(static_cast<size_t>(steps.size()) * static_cast<size_t>(P));
    for (size_t i = 0; i < steps.size(); ++i)
      std::copy(steps[i]->x.begin(), steps[i]->x.end(), x.data() + i * D);
    std::lock_guard<std::mutex> s(stream_mu_);
    for (Request* r : batch)  // a stream's reset and its steps are never in one batch
      if (r->kind == Kind::kReset)
        stream_.StartRow(r->row, r->h0.empty() ? nullptr : r->h0.data(),
                         r->c0.empty() ? nullptr : r->c0.data());
    if (!steps.empty()) {
      stream_.StepRows(1, static_cast<Index>(steps.size()), rows.data(), x.data(), out.data());
      for (size_t i = 0; i < steps.size(); ++i)
        std::copy(out.data() + i * P, out.data() + (i + 1) * P, steps[i]->out);
    }
  } catch (...) {
    error = std::current_exception();
  }
  if (!freed.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    free_rows_.insert(free_rows_.end(), freed.begin(), freed.end());
  }
  for (Request* r : batch)
    if (r->kind == Kind::kStep && !r->error &&
        std::find(steps.begin(), steps.end(), r) != steps.end())
      r->error = error;
  // The waiting callers first, each woken on its own condition (under the
  // lock: a woken caller returns, and its request, on its stack, is gone);
  // then the asynchronous requests' callbacks, outside the locks.
  std::vector<Request*> owned;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (Request* r : batch) {
      if (r->owned) {
        owned.push_back(r);
        continue;
      }
      r->finished = true;
      r->done.notify_one();
    }
  }
  if (owned.empty()) return;
  const auto dones = [&] {
    for (Request* r : owned) {
      if (!r->callbacks.done) continue;
      try {
        r->callbacks.done(r->error);
      } catch (...) {  // a callback's own failure stays with it
      }
    }
  };
  try {
    if (scope_)
      scope_(dones);
    else
      dones();
  } catch (...) {  // the scope's own failure: nothing more can be done for them
  }
  for (Request* r : owned) delete r;
}

template class StreamBatcher<float>;
template class StreamBatcher<double>;

}  // namespace rnncore
