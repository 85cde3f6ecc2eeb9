// The core's memory: every buffer it computes in comes from here.
#ifndef RNNCORE_ALLOCATOR_H_
#define RNNCORE_ALLOCATOR_H_

#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace rnncore {

// Every buffer the core computes in starts on a 64-byte boundary. Besides
// speed, this makes results reproducible: Eigen's vectorized loops peel
// unaligned heads with scalar code that rounds differently from the packet
// code, so the same data at another address could give other last bits.
constexpr std::size_t kAlignment = 64;

inline bool IsAligned(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % kAlignment == 0;
}

// Aligned memory for the core's buffers. Large blocks are recycled through a
// bounded process-wide cache (allocator.cc): a training loop then reuses pages
// that are already mapped instead of faulting in fresh ones on every call.
void* AllocateBytes(std::size_t bytes);
void FreeBytes(void* p, std::size_t bytes);

// The allocator of Buffer (below), on AllocateBytes. Elements are
// default-initialized: Buffer<T> b(n) and b.resize(n) leave the values unset
// (the core fills most buffers completely, and clearing tens of megabytes of
// tape on every call costs a serial pass over memory); say
// Buffer<T> b(n, T(0)) or b.assign(n, T(0)) where zeros are needed.
template <typename T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U>&) {}  // NOLINT: allocator rebinding
  T* allocate(std::size_t n) { return static_cast<T*>(AllocateBytes(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) { FreeBytes(p, n * sizeof(T)); }
  template <typename U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible<U>::value) {
    ::new (static_cast<void*>(p)) U;  // default-, not value-initialized
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <typename U>
  bool operator==(const AlignedAllocator<U>&) const {
    return true;
  }
  template <typename U>
  bool operator!=(const AlignedAllocator<U>&) const {
    return false;
  }
};

// The core's buffer type.
template <typename T>
using Buffer = std::vector<T, AlignedAllocator<T>>;

}  // namespace rnncore

#endif  // RNNCORE_ALLOCATOR_H_
