// An Env that forwards to the real one but fails on command: the Nth append,
// sync or rename, or any write past a byte budget (a full disk), or the Nth
// call that changes anything (create, append, sync, close, rename, directory
// sync, remove, mkdir) with the error of your choice, or the Nth call that
// reads (open for reading, read, list) with EIO. Lets tests prove that a
// failure at any point leaves the repository as it was.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "format/env.h"

namespace gnomon::test {

class FaultEnv : public Env {
 public:
  explicit FaultEnv(Env* base) : base_(base) {}

  // -1 = never. Counted from now, over all files.
  std::atomic<int> fail_append_after{-1};
  std::atomic<int> fail_sync_after{-1};
  std::atomic<int> fail_rename_after{-1};
  std::atomic<int64_t> space_left{-1};  // bytes; -1 = unlimited
  // Removing a file whose path contains this fails with EIO ("": none).
  std::string fail_removing;

  // The numbered-call fault: every call that changes anything counts in
  // `calls`; the one numbered `fail_call` (from 0; -1 = none) fails with
  // `fail_errno`. An append that fails with ENOSPC writes half its bytes
  // first (a short write, as a full disk does).
  std::atomic<int> calls{0};
  std::atomic<int> fail_call{-1};
  std::atomic<int> fail_errno{EIO};
  std::atomic<bool> tripped{false};
  std::string tripped_what;  // the call that failed (set once, before tripped)
  // OK, or the injected error for this call naming `what`.
  Status Call(const std::string& what) {
    if (calls.fetch_add(1) != fail_call.load()) return Status::OK();
    tripped_what = what;
    tripped = true;
    return Status::IOError(what + ": " + std::strerror(fail_errno.load()) + " (injected fault)");
  }

  // The numbered read fault: every call that reads counts in `reads`; the
  // one numbered `fail_read` (from 0; -1 = none) fails with EIO.
  std::atomic<int> reads{0};
  std::atomic<int> fail_read{-1};
  Status ReadCall(const std::string& what) {
    if (reads.fetch_add(1) != fail_read.load()) return Status::OK();
    tripped_what = what;
    tripped = true;
    return Status::IOError(what + ": " + std::strerror(EIO) + " (injected fault)");
  }

  Status NewWritableFile(const std::string& path, std::unique_ptr<WritableFile>* out) override;
  Status NewRandomAccessFile(const std::string& p, std::unique_ptr<RandomAccessFile>* o) override;
  Status RenameFile(const std::string& from, const std::string& to) override {
    if (Trip(fail_rename_after)) return Status::IOError("renaming " + from + ": injected fault");
    GNOMON_RETURN_IF_ERROR(Call("renaming " + from));
    return base_->RenameFile(from, to);
  }
  Status RenameNoReplace(const std::string& from, const std::string& to) override {
    if (Trip(fail_rename_after)) return Status::IOError("renaming " + from + ": injected fault");
    GNOMON_RETURN_IF_ERROR(Call("renaming " + from));
    return base_->RenameNoReplace(from, to);
  }
  Status SyncDir(const std::string& d) override {
    GNOMON_RETURN_IF_ERROR(Call("syncing directory " + d));
    return base_->SyncDir(d);
  }
  Status RemoveDir(const std::string& d) override {
    GNOMON_RETURN_IF_ERROR(Call("removing " + d));
    return base_->RemoveDir(d);
  }
  Status RemoveFile(const std::string& p) override {
    if (!fail_removing.empty() && p.find(fail_removing) != std::string::npos)
      return Status::IOError("removing " + p + ": injected fault");
    GNOMON_RETURN_IF_ERROR(Call("removing " + p));
    return base_->RemoveFile(p);
  }
  Status CreateDir(const std::string& d) override {
    GNOMON_RETURN_IF_ERROR(Call("creating directory " + d));
    return base_->CreateDir(d);
  }
  Status ListDir(const std::string& d, std::vector<std::string>* n) override {
    GNOMON_RETURN_IF_ERROR(ReadCall("listing " + d));
    return base_->ListDir(d, n);
  }
  bool FileExists(const std::string& p) override { return base_->FileExists(p); }
  Status LockFile(const std::string& p, bool ex, const std::string& info,
                  std::unique_ptr<FileLock>* out, std::string* stale) override {
    return base_->LockFile(p, ex, info, out, stale);
  }
  Status TryFlock(const std::string& p, bool ex, std::unique_ptr<FileLock>* out) override {
    return base_->TryFlock(p, ex, out);
  }
  bool OnReadOnlyMedia(const std::string& p) override { return base_->OnReadOnlyMedia(p); }

  static bool Trip(std::atomic<int>& counter) {
    int v = counter.load();
    while (v >= 0) {
      if (counter.compare_exchange_weak(v, v - 1)) return v == 0;
    }
    return false;
  }

 private:
  Env* base_;
};

class FaultWritableFile : public WritableFile {
 public:
  FaultWritableFile(FaultEnv* env, std::unique_ptr<WritableFile> f) : env_(env), f_(std::move(f)) {}
  Status Append(std::span<const uint8_t> data) override {
    if (FaultEnv::Trip(env_->fail_append_after))
      return Status::IOError("writing " + path() + ": injected fault");
    if (Status s = env_->Call("writing " + path()); !s.ok()) {
      if (env_->fail_errno == ENOSPC) (void)f_->Append(data.first(data.size() / 2));
      return s;
    }
    int64_t left = env_->space_left.load();
    if (left >= 0) {
      if (static_cast<int64_t>(data.size()) > left)
        return Status::IOError("writing " + path() + ": No space left on device");
      env_->space_left -= static_cast<int64_t>(data.size());
    }
    return f_->Append(data);
  }
  Status Sync() override {
    if (FaultEnv::Trip(env_->fail_sync_after))
      return Status::IOError("syncing " + path() + ": injected fault");
    GNOMON_RETURN_IF_ERROR(env_->Call("syncing " + path()));
    return f_->Sync();
  }
  Status Close() override {
    if (Status s = env_->Call("closing " + path()); !s.ok()) {
      (void)f_->Close();  // the descriptor is gone whatever close(2) said
      return s;
    }
    return f_->Close();
  }
  uint64_t Size() const override { return f_->Size(); }
  const std::string& path() const override { return f_->path(); }

 private:
  FaultEnv* env_;
  std::unique_ptr<WritableFile> f_;
};

class FaultRandomAccessFile : public RandomAccessFile {
 public:
  FaultRandomAccessFile(FaultEnv* env, std::unique_ptr<RandomAccessFile> f)
      : env_(env), f_(std::move(f)) {}
  Status ReadAt(uint64_t offset, size_t n, uint8_t* dst) const override {
    GNOMON_RETURN_IF_ERROR(env_->ReadCall("reading " + path()));
    return f_->ReadAt(offset, n, dst);
  }
  uint64_t Size() const override { return f_->Size(); }
  const std::string& path() const override { return f_->path(); }

 private:
  FaultEnv* env_;
  std::unique_ptr<RandomAccessFile> f_;
};

inline Status FaultEnv::NewRandomAccessFile(const std::string& path,
                                            std::unique_ptr<RandomAccessFile>* out) {
  GNOMON_RETURN_IF_ERROR(ReadCall("opening " + path));
  std::unique_ptr<RandomAccessFile> f;
  GNOMON_RETURN_IF_ERROR(base_->NewRandomAccessFile(path, &f));
  *out = std::make_unique<FaultRandomAccessFile>(this, std::move(f));
  return Status::OK();
}

inline Status FaultEnv::NewWritableFile(const std::string& path,
                                        std::unique_ptr<WritableFile>* out) {
  GNOMON_RETURN_IF_ERROR(Call("creating " + path));
  std::unique_ptr<WritableFile> f;
  GNOMON_RETURN_IF_ERROR(base_->NewWritableFile(path, &f));
  *out = std::make_unique<FaultWritableFile>(this, std::move(f));
  return Status::OK();
}

}  // namespace gnomon::test
