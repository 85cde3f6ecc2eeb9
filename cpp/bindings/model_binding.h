#ifndef RNNCORE_BINDINGS_MODEL_BINDING_H_
#define RNNCORE_BINDINGS_MODEL_BINDING_H_

#include <pybind11/pybind11.h>

namespace rnncore {
namespace bindings {

// Adds ModelF32 / ModelF64 and TapeF32 / TapeF64 to m.
void BindModel(pybind11::module_& m);

}  // namespace bindings
}  // namespace rnncore

#endif  // RNNCORE_BINDINGS_MODEL_BINDING_H_
