// Env: every file operation on a repository goes through this seam, so tests
// can substitute an Env that fails a write, a sync or a rename, or runs out of
// space (LevelDB's idea). Reading the *source* volume and writing a restore
// target are not repository I/O and do not go through it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/paths.h"
#include "base/status.h"

namespace gnomon {

class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual Status Append(std::span<const uint8_t> data) = 0;
  virtual Status Sync() = 0;  // data and size are durable when this returns OK
  virtual Status Close() = 0;
  virtual uint64_t Size() const = 0;
  virtual const std::string& path() const = 0;
};

class RandomAccessFile {
 public:
  virtual ~RandomAccessFile() = default;
  // Reads exactly n bytes at offset, or fails naming the file (a short read
  // is Corruption: the file is shorter than its metadata says).
  virtual Status ReadAt(uint64_t offset, size_t n, uint8_t* dst) const = 0;
  virtual uint64_t Size() const = 0;
  virtual const std::string& path() const = 0;
};

// An advisory whole-repository lock, released when the holder exits however it
// exits (the kernel drops flock locks of dead processes).
class FileLock {
 public:
  virtual ~FileLock() = default;
};

class Env {
 public:
  virtual ~Env() = default;
  static Env* Default();

  // Creates a new file, mode 0600: fails if anything (a file, a planted
  // symlink) already has the name (O_EXCL|O_NOFOLLOW).
  virtual Status NewWritableFile(const std::string& path, std::unique_ptr<WritableFile>* out) = 0;
  virtual Status NewRandomAccessFile(const std::string& path,
                                     std::unique_ptr<RandomAccessFile>* out) = 0;
  // Replaces `to` if it exists: only for files meant to change.
  virtual Status RenameFile(const std::string& from, const std::string& to) = 0;
  // Publishes a write-once file: fails with Exists, touching nothing, if
  // `to` exists (renameat2 RENAME_NOREPLACE, or link + unlink).
  virtual Status RenameNoReplace(const std::string& from, const std::string& to) = 0;
  virtual Status SyncDir(const std::string& dir) = 0;
  virtual Status RemoveFile(const std::string& path) = 0;
  virtual Status CreateDir(const std::string& dir) = 0;  // mode 0700; OK if it exists
  virtual Status RemoveDir(const std::string& dir) = 0;  // an empty directory
  virtual Status ListDir(const std::string& dir, std::vector<std::string>* names) = 0;
  virtual bool FileExists(const std::string& path) = 0;
  // Takes an flock on the directory that holds `path`, which cannot be
  // unlinked from under a holder, and (exclusive only) writes holder_info
  // into `path` for whoever comes next. exclusive=false is a shared lock. On
  // contention returns Locked with the text in `path`; never blocks.
  virtual Status LockFile(const std::string& path, bool exclusive, const std::string& holder_info,
                          std::unique_ptr<FileLock>* out, std::string* stale_holder) = 0;

  // A plain flock on `path` (a regular file, created empty with mode 0600
  // if absent; never through a symlink), without blocking: Locked on
  // contention. Released when *out is destroyed. The gc/ locks (FORMAT.md §8).
  virtual Status TryFlock(const std::string& path, bool exclusive,
                          std::unique_ptr<FileLock>* out) = 0;
  // Whether the filesystem holding `path` is mounted read-only (nothing
  // there can be created, changed or deleted by anyone).
  virtual bool OnReadOnlyMedia(const std::string& path) = 0;

  // Convenience built on the primitives above.
  Status ReadFileToString(const std::string& path, std::string* out);
  // Durability before visibility: write to path.tmp-<rand>, fsync, rename over
  // path, fsync the directory. A reader sees the old file or the new one.
  Status WriteFileAtomic(const std::string& path, std::span<const uint8_t> data);
  // The same for a write-once file: published with RenameNoReplace, so an
  // existing `path` is never replaced (Exists).
  Status WriteFileOnce(const std::string& path, std::span<const uint8_t> data);

 private:
  Status WriteTemporary(const std::string& path, std::span<const uint8_t> data, std::string* tmp);
  // A durable temporary, renamed to path (over it, or only if it is free),
  // then the directory synced.
  Status Publish(const std::string& path, std::span<const uint8_t> data, bool replace);
};

}  // namespace gnomon
