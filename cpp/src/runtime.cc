#include "rnncore/runtime.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
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

inline void CpuRelax() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// How long an idle worker keeps polling for the next job before it sleeps.
// A time loop hands out one job per step, microseconds apart: polling makes
// that hand-off cost well under a microsecond instead of a futex wake-up.
constexpr auto kSpinTime = std::chrono::microseconds(50);

thread_local bool tls_in_parallel = false;

constexpr int kCountBits = 16;
constexpr std::uint64_t kCountMask = (std::uint64_t(1) << kCountBits) - 1;
constexpr int kMaxParticipants = static_cast<int>(kCountMask);

// A job's chunks are split into contiguous ranges, one per participant (the
// caller is participant 0): the same thread gets the same chunks on every
// step of a sequence, so its slice of the weights stays in its cache.
class Pool {
 public:
  Pool() : threads_(DefaultThreads()) {}

  int threads() const { return threads_.load(); }
  void set_threads(int n) { threads_.store(n); }

  void Run(Index num_chunks, const std::function<void(Index)>& fn) {
    const int want =
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
    EnsureWorkers(want - 1);
    job_ = &fn;
    num_chunks_ = num_chunks;
    participants_ = want;
    pending_.store(want - 1, std::memory_order_relaxed);
    // Publishes the job: a new generation, with its participant count in the
    // low bits so that workers left out read it without touching job data.
    const std::uint64_t ticket = ticket_.load(std::memory_order_relaxed);
    ticket_.store(((ticket >> kCountBits) + 1) << kCountBits | static_cast<std::uint64_t>(want),
                  std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(mu_);
      wake_.notify_all();
    }
    tls_in_parallel = true;
    Work(0);
    tls_in_parallel = false;
    // Poll for the others, then yield: when the cores are oversubscribed a
    // worker may be waiting for this very core.
    const auto until = std::chrono::steady_clock::now() + kSpinTime;
    for (int i = 0; pending_.load(std::memory_order_acquire) != 0; ++i) {
      if (i < 256 || std::chrono::steady_clock::now() < until)
        CpuRelax();
      else
        std::this_thread::yield();
    }
  }

 private:
  void Work(int participant) {
    const Index n = num_chunks_, p = participants_;
    const Index begin = n * participant / p, end = n * (participant + 1) / p;
    for (Index i = begin; i < end; ++i) (*job_)(i);
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
        const auto until = std::chrono::steady_clock::now() + kSpinTime;
        for (int i = 0; t == seen; ++i) {
          CpuRelax();
          t = ticket_.load(std::memory_order_acquire);
          if ((i & 255) == 255 && std::chrono::steady_clock::now() > until) break;
        }
      }
      if (t == seen) {
        std::unique_lock<std::mutex> lock(mu_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, [&] { return ticket_.load(std::memory_order_seq_cst) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
        t = ticket_.load(std::memory_order_acquire);
      }
      seen = t;
      // A participant is waited for, so the job it reads cannot change under it.
      if (id + 1 < static_cast<int>(t & kCountMask)) {
        Work(id + 1);
        pending_.fetch_sub(1, std::memory_order_release);
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
  Index num_chunks_ = 0;
  int participants_ = 0;
  std::atomic<std::uint64_t> ticket_{0};  // generation << kCountBits | participants
  std::atomic<int> pending_{0};
  std::atomic<int> sleepers_{0};
};

// Never destroyed: detached workers may still be polling at exit.
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

// ------------------------------------------------------------ memory

// Blocks at least this large are cached when freed.
constexpr std::size_t kCachedBlock = std::size_t(1) << 18;

std::size_t CacheLimit() {
  if (const char* env = std::getenv("RNNCORE_CACHE_MB")) {
    char* end = nullptr;
    const long mb = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && mb >= 0) return static_cast<std::size_t>(mb) << 20;
  }
  return std::size_t(512) << 20;
}

// Freed large blocks by exact size (repeated calls ask for the same sizes),
// up to a total of CacheLimit() bytes; beyond that they go back to the OS.
class BlockCache {
 public:
  void* Take(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(bytes);
    if (it == free_.end()) return nullptr;
    void* p = it->second;
    free_.erase(it);
    held_ -= bytes;
    return p;
  }
  bool Give(void* p, std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (held_ + bytes > limit_) return false;
    free_.emplace(bytes, p);
    held_ += bytes;
    return true;
  }

 private:
  std::mutex mu_;
  std::multimap<std::size_t, void*> free_;
  std::size_t held_ = 0;
  const std::size_t limit_ = CacheLimit();
};

BlockCache& Cache() {
  static BlockCache* cache = new BlockCache();  // never destroyed: used until exit
  return *cache;
}

// Blocks this large are aligned to (and a multiple of) 2 MiB, so that they can
// be backed by huge pages.
constexpr std::size_t kHugeBlock = std::size_t(4) << 20;
constexpr std::size_t kHugeAlignment = std::size_t(2) << 20;

std::size_t BlockAlignment(std::size_t bytes) {
  return bytes >= kHugeBlock ? kHugeAlignment : kAlignment;
}

std::size_t RoundUp(std::size_t bytes) {
  if (bytes == 0) return kAlignment;
  const std::size_t a = BlockAlignment(bytes);
  return (bytes + a - 1) / a * a;
}

}  // namespace

void* AllocateBytes(std::size_t bytes) {
  bytes = RoundUp(bytes);
  if (bytes >= kCachedBlock)
    if (void* p = Cache().Take(bytes)) return p;
  void* p = std::aligned_alloc(BlockAlignment(bytes), bytes);
  if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // Large tapes and projections: fewer TLB misses and page faults. Advice
  // only: it is fine for the kernel to ignore it.
  if (bytes >= kHugeBlock) madvise(p, bytes, MADV_HUGEPAGE);
#endif
  return p;
}

void FreeBytes(void* p, std::size_t bytes) {
  if (!p) return;
  bytes = RoundUp(bytes);
  if (bytes >= kCachedBlock && Cache().Give(p, bytes)) return;
  std::free(p);
}

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
