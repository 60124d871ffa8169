#include "vss/reflink_provider.h"

#include "base/paths.h"
#include "base/random.h"
#include "base/system.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "vss/volume_stamp.h"

namespace gnomon::vss {

namespace {
constexpr long kXfsMagic = 0x58465342;

// FICLONE of a small scratch file in dir: the only reliable test, since XFS
// without reflink=1 and overlay filesystems answer statfs like those with it.
Status ProbeReflink(const std::string& dir) {
  // Unnamed files (O_TMPFILE): nothing in dir can be planted to redirect
  // them. Where O_TMPFILE is missing, unpredictable names created
  // O_EXCL|O_NOFOLLOW.
  auto make = [&](std::string* named) {
    int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)) return fd;
    *named = dir + "/.gnomon-reflink-probe-" + RandomHexId(8);
    return ::open(named->c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  };
  std::string a, b;
  int fa = make(&a);
  if (fa < 0) return Status::FromErrno("cannot create a probe file in " + dir, errno);
  char block[4096] = {1};
  bool ok = ::write(fa, block, sizeof block) == static_cast<ssize_t>(sizeof block);
  int fb = make(&b);
  int err = 0;
  if (ok && fb >= 0 && ::ioctl(fb, FICLONE, fa) != 0) err = errno;
  if (fb < 0) err = errno;
  ::close(fa);
  if (fb >= 0) ::close(fb);
  if (!a.empty()) ::unlink(a.c_str());
  if (!b.empty()) ::unlink(b.c_str());
  if (!ok || err)
    return Status::Unsupported("the filesystem holding " + dir +
                               " cannot clone files (FICLONE: " + std::strerror(err ? err : EIO) +
                               "); reflink needs XFS with reflink=1 or btrfs");
  return Status::OK();
}

// The undo file of a snapshot that advances a base, beside the base.
std::string UndoPath(const std::string& base_device, const Guid& snap) {
  return ParentDir(base_device) + "/.gnomon-undo-" + snap.ToString();
}

// The live file a volume key names (vss/volume_stamp.h VolumeKey:
// "file:<path>", or "file:<path>@<offset>" for a loop device that starts
// inside its file), or "" for any other key.
std::string LiveFileOf(const std::string& volume_key) {
  std::string live = volume_key.rfind("file:", 0) == 0 ? volume_key.substr(5) : "";
  if (auto at = live.rfind('@'); at != std::string::npos && at + 1 < live.size() &&
                                 live.find_first_not_of("0123456789", at + 1) == std::string::npos)
    live.resize(at);
  return live;
}

constexpr char kClonePrefix[] = ".gnomon-snap-";

// The snapshot id in a clone's name ".gnomon-snap-<id>-<file name>", as
// BeginPrepareSnapshot writes it (canonical form), or "" if `name` is not
// of that form.
std::string CloneNameId(const std::string& name) {
  const size_t start = sizeof kClonePrefix - 1, len = Guid().ToString().size();
  if (name.rfind(kClonePrefix, 0) != 0 || name.size() <= start + len + 1 ||
      name[start + len] != '-')
    return "";
  const std::string id = name.substr(start, len);
  Guid g;
  return Guid::Parse(id, &g) && g.ToString() == id ? id : "";
}

// Whether a registry record's `device` is a clone this provider made, so
// that removing it can never remove anything else: the record's own id in
// the name (a snapshot that advanced a base in place is that base's file,
// named for an earlier snapshot, so any id there), and, when the record
// names its live file, beside that file. The record is a file anyone with
// access to the state directory could have written.
Status CheckCloneName(const SnapshotProperties& p) {
  const std::string id = CloneNameId(FileName(p.device));
  Guid advanced;
  if (id.empty() || (id != p.snapshot_id.ToString() && !(Guid::Parse(p.advances, &advanced))))
    return Status::InvalidArgument(p.device + " is not a gnomon snapshot file of snapshot " +
                                   p.snapshot_id.ToString());
  if (const std::string live = LiveFileOf(p.volume_key);
      !live.empty() && ParentDir(p.device) != ParentDir(live))
    return Status::InvalidArgument(p.device + " is not beside " + live +
                                   ", the file it would be a snapshot of");
  return Status::OK();
}

// Clones [r.offset, r.offset + r.length) of `from` to the same place in `to`.
bool CloneRange(int from, int to, const ByteRange& r) {
  struct file_clone_range c {};
  c.src_fd = from;
  c.src_offset = r.offset;
  c.src_length = r.length;
  c.dest_offset = r.offset;
  return ::ioctl(to, FICLONERANGE, &c) == 0;
}
}  // namespace

ReflinkProvider::ReflinkProvider(std::string state_dir) : registry_(state_dir + "/snapshots") {}

ReflinkProvider::~ReflinkProvider() {
  for (auto& [id, s] : snaps_) CloseFds(&s);
}

void ReflinkProvider::CloseFds(Snap* s) {
  for (int* fd : {&s->src_fd, &s->dst_fd, &s->undo_fd}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
}

void ReflinkProvider::AdvanceBase(const Guid& snap, const SnapshotProperties& base) {
  std::lock_guard<std::mutex> g(mu_);
  advance_[snap] = base;
}

Status ReflinkProvider::ChangedRanges(const Guid& snap, const SnapshotProperties& base,
                                      std::vector<ByteRange>* out) {
  SnapshotProperties now;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = snaps_.find(snap);
    if (it == snaps_.end())
      return Status::NotFound("snapshot " + snap.ToString() + " is not one of this backup's");
    // Advanced in place: the ranges cloned into the base are what changed.
    if (it->second.advance) {
      *out = it->second.ranges;
      return Status::OK();
    }
    now = it->second.props;
  }
  // A whole clone: two clones share every extent the file did not rewrite
  // between them (vss/extent_diff.h).
  std::vector<FileExtent> before, after;
  Status s = ReadExtents(base.device, &before);
  if (s.ok()) s = ReadExtents(now.device, &after);
  if (!s.ok()) return s.WithContext("reading extent maps failed");
  *out = DiffRanges(before, after, now.offset, now.size);
  return Status::OK();
}

uint64_t ReflinkProvider::PinnedBytes(const SnapshotProperties& p) {
  const std::string live = LiveFileOf(p.volume_key);
  std::vector<FileExtent> snap, now;
  if (live.empty() || !ReadExtents(p.device, &snap).ok() || !ReadExtents(live, &now).ok()) return 0;
  return vss::PinnedBytes(snap, now);
}

Status ReflinkProvider::SourceFile(const VolumeIdentity& v, std::string* file) {
  if (!v.is_block) {
    *file = v.real_path;
    return Status::OK();
  }
  if (!v.is_loop)
    return Status::Unsupported(v.path +
                               " is a block device but not a loop device; reflink snapshots "
                               "files only");
  if (v.loop.backing_file.find(" (deleted)") != std::string::npos)
    return Status::NotFound(v.path + ": its backing file was deleted");
  *file = v.loop.backing_file;
  return Status::OK();
}

Status ReflinkProvider::IsVolumeSupported(const VolumeIdentity& v) {
  std::string file;
  GNOMON_RETURN_IF_ERROR(SourceFile(v, &file));
  struct statfs sf;
  if (::statfs(file.c_str(), &sf) != 0) return Status::FromErrno(file, errno);
  if (sf.f_type != kXfsMagic && sf.f_type != static_cast<long>(BTRFS_SUPER_MAGIC))
    return Status::Unsupported(file + " is not on XFS or btrfs, which reflink snapshots need");
  return ProbeReflink(ParentDir(file));
}

HResult ReflinkProvider::BeginPrepareSnapshot(const Guid& set, const Guid& snap,
                                              const VolumeIdentity& v) {
  std::string file;
  if (Status st = SourceFile(v, &file); !st.ok())
    return Fail(VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER, st.message());
  Snap s;
  s.props.snapshot_id = snap;
  s.props.snapshot_set_id = set;
  s.props.volume = v.path;
  s.props.provider = name();
  s.props.device = ParentDir(file) + "/.gnomon-snap-" + snap.ToString() + "-" + FileName(file);
  s.props.offset = v.is_loop ? v.loop.offset : 0;
  s.props.size = v.size;
  s.props.created = NowRfc3339Seconds();
  s.props.state = SnapshotState::kPreparing;
  s.props.pid = ::getpid();
  s.props.host = HostName();
  s.props.generation = Guid::Random().ToString();
  {
    std::lock_guard<std::mutex> g(mu_);
    if (auto it = advance_.find(snap); it != advance_.end()) {
      s.advance = true;
      s.base = it->second;
      advance_.erase(it);
    }
  }
  if (s.advance) {
    if (HResult hr = PrepareAdvance(&s, file); hr != S_OK_) {
      std::string why = last_error_;
      Discard(&s);
      return Fail(hr, why);
    }
    if (s.advance) {
      std::lock_guard<std::mutex> g(mu_);
      snaps_[snap] = std::move(s);
      return S_OK_;
    }
  }
  // Open both files now, outside the hold window: CommitSnapshots then does
  // nothing but the clone ioctl.
  s.src_fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (s.src_fd < 0)
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR, "opening " + file + ": " + std::strerror(errno));
  // Recorded before the clone exists, so a crash from here on leaves a
  // snapshot `gnomon snapshots` can find.
  if (Status st = registry_.Put(s.props); !st.ok()) {
    CloseFds(&s);
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR, st.message());
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

HResult ReflinkProvider::PrepareAdvance(Snap* s, const std::string& file) {
  // The base's file (from its registry record) is written to below, and the
  // undo file goes beside it: only ever a clone of ours beside this file.
  if (CloneNameId(FileName(s->base.device)).empty() ||
      ParentDir(s->base.device) != ParentDir(file)) {
    s->advance = false;  // not this volume's base after all: take a whole clone
    return S_OK_;
  }
  s->src_fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (s->src_fd < 0)
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR, "opening " + file + ": " + std::strerror(errno));
  // O_NOFOLLOW: the base is the snapshot file we made, never a link a user
  // put in its place.
  s->dst_fd = ::open(s->base.device.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  struct stat live, base;
  if (s->dst_fd < 0 || ::fstat(s->src_fd, &live) != 0 || ::fstat(s->dst_fd, &base) != 0 ||
      live.st_size != base.st_size || live.st_dev != base.st_dev) {
    // Not this volume's base after all: take a whole clone.
    CloseFds(s);
    s->advance = false;
    return S_OK_;
  }
  s->props.device = s->base.device;
  s->props.advances = s->base.snapshot_id.ToString();
  s->undo_path = UndoPath(s->base.device, s->props.snapshot_id);
  // Recorded before the base is touched: after a crash, deleting this
  // record removes the half-advanced base and the undo file.
  if (Status st = registry_.Put(s->props); !st.ok())
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR, st.message());
  SnapshotProperties busy = s->base;
  busy.state = SnapshotState::kAdvancing;
  busy.pid = ::getpid();
  if (Status st = registry_.Put(busy); !st.ok())
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR, st.message());
  s->undo_fd = ::open(s->undo_path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (s->undo_fd < 0 || ::ftruncate(s->undo_fd, live.st_size) != 0)
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR,
                "creating " + s->undo_path + ": " + std::strerror(errno));
  // Most of the advance happens here, before the freeze: what changed since
  // the base until now is cloned into it, so the hold window clones only
  // what changes from here to the freeze. The base is in state advancing
  // (recorded above) and every range it takes is saved first, so a failure
  // from here on puts it back (Discard) and a crash leaves it half-updated,
  // which the next backup sees.
  std::vector<FileExtent> live_map;
  if (Status st = ReadExtents(s->dst_fd, s->base.device, &s->base_map); !st.ok())
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR, st.message());
  if (Status st = ReadExtents(s->src_fd, s->props.volume, &live_map); !st.ok())
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR, st.message());
  const uint64_t size = static_cast<uint64_t>(live.st_size);
  if (HResult hr = AdvanceRanges(s, DiffRanges(s->base_map, live_map, 0, size), {}); hr != S_OK_)
    return hr;
  // The window compares the live file with the base as mapped again here,
  // after the clones, never with the live map they were chosen from: the
  // base need not share all of that. A preallocated (unwritten) extent is
  // cloned as a hole and stays the live file's alone, so a write into it
  // keeps its address; an extent freed between the map and its clone (a
  // discard) is cloned as a hole and may be allocated again.
  if (Status st = ReadExtents(s->dst_fd, s->base.device, &s->base_map); !st.ok())
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR, st.message());
  return S_OK_;
}

namespace {
// The parts of r that no range of `covered` (sorted, disjoint) holds.
std::vector<ByteRange> Uncovered(const std::vector<ByteRange>& covered, const ByteRange& r) {
  std::vector<ByteRange> out;
  uint64_t at = r.offset;
  const uint64_t end = r.offset + r.length;
  auto it =
      std::lower_bound(covered.begin(), covered.end(), at,
                       [](const ByteRange& c, uint64_t x) { return c.offset + c.length <= x; });
  for (; it != covered.end() && it->offset < end; ++it) {
    if (it->offset > at) out.push_back({at, it->offset - at});
    at = std::max(at, it->offset + it->length);
  }
  if (at < end) out.push_back({at, end - at});
  return out;
}
}  // namespace

HResult ReflinkProvider::AdvanceRanges(Snap* s, const std::vector<ByteRange>& wanted,
                                       const std::vector<ByteRange>& covered) {
  for (const auto& r : wanted) {
    bool ok = true;
    for (const ByteRange& part : Uncovered(covered, r)) {
      if (!(ok = CloneRange(s->dst_fd, s->undo_fd, part))) break;
      s->undo.push_back(part);
    }
    if (ok) ok = CloneRange(s->src_fd, s->dst_fd, r);
    if (!ok) {
      int e = errno;
      return Fail(e == ENOSPC ? VSS_E_INSUFFICIENT_STORAGE : VSS_E_UNEXPECTED_PROVIDER_ERROR,
                  "FICLONERANGE of " + s->props.volume + " into its base " + s->base.device + ": " +
                      std::strerror(e));
    }
    s->ranges.push_back(r);
  }
  return S_OK_;
}

HResult ReflinkProvider::CommitAdvance(Snap* s) {
  struct stat live, base;
  std::vector<FileExtent> now;
  if (::fstat(s->src_fd, &live) != 0 || ::fstat(s->dst_fd, &base) != 0)
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR, s->props.volume + ": " + std::strerror(errno));
  if (live.st_size != base.st_size)
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR,
                s->props.volume + " changed size while its snapshot was prepared");
  if (Status st = ReadExtents(s->src_fd, s->props.volume, &now); !st.ok())
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR, st.message());
  // What the base maps, it pins: a range mapped alike in both holds the
  // same bytes (a write to a shared block moves it). What differs changed
  // since the early pass, or was not shared by it; the ranges that pass
  // saved need no saving again (the undo file keeps the base's originals).
  std::vector<ByteRange> wanted =
      DiffRanges(s->base_map, now, 0, static_cast<uint64_t>(live.st_size));
  s->base_map = {};  // megabytes for a fragmented image
  std::vector<ByteRange> covered = s->undo;
  std::sort(covered.begin(), covered.end(),
            [](const ByteRange& a, const ByteRange& b) { return a.offset < b.offset; });
  return AdvanceRanges(s, wanted, covered);
}

HResult ReflinkProvider::CommitSnapshots(const Guid& set) {
  // Inside the flush-and-hold window: only extent maps and clone ioctls, no
  // logging.
  std::lock_guard<std::mutex> g(mu_);
  for (auto& [id, s] : snaps_) {
    if (s.props.snapshot_set_id != set) continue;
    if (s.advance) {
      if (HResult hr = CommitAdvance(&s); hr != S_OK_) return hr;
      continue;
    }
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
  // Still before Thaw: nothing here touches the disk.
  std::lock_guard<std::mutex> g(mu_);
  for (auto& [id, s] : snaps_) {
    if (s.props.snapshot_set_id != set) continue;
    CloseFds(&s);
    s.props.state = SnapshotState::kCommitted;
  }
  return S_OK_;
}

HResult ReflinkProvider::PreFinalCommitSnapshots(const Guid& set) {
  // After Thaw: the registry's fsyncs no longer hold applications frozen. A
  // crash before this leaves the record at "preparing", which names the
  // same file, so nothing is lost by waiting.
  std::lock_guard<std::mutex> g(mu_);
  for (auto& [id, s] : snaps_) {
    if (s.props.snapshot_set_id != set) continue;
    registry_.Put(s.props);  // best effort
  }
  return S_OK_;
}

HResult ReflinkProvider::Discard(Snap* s) {
  CloseFds(s);
  if (!s->advance) {
    if (::unlink(s->props.device.c_str()) != 0 && errno != ENOENT)
      return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR,
                  "removing " + s->props.device + ": " + std::strerror(errno));
    registry_.Remove(s->props.snapshot_id);
    return S_OK_;
  }
  // Give the base its old extents back, in any order: the saved ranges do
  // not overlap.
  const size_t saved = s->undo.size();
  std::string failure;
  if (saved > 0) {
    int base = ::open(s->base.device.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    int undo = ::open(s->undo_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (base < 0 || undo < 0) failure = std::strerror(errno);
    for (size_t k = 0; failure.empty() && k < saved; ++k)
      if (!CloneRange(undo, base, s->undo[k])) failure = std::strerror(errno);
    if (failure.empty() && ::fsync(base) != 0) failure = std::strerror(errno);
    if (base >= 0) ::close(base);
    if (undo >= 0) ::close(undo);
  }
  if (failure.empty()) {
    SnapshotProperties b = s->base;
    b.state = SnapshotState::kBase;
    b.pid = -1;
    if (saved > 0) b.file_id = FileGeneration(b.device);
    if (Status st = registry_.Put(b); !st.ok()) failure = st.message();
  }
  ::unlink(s->undo_path.c_str());
  registry_.Remove(s->props.snapshot_id);
  if (!failure.empty())
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR, "putting back the base " + s->base.device +
                                                     " after a failed backup: " + failure +
                                                     " (the next incremental reads everything)");
  return S_OK_;
}

HResult ReflinkProvider::AbortSnapshots(const Guid& set) {
  std::lock_guard<std::mutex> g(mu_);
  HResult result = S_OK_;
  for (auto it = snaps_.begin(); it != snaps_.end();) {
    if (it->second.props.snapshot_set_id != set) {
      ++it;
      continue;
    }
    if (HResult hr = Discard(&it->second); hr != S_OK_) result = hr;
    it = snaps_.erase(it);
  }
  return result;
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
  HResult hr = Discard(&it->second);
  snaps_.erase(it);
  return hr;
}

HResult ReflinkProvider::RetainSnapshot(const Guid& snap, const BaseLabel& label) {
  std::lock_guard<std::mutex> g(mu_);
  auto it = snaps_.find(snap);
  if (it == snaps_.end()) return VSS_E_OBJECT_NOT_FOUND;
  SnapshotProperties p = it->second.props;
  p.state = SnapshotState::kBase;
  p.backup_id = label.backup_id;
  p.backup_type = label.backup_type;
  p.volume_key = label.volume_key;
  p.for_differentials = label.for_differentials;
  p.file_id = FileGeneration(p.device);
  p.pid = -1;  // no process uses a retained base; it waits for the next backup
  CloseFds(&it->second);
  // An advanced base is this snapshot now: its old record goes first, so no
  // moment has two records for one file.
  if (it->second.advance) registry_.Remove(it->second.base.snapshot_id);
  if (Status st = registry_.Put(p); !st.ok())
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR, st.message());
  if (it->second.advance) ::unlink(it->second.undo_path.c_str());
  snaps_.erase(it);
  return S_OK_;
}

HResult ReflinkProvider::DeleteLeftover(const SnapshotProperties& p) {
  // Only ever a hidden clone this provider named; never anything else.
  if (Status st = CheckCloneName(p); !st.ok())
    return Fail(E_INVALIDARG_, st.message() + "; not removing it");
  if (::unlink(p.device.c_str()) != 0 && errno != ENOENT)
    return Fail(VSS_E_UNEXPECTED_PROVIDER_ERROR,
                "removing " + p.device + ": " + std::strerror(errno));
  // A snapshot that was advancing a base when its process died: the base's
  // file is half-advanced (removed above), and its undo file is of no use.
  // The undo file is beside the device just checked, named for this record;
  // the base's record goes only if it names that same file.
  Guid base;
  if (p.state != SnapshotState::kBase && p.state != SnapshotState::kAdvancing &&
      !p.advances.empty() && Guid::Parse(p.advances, &base)) {
    ::unlink(UndoPath(p.device, p.snapshot_id).c_str());
    if (SnapshotProperties b; registry_.Get(base, &b) && b.device == p.device)
      registry_.Remove(base);
  }
  registry_.Remove(p.snapshot_id);
  return S_OK_;
}

}  // namespace gnomon::vss
