// Status: the result of an operation that can fail, carried across module
// boundaries instead of exceptions (as in LevelDB). The message names the file
// or device and what is wrong, so a caller can print it as it is.
#pragma once

#include <string>
#include <utility>

namespace gnomon {

class Status {
 public:
  enum class Code {
    kOk = 0,
    kNotFound,         // a file, backup or volume that does not exist
    kCorruption,       // bytes on disk that fail a magic, length or checksum test
    kIOError,          // the OS refused an operation (errno text in the message)
    kInvalidArgument,  // the caller asked for something that cannot be
    kLocked,           // another process holds the repository lock
    kUnsupported,      // a format version or feature this build does not know
    kAborted,          // cancelled by the user or by a signal
    kSnapshotFailed,   // no consistent snapshot: a writer vetoed, a window ran out
    kExists,           // a write-once name is taken: never overwritten, retry with a new id
    kWrongKey,         // an encrypted repository's key or passphrase is wrong or missing
  };

  Status() = default;
  static Status OK() { return Status(); }
  static Status NotFound(std::string m) { return Status(Code::kNotFound, std::move(m)); }
  static Status Corruption(std::string m) { return Status(Code::kCorruption, std::move(m)); }
  static Status IOError(std::string m) { return Status(Code::kIOError, std::move(m)); }
  static Status InvalidArgument(std::string m) {
    return Status(Code::kInvalidArgument, std::move(m));
  }
  static Status Locked(std::string m) { return Status(Code::kLocked, std::move(m)); }
  static Status Unsupported(std::string m) { return Status(Code::kUnsupported, std::move(m)); }
  static Status Aborted(std::string m) { return Status(Code::kAborted, std::move(m)); }
  static Status SnapshotFailed(std::string m) {
    return Status(Code::kSnapshotFailed, std::move(m));
  }
  static Status Exists(std::string m) { return Status(Code::kExists, std::move(m)); }
  static Status WrongKey(std::string m) { return Status(Code::kWrongKey, std::move(m)); }
  // An IOError for `what` (a path) carrying strerror(err).
  static Status FromErrno(const std::string& what, int err);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsCorruption() const { return code_ == Code::kCorruption; }
  bool IsExists() const { return code_ == Code::kExists; }
  bool IsLocked() const { return code_ == Code::kLocked; }
  bool IsWrongKey() const { return code_ == Code::kWrongKey; }

  // Prefixes the message with context ("reading backup 1a2b: ...").
  Status WithContext(const std::string& context) const {
    if (ok()) return *this;
    return Status(code_, context + ": " + message_);
  }

 private:
  Status(Code c, std::string m) : code_(c), message_(std::move(m)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

#define GNOMON_RETURN_IF_ERROR(expr) \
  do {                               \
    ::gnomon::Status _st = (expr);   \
    if (!_st.ok()) return _st;       \
  } while (0)

}  // namespace gnomon
