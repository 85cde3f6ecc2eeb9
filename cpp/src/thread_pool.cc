#include "rnncore/thread_pool.h"

#include "rnncore/limits.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#elif defined(__APPLE__)
#include <pthread.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#elif defined(_MSC_VER) && defined(_M_ARM64)
#include <intrin.h>
#endif

namespace rnncore {
namespace {

int UsableCores() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

int DefaultThreads() {
  if (const char* env = std::getenv("RNNCORE_NUM_THREADS")) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && n >= 1 && n <= kMaxThreads) return static_cast<int>(n);
  }
  return std::min(UsableCores(), kMaxThreads);
}

inline void CpuRelax() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#elif defined(_MSC_VER) && defined(_M_ARM64)
  __yield();
#endif
}

// How long an idle worker keeps polling for the next job before it sleeps.
// A time loop hands out one job per step, microseconds apart: polling makes
// that hand-off cost well under a microsecond instead of a futex wake-up.
constexpr auto kSpinTime = std::chrono::microseconds(1000);

// A polling thread checks the clock every kPausesPerCheck pauses; after
// kYieldAfter it yields its core at each check. When the scheduler has put a
// worker on the same core as the thread it waits for (it tends to wake a
// sleeping thread on the waker's core), a poller that never yields holds
// that core for a whole time slice while the other thread cannot run: a
// step of a sequence then costs milliseconds instead of microseconds. Steps
// are shorter than kYieldAfter, so the usual hand-off pays no system call.
constexpr int kPausesPerCheck = 64;
constexpr auto kYieldAfter = std::chrono::microseconds(20);

thread_local bool tls_in_parallel = false;

constexpr int kCountBits = 16;
constexpr std::uint64_t kCountMask = (std::uint64_t(1) << kCountBits) - 1;
constexpr int kMaxParticipants = 256;

// The check-in word of the current job: generation << 17 | open << 16 |
// number of workers inside the job.
constexpr std::uint64_t kOpen = std::uint64_t(1) << kCountBits;
constexpr int kGenShift = kCountBits + 1;

// A job's chunks are split into contiguous ranges, one per participant (the
// caller is participant 0): the same thread gets the same chunks on every
// step of a sequence, so its slice of the weights stays in its cache. A
// participant that has finished its own range takes the chunks others have
// not started (one at a time, from per-range counters), so a worker that the
// operating system has not scheduled (the cores are busy with the caller's
// other threads or other processes) delays the job by at most the chunk it
// is in, not by its whole range. Which thread computes a chunk never changes
// the chunk's result, so results stay independent of the thread count and
// of scheduling.
class Pool {
 public:
  Pool() : threads_(DefaultThreads()) {}

  int threads() const { return threads_.load(); }
  std::uint64_t dispatches() const { return dispatches_.load(std::memory_order_relaxed); }
  void set_threads(int n) { threads_.store(n); }

  void Run(Index num_chunks, const std::function<void(Index)>& fn) {
    int want =
        static_cast<int>(std::min<Index>({threads_.load(), num_chunks, Index(kMaxParticipants)}));
    if (want <= 1 || tls_in_parallel) {
      for (Index i = 0; i < num_chunks; ++i) fn(i);
      return;
    }
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) {  // another caller's job: do ours here, serially
      for (Index i = 0; i < num_chunks; ++i) fn(i);
      return;
    }
    try {
      EnsureWorkers(want - 1);
    } catch (...) {  // no more threads to be had: go on with those there are
      want = static_cast<int>(std::min<Index>(want, static_cast<Index>(workers_.size()) + 1));
      if (want <= 1) {
        busy.unlock();
        for (Index i = 0; i < num_chunks; ++i) fn(i);
        return;
      }
    }
    dispatches_.fetch_add(1, std::memory_order_relaxed);
    failed_.store(false, std::memory_order_relaxed);
    error_ = nullptr;
    job_ = &fn;
    participants_ = want;
    for (int p = 0; p < want; ++p) {
      next_[p].value.store(num_chunks * p / want, std::memory_order_relaxed);
      end_[p] = num_chunks * (p + 1) / want;
    }
    done_.store(0, std::memory_order_relaxed);
    // Opens the job for check-in, then publishes it: a new generation, with
    // its participant count in the low bits so that workers left out read
    // it without touching job data.
    const std::uint64_t ticket = ticket_.load(std::memory_order_relaxed);
    const std::uint64_t gen = (ticket >> kCountBits) + 1;
    state_.store(gen << kGenShift | kOpen, std::memory_order_seq_cst);
    ticket_.store(gen << kCountBits | static_cast<std::uint64_t>(want), std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(mu_);
      wake_.notify_all();
    }
    tls_in_parallel = true;
    Work(0);
    tls_in_parallel = false;
    // Every chunk has been claimed; wait until they are done, then close the
    // job and wait for the workers inside it to leave, so that none reads
    // the job after this call returns.
    Wait([&] { return done_.load(std::memory_order_acquire) == num_chunks; });
    std::uint64_t s = state_.load(std::memory_order_acquire);
    while (!state_.compare_exchange_weak(s, s & ~kOpen, std::memory_order_acq_rel)) {
    }
    Wait([&] { return (state_.load(std::memory_order_acquire) & kCountMask) == 0; });
    // A chunk threw: the others were skipped, and no worker is inside the job
    // any more; the first exception goes to the caller, on the caller's thread.
    if (failed_.load(std::memory_order_acquire)) {
      std::exception_ptr error = error_;
      error_ = nullptr;
      failed_.store(false, std::memory_order_relaxed);
      std::rethrow_exception(error);
    }
  }

 private:
  struct alignas(64) Counter {
    std::atomic<Index> value{0};
  };

  // Polls until done() or until limit has passed, yielding the core at each
  // clock check once kYieldAfter has passed.
  template <typename Done, typename Duration>
  static void Poll(Done done, Duration limit) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 1; !done(); ++i) {
      if (i % kPausesPerCheck != 0) {
        CpuRelax();
        continue;
      }
      const auto waited = std::chrono::steady_clock::now() - start;
      if (waited > limit) return;
      if (waited > kYieldAfter) std::this_thread::yield();
    }
  }

  // Polls cond until it holds.
  template <typename Cond>
  static void Wait(Cond cond) {
    Poll(cond, std::chrono::steady_clock::duration::max());
  }

  // Claims and runs chunks: first from the participant's own range, then
  // from the others'.
  void Work(int participant) {
    const int p = participants_;
    Index ran = 0;
    for (int k = 0; k < p; ++k) {
      const int q = (participant + k) % p;
      for (;;) {
        const Index i = next_[q].value.fetch_add(1, std::memory_order_relaxed);
        if (i >= end_[q]) break;
        // After a chunk has thrown, the rest are only counted, so that the
        // job completes; an exception never leaves a worker thread.
        if (!failed_.load(std::memory_order_relaxed)) {
          try {
            (*job_)(i);
          } catch (...) {
            Fail(std::current_exception());
          }
        }
        ++ran;
      }
    }
    if (ran > 0) done_.fetch_add(ran, std::memory_order_release);
  }

  // Keeps the first exception of the job.
  void Fail(std::exception_ptr error) {
    std::lock_guard<std::mutex> lock(error_mu_);
    if (!failed_.load(std::memory_order_relaxed)) {
      error_ = std::move(error);
      failed_.store(true, std::memory_order_release);
    }
  }

  // Enters the job of generation gen if it is still open.
  bool CheckIn(std::uint64_t gen) {
    std::uint64_t s = state_.load(std::memory_order_acquire);
    for (;;) {
      if ((s >> kGenShift) != gen || !(s & kOpen)) return false;
      if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) return true;
    }
  }

  void EnsureWorkers(int n) {
    while (static_cast<int>(workers_.size()) < n) {
      const int id = static_cast<int>(workers_.size());
      // The ticket as of now, before the job that needs this worker is
      // published: the worker must not take that job for one it has seen.
      const std::uint64_t seen = ticket_.load();
      workers_.emplace_back([this, id, seen] { WorkerLoop(id, seen); });
      workers_.back().detach();  // the pool lives as long as the process
    }
  }

  void WorkerLoop(int id, std::uint64_t seen) {
    tls_in_parallel = true;
    for (;;) {
      std::uint64_t t = ticket_.load(std::memory_order_acquire);
      if (t == seen) {
        Poll(
            [&] {
              t = ticket_.load(std::memory_order_acquire);
              return t != seen;
            },
            kSpinTime);
      }
      if (t == seen) {
        std::unique_lock<std::mutex> lock(mu_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, [&] { return ticket_.load(std::memory_order_seq_cst) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
        t = ticket_.load(std::memory_order_acquire);
      }
      seen = t;
      // Inside a job (checked in), its data cannot change under the worker.
      if (id + 1 < static_cast<int>(t & kCountMask) && CheckIn(t >> kCountBits)) {
        Work(id + 1);
        state_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  std::atomic<int> threads_;
  std::mutex busy_;  // held by the caller whose job the pool is running
  std::mutex mu_;
  std::condition_variable wake_;
  std::vector<std::thread> workers_;
  // The current job; written before ticket_ is bumped.
  const std::function<void(Index)>* job_ = nullptr;
  int participants_ = 0;
  Counter next_[kMaxParticipants];  // next unclaimed chunk of each range
  Index end_[kMaxParticipants] = {};
  std::atomic<Index> done_{0};
  // The first exception a chunk of the current job threw (failed_ says so).
  std::atomic<bool> failed_{false};
  std::mutex error_mu_;
  std::exception_ptr error_;
  std::atomic<std::uint64_t> ticket_{0};  // generation << kCountBits | participants
  std::atomic<std::uint64_t> state_{0};   // see kOpen
  std::atomic<int> sleepers_{0};
  std::atomic<std::uint64_t> dispatches_{0};  // jobs handed to the workers
};

// Never destroyed: detached workers may still be polling at exit.
std::atomic<Pool*> g_pool{nullptr};
std::once_flag g_pool_once;

Pool& GlobalPool() {
  std::call_once(g_pool_once, [] {
    g_pool.store(new Pool());
#if defined(__linux__) || defined(__APPLE__)
    // A forked child has none of the parent's worker threads (and maybe a
    // locked mutex): give it a fresh pool with the same setting.
    pthread_atfork(nullptr, nullptr, [] {
      Pool* fresh = new Pool();
      fresh->set_threads(g_pool.load()->threads());
      g_pool.store(fresh);
    });
#endif
  });
  return *g_pool.load();
}

}  // namespace

int GetNumThreads() { return GlobalPool().threads(); }

void SetNumThreads(int n) {
  Require(n >= 1 && n <= kMaxThreads, "the number of threads must be in 1..4096");
  GlobalPool().set_threads(n);
}

std::uint64_t PoolDispatches() { return GlobalPool().dispatches(); }

void ParallelFor(Index num_chunks, const std::function<void(Index)>& fn) {
  if (num_chunks <= 0) return;
  GlobalPool().Run(num_chunks, fn);
}

}  // namespace rnncore
