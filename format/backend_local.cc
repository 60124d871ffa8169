// The local-directory backend: object semantics from POSIX files through an
// Env (FORMAT.md §1b). Create-once is a durable temporary published with
// RENAME_NOREPLACE and a directory fsync; a pack is written into tmp/ and
// published the same way; locks are flock(2).
#include <cstdio>
#include <filesystem>

#include "base/paths.h"
#include "format/backend.h"
#include "format/names.h"
#include "format/repository_layout.h"

namespace gnomon {

namespace {

// The directories of the layout (FORMAT.md §1) that an init makes; gc/,
// checks/ and keys/ appear when first needed.
constexpr const char* kLayoutDirs[] = {kPacks, kIndex, kVolumes, kBackups, kTmp, kQuarantine};

class LocalUpload final : public Upload {
 public:
  LocalUpload(Env* env, std::string tmp, std::string final_path, std::unique_ptr<WritableFile> f)
      : env_(env), tmp_(std::move(tmp)), final_(std::move(final_path)), file_(std::move(f)) {}
  ~LocalUpload() override { Abort(); }
  Status Append(std::span<const uint8_t> data) override { return file_->Append(data); }
  Status Commit() override {
    Status s = file_->Sync();
    Status c = file_->Close();
    if (s.ok()) s = c;
    if (s.ok()) s = env_->RenameNoReplace(tmp_, final_);  // write-once
    if (s.ok()) s = env_->SyncDir(ParentDir(final_));
    if (s.ok()) tmp_.clear();
    return s;
  }
  void Abort() override {
    if (tmp_.empty()) return;
    file_->Close();
    env_->RemoveFile(tmp_);
    tmp_.clear();
  }
  uint64_t Size() const override { return file_->Size(); }

 private:
  Env* env_;
  std::string tmp_, final_;
  std::unique_ptr<WritableFile> file_;
};

class LocalBackend final : public Backend {
 public:
  LocalBackend(Env* env, std::string root) : env_(env), root_(std::move(root)) {}

  const std::string& location() const override { return root_; }
  Status CheckLocation() override {
    return env_->FileExists(root_) ? Status::OK() : Status::NotFound(root_ + ": does not exist");
  }

  Status CheckCreate() override {
    ResolveSymlink();
    if (!env_->FileExists(root_)) return Status::OK();
    std::vector<std::string> names;
    if (!env_->ListDir(root_, &names).ok())
      return Status::InvalidArgument(root_ + ": exists and is not a directory");
    if (env_->FileExists(Path(kConfig)))
      return Status::InvalidArgument(root_ + ": a repository already exists here");
    bool half_built = false;
    if (!IsEmptyOrHalfBuilt(&half_built))
      return Status::InvalidArgument(root_ +
                                     ": directory is not empty; refusing to create a "
                                     "repository in it");
    return Status::OK();
  }

  Status Create() override {
    GNOMON_RETURN_IF_ERROR(CheckCreate());
    bool half_built = false;
    if (env_->FileExists(root_) && IsEmptyOrHalfBuilt(&half_built) && half_built)
      DiscardCreated({});  // an interrupted init: start again
    GNOMON_RETURN_IF_ERROR(env_->CreateDir(root_));
    for (const char* d : kLayoutDirs) GNOMON_RETURN_IF_ERROR(env_->CreateDir(Path(d)));
    for (int i = 0; i < 256; ++i) GNOMON_RETURN_IF_ERROR(env_->CreateDir(Path(kPacks, Sub(i))));
    GNOMON_RETURN_IF_ERROR(env_->SyncDir(Path(kPacks)));
    return env_->SyncDir(ParentDir(root_));
  }

  // Removes the layout an init made (all empty but key slots), best effort.
  // A local init is one person's: slots an init that died left go too.
  void DiscardCreated(const std::vector<std::string>&) override {
    for (int i = 0; i < 256; ++i) env_->RemoveDir(Path(kPacks, Sub(i)));
    std::vector<std::string> slots;
    if (env_->ListDir(Path(kKeys), &slots).ok())
      for (const auto& n : slots)
        if (IsHexName(n, 16)) env_->RemoveFile(Path(kKeys, n));
    for (const char* d : kLayoutDirs) env_->RemoveDir(Path(d));
    env_->RemoveDir(Path(kKeys));
  }

  Status Put(const std::string& name, std::span<const uint8_t> data) override {
    GNOMON_RETURN_IF_ERROR(MakeParent(name));
    return env_->WriteFileOnce(Path(name), data);
  }
  Status PutReplace(const std::string& name, std::span<const uint8_t> data) override {
    GNOMON_RETURN_IF_ERROR(MakeParent(name));
    return env_->WriteFileAtomic(Path(name), data);
  }
  Status NewUpload(const std::string& name, std::unique_ptr<Upload>* out) override {
    // tmp/<last part>.pack: FORMAT.md §9 (the journal names it first).
    const std::string tmp = Path(kTmp, std::filesystem::path(name).filename().string() + ".pack");
    std::unique_ptr<WritableFile> f;
    GNOMON_RETURN_IF_ERROR(env_->NewWritableFile(tmp, &f));
    *out = std::make_unique<LocalUpload>(env_, tmp, Path(name), std::move(f));
    return Status::OK();
  }

  Status Get(const std::string& name, std::string* out) override {
    return env_->ReadFileToString(Path(name), out);
  }
  Status Open(const std::string& name, std::unique_ptr<RandomAccessFile>* out) override {
    return env_->NewRandomAccessFile(Path(name), out);
  }
  Status Head(const std::string& name, uint64_t* size) override {
    if (!env_->FileExists(Path(name))) return Status::NotFound(Path(name) + ": does not exist");
    if (!size) return Status::OK();
    std::unique_ptr<RandomAccessFile> f;
    GNOMON_RETURN_IF_ERROR(env_->NewRandomAccessFile(Path(name), &f));
    *size = f->Size();
    return Status::OK();
  }
  Status List(const std::string& dir, std::vector<std::string>* names) override {
    names->clear();
    if (!env_->FileExists(Path(dir))) return Status::OK();
    std::vector<std::string> top;
    GNOMON_RETURN_IF_ERROR(env_->ListDir(Path(dir), &top));
    if (dir != kPacks) {  // the only directory with subdirectories (FORMAT.md §1)
      *names = std::move(top);
      return Status::OK();
    }
    for (const auto& sub : top) {
      if (!IsHexName(sub, 2)) continue;
      std::vector<std::string> leaf;
      GNOMON_RETURN_IF_ERROR(env_->ListDir(Path(dir, sub), &leaf));
      for (auto& n : leaf) names->push_back(sub + "/" + n);
    }
    return Status::OK();
  }
  Status Delete(const std::string& name) override {
    GNOMON_RETURN_IF_ERROR(env_->RemoveFile(Path(name)));
    // Only these deletions must not come back after a crash (a forgotten
    // record, a removed key slot, an index file prune replaced); anything
    // else that comes back is what the clean-up of FORMAT.md §9 removes.
    const std::string top = name.substr(0, name.find('/'));
    if (top != kBackups && top != kKeys && top != kIndex) return Status::OK();
    return env_->SyncDir(ParentDir(Path(name)));
  }

  Status ListTemporaries(std::vector<std::string>* names) override {
    // Everything in tmp/ is listed by the repository itself (journals
    // among it); elsewhere a temporary is NAME.tmp-<random> beside NAME.
    names->clear();
    for (const char* d : {"", kIndex, kVolumes, kBackups, kQuarantine, kChecks, kKeys}) {
      std::vector<std::string> all;
      const std::string dir = *d ? Path(d) : root_;
      // A missing directory (copied by a tool that drops empty ones) holds
      // nothing; one that cannot be listed is an error.
      if (*d && !env_->FileExists(dir)) continue;
      GNOMON_RETURN_IF_ERROR(env_->ListDir(dir, &all));
      for (const auto& n : all)
        if (n.find(".tmp-") != std::string::npos) names->push_back(RepoPath(d, n));
    }
    return Status::OK();
  }

  Status Lock(const std::string& name, bool exclusive, const std::string& holder_info,
              std::unique_ptr<FileLock>* out, std::string* stale_holder) override {
    GNOMON_RETURN_IF_ERROR(MakeParent(name));
    return env_->LockFile(Path(name), exclusive, holder_info, out, stale_holder);
  }
  Status TryLock(const std::string& name, bool exclusive, std::unique_ptr<FileLock>* out) override {
    GNOMON_RETURN_IF_ERROR(MakeParent(name));
    return env_->TryFlock(Path(name), exclusive, out);
  }
  bool ReadOnly() override { return env_->OnReadOnlyMedia(root_); }
  bool ConcurrentWriters() const override { return false; }

 private:
  template <class... Parts>
  std::string Path(const Parts&... parts) const {
    return RepoPath(root_, parts...);
  }
  // A repository path the user gives may be a symlink (to an empty
  // directory on another disk): init resolves it, since directories inside
  // a repository are never opened through one.
  void ResolveSymlink() {
    std::error_code ec;
    if (!std::filesystem::is_symlink(root_, ec)) return;
    const auto real = std::filesystem::canonical(root_, ec);
    if (!ec) root_ = real.string();
  }
  static std::string Sub(int i) {
    char sub[3];
    std::snprintf(sub, sizeof sub, "%02x", i);
    return sub;
  }
  // gc/, checks/, keys/ and quarantine/ are made when first needed (a
  // repository of an older version has none), and checked every time: a
  // symlink planted there (gc/ -> /etc) is refused, never followed.
  Status MakeParent(const std::string& name) {
    const std::string top = name.substr(0, name.find('/'));
    if (top == name || (top != kGc && top != kQuarantine && top != kChecks && top != kKeys))
      return Status::OK();
    return env_->CreateDir(Path(top));
  }
  // An empty directory, or one holding only what an interrupted init makes
  // (the layout's empty directories, key slots, and no config).
  bool IsEmptyOrHalfBuilt(bool* half_built);

  Env* env_;
  std::string root_;
};

bool LocalBackend::IsEmptyOrHalfBuilt(bool* half_built) {
  std::vector<std::string> names, sub;
  if (!env_->ListDir(root_, &names).ok()) return false;
  *half_built = !names.empty();
  for (const auto& n : names) {
    if (n != kPacks && n != kIndex && n != kVolumes && n != kBackups && n != kTmp &&
        n != kQuarantine && n != kKeys)
      return false;
    if (!env_->ListDir(Path(n), &sub).ok()) return false;
    for (const auto& s : sub) {
      std::vector<std::string> leaf;
      if (n == kKeys) continue;  // slots of an init that died before its config
      if (n != kPacks || !IsHexName(s, 2) || !env_->ListDir(Path(n, s), &leaf).ok() ||
          !leaf.empty())
        return false;
    }
  }
  return true;
}

}  // namespace

std::unique_ptr<Backend> NewLocalBackend(Env* env, const std::string& path) {
  return std::make_unique<LocalBackend>(env, path);
}

}  // namespace gnomon
