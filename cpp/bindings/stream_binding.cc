// Binds rnncore::Stream<T> for one dtype: the layouts a stream's step takes
// (unbatched, one step, a chunk time-major or batch-first) and their checks;
// no math. Every step releases the GIL.
#include "stream_binding.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "arrays.h"
#include "rnncore/model.h"
#include "rnncore/stream.h"
#include "rnncore/thread_pool.h"

namespace py = pybind11;

namespace rnncore {
namespace bindings {
namespace {

std::string ShapeString(std::initializer_list<Index> dims) {
  std::string s = "(";
  for (Index d : dims) s += std::to_string(d) + ", ";
  if (dims.size() == 1) return s.substr(0, s.size() - 1) + ")";
  return s.substr(0, s.size() - 2) + ")";
}

std::string ShapeOf(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += std::to_string(a.shape(i)) + ", ";
  if (a.ndim() == 1) return s.substr(0, s.size() - 1) + ")";
  return a.ndim() == 0 ? "()" : s.substr(0, s.size() - 2) + ")";
}

// What the Python stream holds: the core stream and the layout of its chunks.
template <typename T>
struct BoundStream {
  BoundStream(std::shared_ptr<const Model<T>> model, Index batch, bool batch_first)
      : stream(std::move(model), batch), batch_first(batch_first) {}
  Stream<T> stream;
  bool batch_first;
};

template <typename T>
py::object Step(BoundStream<T>& self, const py::object& x_in) {
  Stream<T>& s = self.stream;
  const ModelConfig& c = s.model().config();
  const Index B = s.batch(), D = c.input_size, P = c.out_size();
  py::array xa = RealArray(x_in, "x");
  const auto wrong = [&](const std::string& want) {
    return py::value_error("x must have shape " + want + " for this stream of " +
                           std::to_string(B) + (B == 1 ? " row" : " rows") + " and input_size " +
                           std::to_string(D) + ", got " + ShapeOf(xa));
  };
  Index steps = 1;
  if (xa.ndim() == 1) {
    if (B != 1 || xa.shape(0) != D)
      throw wrong(B == 1 ? ShapeString({D}) + " or " + ShapeString({1, D}) : ShapeString({B, D}));
  } else if (xa.ndim() == 2) {
    if (xa.shape(0) != B || xa.shape(1) != D) throw wrong(ShapeString({B, D}));
  } else if (xa.ndim() == 3) {
    if (self.batch_first) {
      if (xa.shape(0) != B || xa.shape(1) < 1 || xa.shape(2) != D)
        throw wrong("(" + std::to_string(B) + ", T, " + std::to_string(D) + ")");
      xa = xa.attr("transpose")(1, 0, 2);
    } else if (xa.shape(0) < 1 || xa.shape(1) != B || xa.shape(2) != D) {
      throw wrong("(T, " + std::to_string(B) + ", " + std::to_string(D) + ")");
    }
    steps = xa.shape(0);
  } else {
    throw wrong(ShapeString({B, D}) + " for one step or " +
                (self.batch_first ? "(B, T, input_size)" : "(T, B, input_size)") + " for a chunk");
  }
  const Array<T> x = CoreInput<T>(xa);
  // The output is made in its final shape (a single step's: no reshape call).
  Array<T> out = xa.ndim() == 1   ? NewArray<T>({P})
                 : xa.ndim() == 2 ? NewArray<T>({B, P})
                                  : NewArray<T>({steps, B, P});
  {
    py::gil_scoped_release release;
    s.Step(steps, x.data(), out.mutable_data());
  }
  if (xa.ndim() == 3 && self.batch_first) return out.attr("transpose")(1, 0, 2);
  return std::move(out);
}

template <typename T>
void BindStreamImpl(py::module_& m, const char* name) {
  using BoundT = BoundStream<T>;
  using ModelT = Model<T>;
  py::class_<BoundT, std::shared_ptr<BoundT>>(m, name, py::module_local(),
                                              "A stream of a unidirectional model (core object).")
      .def(py::init([](std::shared_ptr<ModelT> model, Index batch, bool batch_first) {
             return std::make_shared<BoundT>(std::move(model), batch, batch_first);
           }),
           py::arg("model"), py::arg("batch"), py::arg("batch_first") = false)
      .def("step", &Step<T>, py::arg("x"),
           "Steps the stream through x: (B, input_size) for one step ((input_size,) for a "
           "stream of one row), or a chunk (T, B, input_size) ((B, T, input_size) batch-first); "
           "any real dtype and strides. Returns the outputs in the same layout.")
      .def(
          "step_rows",
          [](BoundT& self, const py::array_t<std::int64_t, py::array::c_style>& rows,
             const py::object& x_in) {
            Stream<T>& s = self.stream;
            const Index D = s.model().config().input_size, P = s.model().config().out_size();
            const py::array xa = RealArray(x_in, "x");
            const Index n = rows.ndim() == 1 ? rows.shape(0) : -1;
            if (n < 1 || xa.ndim() != 2 || xa.shape(0) != n || xa.shape(1) != D)
              throw py::value_error("step_rows takes rows (n,) and x (n, " + std::to_string(D) +
                                    ")");
            const Array<T> x = CoreInput<T>(xa);
            std::vector<Index> r(rows.data(), rows.data() + n);
            Array<T> out = NewArray<T>({n, P});
            {
              py::gil_scoped_release release;
              s.StepRows(1, n, r.data(), x.data(), out.mutable_data());
            }
            return out;
          },
          py::arg("rows"), py::arg("x"),
          "One step of the given distinct rows only: x (n, input_size) -> (n, H_out).")
      .def_property_readonly("batch", [](const BoundT& self) { return self.stream.batch(); })
      .def(
          "time_steps",
          [](BoundT& self, const Array<T>& x, Index n) {
            // For benchmarks: the core's own time per step, without the call's overhead.
            Stream<T>& s = self.stream;
            const ModelConfig& c = s.model().config();
            if (x.size() != s.batch() * c.input_size || n < 1)
              throw py::value_error("time_steps takes x of B * input_size values and n >= 1");
            Buffer<T> out(static_cast<size_t>(s.batch() * c.out_size()));
            py::gil_scoped_release release;
            const auto start = std::chrono::steady_clock::now();
            for (Index i = 0; i < n; ++i) s.Step(1, x.data(), out.data());
            return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
                   static_cast<double>(n);
          },
          py::arg("x"), py::arg("n"),
          "Steps the stream n times through x (B, input_size) inside the core and returns the "
          "seconds per step (a benchmark of the core without the call's overhead).")
      .def(
          "state",
          [](const BoundT& self) {
            const Stream<T>& s = self.stream;
            const ModelConfig& c = s.model().config();
            const Index L = c.num_layers, B = s.batch();
            Array<T> h = NewArray<T>({L, B, c.out_size()});
            std::copy_n(s.h(), h.size(), h.mutable_data());
            if (!s.c()) return py::tuple(py::make_tuple(h, py::none()));
            Array<T> cc = NewArray<T>({L, B, c.hidden_size});
            std::copy_n(s.c(), cc.size(), cc.mutable_data());
            return py::tuple(py::make_tuple(h, cc));
          },
          "Copies of h (L, B, H_out) and c (L, B, H) or None.")
      .def(
          "set_state",
          [](BoundT& self, const py::object& h_in, const py::object& c_in) {
            Stream<T>& s = self.stream;
            const ModelConfig& c = s.model().config();
            const Index L = c.num_layers, B = s.batch();
            std::optional<Array<T>> h, cc;
            if (!h_in.is_none()) {
              h = CoreInput<T>(RealArray(h_in, "h_0"));
              if (h->ndim() != 3 || h->shape(0) != L || h->shape(1) != B ||
                  h->shape(2) != c.out_size())
                throw py::value_error("h_0 must have shape " + ShapeString({L, B, c.out_size()}));
            }
            if (!c_in.is_none() && c.cell == CellKind::kLstm) {
              cc = CoreInput<T>(RealArray(c_in, "c_0"));
              if (cc->ndim() != 3 || cc->shape(0) != L || cc->shape(1) != B ||
                  cc->shape(2) != c.hidden_size)
                throw py::value_error("c_0 must have shape " + ShapeString({L, B, c.hidden_size}));
            }
            s.SetState(h ? h->data() : nullptr, cc ? cc->data() : nullptr);
          },
          py::arg("h"), py::arg("c") = py::none(),
          "Replaces the state of every row (None: zeros); step counts are kept.")
      .def(
          "start_row",
          [](BoundT& self, Index row, const py::object& h_in, const py::object& c_in) {
            Stream<T>& s = self.stream;
            const ModelConfig& c = s.model().config();
            if (row < 0 || row >= s.batch()) throw py::index_error("stream row out of range");
            const Index L = c.num_layers;
            std::optional<Array<T>> h, cc;
            if (!h_in.is_none()) {
              h = CoreInput<T>(RealArray(h_in, "h_0"));
              if (h->ndim() != 2 || h->shape(0) != L || h->shape(1) != c.out_size())
                throw py::value_error("h_0 must have shape " + ShapeString({L, c.out_size()}));
            }
            if (!c_in.is_none() && c.cell == CellKind::kLstm) {
              cc = CoreInput<T>(RealArray(c_in, "c_0"));
              if (cc->ndim() != 2 || cc->shape(0) != L || cc->shape(1) != c.hidden_size)
                throw py::value_error("c_0 must have shape " + ShapeString({L, c.hidden_size}));
            }
            s.StartRow(row, h ? h->data() : nullptr, cc ? cc->data() : nullptr);
          },
          py::arg("row"), py::arg("h") = py::none(), py::arg("c") = py::none(),
          "Starts row over: its state from h (L, H_out) and c (L, H) (None: zeros), its step "
          "count 0.")
      .def(
          "steps",
          [](const BoundT& self) {
            const Stream<T>& s = self.stream;
            py::array_t<std::int64_t> out(s.batch());
            std::copy_n(s.step_counts(), s.batch(), out.mutable_data());
            return out;
          },
          "A copy of the step count of every row (B,).")
      .def(
          "reset",
          [](BoundT& self, const std::optional<py::array_t<std::int64_t>>& rows) {
            if (!rows) {
              self.stream.Reset();
              return;
            }
            const auto r = rows->unchecked<1>();
            for (py::ssize_t i = 0; i < r.shape(0); ++i)
              if (r(i) < 0 || r(i) >= self.stream.batch())
                throw py::index_error("row " + std::to_string(r(i)) +
                                      " is out of range for a stream of " +
                                      std::to_string(self.stream.batch()) + " rows");
            for (py::ssize_t i = 0; i < r.shape(0); ++i) self.stream.ResetRow(r(i));
          },
          py::arg("rows") = py::none(), "Zeroes the state and step count of some or all rows.")
      .def(
          "resize", [](BoundT& self, Index batch) { self.stream.Resize(batch); }, py::arg("batch"),
          "Changes the number of rows (new rows start at zero).");
}

}  // namespace

void BindStream(py::module_& m) {
  BindStreamImpl<float>(m, "StreamF32");
  BindStreamImpl<double>(m, "StreamF64");
  m.def(
      "pool_dispatches", [] { return PoolDispatches(); },
      "How many parallel regions so far handed work to the core's threads (the rest ran on "
      "their caller's thread).");
}

}  // namespace bindings
}  // namespace rnncore
