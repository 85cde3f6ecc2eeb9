// NumPy arrays at the boundary (shared by the binding files): the inputs the
// core reads, and new arrays whose memory comes from the core's allocator.
#ifndef RNNCORE_BINDINGS_ARRAYS_H_
#define RNNCORE_BINDINGS_ARRAYS_H_

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstddef>
#include <initializer_list>
#include <string>
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

// obj as a NumPy array of real numbers (floating, integer or bool dtype), any
// strides; other objects go through NumPy's conversion. Throws TypeError
// naming `name` for other dtypes (complex, object, strings).
inline pybind11::array RealArray(const pybind11::handle& obj, const char* name) {
  pybind11::array a = pybind11::isinstance<pybind11::array>(obj)
                          ? pybind11::reinterpret_borrow<pybind11::array>(obj)
                          : pybind11::array::ensure(obj);
  const char kind = a ? a.dtype().kind() : '?';
  if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b')
    throw pybind11::type_error(std::string(name) + " must be an array of real numbers");
  return a;
}

// An input the core reads (x, a state, a gradient) as the core needs it:
// C-contiguous, of dtype T, its data on the core's alignment (so that
// results never depend on where NumPy put a buffer). a itself when it is
// all that already (the core only reads its inputs), else the one copy,
// converted as NumPy's astype converts (unsafe casting).
template <typename T>
Array<T> CoreInput(const pybind11::array& a) {
  const bool contiguous_t = Array<T>::check_(a);  // dtype T, C-contiguous
  if (contiguous_t && IsAligned(a.data())) return pybind11::reinterpret_borrow<Array<T>>(a);
  const auto n = static_cast<std::size_t>(a.size());
  std::vector<pybind11::ssize_t> dims(a.shape(), a.shape() + a.ndim());
  auto [p, owner] = OwnedBlock<T>(n);
  Array<T> out(dims, p, owner);
  if (contiguous_t) {
    const T* src = static_cast<const T*>(a.data());
    std::copy(src, src + n, p);
  } else if (pybind11::detail::npy_api::get().PyArray_CopyInto_(out.ptr(), a.ptr()) != 0) {
    throw pybind11::error_already_set();
  }
  return out;
}

}  // namespace bindings
}  // namespace rnncore

#endif  // RNNCORE_BINDINGS_ARRAYS_H_
