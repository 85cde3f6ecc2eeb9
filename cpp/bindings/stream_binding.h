#ifndef RNNCORE_BINDINGS_STREAM_BINDING_H_
#define RNNCORE_BINDINGS_STREAM_BINDING_H_

#include <pybind11/pybind11.h>

namespace rnncore {
namespace bindings {

// Adds StreamF32 / StreamF64 (rnncore/stream.h) and pool_dispatches to m.
void BindStream(pybind11::module_& m);

}  // namespace bindings
}  // namespace rnncore

#endif  // RNNCORE_BINDINGS_STREAM_BINDING_H_
