#include "vss/offline_provider.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>

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

namespace {

// A lease break arrives as this signal; the handler gives the lease up at
// once, so the writer's open is not held back, and CheckSnapshotIntact then
// finds the lease gone. (fcntl is async-signal-safe.)
const int kLeaseSignal = SIGRTMIN + 2;

void OnLeaseBreak(int, siginfo_t* si, void*) { ::fcntl(si->si_fd, F_SETLEASE, F_UNLCK); }

void InstallLeaseHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa = {};
    sa.sa_sigaction = OnLeaseBreak;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    ::sigaction(kLeaseSignal, &sa, nullptr);
  });
}

uint64_t Ns(const timespec& t) { return uint64_t(t.tv_sec) * 1000000000ull + uint64_t(t.tv_nsec); }

// Field 7 of /sys/class/block/<dev>/stat: sectors written since boot.
uint64_t SectorsWritten(const std::string& real_path) {
  std::ifstream f("/sys/class/block/" + real_path.substr(real_path.rfind('/') + 1) + "/stat");
  uint64_t v[7] = {};
  for (auto& x : v) f >> x;
  return v[6];
}

}  // namespace

Status OfflineProvider::Fingerprint(const Snap& s, Snap::Fingerprint* out) {
  struct stat st;
  if (::stat(s.volume.real_path.c_str(), &st) != 0) return Status::FromErrno(s.volume.path, errno);
  out->ino = st.st_ino;
  if (s.volume.is_block) {
    // Buffered writes sit in the device's page cache until flushed, and the
    // counter moves only then: flush first (fsync of our own descriptor
    // writes back every dirty page of the device).
    if (s.fd >= 0) ::fsync(s.fd);
    out->sectors_written = SectorsWritten(s.volume.real_path);
    struct stat b;
    if (s.volume.is_loop && ::stat(s.volume.loop.backing_file.c_str(), &b) == 0) {
      out->backing_size = static_cast<uint64_t>(b.st_size);
      out->backing_mtime_ns = Ns(b.st_mtim);
      out->backing_ctime_ns = Ns(b.st_ctim);
    }
  } else {
    out->size = static_cast<uint64_t>(st.st_size);
    out->mtime_ns = Ns(st.st_mtim);
    out->ctime_ns = Ns(st.st_ctim);
  }
  return Status::OK();
}

HResult OfflineProvider::CheckSnapshotIntact(const Guid& snap) {
  std::lock_guard<std::mutex> g(mu_);
  auto it = snaps_.find(snap);
  if (it == snaps_.end()) return S_OK_;
  const Snap& s = it->second;
  const std::string& path = s.volume.path;
  if (s.leased && ::fcntl(s.fd, F_GETLEASE) != F_RDLCK)
    return Fail(VSS_E_PROVIDER_VETO, path + " was opened for writing while it was being read");
  Snap::Fingerprint now;
  if (Status st = Fingerprint(s, &now); !st.ok()) return Fail(VSS_E_PROVIDER_VETO, st.message());
  if (!(now == s.before))
    return Fail(
        VSS_E_PROVIDER_VETO,
        path + " changed while it was being read (" +
            (s.volume.is_block ? "sectors were written" : "its size, times or inode moved") + ")");
  auto writers = ProcessesWritingTo(s.volume.real_path);
  if (writers.empty() && s.volume.is_loop) writers = ProcessesWritingTo(s.volume.loop.backing_file);
  if (!writers.empty())
    return Fail(VSS_E_PROVIDER_VETO, path + " is open for writing by pid " +
                                         std::to_string(writers[0]) + " while it was being read");
  return S_OK_;
}

OfflineProvider::~OfflineProvider() {
  for (auto& [id, s] : snaps_)
    if (s.fd >= 0) ::close(s.fd);
}

Status OfflineProvider::IsVolumeSupported(const VolumeIdentity& v) {
  if (v.is_block) {
    int fd = ::open(v.path.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
    if (fd < 0) {
      if (errno != EBUSY) return Status::FromErrno(v.path, errno);
      std::string mounts;
      for (auto& m : MountsOnVolume(v)) mounts += (mounts.empty() ? "" : ", ") + m.mount_point;
      return Status::Unsupported(
          v.path + " is in use (" +
          (mounts.empty() ? std::string("held open exclusively") : "mounted on " + mounts) +
          "); the offline provider images only unused devices");
    }
    ::close(fd);
    return Status::OK();
  }
  if (!v.devices.empty())
    return Status::Unsupported(v.path +
                               " is the backing file of a loop device; back up the loop device "
                               "instead, or detach it");
  auto writers = ProcessesWritingTo(v.real_path);
  if (!writers.empty())
    return Status::Unsupported(v.path + " is open for writing by pid " +
                               std::to_string(writers[0]) +
                               "; the offline provider images only files nothing is writing to");
  return Status::OK();
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
  s.props.created = NowRfc3339Seconds();
  s.props.state = SnapshotState::kPreparing;
  if (v.is_block) {
    // Held until DeleteSnapshot: nobody can mount the device mid-backup.
    s.fd = ::open(v.path.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
    if (s.fd < 0)
      return Fail(VSS_E_PROVIDER_VETO,
                  v.path + ": " + std::strerror(errno) + " (did something mount it?)");
  } else {
    // A read lease: the kernel breaks it (and signals us) the moment anyone
    // opens the file for writing or truncates it. EAGAIN: a writer has it
    // open already. Other errors (a filesystem without leases, a file root
    // does not own under a restricted capability set) leave the checks of
    // CheckSnapshotIntact without it.
    InstallLeaseHandler();
    // A file we cannot open gets no lease; reading it fails just the same,
    // with the reason.
    s.fd = ::open(v.real_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (s.fd >= 0) {
      ::fcntl(s.fd, F_SETSIG, kLeaseSignal);
      if (::fcntl(s.fd, F_SETLEASE, F_RDLCK) == 0) {
        s.leased = true;
      } else if (errno == EAGAIN) {
        ::close(s.fd);
        return Fail(VSS_E_PROVIDER_VETO, v.path + " is open for writing by another process");
      }
    }
  }
  if (Status st = Fingerprint(s, &s.before); !st.ok()) {
    if (s.fd >= 0) ::close(s.fd);
    return Fail(VSS_E_PROVIDER_VETO, st.message());
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
    s.props.state = SnapshotState::kCommitted;
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
