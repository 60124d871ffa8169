#include "vss/reflink_provider.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "vss/volume_stamp.h"

namespace gnomon::vss {

namespace {
constexpr long kXfsMagic = 0x58465342;

std::string DirOf(const std::string& p) {
  auto pos = p.find_last_of('/');
  return pos == std::string::npos ? "." : (pos == 0 ? "/" : p.substr(0, pos));
}
std::string BaseOf(const std::string& p) {
  auto pos = p.find_last_of('/');
  return pos == std::string::npos ? p : p.substr(pos + 1);
}

// FICLONE of a small scratch file in dir: the only reliable test, since XFS
// without reflink=1 and overlay filesystems answer statfs like those with it.
bool ProbeReflink(const std::string& dir, std::string* why) {
  std::string a = dir + "/.gnomon-reflink-probe-" + std::to_string(getpid());
  std::string b = a + ".clone";
  int fa = ::open(a.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fa < 0) {
    *why = "cannot create a probe file in " + dir + ": " + std::strerror(errno);
    return false;
  }
  char block[4096] = {1};
  bool ok = ::write(fa, block, sizeof block) == static_cast<ssize_t>(sizeof block);
  int fb = ::open(b.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int err = 0;
  if (ok && fb >= 0 && ::ioctl(fb, FICLONE, fa) != 0) err = errno;
  if (fb < 0) err = errno;
  ::close(fa);
  if (fb >= 0) ::close(fb);
  ::unlink(a.c_str());
  ::unlink(b.c_str());
  if (!ok || err) {
    *why = "the filesystem holding " + dir +
           " cannot clone files (FICLONE: " + std::strerror(err ? err : EIO) +
           "); reflink needs XFS with reflink=1 or btrfs";
    return false;
  }
  return true;
}
}  // namespace

ReflinkProvider::ReflinkProvider(std::string state_dir) : registry_(state_dir + "/snapshots") {}

ReflinkProvider::~ReflinkProvider() {
  for (auto& [id, s] : snaps_) CloseFds(&s);
}

void ReflinkProvider::CloseFds(Snap* s) {
  if (s->src_fd >= 0) ::close(s->src_fd);
  if (s->dst_fd >= 0) ::close(s->dst_fd);
  s->src_fd = s->dst_fd = -1;
}

bool ReflinkProvider::SourceFile(const VolumeIdentity& v, std::string* file, std::string* why) {
  if (!v.is_block) {
    *file = v.real_path;
    return true;
  }
  if (!v.is_loop) {
    *why = v.path + " is a block device but not a loop device; reflink snapshots files only";
    return false;
  }
  if (v.loop.backing_file.find(" (deleted)") != std::string::npos) {
    *why = v.path + ": its backing file was deleted";
    return false;
  }
  *file = v.loop.backing_file;
  return true;
}

bool ReflinkProvider::IsVolumeSupported(const VolumeIdentity& v, std::string* why) {
  std::string file;
  if (!SourceFile(v, &file, why)) return false;
  struct statfs sf;
  if (::statfs(file.c_str(), &sf) != 0) {
    *why = file + ": " + std::strerror(errno);
    return false;
  }
  if (sf.f_type != kXfsMagic && sf.f_type != static_cast<long>(BTRFS_SUPER_MAGIC)) {
    *why = file + " is not on XFS or btrfs, which reflink snapshots need";
    return false;
  }
  return ProbeReflink(DirOf(file), why);
}

HResult ReflinkProvider::BeginPrepareSnapshot(const Guid& set, const Guid& snap,
                                              const VolumeIdentity& v) {
  std::string file, why;
  if (!SourceFile(v, &file, &why)) return Fail(VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER, why);
  Snap s;
  s.props.snapshot_id = snap;
  s.props.snapshot_set_id = set;
  s.props.volume = v.path;
  s.props.provider = name();
  s.props.device = DirOf(file) + "/.gnomon-snap-" + snap.ToString() + "-" + BaseOf(file);
  s.props.offset = v.is_loop ? v.loop.offset : 0;
  s.props.size = v.size;
  s.props.created = NowUtc();
  s.props.state = "preparing";
  s.props.pid = ::getpid();
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  s.props.host = host;
  // Open both files now, outside the hold window: CommitSnapshots then does
  // nothing but the clone ioctl.
  s.src_fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (s.src_fd < 0)
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR, "opening " + file + ": " + std::strerror(errno));
  // Recorded before the clone exists, so a crash from here on leaves a
  // snapshot `gnomon snapshots` can find.
  std::string err;
  if (!registry_.Put(s.props, &err)) {
    CloseFds(&s);
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR, err);
  }
  s.dst_fd = ::open(s.props.device.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (s.dst_fd < 0) {
    int e = errno;
    CloseFds(&s);
    registry_.Remove(snap);
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR,
                "creating " + s.props.device + ": " + std::strerror(e));
  }
  std::lock_guard<std::mutex> g(mu_);
  snaps_[snap] = std::move(s);
  return S_OK_;
}

HResult ReflinkProvider::CommitSnapshots(const Guid& set) {
  // Inside the flush-and-hold window: only the clone ioctls, no logging.
  std::lock_guard<std::mutex> g(mu_);
  for (auto& [id, s] : snaps_) {
    if (s.props.snapshot_set_id != set) continue;
    if (::ioctl(s.dst_fd, FICLONE, s.src_fd) != 0) {
      int e = errno;
      return Fail(
          e == ENOSPC ? VSS_E_INSUFFICIENT_STORAGE : VSS_E_UNEXPECTED_PROVIDER_ERROR,
          "FICLONE of " + s.props.volume + " into " + s.props.device + ": " + std::strerror(e));
    }
  }
  return S_OK_;
}

HResult ReflinkProvider::PostCommitSnapshots(const Guid& set) {
  std::lock_guard<std::mutex> g(mu_);
  for (auto& [id, s] : snaps_) {
    if (s.props.snapshot_set_id != set) continue;
    CloseFds(&s);
    s.props.state = "committed";
    std::string err;
    registry_.Put(s.props, &err);  // best effort: "preparing" lists the same file
  }
  return S_OK_;
}

HResult ReflinkProvider::AbortSnapshots(const Guid& set) {
  std::lock_guard<std::mutex> g(mu_);
  for (auto it = snaps_.begin(); it != snaps_.end();) {
    if (it->second.props.snapshot_set_id != set) {
      ++it;
      continue;
    }
    CloseFds(&it->second);
    ::unlink(it->second.props.device.c_str());
    registry_.Remove(it->first);
    it = snaps_.erase(it);
  }
  return S_OK_;
}

HResult ReflinkProvider::GetSnapshotProperties(const Guid& snap, SnapshotProperties* out) {
  std::lock_guard<std::mutex> g(mu_);
  auto it = snaps_.find(snap);
  if (it == snaps_.end()) return VSS_E_OBJECT_NOT_FOUND;
  *out = it->second.props;
  return S_OK_;
}

HResult ReflinkProvider::DeleteSnapshot(const Guid& snap) {
  std::lock_guard<std::mutex> g(mu_);
  auto it = snaps_.find(snap);
  if (it == snaps_.end()) return VSS_E_OBJECT_NOT_FOUND;
  CloseFds(&it->second);
  if (::unlink(it->second.props.device.c_str()) != 0 && errno != ENOENT)
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR,
                "removing " + it->second.props.device + ": " + std::strerror(errno));
  registry_.Remove(snap);
  snaps_.erase(it);
  return S_OK_;
}

HResult ReflinkProvider::RetainSnapshot(const Guid& snap, const std::string& backup_id,
                                        const std::string& backup_type,
                                        const std::string& volume_key) {
  std::lock_guard<std::mutex> g(mu_);
  auto it = snaps_.find(snap);
  if (it == snaps_.end()) return VSS_E_OBJECT_NOT_FOUND;
  SnapshotProperties p = it->second.props;
  p.state = "base";
  p.backup_id = backup_id;
  p.backup_type = backup_type;
  p.volume_key = volume_key;
  p.generation = FileGeneration(p.device);
  p.pid = -1;  // no process uses a retained base; it waits for the next backup
  std::string err;
  if (!registry_.Put(p, &err)) return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR, err);
  CloseFds(&it->second);
  snaps_.erase(it);
  return S_OK_;
}

HResult ReflinkProvider::DeleteLeftover(const SnapshotProperties& p) {
  // Only ever a hidden clone this provider named; never anything else.
  if (BaseOf(p.device).rfind(".gnomon-snap-", 0) != 0)
    return Fail(E_INVALIDARG_, p.device + " is not a gnomon snapshot file; not removing it");
  if (::unlink(p.device.c_str()) != 0 && errno != ENOENT)
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR,
                "removing " + p.device + ": " + std::strerror(errno));
  registry_.Remove(p.snapshot_id);
  return S_OK_;
}

}  // namespace gnomon::vss
