// Binds rnncore/model_file.h: safetensors files to and from NumPy arrays, and
// SafetensorsFile (a Reader: the header now, chosen tensors straight into
// arrays later). The GIL is released while bytes are read, parsed and written.
// Bad contents raise ValueError (the message names the path), missing files
// FileNotFoundError, directories IsADirectoryError, other I/O errors OSError.
#include "file_binding.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "rnncore/model_file.h"

namespace py = pybind11;
namespace mf = rnncore::model_file;

namespace rnncore {
namespace bindings {
namespace {

bool LittleEndianHost() {
  const std::uint16_t one = 1;
  unsigned char first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

// The NumPy dtype of a file dtype, spelled little-endian (so NumPy reads the
// bytes correctly on any host); BF16 has none.
py::dtype NumpyDType(mf::DType d, const std::string& name) {
  switch (d) {
    case mf::DType::kF64: return py::dtype("<f8");
    case mf::DType::kF32: return py::dtype("<f4");
    case mf::DType::kF16: return py::dtype("<f2");
    case mf::DType::kI64: return py::dtype("<i8");
    case mf::DType::kI32: return py::dtype("<i4");
    case mf::DType::kI16: return py::dtype("<i2");
    case mf::DType::kI8: return py::dtype("i1");
    case mf::DType::kU64: return py::dtype("<u8");
    case mf::DType::kU32: return py::dtype("<u4");
    case mf::DType::kU16: return py::dtype("<u2");
    case mf::DType::kU8: return py::dtype("u1");
    case mf::DType::kBool: return py::dtype("?");
    default:
      throw py::value_error("tensor '" + name + "' has dtype " + mf::DTypeName(d) +
                            ", which NumPy cannot represent");
  }
}

mf::DType FileDType(const py::array& a, const std::string& name) {
  const char kind = a.dtype().kind();
  const auto size = a.itemsize();
  const char order = a.dtype().attr("byteorder").cast<std::string>()[0];
  const bool le = order == '<' || order == '|' || (order == '=' && LittleEndianHost());
  if (!le) throw py::value_error("tensor '" + name + "' must be little-endian");
  if (kind == 'f' && size == 8) return mf::DType::kF64;
  if (kind == 'f' && size == 4) return mf::DType::kF32;
  if (kind == 'f' && size == 2) return mf::DType::kF16;
  if (kind == 'i' && size == 8) return mf::DType::kI64;
  if (kind == 'i' && size == 4) return mf::DType::kI32;
  if (kind == 'i' && size == 2) return mf::DType::kI16;
  if (kind == 'i' && size == 1) return mf::DType::kI8;
  if (kind == 'u' && size == 8) return mf::DType::kU64;
  if (kind == 'u' && size == 4) return mf::DType::kU32;
  if (kind == 'u' && size == 2) return mf::DType::kU16;
  if (kind == 'u' && size == 1) return mf::DType::kU8;
  if (kind == 'b' && size == 1) return mf::DType::kBool;
  throw py::value_error("tensor '" + name + "' has a dtype the file format cannot hold: " +
                        py::str(a.dtype()).cast<std::string>());
}

[[noreturn]] void RaiseOSError(const mf::FileError& e, const std::string& path) {
  // OSError(errno, strerror, filename) becomes FileNotFoundError, IsADirectoryError, ...
  py::object err = py::reinterpret_steal<py::object>(PyObject_CallFunction(
      PyExc_OSError, "isO", e.err(), std::strerror(e.err()), py::str(path).ptr()));
  if (!err) throw py::error_already_set();
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(err.ptr())), err.ptr());
  throw py::error_already_set();
}

py::dict Metadata(const mf::Header& h) {
  py::dict metadata;
  for (const auto& [k, v] : h.metadata) metadata[py::str(k)] = py::str(v);
  return metadata;
}

// (metadata dict, tensors dict name -> array, in the header's order).
py::tuple ToPython(mf::Contents&& c) {
  py::dict metadata = Metadata(c.header);
  py::dict tensors;
  for (std::size_t i = 0; i < c.header.tensors.size(); ++i) {
    const mf::TensorInfo& t = c.header.tensors[i];
    const py::dtype dt = NumpyDType(t.dtype, t.name);
    std::vector<py::ssize_t> shape(t.shape.begin(), t.shape.end());
    auto* bytes = new mf::Bytes(std::move(c.data[i]));
    py::capsule owner(bytes, [](void* p) { delete static_cast<mf::Bytes*>(p); });
    py::array a(dt, shape, {}, bytes->empty() ? nullptr : bytes->data(), owner);
    tensors[py::str(t.name)] = a;
  }
  return py::make_tuple(metadata, tensors);
}

// Refuses (ValueError) dtypes NumPy has no type for, before any array is made.
void CheckRepresentable(const mf::Header& h, const std::string& prefix) {
  for (const mf::TensorInfo& t : h.tensors)
    if (t.dtype == mf::DType::kBF16)
      throw py::value_error(prefix + "tensor '" + t.name + "' has dtype BF16, which NumPy " +
                            "cannot represent");
}

py::tuple Read(const std::string& path) {
  mf::Contents c;
  try {
    py::gil_scoped_release release;
    c = mf::ReadFile(path);
  } catch (const mf::FileError& e) {
    RaiseOSError(e, path);
  } catch (const InvalidArgument& e) {
    throw py::value_error(path + ": " + e.what());
  }
  CheckRepresentable(c.header, path + ": ");
  return ToPython(std::move(c));
}

py::tuple ReadBytes(const py::bytes& data) {
  std::string s = data;  // a copy: the bytes object may not be touched without the GIL
  mf::Contents c;
  {
    py::gil_scoped_release release;
    c = mf::ReadBuffer(reinterpret_cast<const unsigned char*>(s.data()), s.size());
  }
  CheckRepresentable(c.header, "");
  return ToPython(std::move(c));
}

// An open file: its validated header, and read_into, which reads chosen
// tensors straight into arrays (no intermediate buffer). reader_ is touched
// only with the GIL held; a read_into that has released the GIL keeps its own
// reference, so close() never closes the file under it (the last reference
// does).
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path) : path_(path) {
    try {
      py::gil_scoped_release release;
      reader_ = std::make_shared<const mf::Reader>(path);
    } catch (const mf::FileError& e) {
      RaiseOSError(e, path);
    } catch (const InvalidArgument& e) {
      throw py::value_error(path + ": " + e.what());
    }
    CheckRepresentable(reader_->header(), path + ": ");
  }

  const std::string& path() const { return path_; }
  py::dict metadata() const { return Metadata(Open()->header()); }

  // name -> (dtype, shape), in the header's order.
  py::dict tensors() const {
    py::dict out;
    const auto reader = Open();
    for (const mf::TensorInfo& t : reader->header().tensors) {
      py::tuple shape(t.shape.size());
      for (std::size_t i = 0; i < t.shape.size(); ++i) shape[i] = py::int_(t.shape[i]);
      out[py::str(t.name)] = py::make_tuple(NumpyDType(t.dtype, t.name), shape);
    }
    return out;
  }

  // targets: [(name, array), ...]; each array writable, C-contiguous, of the
  // tensor's dtype and shape. Everything is checked before anything is read.
  void ReadInto(const py::list& targets) {
    const std::string prefix = path_ + ": ";
    std::vector<py::array> keep;  // alive while the GIL is released
    std::vector<mf::Reader::Target> plan;
    const std::shared_ptr<const mf::Reader> reader = Open();
    const mf::Reader& r = *reader;
    for (const py::handle item : targets) {
      const auto pair = item.cast<std::pair<std::string, py::object>>();
      const std::string& name = pair.first;
      const std::ptrdiff_t index = r.Find(name);
      if (index < 0) throw py::value_error(prefix + "no tensor '" + name + "' in the file");
      const mf::TensorInfo& t = r.header().tensors[static_cast<std::size_t>(index)];
      if (!py::isinstance<py::array>(pair.second))
        throw py::type_error("the target of tensor '" + name + "' is not a NumPy array");
      py::array a = py::reinterpret_borrow<py::array>(pair.second);
      if (!a.writeable())
        throw py::value_error("the target of tensor '" + name + "' is not writable");
      if (!(a.flags() & py::array::c_style))
        throw py::value_error("the target of tensor '" + name + "' is not C-contiguous");
      bool same = static_cast<std::size_t>(a.ndim()) == t.shape.size();
      for (py::ssize_t i = 0; same && i < a.ndim(); ++i)
        same = static_cast<std::uint64_t>(a.shape(i)) == t.shape[static_cast<std::size_t>(i)];
      if (!same)
        throw py::value_error(prefix + "tensor '" + name + "' has shape " +
                              py::str(py::cast(t.shape)).cast<std::string>() + ", its target " +
                              py::str(a.attr("shape")).cast<std::string>());
      if (FileDType(a, name) != t.dtype)
        throw py::value_error(prefix + "tensor '" + name + "' has dtype " + mf::DTypeName(t.dtype) +
                              ", its target " + py::str(a.dtype()).cast<std::string>());
      plan.push_back({static_cast<std::size_t>(index), a.mutable_data(),
                      static_cast<std::uint64_t>(a.nbytes())});
      keep.push_back(std::move(a));
    }
    try {
      py::gil_scoped_release release;
      r.Read(plan);
    } catch (const mf::FileError& e) {
      RaiseOSError(e, path_);
    } catch (const InvalidArgument& e) {
      throw py::value_error(prefix + e.what());
    }
  }

  void Close() { reader_.reset(); }

 private:
  std::shared_ptr<const mf::Reader> Open() const {
    if (!reader_) throw py::value_error(path_ + ": the file was closed");
    return reader_;
  }

  std::string path_;
  std::shared_ptr<const mf::Reader> reader_;
};

std::pair<std::vector<mf::TensorData>, std::vector<py::array>> Tensors(const py::list& items) {
  std::vector<mf::TensorData> out;
  std::vector<py::array> keep;
  for (const py::handle item : items) {
    const auto pair = item.cast<std::pair<std::string, py::object>>();
    py::array a = py::array::ensure(pair.second);
    if (!a) throw py::type_error("tensor '" + pair.first + "' is not an array");
    if (!(a.flags() & py::array::c_style))
      throw py::value_error("tensor '" + pair.first + "' must be C-contiguous");
    mf::TensorData t;
    t.name = pair.first;
    t.dtype = FileDType(a, t.name);
    for (py::ssize_t i = 0; i < a.ndim(); ++i) t.shape.push_back(a.shape(i));
    t.data = a.data();
    t.nbytes = static_cast<std::uint64_t>(a.nbytes());
    out.push_back(std::move(t));
    keep.push_back(std::move(a));
  }
  return {std::move(out), std::move(keep)};
}

}  // namespace

void BindFiles(py::module_& m) {
  m.def("read_safetensors", &Read, py::arg("path"),
        "Reads a safetensors file: (metadata dict str -> str, dict name -> array in the "
        "header's order). Raises ValueError (naming the path) for a bad file, "
        "FileNotFoundError, IsADirectoryError or OSError.");
  py::class_<SafetensorsFile>(m, "SafetensorsFile",
                              "An open safetensors file whose header has been read and "
                              "validated (as read_safetensors does); read_into reads chosen "
                              "tensors straight into arrays. A context manager (close on exit).")
      .def(py::init<const std::string&>(), py::arg("path"),
           "Opens path and validates its header. Raises ValueError (naming the path) for a "
           "bad file, FileNotFoundError, IsADirectoryError or OSError.")
      .def_property_readonly("path", &SafetensorsFile::path)
      .def_property_readonly("metadata", &SafetensorsFile::metadata,
                             "The header's __metadata__ (dict str -> str).")
      .def_property_readonly("tensors", &SafetensorsFile::tensors,
                             "dict name -> (NumPy dtype, shape), in the header's order.")
      .def("read_into", &SafetensorsFile::ReadInto, py::arg("targets"),
           "Reads tensors into arrays: targets is a list of (name, array), each array "
           "writable, C-contiguous and of the tensor's dtype and shape (checked, all of them, "
           "before anything is read; ValueError otherwise). Tensors adjacent in the file and "
           "in memory are read with one read. ValueError if the file is now truncated.")
      .def("close", &SafetensorsFile::Close, "Closes the file (read_into then raises).")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](SafetensorsFile& self, const py::args&) { self.Close(); });
  m.def("read_safetensors_bytes", &ReadBytes, py::arg("data"),
        "read_safetensors for a file's bytes held in memory (ValueError for bad bytes).");
  m.def(
      "write_safetensors",
      [](const std::string& path, const std::map<std::string, std::string>& metadata,
         const py::list& tensors) {
        auto [data, keep] = Tensors(tensors);
        try {
          py::gil_scoped_release release;
          mf::WriteFile(path, metadata, data);
        } catch (const mf::FileError& e) {
          RaiseOSError(e, path);
        } catch (const InvalidArgument& e) {
          throw py::value_error(path + ": " + e.what());
        }
      },
      py::arg("path"), py::arg("metadata"), py::arg("tensors"),
      "Writes a safetensors file (atomically: path + '.tmp', then a rename). tensors: a "
      "list of (name, C-contiguous little-endian array) in the order of the data.");
  m.def(
      "write_safetensors_bytes",
      [](const std::map<std::string, std::string>& metadata, const py::list& tensors) {
        auto [data, keep] = Tensors(tensors);
        std::vector<unsigned char> out = mf::WriteBuffer(metadata, data);
        return py::bytes(reinterpret_cast<const char*>(out.data()), out.size());
      },
      py::arg("metadata"), py::arg("tensors"), "write_safetensors to bytes in memory.");
}

}  // namespace bindings
}  // namespace rnncore
