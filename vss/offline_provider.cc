#include "vss/offline_provider.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace gnomon::vss {

std::vector<int> ProcessesWritingTo(const std::string& real_path) {
  std::vector<int> pids;
  DIR* proc = ::opendir("/proc");
  if (!proc) return pids;
  while (auto* p = ::readdir(proc)) {
    int pid = std::atoi(p->d_name);
    if (pid <= 0) continue;
    std::string fddir = "/proc/" + std::string(p->d_name) + "/fd";
    DIR* fds = ::opendir(fddir.c_str());
    if (!fds) continue;
    while (auto* f = ::readdir(fds)) {
      if (f->d_name[0] == '.') continue;
      char target[PATH_MAX];
      ssize_t n = ::readlink((fddir + "/" + f->d_name).c_str(), target, sizeof target - 1);
      if (n <= 0) continue;
      target[n] = '\0';
      if (real_path != target) continue;
      std::ifstream info("/proc/" + std::string(p->d_name) + "/fdinfo/" + f->d_name);
      std::string key;
      unsigned long flags = 0;
      while (info >> key)
        if (key == "flags:") {
          info >> std::oct >> flags;
          break;
        }
      if ((flags & O_ACCMODE) != O_RDONLY) {
        pids.push_back(pid);
        break;
      }
    }
    ::closedir(fds);
  }
  ::closedir(proc);
  return pids;
}

OfflineProvider::~OfflineProvider() {
  for (auto& [id, s] : snaps_)
    if (s.fd >= 0) ::close(s.fd);
}

bool OfflineProvider::IsVolumeSupported(const VolumeIdentity& v, std::string* why) {
  if (v.is_block) {
    int fd = ::open(v.path.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
    if (fd < 0) {
      if (errno == EBUSY) {
        std::string mounts;
        for (auto& m : MountsOnVolume(v)) mounts += (mounts.empty() ? "" : ", ") + m.mount_point;
        *why = v.path + " is in use (" +
               (mounts.empty() ? std::string("held open exclusively") : "mounted on " + mounts) +
               "); the offline provider images only unused devices";
      } else {
        *why = v.path + ": " + std::strerror(errno);
      }
      return false;
    }
    ::close(fd);
    return true;
  }
  if (!v.devices.empty()) {
    *why = v.path +
           " is the backing file of a loop device; back up the loop device instead, "
           "or detach it";
    return false;
  }
  auto writers = ProcessesWritingTo(v.real_path);
  if (!writers.empty()) {
    *why = v.path + " is open for writing by pid " + std::to_string(writers[0]) +
           "; the offline provider images only files nothing is writing to";
    return false;
  }
  return true;
}

HResult OfflineProvider::BeginPrepareSnapshot(const Guid& set, const Guid& snap,
                                              const VolumeIdentity& v) {
  Snap s;
  s.volume = v;
  s.props.snapshot_id = snap;
  s.props.snapshot_set_id = set;
  s.props.volume = v.path;
  s.props.provider = name();
  s.props.device = v.path;
  s.props.size = v.size;
  s.props.created = NowUtc();
  s.props.state = "preparing";
  if (v.is_block) {
    // Held until DeleteSnapshot: nobody can mount the device mid-backup.
    s.fd = ::open(v.path.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
    if (s.fd < 0)
      return Fail(VSS_E_PROVIDER_VETO,
                  v.path + ": " + std::strerror(errno) + " (did something mount it?)");
  }
  std::lock_guard<std::mutex> g(mu_);
  snaps_[snap] = std::move(s);
  return S_OK_;
}

HResult OfflineProvider::CommitSnapshots(const Guid& set) {
  std::lock_guard<std::mutex> g(mu_);
  for (auto& [id, s] : snaps_) {
    if (s.props.snapshot_set_id != set) continue;
    if (!s.volume.is_block && !ProcessesWritingTo(s.volume.real_path).empty())
      return Fail(VSS_E_PROVIDER_VETO,
                  s.volume.path + " was opened for writing during snapshot preparation");
    s.props.state = "committed";
  }
  return S_OK_;
}

HResult OfflineProvider::AbortSnapshots(const Guid& set) {
  std::lock_guard<std::mutex> g(mu_);
  for (auto it = snaps_.begin(); it != snaps_.end();) {
    if (it->second.props.snapshot_set_id == set) {
      if (it->second.fd >= 0) ::close(it->second.fd);
      it = snaps_.erase(it);
    } else {
      ++it;
    }
  }
  return S_OK_;
}

HResult OfflineProvider::GetSnapshotProperties(const Guid& snap, SnapshotProperties* out) {
  std::lock_guard<std::mutex> g(mu_);
  auto it = snaps_.find(snap);
  if (it == snaps_.end()) return VSS_E_OBJECT_NOT_FOUND;
  *out = it->second.props;
  return S_OK_;
}

HResult OfflineProvider::DeleteSnapshot(const Guid& snap) {
  std::lock_guard<std::mutex> g(mu_);
  auto it = snaps_.find(snap);
  if (it == snaps_.end()) return VSS_E_OBJECT_NOT_FOUND;
  if (it->second.fd >= 0) ::close(it->second.fd);
  snaps_.erase(it);
  return S_OK_;
}

HResult OfflineProvider::DeleteLeftover(const SnapshotProperties&) {
  return S_OK_;  // nothing on disk: the snapshot was the volume itself
}

}  // namespace gnomon::vss
