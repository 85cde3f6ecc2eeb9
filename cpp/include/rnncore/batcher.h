// A stream batcher: the steps of many streams of one model, submitted from
// many threads, run as batched steps of one Stream (rnncore/stream.h).
//
// Every open stream is a row of one Stream, grown as streams open. Callers
// only queue their steps; one worker thread takes the head of every stream
// that has something queued (at most max_batch streams, waiting at most
// max_delay for more once the first arrived, and not at all once every open
// stream has a step queued) and runs them as one Stream::StepRows. A stream's
// queue is first in, first out, and a stream is at most once in a batch, so
// its steps run in the order they were submitted; resets and closes travel
// through the same queues. Each stream gets what its own Stream would give.
//
// Thread-safe. No exception escapes the worker thread: a failed batch hands
// its error to each of its callers.
#ifndef RNNCORE_BATCHER_H_
#define RNNCORE_BATCHER_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <vector>

#include "rnncore/common.h"
#include "rnncore/model.h"
#include "rnncore/stream.h"

namespace rnncore {

// A stream id that is not open (never opened, or closed).
class UnknownStream : public std::out_of_range {
 public:
  using std::out_of_range::out_of_range;
};

// A call on a batcher that CloseAll has closed.
class BatcherClosed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct BatcherOptions {
  Index max_batch = 64;       // streams per batched step, >= 1
  double max_delay_ms = 1.0;  // longest wait for more streams, in [0, 60000]
  Index max_pending = 65536;  // queued entries at most; Step and Submit wait for room
};

template <typename T>
class StreamBatcher {
 public:
  // What an asynchronous step does around its run, on the worker thread:
  // start() before the batch (false: the step is skipped, e.g. cancelled);
  // done(error) after it (error null on success), always exactly once for a
  // step that was queued, and never while the batcher's locks are held.
  struct Callbacks {
    std::function<bool()> start;
    std::function<void(std::exception_ptr)> done;
  };

  // model: unidirectional. Starts the worker thread. Throws InvalidArgument.
  StreamBatcher(std::shared_ptr<const Model<T>> model, const BatcherOptions& options);
  // CloseAll().
  ~StreamBatcher();
  StreamBatcher(const StreamBatcher&) = delete;
  StreamBatcher& operator=(const StreamBatcher&) = delete;

  // A new stream at step 0, state h0 (L, P) and c0 (L, H) (LSTM; null:
  // zeros). Throws BatcherClosed.
  std::int64_t Open(const T* h0, const T* c0);
  // One step of stream sid: x (input) -> out (P), waiting for it. Throws
  // UnknownStream, BatcherClosed, or what the batched step threw.
  void Step(std::int64_t sid, const T* x, T* out);
  // The same, queued: callbacks.done runs when out (which must stay valid
  // until then) holds the result. Throws UnknownStream or BatcherClosed (the
  // callbacks are then not called).
  void Submit(std::int64_t sid, const T* x, T* out, Callbacks callbacks);
  // Starts stream sid over after its queued steps: state h0 / c0 (null:
  // zeros), step 0.
  void Reset(std::int64_t sid, const T* h0, const T* c0);
  // Closes stream sid: its queued entries still run; sid is unknown from now.
  void Close(std::int64_t sid);
  // Runs what is queued, then stops the worker thread (joined unless called
  // on it). Later Open / Step / Submit / Reset throw BatcherClosed.
  // Idempotent.
  void CloseAll();

  // Runs the callbacks of a batch's asynchronous steps (all its start
  // callbacks, later all its done callbacks) inside scope(run), which must
  // call run() once: e.g. to take a lock they all need once per batch
  // instead of once per step. Set before the first Submit.
  void SetCallbackScope(std::function<void(const std::function<void()>&)> scope) {
    scope_ = std::move(scope);
  }

  Index open_streams() const;
  bool closed() const;
  const Model<T>& model() const { return stream_.model(); }

 private:
  enum class Kind { kStep, kReset, kClose };
  struct Request {
    Kind kind = Kind::kStep;
    Index row = 0;
    std::vector<T> x, h0, c0;  // the step's input; a reset's state (empty: zeros)
    T* out = nullptr;
    Callbacks callbacks;  // asynchronous steps
    bool owned = false;   // deleted by the worker once done
    bool finished = false;
    std::condition_variable done;  // its waiter's (Step): one waiter per request
    std::exception_ptr error;
  };
  struct Entry {
    Index row = 0;
    bool open = true;  // false: closed, its queued entries still to run
    std::deque<Request*> queue;
  };

  Index Goal() const;  // streams worth waiting for
  void Enqueue(std::unique_lock<std::mutex>& lock, std::int64_t sid, Request* r);
  void Push(Entry& e, std::int64_t sid, Request* r);
  void Run();
  void RunBatch(std::vector<Request*>& batch);
  [[noreturn]] void Unknown(std::int64_t sid) const;

  BatcherOptions options_;
  Stream<T> stream_;
  std::mutex stream_mu_;   // the stream: resized, started, stepped (after mu_)
  mutable std::mutex mu_;  // everything below
  std::condition_variable work_cv_, space_cv_;
  std::unordered_map<std::int64_t, Entry> entries_;  // open streams, closed ones with entries
  Index open_count_ = 0;
  std::vector<Index> free_rows_;
  std::deque<std::int64_t> ready_;  // streams with queued entries, not in the running batch
  std::chrono::steady_clock::time_point first_at_;
  Index pending_ = 0;
  std::int64_t next_sid_ = 0;
  bool closing_ = false;
  std::function<void(const std::function<void()>&)> scope_;
  std::thread worker_;
};

}  // namespace rnncore

#endif  // RNNCORE_BATCHER_H_
