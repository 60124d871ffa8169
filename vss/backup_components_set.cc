// The snapshot set: the system-wide lock on creating one, its volumes and
// the provider that snapshots each, driving those providers through a step,
// and what the requester may ask of the snapshots afterwards (properties,
// whether they are intact, keeping one as a change-tracking base).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "vss/backup_components_internal.h"

namespace gnomon::vss {

HResult BackupComponents::StartSnapshotSet(Guid* set_id) {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ != State::kMeta || CheckIdle() != S_OK_) return VSS_E_BAD_STATE;
  // One snapshot set in creation per system, as the VSS service enforces.
  ::mkdir(opt_.runtime_dir.c_str(), 0755);
  std::string path = opt_.runtime_dir + "/snapshot-set.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) {
    last_error_ = "cannot open " + path + ": " + std::strerror(errno);
    return errno == EACCES ? E_ACCESSDENIED_ : VSS_E_UNEXPECTED;
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    last_error_ = "another snapshot set is being created on this system (" + path + ")";
    return VSS_E_SNAPSHOT_SET_IN_PROGRESS;
  }
  set_lock_fd_ = fd;
  bcd_.snapshot_set_id = Guid::Random();
  *set_id = bcd_.snapshot_set_id;
  state_ = State::kSet;
  return S_OK_;
}

void BackupComponents::ReleaseSetLock() {
  if (set_lock_fd_ >= 0) {
    ::close(set_lock_fd_);
    set_lock_fd_ = -1;
  }
}

HResult BackupComponents::AddToSnapshotSet(const std::string& volume, const std::string& provider,
                                           Guid* snapshot_id) {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ != State::kSet || CheckIdle() != S_OK_) return VSS_E_BAD_STATE;
  if (set_.size() >= 64) return VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED;
  Member m;
  if (Status s = IdentifyVolume(volume, &m.volume); !s.ok()) {
    last_error_ = s.message();
    return VSS_E_OBJECT_NOT_FOUND;
  }
  for (const auto& o : set_)
    if (o.volume.real_path == m.volume.real_path) return VSS_E_OBJECT_ALREADY_EXISTS;
  std::string reasons;
  for (const auto& p : providers_) {
    if (!provider.empty() && p->name() != provider) continue;
    const Status supported = p->IsVolumeSupported(m.volume);
    if (supported.ok()) {
      m.provider = p;
      break;
    }
    reasons += (reasons.empty() ? "" : "; ") + p->name() + " provider: " + supported.message();
  }
  if (!m.provider) {
    if (!provider.empty() && reasons.empty()) {
      last_error_ = "no provider named '" + provider + "'";
      return VSS_E_PROVIDER_NOT_REGISTERED;
    }
    last_error_ = volume + ": no provider can snapshot this volume (" + reasons + ")";
    return provider.empty() ? VSS_E_VOLUME_NOT_SUPPORTED : VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER;
  }
  m.snapshot_id = Guid::Random();
  *snapshot_id = m.snapshot_id;
  set_.push_back(std::move(m));
  return S_OK_;
}

HResult BackupComponents::RunProviders(const char* step, HResult (Provider::*fn)(const Guid&)) {
  std::vector<std::shared_ptr<Provider>> distinct;
  for (const auto& m : set_)
    if (std::find(distinct.begin(), distinct.end(), m.provider) == distinct.end())
      distinct.push_back(m.provider);
  for (const auto& p : distinct) {
    Log(step, p->name());
    HResult hr = ((*p).*fn)(bcd_.snapshot_set_id);
    if (Failed(hr)) {
      std::lock_guard<std::mutex> g(mu_);
      last_error_ += (last_error_.empty() ? "" : "; ") + p->name() + " provider failed at " + step +
                     ": " + DescribeHResult(hr) +
                     (p->last_error().empty() ? "" : ": " + p->last_error());
      // Codes outside a provider's documented set are reported as such.
      switch (hr) {
        case VSS_E_PROVIDER_VETO:
        case VSS_E_INSUFFICIENT_STORAGE:
        case VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER:
        case VSS_E_OBJECT_NOT_FOUND:
          return hr;
        default:
          return VSS_E_UNEXPECTED_PROVIDER_ERROR;
      }
    }
  }
  return S_OK_;
}

HResult BackupComponents::GetSnapshotProperties(const Guid& snapshot_id,
                                                SnapshotProperties* out) const {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ != State::kSnapped && state_ != State::kCompleted) return VSS_E_BAD_STATE;
  for (const auto& m : set_)
    if (m.snapshot_id == snapshot_id) return m.provider->GetSnapshotProperties(snapshot_id, out);
  return VSS_E_OBJECT_NOT_FOUND;
}

HResult BackupComponents::CheckSnapshotsIntact(std::string* why) const {
  std::lock_guard<std::mutex> g(mu_);
  for (const auto& m : set_)
    if (HResult hr = m.provider->CheckSnapshotIntact(m.snapshot_id); Failed(hr)) {
      *why = m.provider->last_error();
      return hr;
    }
  return S_OK_;
}

HResult BackupComponents::KeepSnapshot(const Guid& snapshot_id, const BaseLabel& label) {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ != State::kCompleted && state_ != State::kSnapped) return VSS_E_BAD_STATE;
  for (auto& m : set_) {
    if (m.snapshot_id != snapshot_id) continue;
    HResult hr = m.provider->RetainSnapshot(snapshot_id, label);
    if (hr == S_OK_)
      m.keep = true;
    else
      last_error_ = m.provider->last_error();
    return hr;
  }
  return VSS_E_OBJECT_NOT_FOUND;
}

}  // namespace gnomon::vss
