// Binds rnncore::dense (the dense layer behind rnncore.Linear). Shape and
// dtype checks the core relies on; no math. The GIL is released while the
// core computes.
#include "dense_binding.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "arrays.h"
#include "rnncore/dense.h"

namespace py = pybind11;

namespace rnncore {
namespace bindings {
namespace {

void Expect(bool ok, const std::string& what) {
  if (!ok) throw py::value_error(what);
}

template <typename T>
void Bind(py::module_& m) {
  m.def(
      "dense_forward",
      [](const py::object& x_in, const Array<T>& w, const std::optional<Array<T>>& b) {
        const py::array x_any = RealArray(x_in, "x");
        Expect(x_any.ndim() == 2 && w.ndim() == 2 && x_any.shape(1) == w.shape(1),
               "dense_forward: x must be (R, D) and w (N, D)");
        const Array<T> x = CoreInput<T>(x_any);
        const Index R = x.shape(0), D = x.shape(1), N = w.shape(0);
        Expect(D >= 1 && N >= 1, "dense_forward: D and N must be >= 1");
        Expect(!b || (b->ndim() == 1 && b->shape(0) == N), "dense_forward: b must be (N,)");
        Array<T> y = NewArray<T>({R, N});
        const T* bp = b ? b->data() : nullptr;
        T* yp = y.mutable_data();
        {
          py::gil_scoped_release release;
          dense::Forward(R, D, N, x.data(), w.data(), bp, yp);
        }
        return y;
      },
      py::arg("x"), py::arg("w").noconvert(), py::arg("b").noconvert(),
      "y (R, N) = x (R, D) w^T (N, D) (+ b (N,)). w and b: C-contiguous, of one dtype, "
      "which selects the computation's; x: any real dtype and strides.");
  m.def(
      "dense_backward",
      [](const py::object& x_in, const py::object& gy_in, const Array<T>& w, Array<T> dw,
         std::optional<Array<T>> db, bool need_dx) -> std::optional<Array<T>> {
        const py::array x_any = RealArray(x_in, "x"), gy_any = RealArray(gy_in, "gy");
        Expect(x_any.ndim() == 2 && gy_any.ndim() == 2 && w.ndim() == 2 && dw.ndim() == 2,
               "dense_backward: x, gy, w and dw must be 2-D");
        const Index R = x_any.shape(0), D = x_any.shape(1), N = w.shape(0);
        Expect(w.shape(1) == D && gy_any.shape(0) == R && gy_any.shape(1) == N,
               "dense_backward: x (R, D), gy (R, N), w (N, D) do not agree");
        Expect(dw.shape(0) == N && dw.shape(1) == D, "dense_backward: dw must be (N, D)");
        Expect(!db || (db->ndim() == 1 && db->shape(0) == N), "dense_backward: db must be (N,)");
        Expect(D >= 1 && N >= 1, "dense_backward: D and N must be >= 1");
        const Array<T> x = CoreInput<T>(x_any), gy = CoreInput<T>(gy_any);
        std::optional<Array<T>> dx;
        if (need_dx) dx = NewArray<T>({R, D});
        T* dxp = dx ? dx->mutable_data() : nullptr;
        T* dwp = dw.mutable_data();
        T* dbp = db ? db->mutable_data() : nullptr;
        {
          py::gil_scoped_release release;
          dense::Backward(R, D, N, x.data(), gy.data(), w.data(), dxp, dwp, dbp);
        }
        return dx;
      },
      py::arg("x"), py::arg("gy"), py::arg("w").noconvert(), py::arg("dw").noconvert(),
      py::arg("db").noconvert(), py::arg("need_dx"),
      "x and gy: any real dtype and strides (w selects the dtype). Adds dw += gy^T x and db += "
      "column sums of gy (db may be None) in place; returns "
      "dx = gy w, or None when need_dx is False.");
}

}  // namespace

void BindDense(py::module_& m) {
  Bind<float>(m);
  Bind<double>(m);
}

}  // namespace bindings
}  // namespace rnncore
