// The metadata cache of a remote repository (FORMAT.md §12.7): index files,
// backup records and volume indexes, kept on local disk by object name so
// list, dedup lookups and incrementals do not download them each time.
// They are write-once under names never reused, so a cached copy never goes
// stale; a listing tells what was deleted, and its cached copy goes too.
// Each cached file ends with the XXH3-64 of its body: a damaged one is
// fetched again, never used.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <set>

#include "base/random.h"
#include "format/backend.h"
#include "format/coding.h"
#include "format/digest.h"
#include "format/repository_layout.h"

namespace gnomon {

namespace {

bool Cacheable(const std::string& name) {
  const std::string top = name.substr(0, name.find('/'));
  return top != name && (top == kIndex || top == kBackups || top == kVolumes);
}

// A directory of ours, never through a symlink.
bool OwnDir(const std::string& dir) {
  struct stat st;
  return ::lstat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == ::geteuid();
}
bool MakeDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return false;
  return OwnDir(dir);
}

bool ReadWhole(const std::string& path, std::string* out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return false;
  out->clear();
  char buf[1 << 16];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out->append(buf, static_cast<size_t>(n));
  ::close(fd);
  return n == 0;
}

class CachingBackend final : public Backend {
 public:
  CachingBackend(std::unique_ptr<Backend> inner, std::string dir)
      : inner_(std::move(inner)), dir_(std::move(dir)) {}

  const std::string& location() const override { return inner_->location(); }
  Status CheckLocation() override { return inner_->CheckLocation(); }
  Status CheckCreate() override { return inner_->CheckCreate(); }
  Status Create() override { return inner_->Create(); }
  void DiscardCreated(const std::vector<std::string>& written) override {
    inner_->DiscardCreated(written);
  }
  Status Put(const std::string& name, std::span<const uint8_t> data) override {
    GNOMON_RETURN_IF_ERROR(inner_->Put(name, data));
    if (Cacheable(name)) Store(name, {reinterpret_cast<const char*>(data.data()), data.size()});
    return Status::OK();
  }
  Status PutReplace(const std::string& name, std::span<const uint8_t> data) override {
    return inner_->PutReplace(name, data);
  }
  Status NewUpload(const std::string& name, std::unique_ptr<Upload>* out) override {
    return inner_->NewUpload(name, out);
  }
  Status Get(const std::string& name, std::string* out) override {
    if (Cacheable(name) && !bypass_ && Load(name, out)) return Status::OK();
    GNOMON_RETURN_IF_ERROR(inner_->Get(name, out));
    // What verify reads may be what it finds damaged: not kept.
    if (Cacheable(name) && !bypass_) Store(name, *out);
    return Status::OK();
  }
  Status Open(const std::string& name, std::unique_ptr<RandomAccessFile>* out) override {
    return inner_->Open(name, out);
  }
  Status Head(const std::string& name, uint64_t* size) override { return inner_->Head(name, size); }
  Status List(const std::string& dir, std::vector<std::string>* names) override {
    GNOMON_RETURN_IF_ERROR(inner_->List(dir, names));
    if (Cacheable(dir + "/x")) Forget(dir, *names);
    return Status::OK();
  }
  Status Delete(const std::string& name) override {
    Status s = inner_->Delete(name);
    if (Cacheable(name) && DirsSafe(name)) ::unlink(Path(name).c_str());
    return s;
  }
  Status ListTemporaries(std::vector<std::string>* names) override {
    return inner_->ListTemporaries(names);
  }
  Status Lock(const std::string& name, bool exclusive, const std::string& holder_info,
              std::unique_ptr<FileLock>* out, std::string* stale_holder) override {
    return inner_->Lock(name, exclusive, holder_info, out, stale_holder);
  }
  Status TryLock(const std::string& name, bool exclusive, std::unique_ptr<FileLock>* out) override {
    return inner_->TryLock(name, exclusive, out);
  }
  bool ReadOnly() override { return inner_->ReadOnly(); }
  bool ConcurrentWriters() const override { return inner_->ConcurrentWriters(); }
  bool Remote() const override { return inner_->Remote(); }
  void BypassCache() override { bypass_ = true; }

 private:
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // The cache's folders, ours and real (never a planted symlink).
  bool DirsSafe(const std::string& name) const {
    return OwnDir(dir_) && OwnDir(dir_ + "/" + name.substr(0, name.find('/')));
  }

  bool Load(const std::string& name, std::string* out) {
    if (!DirsSafe(name)) return false;
    std::string file;
    if (!ReadWhole(Path(name), &file) || file.size() < 8) return false;
    const size_t n = file.size() - 8;
    if (GetU64(reinterpret_cast<const uint8_t*>(file.data()) + n) !=
        Checksum64({reinterpret_cast<const uint8_t*>(file.data()), n}))
      return false;  // damaged: fetched again (and stored anew)
    file.resize(n);
    *out = std::move(file);
    return true;
  }

  // Best effort: a cache that cannot be written only costs downloads.
  void Store(const std::string& name, std::string_view body) {
    const std::string top = name.substr(0, name.find('/'));
    if (!MakeDir(dir_) || !MakeDir(dir_ + "/" + top)) return;
    std::string file(body);
    PutU64(&file, Checksum64({reinterpret_cast<const uint8_t*>(body.data()), body.size()}));
    const std::string tmp = Path(name) + ".tmp-" + RandomHexId(8);
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return;
    const bool ok = ::write(fd, file.data(), file.size()) == static_cast<ssize_t>(file.size());
    ::close(fd);
    if (!ok || ::rename(tmp.c_str(), Path(name).c_str()) != 0) ::unlink(tmp.c_str());
  }

  // Cached objects the store no longer lists were deleted (forget, prune).
  void Forget(const std::string& dir, const std::vector<std::string>& names) {
    if (!DirsSafe(dir + "/x")) return;
    std::vector<std::string> cached;
    std::unique_ptr<Backend> local = NewLocalBackend(Env::Default(), dir_);
    if (!local->List(dir, &cached).ok()) return;
    const std::set<std::string> present(names.begin(), names.end());
    for (const auto& c : cached)
      if (!present.count(c)) ::unlink(Path(dir + "/" + c).c_str());
  }

  std::unique_ptr<Backend> inner_;
  std::string dir_;
  bool bypass_ = false;
};

}  // namespace

std::string DefaultCacheRoot() {
  if (const char* d = std::getenv("GNOMON_CACHE_DIR"); d && *d) return d;
  if (::geteuid() == 0) return "/var/cache/gnomon";
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/gnomon";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/gnomon";
  return "";
}

std::unique_ptr<Backend> WithMetadataCache(std::unique_ptr<Backend> inner,
                                           const std::string& repo_id) {
  const std::string root = DefaultCacheRoot();
  if (root.empty() || root == "none" || !inner->Remote()) return inner;
  // The id comes from the config, which anyone with write access to the
  // store can change: it names a folder only if it looks like one of ours.
  if (repo_id.size() < 8 || repo_id.size() > 64 ||
      repo_id.find_first_not_of("0123456789abcdef") != std::string::npos)
    return inner;
  // The root's parent may be missing (~/.cache on a fresh account).
  const std::string parent = root.substr(0, root.rfind('/'));
  if (!parent.empty()) ::mkdir(parent.c_str(), 0700);
  if (!MakeDir(root)) return inner;
  return std::make_unique<CachingBackend>(std::move(inner), root + "/" + repo_id);
}

}  // namespace gnomon
