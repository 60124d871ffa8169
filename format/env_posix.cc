// The real Env: POSIX file I/O. Every error names the path and the errno text.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "format/env.h"

#include "base/paths.h"

#include "base/random.h"

namespace gnomon {

namespace {

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }
  Status Append(std::span<const uint8_t> data) override {
    const uint8_t* p = data.data();
    size_t left = data.size();
    while (left > 0) {
      ssize_t n = ::write(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno("writing " + path_, errno);
      }
      p += n;
      left -= static_cast<size_t>(n);
      size_ += static_cast<uint64_t>(n);
    }
    return Status::OK();
  }
  Status Sync() override {
    if (::fdatasync(fd_) != 0) return Status::FromErrno("syncing " + path_, errno);
    return Status::OK();
  }
  Status Close() override {
    int fd = fd_;
    fd_ = -1;
    if (fd >= 0 && ::close(fd) != 0) return Status::FromErrno("closing " + path_, errno);
    return Status::OK();
  }
  uint64_t Size() const override { return size_; }
  const std::string& path() const override { return path_; }

 private:
  std::string path_;
  int fd_;
  uint64_t size_ = 0;
};

class PosixRandomAccessFile final : public RandomAccessFile {
 public:
  PosixRandomAccessFile(std::string path, int fd, uint64_t size)
      : path_(std::move(path)), fd_(fd), size_(size) {}
  ~PosixRandomAccessFile() override { ::close(fd_); }
  Status ReadAt(uint64_t offset, size_t n, uint8_t* dst) const override {
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::pread(fd_, dst + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno("reading " + path_, errno);
      }
      if (r == 0) {
        return Status::Corruption(path_ + ": file is truncated (wanted " + std::to_string(n) +
                                  " bytes at offset " + std::to_string(offset) + ", file has " +
                                  std::to_string(size_) + ")");
      }
      done += static_cast<size_t>(r);
    }
    return Status::OK();
  }
  uint64_t Size() const override { return size_; }
  const std::string& path() const override { return path_; }

 private:
  std::string path_;
  int fd_;
  uint64_t size_;
};

// Holds the flocks on the repository directory (dir_fd) and on the
// holder-text file (text_fd), which an exclusive holder truncates on release.
class PosixFileLock final : public FileLock {
 public:
  PosixFileLock(int dir_fd, int text_fd, bool exclusive)
      : dir_fd_(dir_fd), text_fd_(text_fd), exclusive_(exclusive) {}
  ~PosixFileLock() override {
    // Clear the holder text first so a later reader never blames us.
    if (exclusive_ && ::ftruncate(text_fd_, 0) != 0) {
    }
    if (text_fd_ >= 0) ::close(text_fd_);  // releases its flock
    ::flock(dir_fd_, LOCK_UN);
    ::close(dir_fd_);
  }

 private:
  int dir_fd_, text_fd_;
  bool exclusive_;
};

// A flock on one file, released by closing it.
class PosixPlainLock final : public FileLock {
 public:
  explicit PosixPlainLock(int fd) : fd_(fd) {}
  ~PosixPlainLock() override { ::close(fd_); }

 private:
  int fd_;
};

std::string ReadAllFd(int fd) {
  std::string s;
  char buf[4096];
  off_t off = 0;
  for (;;) {
    ssize_t n = ::pread(fd, buf, sizeof buf, off);
    if (n <= 0) break;
    s.append(buf, static_cast<size_t>(n));
    off += n;
  }
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  return s;
}

class PosixEnv final : public Env {
 public:
  Status NewWritableFile(const std::string& path, std::unique_ptr<WritableFile>* out) override {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return Status::FromErrno("creating " + path, errno);
    ::fchmod(fd, 0600);  // whatever the umask: repository files are the owner's alone
    *out = std::make_unique<PosixWritableFile>(path, fd);
    return Status::OK();
  }
  Status NewRandomAccessFile(const std::string& path,
                             std::unique_ptr<RandomAccessFile>* out) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno("opening " + path, errno);
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      int e = errno;
      ::close(fd);
      return Status::FromErrno("stat " + path, e);
    }
    *out = std::make_unique<PosixRandomAccessFile>(path, fd, static_cast<uint64_t>(st.st_size));
    return Status::OK();
  }
  Status RenameFile(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0)
      return Status::FromErrno("renaming " + from + " to " + to, errno);
    return Status::OK();
  }
  Status RenameNoReplace(const std::string& from, const std::string& to) override {
    if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0)
      return Status::OK();
    int e = errno;
    if (e == EINVAL || e == ENOSYS) {  // a filesystem without RENAME_NOREPLACE
      if (::link(from.c_str(), to.c_str()) == 0) {
        ::unlink(from.c_str());
        return Status::OK();
      }
      e = errno;
    }
    if (e == EEXIST)
      return Status::Exists(to + ": already exists; a write-once file is never replaced");
    return Status::FromErrno("renaming " + from + " to " + to, e);
  }
  Status SyncDir(const std::string& dir) override {
    // Never through a symlink planted in the repository (gc/ -> /etc): the
    // fchmod below would change the target. (A repository path a user
    // gives that is a symlink is resolved by init before it gets here.)
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && (errno == ELOOP || errno == ENOTDIR))
      return Status::InvalidArgument(
          dir + ": is not a directory (a symbolic link or a file); refusing it");
    if (fd < 0) return Status::FromErrno("opening directory " + dir, errno);
    int rc = ::fsync(fd);
    int e = errno;
    ::close(fd);
    if (rc != 0) return Status::FromErrno("syncing directory " + dir, e);
    return Status::OK();
  }
  Status RemoveFile(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return Status::FromErrno("removing " + path, errno);
    return Status::OK();
  }
  Status CreateDir(const std::string& dir) override {
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
      return Status::FromErrno("creating directory " + dir, errno);
    // Whatever the umask, and for a directory that already existed (an
    // empty one given to init): ours alone. Another user's directory is
    // refused: they could replace what we put in it.
    // Never through a symlink planted in the repository (gc/ -> /etc): the
    // fchmod below would change the target. (A repository path a user
    // gives that is a symlink is resolved by init before it gets here.)
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && (errno == ELOOP || errno == ENOTDIR))
      return Status::InvalidArgument(
          dir + ": is not a directory (a symbolic link or a file); refusing it");
    if (fd < 0) return Status::FromErrno("opening directory " + dir, errno);
    struct stat st;
    Status s;
    if (::fstat(fd, &st) != 0)
      s = Status::FromErrno("stat " + dir, errno);
    else if (st.st_uid != ::geteuid())
      s = Status::InvalidArgument(dir + ": directory belongs to uid " + std::to_string(st.st_uid) +
                                  "; a repository must be its owner's alone");
    else if (::fchmod(fd, 0700) != 0)
      s = Status::FromErrno("restricting directory " + dir, errno);
    ::close(fd);
    return s;
  }
  Status RemoveDir(const std::string& dir) override {
    if (::rmdir(dir.c_str()) != 0) return Status::FromErrno("removing directory " + dir, errno);
    return Status::OK();
  }
  Status ListDir(const std::string& dir, std::vector<std::string>* names) override {
    names->clear();
    DIR* d = ::opendir(dir.c_str());
    if (!d) return Status::FromErrno("listing " + dir, errno);
    while (struct dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      names->emplace_back(e->d_name);
    }
    ::closedir(d);
    return Status::OK();
  }
  bool FileExists(const std::string& path) override { return ::access(path.c_str(), F_OK) == 0; }

  Status LockFile(const std::string& path, bool exclusive, const std::string& holder_info,
                  std::unique_ptr<FileLock>* out, std::string* stale_holder) override {
    // The lock is on the directory: deleting the text file cannot let a
    // second writer in while the first still holds it.
    const std::string dir = ParentDir(path);
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return Status::FromErrno("opening " + dir, errno);
    int fd = -1;
    Status s = Flock(dfd, exclusive, dir, path);
    if (s.ok()) s = LockTextFile(path, exclusive, holder_info, stale_holder, &fd);
    if (!s.ok()) {
      ::close(dfd);
      return s.code() == Status::Code::kLocked ? s.WithContext(dir) : s;
    }
    *out = std::make_unique<PosixFileLock>(dfd, fd, exclusive);
    return Status::OK();
  }

  bool OnReadOnlyMedia(const std::string& path) override {
    struct statvfs st;
    return ::statvfs(path.c_str(), &st) == 0 && (st.f_flag & ST_RDONLY);
  }
  Status TryFlock(const std::string& path, bool exclusive,
                  std::unique_ptr<FileLock>* out) override {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && !exclusive) fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno("opening lock file " + path, errno);
    if (::flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0) {
      const int e = errno;
      ::close(fd);
      if (e == EWOULDBLOCK) return Status::Locked(path + " is held by another process");
      return Status::FromErrno("locking " + path, e);
    }
    *out = std::make_unique<PosixPlainLock>(fd);
    return Status::OK();
  }

 private:
  // flock without blocking; on contention Locked naming the holder, whose
  // text is in text_path.
  static Status Flock(int fd, bool exclusive, const std::string& what,
                      const std::string& text_path) {
    if (::flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0) return Status::OK();
    if (errno != EWOULDBLOCK) return Status::FromErrno("locking " + what, errno);
    std::string holder;
    int tfd = ::open(text_path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (tfd >= 0) {
      holder = ReadAllFd(tfd);
      ::close(tfd);
    }
    return Status::Locked("repository is locked by " +
                          (holder.empty() ? "another gnomon process that is reading it" : holder));
  }

  // The text file is flocked too (gnomon before format version 6 locked
  // only it, and must not run beside this one); an exclusive holder writes
  // its holder_info there. *fd is -1 when a reader cannot open it at all (a
  // read-only mount without the file): the directory's lock then suffices.
  static Status LockTextFile(const std::string& path, bool exclusive,
                             const std::string& holder_info, std::string* stale_holder, int* fd) {
    *fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (*fd < 0 && !exclusive) {
      *fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
      if (*fd < 0) return Status::OK();
    }
    if (*fd < 0) return Status::FromErrno("opening lock file " + path, errno);
    Status s = Flock(*fd, exclusive, path, path);
    if (s.ok() && exclusive) {
      // We hold the lock, so text still in the file was left by a holder
      // that died without cleaning up: a stale lock.
      std::string old = ReadAllFd(*fd);
      if (stale_holder) *stale_holder = old;
      if (::ftruncate(*fd, 0) != 0 || ::pwrite(*fd, holder_info.data(), holder_info.size(), 0) !=
                                          static_cast<ssize_t>(holder_info.size()))
        s = Status::FromErrno("writing lock file " + path, errno);
    }
    if (!s.ok()) {
      ::close(*fd);
      *fd = -1;
    }
    return s;
  }
};

}  // namespace

Env* Env::Default() {
  static PosixEnv env;
  return &env;
}

Status Env::ReadFileToString(const std::string& path, std::string* out) {
  std::unique_ptr<RandomAccessFile> f;
  GNOMON_RETURN_IF_ERROR(NewRandomAccessFile(path, &f));
  out->resize(f->Size());
  return f->ReadAt(0, out->size(), reinterpret_cast<uint8_t*>(out->data()));
}

Status Env::WriteTemporary(const std::string& path, std::span<const uint8_t> data,
                           std::string* tmp) {
  // An unpredictable name, created O_EXCL|O_NOFOLLOW: nobody can plant it.
  *tmp = path + ".tmp-" + RandomHexId(8);
  std::unique_ptr<WritableFile> f;
  GNOMON_RETURN_IF_ERROR(NewWritableFile(*tmp, &f));
  Status s = f->Append(data);
  if (s.ok()) s = f->Sync();
  Status c = f->Close();
  if (s.ok()) s = c;
  if (!s.ok()) RemoveFile(*tmp);  // best effort: the old file, if any, is untouched
  return s;
}

Status Env::WriteFileAtomic(const std::string& path, std::span<const uint8_t> data) {
  return Publish(path, data, /*replace=*/true);
}

Status Env::WriteFileOnce(const std::string& path, std::span<const uint8_t> data) {
  return Publish(path, data, /*replace=*/false);
}

Status Env::Publish(const std::string& path, std::span<const uint8_t> data, bool replace) {
  std::string tmp;
  GNOMON_RETURN_IF_ERROR(WriteTemporary(path, data, &tmp));
  Status s = replace ? RenameFile(tmp, path) : RenameNoReplace(tmp, path);
  if (!s.ok()) {
    RemoveFile(tmp);
    return s;
  }
  if (Status sync = SyncDir(ParentDir(path)); !sync.ok()) {
    // Visible but not durable. A write-once file is taken back, so that the
    // caller's failure is the repository's state too (the caller may remove
    // what the file names); a replaced file cannot be, its old content is gone.
    if (!replace && RemoveFile(path).ok()) (void)SyncDir(ParentDir(path));
    return sync;
  }
  return Status::OK();
}

}  // namespace gnomon
