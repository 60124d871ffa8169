// Provider: takes the point-in-time snapshot of volumes, driven by the
// requester in the VSS provider sequence (shared/vss-behaviour.md §2.1):
//   BeginPrepareSnapshot (per volume) -> EndPrepareSnapshots
//   -> PreCommitSnapshots -> CommitSnapshots (inside the flush-and-hold
//   window: fast, no logging, no I/O on frozen filesystems)
//   -> PostCommitSnapshots -> PreFinalCommitSnapshots -> PostFinalCommitSnapshots
//   AbortSnapshots on failure; DeleteSnapshot when the backup is done.
// A new kind of snapshot (LVM, btrfs subvolume, CoW-tracked device) is a new
// file implementing this interface.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/status.h"
#include "vss/codes.h"
#include "vss/contracts.h"
#include "vss/types.h"
#include "vss/volume.h"

namespace gnomon::vss {

struct SnapshotProperties {
  Guid snapshot_id, snapshot_set_id;
  std::string volume;    // as added to the set
  std::string provider;  // provider name
  std::string device;    // block device or file holding the snapshot's data
  uint64_t offset = 0;   // where the volume starts within `device`
  uint64_t size = 0;     // volume bytes
  std::string created;   // RFC 3339 UTC
  SnapshotState state = SnapshotState::kPreparing;
  int pid = 0;  // process that made it; a live one is still using it
  std::string host;
  // Set when a committed backup keeps the snapshot as its change-tracking
  // base (state kBase).
  std::string backup_id;
  BackupType backup_type = BackupType::kUndefined;
  std::string volume_key;
  // A token chosen when the snapshot is prepared; the backup stamp names it,
  // so a stamp trusts exactly this snapshot's contents. (Registries written
  // before file_id existed hold the file's "<inode>:<ctime ns>" here.)
  std::string generation;
  // FileGeneration() of `device` when last recorded: a file replaced or
  // touched since no longer matches.
  std::string file_id;
  // Set when this snapshot was taken by advancing the retained base with
  // this id in place (Provider::AdvanceBase): `device` is that base's file,
  // and the base is in state kAdvancing until this one is kept or discarded.
  std::string advances;
  // A full's base kept unchanged for the differentials that build on it
  // (BaseLabel::for_differentials).
  bool for_differentials = false;
};

// What a kept snapshot is the change-tracking base of (RetainSnapshot).
struct BaseLabel {
  std::string backup_id;
  BackupType backup_type = BackupType::kUndefined;
  std::string volume_key;
  // Set for a full whose later differentials should read only what changed
  // since it: incrementals then leave this base as it is (a whole clone of
  // the volume each) instead of advancing it in place.
  bool for_differentials = false;
};

class Provider {
 public:
  virtual ~Provider() = default;
  virtual std::string name() const = 0;
  // OK if this provider can snapshot v; otherwise the message says why, in
  // words a user can act on (Unsupported when the provider cannot snapshot
  // such a volume, the errno's code when the volume could not be examined).
  virtual Status IsVolumeSupported(const VolumeIdentity& v) = 0;

  virtual HResult BeginPrepareSnapshot(const Guid& set, const Guid& snap,
                                       const VolumeIdentity& v) = 0;
  virtual HResult EndPrepareSnapshots(const Guid& set) {
    (void)set;
    return S_OK_;
  }
  virtual HResult PreCommitSnapshots(const Guid& set) {
    (void)set;
    return S_OK_;
  }
  virtual HResult CommitSnapshots(const Guid& set) = 0;
  virtual HResult PostCommitSnapshots(const Guid& set) {
    (void)set;
    return S_OK_;
  }
  virtual HResult PreFinalCommitSnapshots(const Guid& set) {
    (void)set;
    return S_OK_;
  }
  virtual HResult PostFinalCommitSnapshots(const Guid& set) {
    (void)set;
    return S_OK_;
  }
  virtual HResult AbortSnapshots(const Guid& set) = 0;
  virtual HResult GetSnapshotProperties(const Guid& snap, SnapshotProperties* out) = 0;
  virtual HResult DeleteSnapshot(const Guid& snap) = 0;
  // Keeps a snapshot after its session ends, as the change-tracking base of
  // label.backup_id; recorded in the registry with state kBase.
  virtual HResult RetainSnapshot(const Guid& snap, const BaseLabel& label) {
    (void)snap, (void)label;
    return Fail(E_FAIL_, name() + " snapshots cannot be kept after a backup");
  }
  // Called after the snapshot's data was read and before the backup is
  // published: S_OK_ if what was read is still the point-in-time image.
  // A provider whose snapshot is the live volume itself (offline) checks
  // that nothing wrote to it meanwhile; one whose snapshot is a separate
  // immutable copy has nothing to check.
  virtual HResult CheckSnapshotIntact(const Guid& snap) {
    (void)snap;
    return S_OK_;
  }

  // Change tracking. A provider that tracks changes keeps a snapshot after
  // its backup (RetainSnapshot) and later tells what changed since it.
  virtual ChangeTracker tracker() const { return ChangeTracker::kNone; }
  bool CanRetainSnapshots() const { return tracker() != ChangeTracker::kNone; }
  // Before DoSnapshotSet: asks that `snap` be taken by advancing the
  // retained `base` in place (only what changed since it is copied), if the
  // provider can; one that cannot takes a whole snapshot as usual. The
  // caller vouches that base is a valid base of the same volume.
  virtual void AdvanceBase(const Guid& snap, const SnapshotProperties& base) {
    (void)snap, (void)base;
  }
  // After DoSnapshotSet: the byte ranges of snap's `device` (file
  // coordinates, sorted, merged) whose contents may differ from the
  // retained `base` of the same volume. Anything uncertain counts as
  // changed. On failure the message says why and the backup reads
  // everything.
  virtual Status ChangedRanges(const Guid& snap, const SnapshotProperties& base,
                               std::vector<ByteRange>* out) {
    (void)snap, (void)base, (void)out;
    return Status::Unsupported(name() + " snapshots do not track changes");
  }
  // Bytes a recorded snapshot keeps allocated that its volume no longer
  // uses (what deleting it would free); 0 when the provider cannot tell.
  virtual uint64_t PinnedBytes(const SnapshotProperties& p) {
    (void)p;
    return 0;
  }
  // Removes a snapshot this provider left behind in an earlier process
  // (after a crash), from its registry record.
  virtual HResult DeleteLeftover(const SnapshotProperties& p) = 0;

  // Detail of the last failure, for messages.
  const std::string& last_error() const { return last_error_; }

 protected:
  HResult Fail(HResult hr, std::string msg) {
    last_error_ = std::move(msg);
    return hr;
  }
  std::string last_error_;
};

// Snapshots on disk outlive a crashed process, so each is recorded in a
// state directory (default /var/lib/gnomon/snapshots) from the moment it is
// prepared until it is deleted; `gnomon snapshots` lists and removes them.
class SnapshotRegistry {
 public:
  explicit SnapshotRegistry(std::string dir);
  const std::string& dir() const { return dir_; }
  Status Put(const SnapshotProperties& p);  // durable (fsync, rename); IOError on failure
  bool Get(const Guid& id, SnapshotProperties* out) const;
  void Remove(const Guid& id);
  std::vector<SnapshotProperties> List() const;

 private:
  std::string dir_;
};

// $GNOMON_STATE_DIR, else /var/lib/gnomon for root, else a per-user directory.
std::string DefaultStateDir();
// $GNOMON_RUNTIME_DIR, else /run/gnomon for root, else a per-user directory.
std::string DefaultRuntimeDir();

}  // namespace gnomon::vss
