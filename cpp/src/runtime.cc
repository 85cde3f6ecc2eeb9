#include "rnncore/runtime.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
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
    if (end != env && *end == '\0' && n >= 1 && n <= 4096) return static_cast<int>(n);
  }
  return UsableCores();
}

thread_local bool tls_in_parallel = false;

// Workers wait for a job, take chunks from a shared counter, and report when
// done. The caller takes chunks too.
class Pool {
 public:
  Pool() : threads_(DefaultThreads()) {}
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

  int threads() const { return threads_.load(); }
  void set_threads(int n) { threads_.store(n); }

  void Run(Index num_chunks, const std::function<void(Index)>& fn) {
    const int want = static_cast<int>(std::min<Index>(threads_.load(), num_chunks));
    if (want <= 1 || tls_in_parallel) {
      for (Index i = 0; i < num_chunks; ++i) fn(i);
      return;
    }
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) {  // another caller's job: do ours here, serially
      for (Index i = 0; i < num_chunks; ++i) fn(i);
      return;
    }
    EnsureWorkers(want - 1);
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = &fn;
      num_chunks_ = num_chunks;
      next_.store(0);
      active_ = want - 1;
      pending_ = want - 1;
      ++generation_;
    }
    wake_.notify_all();
    tls_in_parallel = true;
    Drain();
    tls_in_parallel = false;
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void Drain() {
    for (Index i = next_.fetch_add(1); i < num_chunks_; i = next_.fetch_add(1)) (*job_)(i);
  }

  void EnsureWorkers(int n) {
    while (static_cast<int>(workers_.size()) < n) {
      const int id = static_cast<int>(workers_.size());
      workers_.emplace_back([this, id] { WorkerLoop(id); });
    }
  }

  void WorkerLoop(int id) {
    tls_in_parallel = true;
    std::uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return stop_ || (generation_ != seen && id < active_); });
        if (stop_) return;
        seen = generation_;
      }
      Drain();
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (--pending_ == 0) done_.notify_one();
      }
    }
  }

  std::atomic<int> threads_;
  std::mutex busy_;  // held by the caller whose job the pool is running
  std::mutex mu_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(Index)>* job_ = nullptr;
  Index num_chunks_ = 0;
  std::atomic<Index> next_{0};
  int active_ = 0, pending_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
};

// Never destroyed: workers may still be waiting during static teardown.
std::atomic<Pool*> g_pool{nullptr};
std::once_flag g_pool_once;

Pool& GlobalPool() {
  std::call_once(g_pool_once, [] {
    g_pool.store(new Pool());
#if defined(__linux__)
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
  Require(n >= 1, "the number of threads must be >= 1");
  GlobalPool().set_threads(n);
}

void ParallelFor(Index num_chunks, const std::function<void(Index)>& fn) {
  if (num_chunks <= 0) return;
  GlobalPool().Run(num_chunks, fn);
}

}  // namespace rnncore
