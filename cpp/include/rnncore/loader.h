// Loading a recurrent module of a model file (docs/file_format.md) into a
// float32 Model, for the C and C++ APIs: the rnncore metadata's JSON is
// parsed and checked here, the bytes by model_file::Reader (the parser that
// Python's rnncore.load uses too).
//
// What the loader checks before it allocates the model or reads any tensor:
// the "rnncore" metadata (format version, module list, class, options, mode,
// weight storage), that the chosen module's tensors are all present with the
// dtype and shape its options give (running statistics: the shapes that fit),
// and that the file holds no tensor that no module claims. Every problem
// throws InvalidArgument (ModuleNotFound for a name the file does not have)
// naming the path and the first problem, as Python's loader does; file errors
// throw model_file::FileError.
#ifndef RNNCORE_LOADER_H_
#define RNNCORE_LOADER_H_

#include <memory>
#include <string>
#include <vector>

#include "rnncore/common.h"
#include "rnncore/model.h"

namespace rnncore {

// The newest format version of the "rnncore" metadata this loader reads.
constexpr int kModelFileFormatVersion = 1;

// One module of a model file, as its metadata describes it.
struct ModuleEntry {
  std::string name;        // "" for a file of one module saved on its own
  std::string class_name;  // "LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "Linear"
  bool recurrent = false;  // every class but Linear
  bool cell = false;       // LSTMCell, GRUCell, RNNCell (parameters without "_l0")
  ModelConfig config;      // recurrent modules
  bool batch_first = false;
  bool training = false;
  std::string weights;  // "float32", "float64" or "float16"
};

struct ModelFileInfo {
  int format_version = 0;
  bool single = false;  // one unnamed module: its tensors carry no prefix
  std::vector<ModuleEntry> modules;
};

// Thrown when the name passed to LoadModel is not a recurrent module of the
// file.
class ModuleNotFound : public InvalidArgument {
 public:
  using InvalidArgument::InvalidArgument;
};

// Parses and checks the "rnncore" metadata entry (a JSON string). Throws
// InvalidArgument naming the problem (without a path).
ModelFileInfo ParseModelFileInfo(const std::string& json);

// Loads one recurrent module of the model file at path as a float32 model in
// eval mode: options from the metadata, parameters into the model's buffer,
// running statistics. name: the module's name in a file of several modules;
// null or empty: the file's only recurrent module. float64 modules are
// rounded to float32; a half_weights() copy loads as one (UseHalfWeights).
// Throws model_file::FileError, InvalidArgument or ModuleNotFound.
std::shared_ptr<Model<float>> LoadModel(const std::string& path, const char* name,
                                        ModuleEntry* entry = nullptr);

}  // namespace rnncore

#endif  // RNNCORE_LOADER_H_
