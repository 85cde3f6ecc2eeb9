#include "rnncore/allocator.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

#include "portable.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace rnncore {
namespace {

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

// Small blocks (a call's step buffers, a streamed step's everything): malloc's
// thread caches serve these in a few nanoseconds, where aligned_alloc splits a
// larger chunk on every call and merges it back on free. The block is aligned
// by hand; the pointer malloc returned sits just below it.
void* AllocateSmall(std::size_t bytes) {
  void* raw = std::malloc(bytes + kAlignment);
  if (!raw) throw std::bad_alloc();
  const std::uintptr_t at =
      (reinterpret_cast<std::uintptr_t>(raw) + kAlignment) & ~(kAlignment - 1);
  void* p = reinterpret_cast<void*>(at);
  static_cast<void**>(p)[-1] = raw;  // malloc aligns to 16, so at - raw >= 16
  return p;
}

void FreeSmall(void* p) { std::free(static_cast<void**>(p)[-1]); }

}  // namespace

void* AllocateBytes(std::size_t bytes) {
  bytes = RoundUp(bytes);
  if (bytes < kCachedBlock) return AllocateSmall(bytes);
  if (void* p = Cache().Take(bytes)) return p;
  void* p = portable::AlignedAlloc(BlockAlignment(bytes), bytes);
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
  if (bytes < kCachedBlock) return FreeSmall(p);
  if (Cache().Give(p, bytes)) return;
  portable::AlignedFree(p);
}

}  // namespace rnncore
