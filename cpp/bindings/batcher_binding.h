#ifndef RNNCORE_BINDINGS_BATCHER_BINDING_H_
#define RNNCORE_BINDINGS_BATCHER_BINDING_H_

#include <pybind11/pybind11.h>

namespace rnncore {
namespace bindings {

// Adds BatcherF32 / BatcherF64 (rnncore/batcher.h) to m.
void BindBatcher(pybind11::module_& m);

}  // namespace bindings
}  // namespace rnncore

#endif  // RNNCORE_BINDINGS_BATCHER_BINDING_H_
