// NumPy arrays whose memory comes from the core's allocator (shared by the
// binding files).
#ifndef RNNCORE_BINDINGS_ARRAYS_H_
#define RNNCORE_BINDINGS_ARRAYS_H_

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <initializer_list>
#include <utility>
#include <vector>

#include "rnncore/allocator.h"
#include "rnncore/common.h"

namespace rnncore {
namespace bindings {

template <typename T>
using Array = pybind11::array_t<T, pybind11::array::c_style>;

// Memory for arrays handed to NumPy: the core's allocator (so that a training
// loop's outputs and gradients are recycled through its block cache instead
// of faulting in fresh pages on every call), with the block size kept in a
// header before the data so that the array's owner can give it back.
template <typename T>
std::pair<T*, pybind11::capsule> OwnedBlock(std::size_t n) {
  const std::size_t bytes = kAlignment + sizeof(T) * (n == 0 ? 1 : n);
  void* block = AllocateBytes(bytes);
  *static_cast<std::size_t*>(block) = bytes;
  pybind11::capsule owner(block, [](void* b) { FreeBytes(b, *static_cast<std::size_t*>(b)); });
  return {reinterpret_cast<T*>(static_cast<char*>(block) + kAlignment), std::move(owner)};
}

// A new C-contiguous array whose data starts on the core's alignment, so that
// results never depend on where NumPy happened to put a buffer.
template <typename T>
Array<T> NewArray(std::initializer_list<Index> shape) {
  std::size_t n = 1;
  std::vector<pybind11::ssize_t> dims;
  for (Index d : shape) {
    n *= static_cast<std::size_t>(d);
    dims.push_back(static_cast<pybind11::ssize_t>(d));
  }
  auto [p, owner] = OwnedBlock<T>(n);
  return Array<T>(dims, p, owner);
}

}  // namespace bindings
}  // namespace rnncore

#endif  // RNNCORE_BINDINGS_ARRAYS_H_
