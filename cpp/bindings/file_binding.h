#ifndef RNNCORE_BINDINGS_FILE_BINDING_H_
#define RNNCORE_BINDINGS_FILE_BINDING_H_

#include <pybind11/pybind11.h>

namespace rnncore {
namespace bindings {

// Adds read_safetensors, read_safetensors_bytes, write_safetensors and
// write_safetensors_bytes (rnncore/model_file.h) to m.
void BindFiles(pybind11::module_& m);

}  // namespace bindings
}  // namespace rnncore

#endif  // RNNCORE_BINDINGS_FILE_BINDING_H_
