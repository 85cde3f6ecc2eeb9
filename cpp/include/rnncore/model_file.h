// Model files: the safetensors format (https://github.com/huggingface/safetensors),
// read and written by the core so that Python, C and C++ programs share one
// parser.
//
// A file is
//   8 bytes   N, the header length, a little-endian unsigned 64-bit integer;
//   N bytes   the header: a UTF-8 JSON object, padded with spaces;
//   the rest  the data section: every tensor's bytes, little-endian, row-major,
//             back to back (no gaps, no overlaps, nothing after the last one).
// The header maps each tensor name to {"dtype": "F32", "shape": [2, 3],
// "data_offsets": [begin, end]} (offsets into the data section) and may hold
// "__metadata__": {"key": "string value", ...}.
//
// Reading checks every length, offset, dtype and shape against the file's size
// before it reads or allocates anything for the data (so a bad file never makes
// the reader read outside it, or allocate more than the file holds), and throws
// InvalidArgument naming the first problem. Missing files, directories and I/O
// errors throw FileError, which carries the errno value.
//
// ReadFile reads a whole file into buffers of its own; a Reader opens a file
// and validates its header alone, and then reads the tensors a caller names
// straight into the caller's memory (rnncore's loader reads parameters into a
// module's flat parameter buffer that way: each byte is copied once).
#ifndef RNNCORE_MODEL_FILE_H_
#define RNNCORE_MODEL_FILE_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "rnncore/allocator.h"
#include "rnncore/common.h"

namespace rnncore {
namespace model_file {

// The largest header read (bytes), as safetensors' own reader.
constexpr std::uint64_t kMaxHeaderBytes = 100000000;
// The most dimensions a tensor may have.
constexpr std::size_t kMaxRank = 32;

// The safetensors dtypes this reader knows (it parses all of them; what a
// caller accepts is up to it).
enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU64, kU32, kU16, kU8, kBool };

const char* DTypeName(DType dtype);    // "F32", ...
std::size_t DTypeSize(DType dtype);    // bytes per element
bool ParseDType(const std::string& name, DType* out);  // false for unknown names

// One tensor of a header: its bytes are [begin, end) of the data section.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::uint64_t> shape;
  std::uint64_t begin = 0, end = 0;
};

// A validated header.
struct Header {
  std::map<std::string, std::string> metadata;  // "__metadata__"
  std::vector<TensorInfo> tensors;              // in the header's order
  std::uint64_t header_bytes = 0;               // N (the data section starts at 8 + N)
  std::uint64_t data_bytes = 0;                 // the data section's length
};

// One tensor's bytes. The core's buffer type: 64-byte aligned, and allocated
// without being cleared first (a reader fills it completely).
using Bytes = Buffer<unsigned char>;

// A header and each tensor's bytes (tensors[i] <-> data[i]).
struct Contents {
  Header header;
  std::vector<Bytes> data;
};

// Thrown for files that cannot be opened, read or written (not for bad
// contents): err is the errno value (ENOENT for a missing file, EISDIR for a
// directory).
class FileError : public std::runtime_error {
 public:
  FileError(int err, const std::string& what) : std::runtime_error(what), err_(err) {}
  int err() const { return err_; }

 private:
  int err_;
};

// Validates the 8-byte length prefix against a file of file_size bytes and
// returns N. Throws InvalidArgument.
std::uint64_t HeaderLength(const unsigned char* prefix, std::uint64_t file_size);

// Parses and validates a header's JSON (json_size bytes) for a data section of
// data_bytes bytes. Throws InvalidArgument.
Header ParseHeader(const char* json, std::size_t json_size, std::uint64_t data_bytes);

// Reads a whole file held in memory. Throws InvalidArgument.
Contents ReadBuffer(const unsigned char* bytes, std::size_t size);

// Reads the file at path (a Reader that reads every tensor into a buffer of its
// own). Throws InvalidArgument or FileError.
Contents ReadFile(const std::string& path);

// An open model file whose header has been read and validated; its data
// section is read only by Read, into memory the caller provides. The file
// stays open until the Reader is destroyed.
class Reader {
 public:
  // Opens path, reads its header and validates it against the file's size
  // (as ReadFile). Throws FileError (ENOENT, EISDIR, other errno values) or
  // InvalidArgument.
  explicit Reader(const std::string& path);
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  const std::string& path() const { return path_; }
  const Header& header() const { return header_; }
  // The file's size when it was opened (the header was checked against it).
  std::uint64_t file_size() const { return file_size_; }
  // The index in header().tensors of the tensor called name, or -1.
  std::ptrdiff_t Find(const std::string& name) const;

  // Where Read puts one tensor: header().tensors[index]'s bytes, exactly
  // nbytes of them, at data.
  struct Target {
    std::size_t index = 0;
    void* data = nullptr;
    std::uint64_t nbytes = 0;
  };

  // Reads each target's tensor into its memory. Every target is checked
  // before anything is read: its index must be in range, its nbytes equal its
  // tensor's byte count, and no tensor may be named twice (InvalidArgument
  // otherwise). The ranges are read in the order of their offsets, with pread
  // and no intermediate buffer; tensors that are adjacent in the file and
  // whose targets are adjacent in memory are read with one read. A file that
  // has become shorter since it was opened throws InvalidArgument ("the file
  // is truncated"); I/O errors throw FileError. On a throw, the targets hold
  // unspecified bytes. Safe to call from several threads at once (pread has no
  // shared file position).
  void Read(const std::vector<Target>& targets) const;

 private:
  // Reads exactly nbytes at offset (what names them in the truncation error).
  void ReadAt(void* dst, std::uint64_t nbytes, std::uint64_t offset, const std::string& what) const;

  std::string path_;
  int fd_ = -1;
  std::uint64_t file_size_ = 0;
  Header header_;
  std::map<std::string, std::size_t> index_;
};

// A tensor to write: nbytes bytes at data, little-endian, row-major.
struct TensorData {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::uint64_t> shape;
  const void* data = nullptr;
  std::uint64_t nbytes = 0;
};

// The 8-byte prefix and the header (padded with spaces to a multiple of 8
// bytes) for these tensors, whose data follow in this order. Throws
// InvalidArgument for duplicate or reserved names, or sizes that disagree.
std::string EncodeHeader(const std::map<std::string, std::string>& metadata,
                         const std::vector<TensorData>& tensors);

// The whole file in memory.
std::vector<unsigned char> WriteBuffer(const std::map<std::string, std::string>& metadata,
                                       const std::vector<TensorData>& tensors);

// Writes path + ".tmp", then renames it to path (an existing file is
// replaced); on failure the temporary file is removed. Throws
// InvalidArgument or FileError.
void WriteFile(const std::string& path, const std::map<std::string, std::string>& metadata,
               const std::vector<TensorData>& tensors);

}  // namespace model_file
}  // namespace rnncore

#endif  // RNNCORE_MODEL_FILE_H_
