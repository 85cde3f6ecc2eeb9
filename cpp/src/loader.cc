// Loading a recurrent module of a model file (rnncore/loader.h).
//
// The "rnncore" metadata is JSON written by Python's json.dumps: a small
// recursive-descent parser builds a value tree of it (bounded depth; the
// metadata is at most the header's 100 MB), and the checks below follow
// python/rnncore/_files.py and RecurrentOptions.from_dict, so that a file
// loads in C and C++ exactly when it loads in Python (the options that only
// drew the initial parameters, such as init and forget_bias, are read and
// ignored).
#include "rnncore/loader.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <utility>

#include "rnncore/limits.h"
#include "rnncore/model_file.h"

namespace rnncore {
namespace {

namespace mf = model_file;

// ------------------------------------------------------------------ JSON
struct Json {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = kNull;
  bool boolean = false;
  double number = 0;
  bool integer = false;  // a number without fraction or exponent
  std::int64_t int_value = 0;
  std::string str;
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> members;  // in order; a repeated key: the last wins

  const Json* Get(const std::string& key) const {
    for (auto it = members.rbegin(); it != members.rend(); ++it)
      if (it->first == key) return &it->second;
    return nullptr;
  }
};

class JsonParser {
 public:
  JsonParser(const char* p, std::size_t n) : p_(p), n_(n) {}

  Json ParseDocument() {
    Json v = ParseValue(0);
    SkipSpace();
    if (pos_ != n_) Fail("unexpected data after the JSON value");
    return v;
  }

 private:
  static constexpr int kMaxDepth = 64;

  [[noreturn]] void Fail(const std::string& what) const {
    throw InvalidArgument("the 'rnncore' metadata is not valid JSON: " + what + " (at character " +
                          std::to_string(pos_) + ")");
  }

  void SkipSpace() {
    while (pos_ < n_ && (p_[pos_] == ' ' || p_[pos_] == '\t' || p_[pos_] == '\n' ||
                         p_[pos_] == '\r'))
      ++pos_;
  }

  bool Literal(const char* word) {
    const std::size_t len = std::strlen(word);
    if (n_ - pos_ >= len && std::memcmp(p_ + pos_, word, len) == 0) {
      pos_ += len;
      return true;
    }
    return false;
  }

  Json ParseValue(int depth) {
    if (depth > kMaxDepth) Fail("nested too deeply");
    SkipSpace();
    if (pos_ >= n_) Fail("it ends early");
    Json v;
    const char c = p_[pos_];
    if (c == '{') {
      v.kind = Json::kObject;
      ++pos_;
      SkipSpace();
      if (pos_ < n_ && p_[pos_] == '}') {
        ++pos_;
        return v;
      }
      for (;;) {
        SkipSpace();
        if (pos_ >= n_ || p_[pos_] != '"') Fail("expected a string key");
        std::string key = ParseString();
        SkipSpace();
        if (pos_ >= n_ || p_[pos_] != ':') Fail("expected ':'");
        ++pos_;
        Json member = ParseValue(depth + 1);
        v.members.emplace_back(std::move(key), std::move(member));
        SkipSpace();
        if (pos_ < n_ && p_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < n_ && p_[pos_] == '}') {
          ++pos_;
          return v;
        }
        Fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.kind = Json::kArray;
      ++pos_;
      SkipSpace();
      if (pos_ < n_ && p_[pos_] == ']') {
        ++pos_;
        return v;
      }
      for (;;) {
        v.items.push_back(ParseValue(depth + 1));
        SkipSpace();
        if (pos_ < n_ && p_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < n_ && p_[pos_] == ']') {
          ++pos_;
          return v;
        }
        Fail("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.kind = Json::kString;
      v.str = ParseString();
      return v;
    }
    if (Literal("null")) return v;
    if (Literal("true")) {
      v.kind = Json::kBool;
      v.boolean = true;
      return v;
    }
    if (Literal("false")) {
      v.kind = Json::kBool;
      return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) return ParseNumber();
    Fail("unexpected character");
  }

  // JSON's number grammar; the value by std::from_chars (locale-independent).
  Json ParseNumber() {
    const std::size_t start = pos_;
    auto digits = [&] {
      const std::size_t d = pos_;
      while (pos_ < n_ && p_[pos_] >= '0' && p_[pos_] <= '9') ++pos_;
      return pos_ - d;
    };
    if (p_[pos_] == '-') ++pos_;
    const std::size_t int_start = pos_;
    const std::size_t int_digits = digits();
    if (int_digits == 0) Fail("invalid number");
    if (int_digits > 1 && p_[int_start] == '0') Fail("number with a leading zero");
    bool integer = true;
    if (pos_ < n_ && p_[pos_] == '.') {
      ++pos_;
      integer = false;
      if (digits() == 0) Fail("invalid number");
    }
    if (pos_ < n_ && (p_[pos_] == 'e' || p_[pos_] == 'E')) {
      ++pos_;
      integer = false;
      if (pos_ < n_ && (p_[pos_] == '+' || p_[pos_] == '-')) ++pos_;
      if (digits() == 0) Fail("invalid number");
    }
    Json v;
    v.kind = Json::kNumber;
    const char* first = p_ + start;
    const char* last = p_ + pos_;
    const auto r = std::from_chars(first, last, v.number);
    if (r.ec == std::errc::result_out_of_range) {
      v.number = HUGE_VAL;  // beyond double: refused where a finite value is needed
    } else if (r.ec != std::errc() || r.ptr != last) {
      Fail("invalid number");
    }
    if (integer) {
      const auto ri = std::from_chars(first, last, v.int_value);
      v.integer = ri.ec == std::errc() && ri.ptr == last;  // false beyond 64 bits
    }
    return v;
  }

  unsigned Hex4() {
    if (n_ - pos_ < 4) Fail("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = p_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<unsigned>(c - 'A' + 10);
      else Fail("invalid \\u escape");
    }
    return v;
  }

  static void AppendUtf8(std::string* s, unsigned cp) {
    if (cp < 0x80) {
      *s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      *s += static_cast<char>(0xC0 | (cp >> 6));
      *s += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      *s += static_cast<char>(0xE0 | (cp >> 12));
      *s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      *s += static_cast<char>(0xF0 | (cp >> 18));
      *s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      *s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *s += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // The metadata string was already checked to be valid UTF-8 by the header
  // parser; raw bytes are copied as they are.
  std::string ParseString() {
    ++pos_;  // the opening quote
    std::string s;
    for (;;) {
      if (pos_ >= n_) Fail("unterminated string");
      const char c = p_[pos_++];
      if (c == '"') return s;
      if (static_cast<unsigned char>(c) < 0x20) Fail("control character in a string");
      if (c != '\\') {
        s += c;
        continue;
      }
      if (pos_ >= n_) Fail("unterminated string");
      const char e = p_[pos_++];
      switch (e) {
        case '"': s += '"'; break;
        case '\\': s += '\\'; break;
        case '/': s += '/'; break;
        case 'b': s += '\b'; break;
        case 'f': s += '\f'; break;
        case 'n': s += '\n'; break;
        case 'r': s += '\r'; break;
        case 't': s += '\t'; break;
        case 'u': {
          unsigned cp = Hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF && n_ - pos_ >= 6 && p_[pos_] == '\\' &&
              p_[pos_ + 1] == 'u') {
            const std::size_t save = pos_;
            pos_ += 2;
            const unsigned lo = Hex4();
            if (lo >= 0xDC00 && lo <= 0xDFFF) {
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else {
              pos_ = save;  // a lone surrogate, kept as Python keeps it
            }
          }
          AppendUtf8(&s, cp);
          break;
        }
        default:
          Fail("invalid escape in a string");
      }
    }
  }

  const char* p_;
  std::size_t n_;
  std::size_t pos_ = 0;
};

// ------------------------------------------------------------ metadata
std::string Quote(const std::string& s) {
  std::string out = "'";
  for (std::size_t i = 0; i < s.size() && i < 80; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      out += '?';
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > 80) out += "...";
  return out + "'";
}

const char* KindName(Json::Kind k) {
  switch (k) {
    case Json::kNull: return "null";
    case Json::kBool: return "a boolean";
    case Json::kNumber: return "a number";
    case Json::kString: return "a string";
    case Json::kArray: return "a list";
    case Json::kObject: return "an object";
  }
  return "?";
}

// Reads a module's "options" object into a ModelConfig.
class OptionReader {
 public:
  OptionReader(const Json& options, const std::string& what) : o_(options), what_(what) {}

  [[noreturn]] void Fail(const std::string& problem) const {
    throw InvalidArgument(what_ + ": invalid options: " + problem);
  }

  const Json* Find(const char* key) {
    seen_.insert(key);
    return o_.Get(key);
  }

  bool Bool(const char* key, bool fallback) {
    const Json* v = Find(key);
    if (!v) return fallback;
    if (v->kind != Json::kBool)
      Fail(std::string(key) + " must be true or false, got " + KindName(v->kind));
    return v->boolean;
  }

  Index Int(const char* key, Index fallback, Index low, bool required = false) {
    const Json* v = Find(key);
    if (!v) {
      if (required) Fail(std::string(key) + " is missing");
      return fallback;
    }
    if (v->kind != Json::kNumber || !v->integer)
      Fail(std::string(key) + " must be an integer");
    if (v->int_value < low || v->int_value > kMaxDim)
      Fail(std::string(key) + " must be in " + std::to_string(low) + "..2^31-1, got " +
           std::to_string(v->int_value));
    return v->int_value;
  }

  // A finite number in [low, high) (or [low, high] when closed); null gives
  // null_value when allow_null.
  double Number(const char* key, double fallback, double low, double high, bool closed,
                bool allow_null = false, double null_value = 0) {
    const Json* v = Find(key);
    if (!v) return fallback;
    if (v->kind == Json::kNull && allow_null) return null_value;
    if (v->kind != Json::kNumber)
      Fail(std::string(key) + " must be a number, got " + KindName(v->kind));
    const double x = v->number;
    if (!std::isfinite(x) || x < low || (closed ? x > high : x >= high))
      Fail(std::string(key) + " is out of range");
    return x;
  }

  std::string String(const char* key, const char* fallback, bool allow_null = false) {
    const Json* v = Find(key);
    if (!v) return fallback;
    if (v->kind == Json::kNull && allow_null) return "";
    if (v->kind != Json::kString)
      Fail(std::string(key) + " must be a string, got " + KindName(v->kind));
    return v->str;
  }

  // Every key was read: a key this loader does not know may change what the
  // model computes, so it is refused rather than ignored.
  void CheckKnown() const {
    for (const auto& [key, value] : o_.members) {
      (void)value;
      if (!seen_.count(key))
        Fail("unknown option " + Quote(key) +
             " (written by a newer rnncore? load the file with a newer rnncore)");
    }
  }

 private:
  const Json& o_;
  std::string what_;
  std::set<std::string> seen_;
};

ModelConfig ParseOptions(const Json& options, const std::string& what, bool* batch_first) {
  if (options.kind != Json::kObject) throw InvalidArgument(what + ": no options");
  OptionReader r(options, what);
  ModelConfig c;
  const std::string cell = r.String("cell", "");
  if (cell == "rnn") c.cell = CellKind::kRnn;
  else if (cell == "lstm") c.cell = CellKind::kLstm;
  else if (cell == "gru") c.cell = CellKind::kGru;
  else r.Fail("cell must be one of ['gru', 'lstm', 'rnn'], got " + Quote(cell));
  c.input_size = r.Int("input_size", 0, 1, true);
  c.hidden_size = r.Int("hidden_size", 0, 1, true);
  c.num_layers = r.Int("num_layers", 1, 1);
  if (c.num_layers > kMaxLayers)
    r.Fail("num_layers must be at most " + std::to_string(kMaxLayers));
  c.bias = r.Bool("bias", true);
  *batch_first = r.Bool("batch_first", false);
  c.dropout = r.Number("dropout", 0, 0, 1, false);
  c.bidirectional = r.Bool("bidirectional", false);
  c.reverse = r.Bool("reverse", false);
  const std::string dtype = r.String("dtype", "float32");
  if (dtype != "float32" && dtype != "float64")
    r.Fail("dtype must be 'float32' or 'float64', got " + Quote(dtype));
  const std::string nonlinearity = r.String("nonlinearity", "tanh");
  if (nonlinearity == "tanh") c.activation = Activation::kTanh;
  else if (nonlinearity == "relu") c.activation = Activation::kRelu;
  else r.Fail("nonlinearity must be 'tanh' or 'relu', got " + Quote(nonlinearity));
  c.proj_size = r.Int("proj_size", 0, 0);
  c.reset_after = r.Bool("reset_after", true);
  const std::string norm = r.String("norm", "", true);
  if (norm.empty()) c.norm = Norm::kNone;
  else if (norm == "layer") c.norm = Norm::kLayer;
  else if (norm == "batch") c.norm = Norm::kBatch;
  else if (norm == "batch_input") c.norm = Norm::kBatchInput;
  else r.Fail("norm must be null, 'layer', 'batch' or 'batch_input', got " + Quote(norm));
  const double inf = HUGE_VAL;
  c.ln_eps = r.Number("ln_eps", 1e-5, 0, inf, false);
  c.bn_eps = r.Number("bn_eps", 1e-5, 0, inf, false);
  c.bn_momentum = r.Number("bn_momentum", 0.1, 0, 1, true);
  r.Number("bn_gamma", 0.1, 0, inf, false, true);  // the initial gain: read, not needed
  c.input_dropout = r.Number("input_dropout", 0, 0, 1, false);
  c.recurrent_dropout = r.Number("recurrent_dropout", 0, 0, 1, false);
  c.zoneout = r.Number("zoneout", 0, 0, 1, false);
  // How the parameters were first drawn: no part of the computation.
  r.String("init", "default");
  r.Number("forget_bias", 1, -inf, inf, false);
  r.Number("update_bias", 0, -inf, inf, false);
  r.Number("chrono", 0, -inf, inf, false, true);
  // The gate options (null or 0: off).
  c.clip = r.Number("clip", 0, 0, inf, false, true);
  c.cell_clip = r.Number("cell_clip", 0, 0, inf, false, true);
  c.peephole = r.Bool("peephole", false);
  c.input_forget = r.Bool("input_forget", false);
  r.CheckKnown();
  try {
    c.Validate();
  } catch (const InvalidArgument& e) {
    r.Fail(e.what());
  }
  return c;
}

struct ClassInfo {
  const char* name;
  CellKind cell;
  bool is_cell;
};
constexpr ClassInfo kClasses[] = {{"LSTM", CellKind::kLstm, false},
                                  {"GRU", CellKind::kGru, false},
                                  {"RNN", CellKind::kRnn, false},
                                  {"LSTMCell", CellKind::kLstm, true},
                                  {"GRUCell", CellKind::kGru, true},
                                  {"RNNCell", CellKind::kRnn, true}};

ModuleEntry ParseEntry(const Json& e, const std::string& name, bool single) {
  ModuleEntry m;
  m.name = name;
  const std::string what = single ? "the module" : "module " + Quote(name);
  const Json* cls = e.Get("class");
  if (!cls || cls->kind != Json::kString)
    throw InvalidArgument(what + ": no class");
  m.class_name = cls->str;
  if (m.class_name == "Linear") return m;  // not loadable here; its options are not read
  const ClassInfo* info = nullptr;
  for (const ClassInfo& c : kClasses)
    if (m.class_name == c.name) info = &c;
  if (!info)
    throw InvalidArgument(what + ": unknown class " + Quote(m.class_name) +
                          " (expected one of LSTM, GRU, RNN, LSTMCell, GRUCell, RNNCell, Linear)");
  m.recurrent = true;
  m.cell = info->is_cell;
  const Json* options = e.Get("options");
  if (!options) throw InvalidArgument(what + ": no options");
  m.config = ParseOptions(*options, what, &m.batch_first);
  if (m.config.cell != info->cell)
    throw InvalidArgument(what + ": class " + m.class_name + " does not match its options' cell");
  if (m.cell) {
    const ModelConfig& c = m.config;
    if (c.num_layers != 1 || c.bidirectional || c.reverse || c.proj_size != 0 ||
        c.dropout != 0 || c.input_dropout != 0 || c.recurrent_dropout != 0 || c.zoneout != 0 ||
        m.batch_first)
      throw InvalidArgument(what + ": " + m.class_name +
                            " is one step of one layer: its options must be those of one "
                            "unidirectional layer without dropout, zoneout or projection");
    if (c.norm != Norm::kNone && c.norm != Norm::kLayer)
      throw InvalidArgument(what + ": " + m.class_name + ": norm must be None or 'layer'");
  }
  const Json* training = e.Get("training");
  if (!training || training->kind != Json::kBool)
    throw InvalidArgument(what + ": 'training' must be true or false");
  m.training = training->boolean;
  const Json* weights = e.Get("weights");
  m.weights = weights && weights->kind == Json::kString ? weights->str : "";
  const std::string dtype = "float32";  // checked by ParseOptions: float32 or float64
  const Json* dt = options->Get("dtype");
  const std::string module_dtype = dt ? dt->str : dtype;
  if (m.weights == "float16") {
    if (module_dtype != "float32")
      throw InvalidArgument(what + ": float16 weights need a float32 recurrent module or cell");
    if (m.training)
      throw InvalidArgument(what + ": a half_weights() copy cannot be in training mode");
  } else if (m.weights != module_dtype) {
    throw InvalidArgument(what + ": weights " + Quote(m.weights) + " do not match its dtype " +
                          Quote(module_dtype));
  }
  return m;
}

bool HalfName(const std::string& key) {
  for (const char* p : {"weight_ih", "weight_hh", "weight_hr"})
    if (key.compare(0, std::strlen(p), p) == 0) return true;
  return false;
}

std::string ShapeString(const std::vector<std::uint64_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

template <typename T>
std::vector<std::uint64_t> Dims(const std::vector<T>& shape) {
  return std::vector<std::uint64_t>(shape.begin(), shape.end());
}

// Little-endian bytes to float (the host is little-endian: x86-64, aarch64).
void Widen(const unsigned char* bytes, mf::DType dtype, std::size_t n, float* out) {
  if (dtype == mf::DType::kF32) {
    std::memcpy(out, bytes, n * 4);
  } else if (dtype == mf::DType::kF64) {
    for (std::size_t i = 0; i < n; ++i) {
      double v;
      std::memcpy(&v, bytes + 8 * i, 8);
      out[i] = static_cast<float>(v);
    }
  } else {  // F16
    for (std::size_t i = 0; i < n; ++i) {
      Eigen::half h;
      static_assert(sizeof h == 2, "Eigen::half is 2 bytes");
      std::memcpy(&h, bytes + 2 * i, 2);
      out[i] = static_cast<float>(h);
    }
  }
}

}  // namespace

ModelFileInfo ParseModelFileInfo(const std::string& text) {
  const Json info = JsonParser(text.data(), text.size()).ParseDocument();
  if (info.kind != Json::kObject)
    throw InvalidArgument("the 'rnncore' metadata is not a JSON object");
  ModelFileInfo out;
  const Json* version = info.Get("format_version");
  if (!version || version->kind != Json::kNumber || !version->integer || version->int_value < 1)
    throw InvalidArgument("the 'rnncore' metadata has no valid format_version");
  if (version->int_value > kModelFileFormatVersion)
    throw InvalidArgument("the file has format version " + std::to_string(version->int_value) +
                          ", newer than this rnncore reads (format version " +
                          std::to_string(kModelFileFormatVersion) +
                          " and older): load it with a newer rnncore");
  out.format_version = static_cast<int>(version->int_value);
  const Json* modules = info.Get("modules");
  if (!modules || modules->kind != Json::kArray || modules->items.empty())
    throw InvalidArgument("the 'rnncore' metadata has no list of modules");
  for (const Json& e : modules->items)
    if (e.kind != Json::kObject) throw InvalidArgument("the 'rnncore' metadata has no list of modules");
  // A file of one module saved on its own: one entry named null (or "").
  const Json* first = modules->items[0].Get("name");
  out.single = modules->items.size() == 1 &&
               (!first || first->kind == Json::kNull ||
                (first->kind == Json::kString && first->str.empty()));
  std::set<std::string> names;
  for (const Json& e : modules->items) {
    std::string name;
    if (!out.single) {
      const Json* n = e.Get("name");
      if (!n || n->kind != Json::kString || n->str.empty() ||
          n->str.find('.') != std::string::npos)
        throw InvalidArgument("invalid module name in the 'rnncore' metadata");
      name = n->str;
      if (!names.insert(name).second)
        throw InvalidArgument("duplicate module names in the 'rnncore' metadata");
    }
    out.modules.push_back(ParseEntry(e, name, out.single));
  }
  return out;
}

namespace {

std::shared_ptr<Model<float>> Load(const mf::Reader& reader, const std::string& path,
                                   const char* name, ModuleEntry* entry_out) {
  auto fail = [&](const std::string& what) -> void { throw InvalidArgument(path + ": " + what); };
  const mf::Header& header = reader.header();
  const auto meta = header.metadata.find("rnncore");
  if (meta == header.metadata.end())
    fail("not an rnncore model file: the header's __metadata__ has no 'rnncore' entry");
  ModelFileInfo info;
  try {
    info = ParseModelFileInfo(meta->second);
  } catch (const InvalidArgument& e) {
    fail(e.what());
  }

  // The module to load.
  const std::string wanted = name ? name : "";
  std::vector<const ModuleEntry*> recurrent;
  for (const ModuleEntry& m : info.modules)
    if (m.recurrent) recurrent.push_back(&m);
  auto listing = [&] {
    std::string s;
    for (const ModuleEntry& m : info.modules)
      s += (s.empty() ? "" : ", ") + Quote(m.name) + " (" + m.class_name + ")";
    return s;
  };
  const ModuleEntry* chosen = nullptr;
  if (wanted.empty()) {
    if (recurrent.empty())
      fail("the file has no recurrent module (it has " + listing() + ")");
    if (recurrent.size() > 1)
      throw ModuleNotFound(path + ": the file has " + std::to_string(recurrent.size()) +
                           " recurrent modules (" + listing() + "): name the one to load");
    chosen = recurrent[0];
  } else {
    if (info.single)
      throw ModuleNotFound(path + ": no module named " + Quote(wanted) +
                           ": the file holds one unnamed module (pass no name to load it)");
    for (const ModuleEntry& m : info.modules)
      if (m.name == wanted) chosen = &m;
    if (!chosen)
      throw ModuleNotFound(path + ": no module named " + Quote(wanted) + " in the file (it has " +
                           listing() + ")");
    if (!chosen->recurrent)
      throw ModuleNotFound(path + ": module " + Quote(wanted) + " is a " + chosen->class_name +
                           " layer, not a recurrent module");
  }
  const ModuleEntry& m = *chosen;
  const ModelConfig& config = m.config;
  const std::string what = info.single ? "the module" : "module " + Quote(m.name);
  const std::string prefix = info.single ? "" : m.name + ".";

  // Every tensor belongs to some module of the file.
  for (const mf::TensorInfo& t : header.tensors) {
    bool claimed = info.single;
    for (const ModuleEntry& other : info.modules)
      claimed = claimed || t.name.compare(0, other.name.size() + 1, other.name + ".") == 0;
    if (!claimed) fail("unexpected tensor " + Quote(t.name) + " (no module of the file has it)");
  }

  // The module's tensors: present, of the dtype its weights say, of the shape
  // its options give; nothing else under its prefix. All before allocating.
  const bool half = m.weights == "float16";
  const mf::DType stored = m.weights == "float64" ? mf::DType::kF64 : mf::DType::kF32;
  const std::vector<ParamInfo> layout = ParameterLayout(config);
  const std::vector<BufferInfo> buffers = BufferLayout(config);
  std::set<std::string> expected;
  auto key_of = [&](const std::string& core_name) {
    // A cell's tensors have the cell's names: the layer-0 names without "_l0".
    if (m.cell && core_name.size() > 3 && core_name.compare(core_name.size() - 3, 3, "_l0") == 0)
      return core_name.substr(0, core_name.size() - 3);
    return core_name;
  };
  auto find = [&](const std::string& key, mf::DType want) -> std::size_t {
    const std::string full = prefix + key;
    expected.insert(full);
    const std::ptrdiff_t i = reader.Find(full);
    if (i < 0) fail(what + ": tensor " + Quote(full) + " is missing");
    const mf::TensorInfo& t = header.tensors[static_cast<std::size_t>(i)];
    if (t.dtype != want)
      fail("tensor " + Quote(full) + " has dtype " + mf::DTypeName(t.dtype) + ", expected " +
           mf::DTypeName(want));
    return static_cast<std::size_t>(i);
  };
  std::vector<std::size_t> param_index(layout.size());
  for (std::size_t k = 0; k < layout.size(); ++k) {
    const std::string key = key_of(layout[k].name);
    const std::size_t i = find(key, half && HalfName(key) ? mf::DType::kF16 : stored);
    const mf::TensorInfo& t = header.tensors[i];
    if (t.shape != Dims(layout[k].shape))
      fail("tensor " + Quote(prefix + key) + " has shape " + ShapeString(t.shape) + ", expected " +
           ShapeString(Dims(layout[k].shape)));
    param_index[k] = i;
  }
  std::vector<std::size_t> buffer_index(buffers.size());
  for (std::size_t k = 0; k < buffers.size(); ++k) {
    const BufferInfo& b = buffers[k];
    const std::size_t i = find(b.name, stored);
    const mf::TensorInfo& t = header.tensors[i];
    const bool ok = b.one_row ? t.shape == std::vector<std::uint64_t>{std::uint64_t(b.width)}
                              : t.shape.size() == 2 && t.shape[1] == std::uint64_t(b.width);
    if (!ok)
      fail(what + ": load_state_dict: wrong shapes: " + b.name + ": expected " +
           (b.one_row ? "(" + std::to_string(b.width) + ",)"
                      : "(S, " + std::to_string(b.width) + ")") +
           ", got " + ShapeString(t.shape));
    buffer_index[k] = i;
  }
  for (const mf::TensorInfo& t : header.tensors)
    if (t.name.compare(0, prefix.size(), prefix) == 0 && !expected.count(t.name))
      fail("unexpected tensor " + Quote(t.name) + " (no module of the file has it)");

  // Read: float32 parameters straight into the model's buffer, the rest
  // through buffers of their own.
  auto model = std::make_shared<Model<float>>(config, /*zero_parameters=*/false);
  std::vector<mf::Reader::Target> targets;
  std::vector<mf::Bytes> staged;
  std::vector<std::pair<std::size_t, std::size_t>> widen;  // (staged index, layout index)
  staged.reserve(layout.size() + buffers.size());
  for (std::size_t k = 0; k < layout.size(); ++k) {
    const mf::TensorInfo& t = header.tensors[param_index[k]];
    const std::uint64_t nbytes = t.end - t.begin;
    if (t.dtype == mf::DType::kF32) {
      targets.push_back({param_index[k], model->parameters() + layout[k].offset, nbytes});
    } else {
      staged.emplace_back(static_cast<std::size_t>(nbytes));
      targets.push_back({param_index[k], staged.back().data(), nbytes});
      widen.emplace_back(staged.size() - 1, k);
    }
  }
  const std::size_t first_buffer = staged.size();
  for (std::size_t k = 0; k < buffers.size(); ++k) {
    const mf::TensorInfo& t = header.tensors[buffer_index[k]];
    staged.emplace_back(static_cast<std::size_t>(t.end - t.begin));
    targets.push_back({buffer_index[k], staged.back().data(), t.end - t.begin});
  }
  reader.Read(targets);
  for (const auto& [s, k] : widen) {
    const mf::TensorInfo& t = header.tensors[param_index[k]];
    Widen(staged[s].data(), t.dtype, static_cast<std::size_t>(layout[k].size()),
          model->parameters() + layout[k].offset);
  }
  // Running statistics, one site (mean and variance) at a time.
  std::map<Index, std::pair<std::size_t, std::size_t>> sites;  // stats -> (mean k, var k)
  for (std::size_t k = 0; k < buffers.size(); ++k) {
    auto& site = sites[buffers[k].stats];
    (buffers[k].variance ? site.second : site.first) = k;
  }
  for (const auto& [stats, pair] : sites) {
    const BufferInfo& bm = buffers[pair.first];
    const mf::TensorInfo& tm = header.tensors[buffer_index[pair.first]];
    const mf::TensorInfo& tv = header.tensors[buffer_index[pair.second]];
    if (tm.shape != tv.shape)
      fail(what + ": load_state_dict: " + bm.name + " and " + buffers[pair.second].name +
           " must have the same shape, got " + ShapeString(tm.shape) + " and " +
           ShapeString(tv.shape));
    const Index rows = bm.one_row ? 1 : static_cast<Index>(tm.shape[0]);
    const std::size_t n = static_cast<std::size_t>(rows * bm.width);
    std::vector<float> mean(n), var(n);
    Widen(staged[first_buffer + pair.first].data(), tm.dtype, n, mean.data());
    Widen(staged[first_buffer + pair.second].data(), tv.dtype, n, var.data());
    model->SetRunning(stats, rows, mean.data(), var.data());
  }
  if (half) model->UseHalfWeights();
  if (entry_out) *entry_out = m;
  return model;
}

}  // namespace

std::shared_ptr<Model<float>> LoadModel(const std::string& path, const char* name,
                                        ModuleEntry* entry_out) {
  // The reader's own messages (the header, a truncated file) get the path,
  // as Python's loader gives them; the loader's messages have it already.
  std::unique_ptr<mf::Reader> reader;
  try {
    reader = std::make_unique<mf::Reader>(path);
  } catch (const ModuleNotFound&) {
    throw;
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(path + ": " + e.what());
  }
  try {
    return Load(*reader, path, name, entry_out);
  } catch (const ModuleNotFound&) {
    throw;
  } catch (const InvalidArgument& e) {
    const std::string what = e.what();
    if (what.compare(0, path.size() + 2, path + ": ") == 0) throw;
    throw InvalidArgument(path + ": " + what);
  }
}

}  // namespace rnncore
