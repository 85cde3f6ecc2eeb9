// Model files (rnncore/model_file.h): the safetensors reader and writer.
//
// The header's JSON is parsed by a recursive-descent parser that follows the
// header's schema (an object of tensor objects and "__metadata__"), so it
// builds no generic document tree and nests at most three levels: what it
// allocates is proportional to the header's length. Strings may hold every
// JSON escape (\uXXXX with surrogate pairs included) and must be valid UTF-8;
// numbers must be non-negative integers below 2^63.
#include "rnncore/model_file.h"

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <fcntl.h>
#include <io.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <windows.h>
#else
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <numeric>
#include <set>
#include <system_error>
#include <utility>

namespace rnncore {
namespace model_file {
namespace {

static_assert(sizeof(std::uint64_t) == 8, "64-bit lengths");

struct DTypeEntry {
  DType dtype;
  const char* name;
  std::size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {DType::kF64, "F64", 8}, {DType::kF32, "F32", 4},  {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2}, {DType::kI8, "I8", 1},    {DType::kU64, "U64", 8},
    {DType::kU32, "U32", 4}, {DType::kU16, "U16", 2},  {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1}};

constexpr std::uint64_t kMaxNumber = std::uint64_t{1} << 63;

// A short, printable quotation of a name or dtype for messages.
std::string Quote(const std::string& s) {
  std::string out = "'";
  for (std::size_t i = 0; i < s.size() && i < 80; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > 80) out += "...";
  return out + "'";
}

std::string ShapeString(const std::vector<std::uint64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Recursive descent over the header's JSON, following its schema.
class HeaderParser {
 public:
  HeaderParser(const char* p, std::size_t n) : p_(p), n_(n) {}

  Header Parse() {
    Header h;
    SkipSpace();
    if (pos_ >= n_ || p_[pos_] != '{') Fail("the header is not a JSON object");
    std::set<std::string> names;
    ParseObject("the header", [&](const std::string& key) {
      if (!names.insert(key).second) Fail("duplicate entry " + Quote(key) + " in the header");
      if (key == "__metadata__") {
        ParseMetadata(&h.metadata);
      } else {
        h.tensors.push_back(ParseTensor(key));
      }
    });
    SkipSpace();
    if (pos_ != n_) Fail("unexpected data after the header's JSON object");
    return h;
  }

 private:
  [[noreturn]] void Fail(const std::string& what) const {
    throw InvalidArgument("invalid header: " + what + " (at byte " + std::to_string(pos_) +
                          " of the header)");
  }

  void SkipSpace() {
    while (pos_ < n_ && (p_[pos_] == ' ' || p_[pos_] == '\t' || p_[pos_] == '\n' ||
                         p_[pos_] == '\r'))
      ++pos_;
  }

  void Expect(char c, const char* what) {
    SkipSpace();
    if (pos_ >= n_) Fail(std::string("the header's JSON ends early, expected ") + what);
    if (p_[pos_] != c) Fail(std::string("expected ") + what);
    ++pos_;
  }

  // { "key": <value parsed by on_member>, ... }
  template <typename F>
  void ParseObject(const std::string& what, F on_member) {
    Expect('{', ("'{' to start " + what).c_str());
    SkipSpace();
    if (pos_ < n_ && p_[pos_] == '}') {
      ++pos_;
      return;
    }
    for (;;) {
      SkipSpace();
      if (pos_ >= n_ || p_[pos_] != '"') Fail("expected a string key in " + what);
      const std::string key = ParseString();
      Expect(':', "':' after a key");
      on_member(key);
      SkipSpace();
      if (pos_ < n_ && p_[pos_] == ',') {
        ++pos_;
        continue;
      }
      Expect('}', ("',' or '}' in " + what).c_str());
      return;
    }
  }

  // [ <uint>, ... ]
  std::vector<std::uint64_t> ParseUintArray(const std::string& what, std::size_t max_items) {
    std::vector<std::uint64_t> out;
    Expect('[', ("'[' to start " + what).c_str());
    SkipSpace();
    if (pos_ < n_ && p_[pos_] == ']') {
      ++pos_;
      return out;
    }
    for (;;) {
      if (out.size() >= max_items)
        Fail(what + " has more than " + std::to_string(max_items) + " entries");
      out.push_back(ParseUint(what));
      SkipSpace();
      if (pos_ < n_ && p_[pos_] == ',') {
        ++pos_;
        continue;
      }
      Expect(']', ("',' or ']' in " + what).c_str());
      return out;
    }
  }

  std::uint64_t ParseUint(const std::string& what) {
    SkipSpace();
    if (pos_ >= n_) Fail("the header's JSON ends early in " + what);
    if (p_[pos_] == '-') Fail("negative number in " + what);
    if (p_[pos_] < '0' || p_[pos_] > '9') Fail("expected a non-negative integer in " + what);
    const std::size_t start = pos_;
    std::uint64_t v = 0;
    while (pos_ < n_ && p_[pos_] >= '0' && p_[pos_] <= '9') {
      const std::uint64_t d = static_cast<std::uint64_t>(p_[pos_] - '0');
      if (v > (kMaxNumber - 1 - d) / 10) Fail("number too large in " + what);
      v = v * 10 + d;
      ++pos_;
    }
    if (pos_ - start > 1 && p_[start] == '0') Fail("number with a leading zero in " + what);
    if (pos_ < n_ && (p_[pos_] == '.' || p_[pos_] == 'e' || p_[pos_] == 'E'))
      Fail("expected an integer in " + what);
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

  // One UTF-8 sequence starting at pos_ (validated: no overlong forms, no
  // surrogates, nothing above U+10FFFF), appended to s.
  void CopyUtf8(std::string* s) {
    const unsigned char c = static_cast<unsigned char>(p_[pos_]);
    std::size_t len;
    unsigned cp, min;
    if (c < 0x80) {
      len = 1, cp = c, min = 0;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1Fu, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0Fu, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07u, min = 0x10000;
    } else {
      Fail("invalid UTF-8 in a string");
    }
    if (n_ - pos_ < len) Fail("invalid UTF-8 in a string");
    for (std::size_t i = 1; i < len; ++i) {
      const unsigned char d = static_cast<unsigned char>(p_[pos_ + i]);
      if ((d & 0xC0) != 0x80) Fail("invalid UTF-8 in a string");
      cp = (cp << 6) | (d & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      Fail("invalid UTF-8 in a string");
    s->append(p_ + pos_, len);
    pos_ += len;
  }

  std::string ParseString() {
    SkipSpace();
    if (pos_ >= n_ || p_[pos_] != '"') Fail("expected a string");
    ++pos_;
    std::string s;
    for (;;) {
      if (pos_ >= n_) Fail("unterminated string");
      const char c = p_[pos_];
      if (c == '"') {
        ++pos_;
        return s;
      }
      if (static_cast<unsigned char>(c) < 0x20) Fail("control character in a string");
      if (c != '\\') {
        CopyUtf8(&s);
        continue;
      }
      ++pos_;
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
          if (cp >= 0xDC00 && cp <= 0xDFFF) Fail("unpaired surrogate in a \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (n_ - pos_ < 2 || p_[pos_] != '\\' || p_[pos_ + 1] != 'u')
              Fail("unpaired surrogate in a \\u escape");
            pos_ += 2;
            const unsigned lo = Hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) Fail("unpaired surrogate in a \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          AppendUtf8(&s, cp);
          break;
        }
        default:
          Fail("invalid escape in a string");
      }
    }
  }

  void ParseMetadata(std::map<std::string, std::string>* out) {
    ParseObject("__metadata__", [&](const std::string& key) {
      SkipSpace();
      if (pos_ >= n_ || p_[pos_] != '"')
        Fail("__metadata__ entry " + Quote(key) + " is not a string");
      if (!out->emplace(key, ParseString()).second)
        Fail("duplicate key " + Quote(key) + " in __metadata__");
    });
  }

  TensorInfo ParseTensor(const std::string& name) {
    TensorInfo t;
    t.name = name;
    const std::string what = "tensor " + Quote(name);
    bool has_dtype = false, has_shape = false, has_offsets = false;
    SkipSpace();
    if (pos_ >= n_ || p_[pos_] != '{') Fail(what + " is not a JSON object");
    ParseObject(what, [&](const std::string& key) {
      if (key == "dtype" && !has_dtype) {
        has_dtype = true;
        SkipSpace();
        if (pos_ >= n_ || p_[pos_] != '"') Fail(what + ": dtype is not a string");
        const std::string dtype = ParseString();
        if (!ParseDType(dtype, &t.dtype)) Fail(what + ": unknown dtype " + Quote(dtype));
      } else if (key == "shape" && !has_shape) {
        has_shape = true;
        t.shape = ParseUintArray(what + "'s shape", kMaxRank);
      } else if (key == "data_offsets" && !has_offsets) {
        has_offsets = true;
        const auto offsets = ParseUintArray(what + "'s data_offsets", 2);
        if (offsets.size() != 2) Fail(what + ": data_offsets must be [begin, end]");
        t.begin = offsets[0];
        t.end = offsets[1];
      } else if (key == "dtype" || key == "shape" || key == "data_offsets") {
        Fail(what + ": duplicate key " + Quote(key));
      } else {
        Fail(what + ": unexpected key " + Quote(key));
      }
    });
    if (!has_dtype || !has_shape || !has_offsets)
      Fail(what + " needs dtype, shape and data_offsets");
    return t;
  }

  const char* p_;
  std::size_t n_;
  std::size_t pos_ = 0;
};

// Checks sizes and the layout of the data section: each tensor's byte count
// matches its dtype and shape, and the tensors tile [0, data_bytes) exactly.
void CheckLayout(const Header& h) {
  for (const TensorInfo& t : h.tensors) {
    const std::string what = "tensor " + Quote(t.name);
    if (t.begin > t.end)
      throw InvalidArgument(what + ": data_offsets [" + std::to_string(t.begin) + ", " +
                            std::to_string(t.end) + "] end before they begin");
    // Element count, with overflow checks (a zero dimension makes it 0).
    std::uint64_t elements = 1;
    bool overflow = false;
    for (std::uint64_t d : t.shape) {
      if (d == 0) {
        elements = 0;
        overflow = false;
        break;
      }
      if (elements > std::numeric_limits<std::uint64_t>::max() / d) overflow = true;
      else elements *= d;
    }
    const std::uint64_t size = DTypeSize(t.dtype);
    if (overflow || elements > std::numeric_limits<std::uint64_t>::max() / size)
      throw InvalidArgument(what + ": shape " + ShapeString(t.shape) + " is too large");
    const std::uint64_t nbytes = elements * size;
    if (t.end - t.begin != nbytes)
      throw InvalidArgument(what + ": shape " + ShapeString(t.shape) + " of dtype " +
                            DTypeName(t.dtype) + " needs " + std::to_string(nbytes) +
                            " bytes, but its data_offsets hold " +
                            std::to_string(t.end - t.begin));
    if (t.end > h.data_bytes)
      throw InvalidArgument(what + ": data_offsets [" + std::to_string(t.begin) + ", " +
                            std::to_string(t.end) + "] end beyond the data section (" +
                            std::to_string(h.data_bytes) +
                            " bytes): the file is truncated or the offsets are out of range");
  }
  std::vector<std::size_t> order(h.tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const TensorInfo &x = h.tensors[a], &y = h.tensors[b];
    return x.begin != y.begin ? x.begin < y.begin : x.end < y.end;
  });
  std::uint64_t at = 0;
  const TensorInfo* prev = nullptr;
  for (std::size_t i : order) {
    const TensorInfo& t = h.tensors[i];
    if (t.begin < at)
      throw InvalidArgument("tensors " + Quote(prev->name) + " and " + Quote(t.name) +
                            " overlap in the data section");
    if (t.begin > at)
      throw InvalidArgument("the data section has a gap of " + std::to_string(t.begin - at) +
                            " bytes before tensor " + Quote(t.name));
    at = t.end;
    prev = &t;
  }
  if (at != h.data_bytes)
    throw InvalidArgument("the data section has " + std::to_string(h.data_bytes - at) +
                          " bytes after the last tensor");
}

std::uint64_t LoadLE64(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void StoreLE64(std::uint64_t v, char* p) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}

void AppendJsonString(std::string* out, const std::string& s) {
  *out += '"';
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"') *out += "\\\"";
    else if (c == '\\') *out += "\\\\";
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      *out += buf;
    } else {
      *out += ch;
    }
  }
  *out += '"';
}

std::string ErrnoText(int err) { return std::strerror(err); }

// The file calls of Reader: POSIX, or the C runtime's and ReadFile on
// Windows. Each returns -1 with errno set on failure.
#if defined(_WIN32)
using FileStat = struct _stat64;
bool IsDirectory(const FileStat& s) { return (s.st_mode & _S_IFMT) == _S_IFDIR; }
bool IsRegular(const FileStat& s) { return (s.st_mode & _S_IFMT) == _S_IFREG; }

// Opens path for reading, not inherited by child processes (as O_CLOEXEC).
// The path is in the narrow encoding that std::filesystem and fopen use.
int OpenForReading(const std::string& path) {
  return ::_wopen(std::filesystem::path(path).c_str(), _O_RDONLY | _O_BINARY | _O_NOINHERIT);
}
int StatOpen(int fd, FileStat* info) { return ::_fstat64(fd, info); }
void CloseFile(int fd) { ::_close(fd); }

// pread: ReadFile at an offset, which does not use the descriptor's position
// (calls from several threads are serialized by the system, each at its own
// offset). The number of bytes read, 0 at the end of the file.
std::int64_t ReadAtOffset(int fd, void* dst, std::size_t nbytes, std::uint64_t offset) {
  const HANDLE h = reinterpret_cast<HANDLE>(::_get_osfhandle(fd));
  if (h == INVALID_HANDLE_VALUE) {
    errno = EBADF;
    return -1;
  }
  OVERLAPPED at = {};
  at.Offset = static_cast<DWORD>(offset & 0xFFFFFFFFu);
  at.OffsetHigh = static_cast<DWORD>(offset >> 32);
  DWORD got = 0;
  if (!::ReadFile(h, dst, static_cast<DWORD>(nbytes), &got, &at)) {
    const DWORD err = ::GetLastError();
    if (err == ERROR_HANDLE_EOF) return 0;
    errno = err == ERROR_NOT_ENOUGH_MEMORY || err == ERROR_OUTOFMEMORY ? ENOMEM
            : err == ERROR_ACCESS_DENIED || err == ERROR_LOCK_VIOLATION ? EACCES
                                                                         : EIO;
    return -1;
  }
  return static_cast<std::int64_t>(got);
}
#else
using FileStat = struct stat;
bool IsDirectory(const FileStat& s) { return S_ISDIR(s.st_mode); }
bool IsRegular(const FileStat& s) { return S_ISREG(s.st_mode); }

// O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused
// after the open); it changes nothing for regular files.
int OpenForReading(const std::string& path) {
  return ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
}
int StatOpen(int fd, FileStat* info) { return ::fstat(fd, info); }
void CloseFile(int fd) { ::close(fd); }

std::int64_t ReadAtOffset(int fd, void* dst, std::size_t nbytes, std::uint64_t offset) {
  return ::pread(fd, dst, nbytes, static_cast<off_t>(offset));
}
#endif

class File {
 public:
  File(const std::string& path, const char* mode) : f_(std::fopen(path.c_str(), mode)) {}
  ~File() {
    if (f_) std::fclose(f_);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  std::FILE* get() const { return f_; }
  int Close() {
    const int rc = std::fclose(f_);
    f_ = nullptr;
    return rc;
  }

 private:
  std::FILE* f_;
};

}  // namespace

const char* DTypeName(DType dtype) {
  for (const auto& e : kDTypes)
    if (e.dtype == dtype) return e.name;
  return "?";
}

std::size_t DTypeSize(DType dtype) {
  for (const auto& e : kDTypes)
    if (e.dtype == dtype) return e.size;
  return 1;
}

bool ParseDType(const std::string& name, DType* out) {
  for (const auto& e : kDTypes) {
    if (name == e.name) {
      *out = e.dtype;
      return true;
    }
  }
  return false;
}

std::uint64_t HeaderLength(const unsigned char* prefix, std::uint64_t file_size) {
  if (file_size < 8)
    throw InvalidArgument("not a safetensors file: " + std::to_string(file_size) +
                          " bytes, too short for the 8-byte header length");
  const std::uint64_t n = LoadLE64(prefix);
  if (n < 2)
    throw InvalidArgument("not a safetensors file: implausible header length " +
                          std::to_string(n));
  if (n > file_size - 8)
    throw InvalidArgument("not a safetensors file, or truncated: the header length " +
                          std::to_string(n) + " is larger than the file's remaining " +
                          std::to_string(file_size - 8) + " bytes");
  if (n > kMaxHeaderBytes)
    throw InvalidArgument("the header length " + std::to_string(n) +
                          " is larger than the limit of 100 MB");
  return n;
}

Header ParseHeader(const char* json, std::size_t json_size, std::uint64_t data_bytes) {
  if (json_size == 0 || json[0] != '{')
    throw InvalidArgument("not a safetensors file: the header does not start with '{'");
  Header h = HeaderParser(json, json_size).Parse();
  h.header_bytes = json_size;
  h.data_bytes = data_bytes;
  CheckLayout(h);
  return h;
}

Contents ReadBuffer(const unsigned char* bytes, std::size_t size) {
  const std::uint64_t n = HeaderLength(bytes, size);
  Contents c;
  c.header = ParseHeader(reinterpret_cast<const char*>(bytes + 8), static_cast<std::size_t>(n),
                         size - 8 - n);
  const unsigned char* data = bytes + 8 + n;
  c.data.reserve(c.header.tensors.size());
  for (const TensorInfo& t : c.header.tensors)
    c.data.emplace_back(data + t.begin, data + t.end);
  return c;
}

Reader::Reader(const std::string& path) : path_(path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found) throw FileError(ENOENT, "no such file: " + path);
  if (st.type() == fs::file_type::directory) throw FileError(EISDIR, "is a directory: " + path);
  // A FIFO is opened without waiting for a writer (OpenForReading), and
  // refused below.
  do {
    fd_ = OpenForReading(path);
  } while (fd_ < 0 && errno == EINTR);
  if (fd_ < 0) {
    const int err = errno;
    throw FileError(err, "cannot open " + path + ": " + ErrnoText(err));
  }
  try {
    // The size of the file that is open, whatever happens to path meanwhile.
    FileStat info;
    if (StatOpen(fd_, &info) != 0) {
      const int err = errno;
      throw FileError(err, "cannot read " + path + ": " + ErrnoText(err));
    }
    if (IsDirectory(info)) throw FileError(EISDIR, "is a directory: " + path);
    if (!IsRegular(info)) {
      const int err = static_cast<int>(std::errc::not_supported);
      throw FileError(err, "cannot read " + path + ": not a regular file");
    }
    file_size_ = static_cast<std::uint64_t>(info.st_size);
#if defined(POSIX_FADV_SEQUENTIAL)
    ::posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);  // advice only: a larger readahead
#endif
    unsigned char prefix[8] = {0};
    if (file_size_ >= 8) ReadAt(prefix, 8, 0, "the header length");
    const std::uint64_t n = HeaderLength(prefix, file_size_);
    std::string json(static_cast<std::size_t>(n), '\0');
    ReadAt(&json[0], n, 8, "the header");
    header_ = ParseHeader(json.data(), json.size(), file_size_ - 8 - n);
    for (std::size_t i = 0; i < header_.tensors.size(); ++i)
      index_.emplace(header_.tensors[i].name, i);
  } catch (...) {
    CloseFile(fd_);
    throw;
  }
}

Reader::~Reader() {
  if (fd_ >= 0) CloseFile(fd_);
}

std::ptrdiff_t Reader::Find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? -1 : static_cast<std::ptrdiff_t>(it->second);
}

void Reader::ReadAt(void* dst, std::uint64_t nbytes, std::uint64_t offset,
                    const std::string& what) const {
  unsigned char* p = static_cast<unsigned char*>(dst);
  while (nbytes > 0) {
    // At most 1 GiB a call (Linux moves at most 2 GiB - 4 KiB per read).
    const std::size_t chunk =
        static_cast<std::size_t>(std::min<std::uint64_t>(nbytes, std::uint64_t{1} << 30));
    const std::int64_t got = ReadAtOffset(fd_, p, chunk, offset);
    if (got < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      throw FileError(err, "cannot read " + path_ + ": " + ErrnoText(err));
    }
    if (got == 0)
      throw InvalidArgument("the file is truncated (it ended while reading " + what + ")");
    p += got;
    offset += static_cast<std::uint64_t>(got);
    nbytes -= static_cast<std::uint64_t>(got);
  }
}

void Reader::Read(const std::vector<Target>& targets) const {
  const auto& tensors = header_.tensors;
  std::vector<bool> named(tensors.size(), false);
  for (const Target& t : targets) {
    if (t.index >= tensors.size())
      throw InvalidArgument("no tensor number " + std::to_string(t.index) +
                            " in the file (it has " + std::to_string(tensors.size()) + ")");
    const TensorInfo& info = tensors[t.index];
    if (named[t.index]) throw InvalidArgument("tensor " + Quote(info.name) + " is read twice");
    named[t.index] = true;
    if (t.nbytes != info.end - info.begin)
      throw InvalidArgument("tensor " + Quote(info.name) + " has " +
                            std::to_string(info.end - info.begin) + " bytes, but its target " +
                            std::to_string(t.nbytes));
    if (t.nbytes > 0 && t.data == nullptr)
      throw InvalidArgument("tensor " + Quote(info.name) + ": no memory to read it into");
  }
  // In the order of the offsets (the tensors tile the data section, so the
  // file is read front to back), empty tensors left out.
  std::vector<const Target*> order;
  order.reserve(targets.size());
  for (const Target& t : targets)
    if (t.nbytes > 0) order.push_back(&t);
  std::sort(order.begin(), order.end(), [&](const Target* a, const Target* b) {
    return tensors[a->index].begin < tensors[b->index].begin;
  });
  const std::uint64_t data_start = 8 + header_.header_bytes;
  for (std::size_t i = 0; i < order.size();) {
    // A run of tensors adjacent both in the file and in memory: one read.
    const TensorInfo& first = tensors[order[i]->index];
    void* const dst = order[i]->data;
    const std::uintptr_t at = reinterpret_cast<std::uintptr_t>(dst);
    std::uint64_t end = first.end, nbytes = order[i]->nbytes;
    std::size_t j = i + 1;
    for (; j < order.size(); ++j) {
      const TensorInfo& next = tensors[order[j]->index];
      if (next.begin != end || reinterpret_cast<std::uintptr_t>(order[j]->data) != at + nbytes)
        break;
      end = next.end;
      nbytes += order[j]->nbytes;
    }
    const std::string what = j == i + 1 ? "tensor " + Quote(first.name)
                                        : "tensors " + Quote(first.name) + " to " +
                                              Quote(tensors[order[j - 1]->index].name);
    ReadAt(dst, nbytes, data_start + first.begin, what);
    i = j;
  }
}

Contents ReadFile(const std::string& path) {
  const Reader reader(path);
  Contents c;
  c.header = reader.header();
  // Every buffer is allocated (not cleared: Read fills it) before anything is
  // read; together they are the data section, which the file holds.
  const auto& tensors = c.header.tensors;
  c.data.resize(tensors.size());
  std::vector<Reader::Target> targets(tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    c.data[i].resize(static_cast<std::size_t>(tensors[i].end - tensors[i].begin));
    targets[i] = {i, c.data[i].data(), c.data[i].size()};
  }
  reader.Read(targets);
  return c;
}

std::string EncodeHeader(const std::map<std::string, std::string>& metadata,
                         const std::vector<TensorData>& tensors) {
  std::string json = "{";
  if (!metadata.empty()) {
    json += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) json += ',';
      first = false;
      AppendJsonString(&json, k);
      json += ':';
      AppendJsonString(&json, v);
    }
    json += '}';
  }
  std::set<std::string> names;
  std::uint64_t at = 0;
  for (const TensorData& t : tensors) {
    Require(t.name != "__metadata__", "the tensor name '__metadata__' is reserved");
    Require(names.insert(t.name).second, "duplicate tensor name " + Quote(t.name));
    Require(t.shape.size() <= kMaxRank, "tensor " + Quote(t.name) + " has too many dimensions");
    std::uint64_t elements = 1;
    for (std::uint64_t d : t.shape) elements *= d;
    Require(elements * DTypeSize(t.dtype) == t.nbytes,
            "tensor " + Quote(t.name) + ": its byte count does not match its shape");
    if (json.size() > 1) json += ',';
    AppendJsonString(&json, t.name);
    json += ":{\"dtype\":\"";
    json += DTypeName(t.dtype);
    json += "\",\"shape\":[";
    for (std::size_t i = 0; i < t.shape.size(); ++i)
      json += (i ? "," : "") + std::to_string(t.shape[i]);
    json += "],\"data_offsets\":[" + std::to_string(at) + "," + std::to_string(at + t.nbytes) +
            "]}";
    at += t.nbytes;
  }
  json += '}';
  json.append((8 - json.size() % 8) % 8, ' ');
  Require(json.size() <= kMaxHeaderBytes, "the header would be larger than 100 MB");
  std::string out(8, '\0');
  StoreLE64(json.size(), &out[0]);
  return out + json;
}

std::vector<unsigned char> WriteBuffer(const std::map<std::string, std::string>& metadata,
                                       const std::vector<TensorData>& tensors) {
  const std::string head = EncodeHeader(metadata, tensors);
  std::vector<unsigned char> out(head.begin(), head.end());
  for (const TensorData& t : tensors) {
    const unsigned char* p = static_cast<const unsigned char*>(t.data);
    out.insert(out.end(), p, p + t.nbytes);
  }
  return out;
}

void WriteFile(const std::string& path, const std::map<std::string, std::string>& metadata,
               const std::vector<TensorData>& tensors) {
  namespace fs = std::filesystem;
  const std::string head = EncodeHeader(metadata, tensors);
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw FileError(EISDIR, "is a directory: " + path);
  const std::string tmp = path + ".tmp";
  int err = 0;
  std::string what;
  {
    File f(tmp, "wb");
    if (!f.get()) {
      err = errno;
      throw FileError(err, "cannot write " + tmp + ": " + ErrnoText(err));
    }
    bool ok = std::fwrite(head.data(), 1, head.size(), f.get()) == head.size();
    for (std::size_t i = 0; ok && i < tensors.size(); ++i)
      ok = tensors[i].nbytes == 0 ||
           std::fwrite(tensors[i].data, 1, static_cast<std::size_t>(tensors[i].nbytes),
                       f.get()) == tensors[i].nbytes;
    if (!ok) err = errno ? errno : EIO;
    if (f.Close() != 0 && ok) err = errno ? errno : EIO;
    if (err) what = "cannot write " + tmp + ": " + ErrnoText(err);
  }
  if (!err) {
    fs::rename(tmp, path, ec);
    if (ec) {
      err = ec.value();
      what = "cannot rename " + tmp + " to " + path + ": " + ec.message();
    }
  }
  if (err) {
    fs::remove(tmp, ec);
    throw FileError(err, what);
  }
}

}  // namespace model_file
}  // namespace rnncore
