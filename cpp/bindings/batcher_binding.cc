// Binds rnncore::StreamBatcher<T>: shape checks and conversions, the GIL
// released around every wait, and concurrent.futures.Future completion for
// submit() (the worker thread takes the GIL only to start and finish those).
#include "batcher_binding.h"

#include <pybind11/numpy.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "arrays.h"
#include "rnncore/batcher.h"

namespace py = pybind11;

namespace rnncore {
namespace bindings {
namespace {

std::string Dims(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i)
    s += std::to_string(a.shape(i)) + (a.ndim() == 1 ? "," : i + 1 < a.ndim() ? ", " : "");
  return s + ")";
}

template <typename T>
Array<T> Vector(const py::object& obj, Index n, const char* name) {
  const py::array a = RealArray(obj, name);
  if (a.ndim() != 1 || a.shape(0) != n)
    throw py::value_error(std::string(name) + " must have shape (" + std::to_string(n) +
                          ",), got " + Dims(a));
  return CoreInput<T>(a);
}

template <typename T>
std::optional<Array<T>> State(const py::object& obj, Index layers, Index width, const char* name) {
  if (obj.is_none()) return std::nullopt;
  const py::array a = RealArray(obj, name);
  if (a.ndim() != 2 || a.shape(0) != layers || a.shape(1) != width)
    throw py::value_error(std::string(name) + " must have shape (" + std::to_string(layers) + ", " +
                          std::to_string(width) + "), got " + Dims(a));
  return CoreInput<T>(a);
}

// The batcher as Python holds it: destroyed (closed, its worker joined)
// without the GIL, which the worker may need to finish submitted steps.
template <typename T>
struct BoundBatcher {
  std::unique_ptr<StreamBatcher<T>> b;
  ~BoundBatcher() {
    py::gil_scoped_release release;
    b.reset();
  }
};

// A submitted step's Python objects: released by the worker under the GIL
// (whoever drops the last reference then touches no Python object).
struct Pending {
  py::object future, out;
  void Release() {
    future.release().dec_ref();
    out.release().dec_ref();
  }
};

py::object PythonError(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::invalid_argument& x) {
    return py::module_::import("builtins").attr("ValueError")(x.what());
  } catch (const std::bad_alloc&) {
    return py::module_::import("builtins").attr("MemoryError")("out of memory in a batched step");
  } catch (const std::exception& x) {
    return py::module_::import("builtins").attr("RuntimeError")(x.what());
  } catch (...) {
    return py::module_::import("builtins").attr("RuntimeError")("unknown error in a batched step");
  }
}

template <typename T>
void BindBatcherImpl(py::module_& m, const char* name) {
  using BoundT = BoundBatcher<T>;
  py::class_<BoundT, std::shared_ptr<BoundT>>(m, name, py::module_local(),
                                              "A stream batcher (core object).")
      .def(py::init([](std::shared_ptr<Model<T>> model, Index max_batch, double max_delay_ms,
                       Index max_pending) {
             BatcherOptions o;
             o.max_batch = max_batch;
             o.max_delay_ms = max_delay_ms;
             o.max_pending = max_pending;
             auto bound = std::make_shared<BoundT>();
             bound->b = std::make_unique<StreamBatcher<T>>(std::move(model), o);
             // The GIL once per batch for its futures, not once per future.
             bound->b->SetCallbackScope([](const std::function<void()>& run) {
               py::gil_scoped_acquire gil;
               run();
             });
             return bound;
           }),
           py::arg("model"), py::arg("max_batch"), py::arg("max_delay_ms"), py::arg("max_pending"))
      .def(
          "open",
          [](BoundT& self, const py::object& h0, const py::object& c0) {
            const ModelConfig& c = self.b->model().config();
            const auto h = State<T>(h0, c.num_layers, c.out_size(), "h_0");
            std::optional<Array<T>> cc;
            if (c.cell == CellKind::kLstm) cc = State<T>(c0, c.num_layers, c.hidden_size, "c_0");
            const T* hp = h ? h->data() : nullptr;
            const T* cp = cc ? cc->data() : nullptr;
            py::gil_scoped_release release;
            return self.b->Open(hp, cp);
          },
          py::arg("h0") = py::none(), py::arg("c0") = py::none())
      .def(
          "step",
          [](BoundT& self, std::int64_t sid, const py::object& x_in) {
            const ModelConfig& c = self.b->model().config();
            const Array<T> x = Vector<T>(x_in, c.input_size, "x");
            Array<T> out = NewArray<T>({c.out_size()});
            {
              py::gil_scoped_release release;
              self.b->Step(sid, x.data(), out.mutable_data());
            }
            return out;
          },
          py::arg("sid"), py::arg("x"))
      .def(
          "submit",
          [](BoundT& self, std::int64_t sid, const py::object& x_in, py::object future) {
            const ModelConfig& c = self.b->model().config();
            const Array<T> x = Vector<T>(x_in, c.input_size, "x");
            Array<T> out = NewArray<T>({c.out_size()});
            auto pending = std::make_shared<Pending>();
            pending->future = std::move(future);
            pending->out = out;
            typename StreamBatcher<T>::Callbacks cb;
            cb.start = [pending] {  // runs holding the GIL (the callback scope)
              try {
                return pending->future.attr("set_running_or_notify_cancel")().cast<bool>();
              } catch (py::error_already_set&) {
                return false;
              }
            };
            cb.done = [pending](std::exception_ptr error) {  // holding the GIL
              try {
                if (!pending->future.attr("cancelled")().cast<bool>()) {
                  if (error)
                    pending->future.attr("set_exception")(PythonError(error));
                  else
                    pending->future.attr("set_result")(pending->out);
                }
              } catch (py::error_already_set& e) {
                e.discard_as_unraisable("rnncore.StreamBatcher: completing a future");
              }
              pending->Release();
            };
            T* out_data = out.mutable_data();
            {
              py::gil_scoped_release release;
              self.b->Submit(sid, x.data(), out_data, std::move(cb));
            }
          },
          py::arg("sid"), py::arg("x"), py::arg("future"))
      .def(
          "reset",
          [](BoundT& self, std::int64_t sid, const py::object& h0, const py::object& c0) {
            const ModelConfig& c = self.b->model().config();
            const auto h = State<T>(h0, c.num_layers, c.out_size(), "h_0");
            std::optional<Array<T>> cc;
            if (c.cell == CellKind::kLstm) cc = State<T>(c0, c.num_layers, c.hidden_size, "c_0");
            const T* hp = h ? h->data() : nullptr;
            const T* cp = cc ? cc->data() : nullptr;
            py::gil_scoped_release release;
            self.b->Reset(sid, hp, cp);
          },
          py::arg("sid"), py::arg("h0") = py::none(), py::arg("c0") = py::none())
      .def(
          "close",
          [](BoundT& self, std::int64_t sid) {
            py::gil_scoped_release release;
            self.b->Close(sid);
          },
          py::arg("sid"))
      .def("close_all",
           [](BoundT& self) {
             py::gil_scoped_release release;
             self.b->CloseAll();
           })
      .def_property_readonly("open_streams",
                             [](const BoundT& self) { return self.b->open_streams(); })
      .def_property_readonly("closed", [](const BoundT& self) { return self.b->closed(); });
}

}  // namespace

void BindBatcher(py::module_& m) {
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const UnknownStream& e) {
      PyErr_SetString(PyExc_KeyError, e.what());
    }
  });
  BindBatcherImpl<float>(m, "BatcherF32");
  BindBatcherImpl<double>(m, "BatcherF64");
}

}  // namespace bindings
}  // namespace rnncore
