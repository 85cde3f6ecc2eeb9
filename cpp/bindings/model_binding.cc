// Binds rnncore::Model<T> and its tape for one dtype. Conversions and the
// shape checks the core relies on; no math. Every compute call releases the
// GIL.
#include "model_binding.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "arrays.h"
#include "rnncore/model.h"

namespace py = pybind11;

namespace rnncore {
namespace bindings {
namespace {

CellKind ParseCell(const std::string& s) {
  if (s == "rnn") return CellKind::kRnn;
  if (s == "lstm") return CellKind::kLstm;
  if (s == "gru") return CellKind::kGru;
  throw py::value_error("cell must be 'rnn', 'lstm' or 'gru', got '" + s + "'");
}

Activation ParseActivation(const std::string& s) {
  if (s == "tanh") return Activation::kTanh;
  if (s == "relu") return Activation::kRelu;
  throw py::value_error("nonlinearity must be 'tanh' or 'relu', got '" + s + "'");
}

Norm ParseNorm(const std::string& s) {
  if (s == "none") return Norm::kNone;
  if (s == "layer") return Norm::kLayer;
  if (s == "batch") return Norm::kBatch;
  if (s == "batch_input") return Norm::kBatchInput;
  throw py::value_error("norm must be 'none', 'layer', 'batch' or 'batch_input', got '" + s + "'");
}

void CheckShape(const py::array& a, std::initializer_list<Index> shape, const char* name) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  size_t i = 0;
  for (Index d : shape) {
    if (!ok) break;
    ok = a.shape(i++) == d;
  }
  if (!ok) {
    std::string want = "(";
    for (Index d : shape) want += std::to_string(d) + ",";
    want.back() = ')';
    throw py::value_error(std::string(name) + " has the wrong shape; expected " + want);
  }
}

// An optional input (None or an array of real numbers of the given shape) as
// the core reads it (CoreInput); nullopt for None.
template <typename T>
std::optional<Array<T>> OptionalInput(const py::object& obj, std::initializer_list<Index> shape,
                                      const char* name) {
  if (obj.is_none()) return std::nullopt;
  const py::array a = RealArray(obj, name);
  CheckShape(a, shape, name);
  return CoreInput<T>(a);
}

template <typename T>
const T* DataOrNull(const std::optional<Array<T>>& a) {
  return a ? a->data() : nullptr;
}

template <typename T>
void BindModelImpl(py::module_& m, const char* model_name, const char* tape_name) {
  using ModelT = Model<T>;
  using TapeT = ModelTape<T>;

  py::class_<TapeT, std::shared_ptr<TapeT>>(m, tape_name, py::module_local(),
                                            "What a training forward pass keeps for backward.")
      .def_property_readonly("consumed", &TapeT::consumed, "Whether backward() used it.")
      .def_property_readonly("steps", &TapeT::steps)
      .def_property_readonly("batch", &TapeT::batch);

  py::class_<ModelT, std::shared_ptr<ModelT>>(m, model_name, py::module_local(),
                                              "A stack of recurrent layers (core object).")
      .def(py::init([](const std::string& cell, Index input_size, Index hidden_size,
                       Index num_layers, bool bidirectional, bool reverse, bool bias,
                       Index proj_size,
                       const std::string& nonlinearity, bool reset_after, const std::string& norm,
                       double ln_eps, double bn_eps, double bn_momentum, double dropout,
                       double input_dropout, double recurrent_dropout, double zoneout,
                       double clip, double cell_clip, bool peephole, bool input_forget,
                       bool zero_parameters) {
             ModelConfig c;
             c.cell = ParseCell(cell);
             c.input_size = input_size;
             c.hidden_size = hidden_size;
             c.num_layers = num_layers;
             c.bidirectional = bidirectional;
             c.reverse = reverse;
             c.bias = bias;
             c.proj_size = proj_size;
             c.activation = ParseActivation(nonlinearity);
             c.reset_after = reset_after;
             c.norm = ParseNorm(norm);
             c.ln_eps = ln_eps;
             c.bn_eps = bn_eps;
             c.bn_momentum = bn_momentum;
             c.dropout = dropout;
             c.input_dropout = input_dropout;
             c.recurrent_dropout = recurrent_dropout;
             c.zoneout = zoneout;
             c.clip = clip;
             c.cell_clip = cell_clip;
             c.peephole = peephole;
             c.input_forget = input_forget;
             c.Validate();
             return std::make_shared<ModelT>(c, zero_parameters);
           }),
           py::kw_only(), py::arg("cell"), py::arg("input_size"), py::arg("hidden_size"),
           py::arg("num_layers") = 1, py::arg("bidirectional") = false, py::arg("reverse") = false,
           py::arg("bias") = true,
           py::arg("proj_size") = 0, py::arg("nonlinearity") = "tanh",
           py::arg("reset_after") = true, py::arg("norm") = "none", py::arg("ln_eps") = 1e-5,
           py::arg("bn_eps") = 1e-5, py::arg("bn_momentum") = 0.1, py::arg("dropout") = 0.0,
           py::arg("input_dropout") = 0.0, py::arg("recurrent_dropout") = 0.0,
           py::arg("zoneout") = 0.0, py::arg("clip") = 0.0, py::arg("cell_clip") = 0.0,
           py::arg("peephole") = false, py::arg("input_forget") = false,
           py::arg("zero_parameters") = true,
           "A model of these options: zero parameters (zero_parameters=False: left unset, for "
           "a caller that writes every one of them), zero gradients.")
      .def_property_readonly(
          "layout",
          [](const ModelT& self) {
            py::list out;
            for (const auto& p : self.layout())
              out.append(py::make_tuple(p.name, py::tuple(py::cast(p.shape)), p.offset));
            return out;
          },
          "List of (name, shape, offset) of the parameters in the flat buffer.")
      .def(
          "parameter_buffer",
          [](py::object self) {
            ModelT& model = self.cast<ModelT&>();
            return py::array_t<T>({model.num_parameters()}, {sizeof(T)}, model.parameters(), self);
          },
          "The flat parameter buffer as a live NumPy view.")
      .def(
          "copy", [](const ModelT& self) { return std::make_shared<ModelT>(self); },
          "An independent copy: parameters, gradients and running statistics.")
      .def("use_half_weights", &ModelT::UseHalfWeights,
           "Rounds the weight matrices to float16 and keeps float16 copies for the products "
           "that read the weights as dot products (float32 models only).")
      .def_property_readonly("has_half_weights", &ModelT::HasHalfWeights)
      .def(
          "gradient_buffer",
          [](py::object self) {
            ModelT& model = self.cast<ModelT&>();
            return py::array_t<T>({model.num_parameters()}, {sizeof(T)}, model.gradients(), self);
          },
          "The flat gradient buffer as a live NumPy view.")
      .def(
          "forward",
          [](const ModelT& self, const py::object& x_in, const py::object& h0_in,
             const py::object& c0_in,
             const std::optional<py::array_t<std::int64_t, py::array::c_style>>& lengths,
             bool record, bool training, std::uint64_t seed) {
            const ModelConfig& c = self.config();
            const py::array x_any = RealArray(x_in, "x");
            if (x_any.ndim() != 3 || x_any.shape(0) < 1 || x_any.shape(1) < 1 ||
                x_any.shape(2) != c.input_size)
              throw py::value_error("x must have shape (T, B, input_size) with T, B >= 1");
            const Array<T> x = CoreInput<T>(x_any);
            const Index steps = x.shape(0), batch = x.shape(1);
            const Index S = c.num_layers * c.directions(), P = c.out_size();
            const bool lstm = c.cell == CellKind::kLstm;
            const auto h0 = OptionalInput<T>(h0_in, {S, batch, P}, "h_0");
            const auto c0 =
                lstm ? OptionalInput<T>(c0_in, {S, batch, c.hidden_size}, "c_0") : std::nullopt;
            const T* h0p = DataOrNull(h0);
            const T* c0p = DataOrNull(c0);
            const std::int64_t* lp = nullptr;
            if (lengths) {
              CheckShape(*lengths, {batch}, "lengths");
              lp = lengths->data();
            }
            Array<T> out = NewArray<T>({steps, batch, c.directions() * P});
            Array<T> h_n = NewArray<T>({S, batch, P});
            std::optional<Array<T>> c_n;
            if (lstm) c_n = NewArray<T>({S, batch, c.hidden_size});
            T* cnp = c_n ? c_n->mutable_data() : nullptr;
            std::shared_ptr<TapeT> tape;
            if (record) tape = std::make_shared<TapeT>();
            {
              py::gil_scoped_release release;
              self.Forward(steps, batch, x.data(), h0p, c0p, lp, out.mutable_data(),
                           h_n.mutable_data(), cnp, training, tape.get(), seed);
            }
            py::object c_obj = c_n ? py::object(*c_n) : py::object(py::none());
            py::object t_obj = tape ? py::cast(tape) : py::object(py::none());
            return py::make_tuple(out, h_n, c_obj, t_obj);
          },
          py::arg("x"), py::kw_only(), py::arg("h0") = py::none(), py::arg("c0") = py::none(),
          py::arg("lengths") = py::none(), py::arg("record") = false, py::arg("training") = false,
          py::arg("seed") = 0,
          "Runs the stack on time-major x (T, B, input_size); x, h0 and c0 may have any real "
          "dtype and strides (converted to the model's dtype in one copy, or read in place). "
          "training selects batch "
          "statistics (and updates the running ones) and applies dropout and zoneout masks "
          "drawn from seed; record keeps a tape. Returns (out, h_n, c_n or None, tape or None).")
      .def_property_readonly(
          "buffer_layout",
          [](const ModelT& self) {
            py::list out;
            for (const auto& b : self.buffer_layout())
              out.append(py::make_tuple(b.name, b.stats, b.variance, b.one_row, b.width));
            return out;
          },
          "List of (name, stats index, is variance, single row, width) of the running "
          "statistics.")
      .def(
          "get_running",
          [](const ModelT& self, Index stats) {
            const auto& layout = self.buffer_layout();
            const bool known = std::any_of(layout.begin(), layout.end(),
                                           [&](const BufferInfo& b) { return b.stats == stats; });
            if (!known) throw py::value_error("no running statistics at that index");
            const RunningStats<T>& rs = self.running(stats);
            Array<T> mean = NewArray<T>({rs.rows(), rs.width()});
            Array<T> var = NewArray<T>({rs.rows(), rs.width()});
            std::copy(rs.mean(), rs.mean() + rs.rows() * rs.width(), mean.mutable_data());
            std::copy(rs.var(), rs.var() + rs.rows() * rs.width(), var.mutable_data());
            return py::make_tuple(mean, var);
          },
          py::arg("stats"), "Copies of the running mean and variance, each (rows, width).")
      .def(
          "set_running",
          [](ModelT& self, Index stats, const Array<T>& mean, const Array<T>& var) {
            const auto& layout = self.buffer_layout();
            auto it = std::find_if(layout.begin(), layout.end(),
                                   [&](const BufferInfo& b) { return b.stats == stats; });
            if (it == layout.end()) throw py::value_error("no running statistics at that index");
            if (mean.ndim() != 2 || mean.shape(1) != it->width)
              throw py::value_error("running mean must have shape (rows, " +
                                    std::to_string(it->width) + ")");
            CheckShape(var, {mean.shape(0), it->width}, "running var");
            if (it->one_row && mean.shape(0) != 1)
              throw py::value_error("this model keeps a single row of running statistics");
            self.SetRunning(stats, mean.shape(0), mean.data(), var.data());
          },
          py::arg("stats"), py::arg("mean"), py::arg("var"),
          "Replaces the running mean and variance of one site (rows, width).")
      .def(
          "backward",
          [](ModelT& self, TapeT& tape, const py::object& dout_in, const py::object& dh_n_in,
             const py::object& dc_n_in, bool step_norms) {
            const ModelConfig& c = self.config();
            if (tape.owner() != &self) throw py::value_error("tape was recorded by another module");
            if (tape.consumed()) throw py::value_error("tape has already been used by backward()");
            const Index steps = tape.steps(), batch = tape.batch();
            const Index S = c.num_layers * c.directions(), P = c.out_size();
            const bool lstm = c.cell == CellKind::kLstm;
            const auto dout =
                OptionalInput<T>(dout_in, {steps, batch, c.directions() * P}, "grad_out");
            const auto dh_n = OptionalInput<T>(dh_n_in, {S, batch, P}, "grad_h_n");
            const auto dc_n = lstm
                                  ? OptionalInput<T>(dc_n_in, {S, batch, c.hidden_size}, "grad_c_n")
                                  : std::nullopt;
            const T* dop = DataOrNull(dout);
            const T* dhp = DataOrNull(dh_n);
            const T* dcp = DataOrNull(dc_n);
            Array<T> dx = NewArray<T>({steps, batch, c.input_size});
            Array<T> dh0 = NewArray<T>({S, batch, P});
            std::optional<Array<T>> dc0;
            if (lstm) dc0 = NewArray<T>({S, batch, c.hidden_size});
            T* dc0p = dc0 ? dc0->mutable_data() : nullptr;
            std::optional<Array<T>> norms;
            if (step_norms) norms = NewArray<T>({S, steps});
            T* np = norms ? norms->mutable_data() : nullptr;
            {
              py::gil_scoped_release release;
              self.Backward(&tape, dop, dhp, dcp, dx.mutable_data(), dh0.mutable_data(), dc0p, np);
            }
            py::object c_obj = dc0 ? py::object(*dc0) : py::object(py::none());
            py::object n_obj = norms ? py::object(*norms) : py::object(py::none());
            return py::make_tuple(dx, dh0, c_obj, n_obj);
          },
          py::arg("tape"), py::arg("grad_out") = py::none(), py::arg("grad_h_n") = py::none(),
          py::arg("grad_c_n") = py::none(), py::arg("step_norms") = false,
          "Backpropagation through time; the gradients may have any real dtype and strides. "
          "Returns (grad_x, grad_h0, grad_c0 or None, step norms "
          "(layers * directions, T) or None) and adds the parameter gradients into the gradient "
          "buffer.");
}

}  // namespace

void BindModel(py::module_& m) {
  BindModelImpl<float>(m, "ModelF32", "TapeF32");
  BindModelImpl<double>(m, "ModelF64", "TapeF64");
  m.def(
      "mask_hits",
      [](std::uint64_t seed, Index layer, Index direction, int site, double p, std::uint64_t start,
         Index count) {
        if (site < static_cast<int>(MaskSite::kInput) ||
            site > static_cast<int>(MaskSite::kLayerOutput))
          throw py::value_error("site must be in 1..5");
        if (count < 0) throw py::value_error("count must be >= 0");
        if (!(p >= 0 && p < 1)) throw py::value_error("p must be in [0, 1)");
        py::array_t<std::uint8_t> out(count);
        MaskHits(seed, layer, direction, static_cast<MaskSite>(site), p, start, count,
                 out.mutable_data());
        return out.attr("astype")("bool");
      },
      py::kw_only(), py::arg("seed"), py::arg("layer"), py::arg("direction"), py::arg("site"),
      py::arg("p"), py::arg("start") = 0, py::arg("count"),
      "The draws behind the regularization masks: element j is True where element start + j "
      "of the mask of (seed, layer, direction, site) is a hit (probability p; dropped by "
      "dropout, kept by zoneout). Sites: 1 input, 2 recurrent, 3 zoneout h, 4 zoneout c, "
      "5 layer output.");
}

}  // namespace bindings
}  // namespace rnncore
