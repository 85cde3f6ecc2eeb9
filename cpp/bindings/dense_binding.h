#ifndef RNNCORE_BINDINGS_DENSE_BINDING_H_
#define RNNCORE_BINDINGS_DENSE_BINDING_H_

#include <pybind11/pybind11.h>

namespace rnncore {
namespace bindings {

// Adds dense_forward and dense_backward (float32 and float64) to m.
void BindDense(pybind11::module_& m);

}  // namespace bindings
}  // namespace rnncore

#endif  // RNNCORE_BINDINGS_DENSE_BINDING_H_
