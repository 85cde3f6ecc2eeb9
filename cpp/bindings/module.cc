// The private extension module rnncore._core.
#include <pybind11/pybind11.h>

#include <Eigen/Core>
#include <cstring>
#include <string>

#include "batcher_binding.h"
#include "cpu_features.h"
#include "dense_binding.h"
#include "file_binding.h"
#include "model_binding.h"
#include "stream_binding.h"
#include "rnncore/common.h"
#include "rnncore/limits.h"
#include "rnncore/thread_pool.h"

namespace py = pybind11;

namespace {

std::string CompilerString() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "gcc " __VERSION__;
#elif defined(_MSC_VER)
  return "msvc " + std::to_string(_MSC_VER);
#else
  return "unknown";
#endif
}

// Whether this CPU runs the variant isa (cpu_features.h).
bool CpuSupports(const std::string& isa) { return rnncore::cpu::Runs(isa); }

}  // namespace

PYBIND11_MODULE(RNNCORE_MODULE_NAME, m) {
  m.doc() = "rnncore's compiled core (private; use the rnncore package).";
  m.attr("ISA") = RNNCORE_ISA_NAME;
  m.attr("__version__") = RNNCORE_VERSION;
  // Size limits (rnncore/limits.h).
  m.attr("MAX_DIM") = rnncore::kMaxDim;
  m.attr("MAX_PARAMETER_BYTES") = rnncore::kMaxParameterBytes;
  m.attr("MAX_LAYERS") = rnncore::kMaxLayers;
  m.attr("MAX_THREADS") = rnncore::kMaxThreads;
  m.def("cpu_supports", &CpuSupports, py::arg("isa"),
        "Whether this CPU can run the kernels compiled for isa ('baseline', 'avx2', 'avx512').");
  rnncore::bindings::BindModel(m);
  rnncore::bindings::BindStream(m);
  rnncore::bindings::BindBatcher(m);
  rnncore::bindings::BindDense(m);
  rnncore::bindings::BindFiles(m);
  m.def(
      "same_bytes",
      [](const py::buffer& a, const py::buffer& b) {
        // The stale-tape check of every training step: one memcmp, not a NumPy reduction.
        const py::buffer_info x = a.request(), y = b.request();
        for (const py::buffer_info* i : {&x, &y})
          if (i->ndim != 1 || i->strides[0] != i->itemsize)
            throw py::value_error("same_bytes takes contiguous 1-D buffers");
        const auto nx = x.size * x.itemsize, ny = y.size * y.itemsize;
        return nx == ny && (nx == 0 || std::memcmp(x.ptr, y.ptr, static_cast<size_t>(nx)) == 0);
      },
      py::arg("a"), py::arg("b"), "Whether two contiguous 1-D buffers hold the same bytes.");
  m.def("get_num_threads", &rnncore::GetNumThreads, "Threads used by compute calls.");
  m.def("set_num_threads", &rnncore::SetNumThreads, py::arg("n"),
        "Sets the threads used by compute calls (n >= 1).");
  m.def(
      "build_info",
      []() {
        py::dict d;
        d["compiler"] = CompilerString();
        d["eigen"] = std::to_string(EIGEN_WORLD_VERSION) + "." +
                     std::to_string(EIGEN_MAJOR_VERSION) + "." +
                     std::to_string(EIGEN_MINOR_VERSION);
        d["simd"] = std::string(Eigen::SimdInstructionSetsInUse());
#ifdef NDEBUG
        d["optimized"] = true;
#else
        d["optimized"] = false;
#endif
        return d;
      },
      "Compiler, Eigen version and SIMD instruction sets of this build.");
}
