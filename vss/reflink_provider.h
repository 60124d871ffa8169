// The reflink provider: snapshots a regular file on a filesystem with
// reflinks (XFS with reflink=1, btrfs), or a loop device whose backing file
// is one, by FICLONE into a hidden file beside it (".gnomon-snap-<id>").
// The clone is instant and shares every extent until the original changes.
// Clones are recorded in the snapshot registry from preparation to deletion.
//
// Cloning a whole file costs one remap per extent, and a file that has been
// snapshotted and then written in scattered places gains extents with every
// backup. So an incremental whose base is itself an incremental's clone is
// taken by *advancing* that base in place (AdvanceBase): inside the hold
// window only the ranges whose extents differ between the live file and the
// base are cloned into it, each after its old extents were cloned into an
// undo file beside it. The base then is the new snapshot; a failed backup
// clones the undo ranges back, so the old base survives as it was.
#pragma once

#include <map>
#include <mutex>

#include "vss/extent_diff.h"
#include "vss/provider.h"

namespace gnomon::vss {

class ReflinkProvider : public Provider {
 public:
  explicit ReflinkProvider(std::string state_dir = DefaultStateDir());
  ~ReflinkProvider() override;
  std::string name() const override { return "reflink"; }
  Status IsVolumeSupported(const VolumeIdentity& v) override;
  HResult BeginPrepareSnapshot(const Guid& set, const Guid& snap, const VolumeIdentity& v) override;
  HResult CommitSnapshots(const Guid& set) override;
  HResult PostCommitSnapshots(const Guid& set) override;
  HResult PreFinalCommitSnapshots(const Guid& set) override;
  HResult AbortSnapshots(const Guid& set) override;
  HResult GetSnapshotProperties(const Guid& snap, SnapshotProperties* out) override;
  HResult DeleteSnapshot(const Guid& snap) override;
  HResult DeleteLeftover(const SnapshotProperties& p) override;
  HResult RetainSnapshot(const Guid& snap, const BaseLabel& label) override;

  // The file whose contents a volume is: itself, or a loop device's backing
  // file. Unsupported for any other block device, NotFound for a loop
  // device whose backing file was deleted.
  static Status SourceFile(const VolumeIdentity& v, std::string* file);

  // Takes snapshot `snap` (not yet prepared) by advancing the retained base
  // `base` of the same volume in place instead of cloning the whole file.
  // The caller vouches that base is a valid base of this volume; if its file
  // turns out not to match the volume, a whole clone is taken instead.
  void AdvanceBase(const Guid& snap, const SnapshotProperties& base) override;
  // For a snapshot taken by advancing a base: the ranges cloned into it.
  // For a whole clone: where its extent map differs from the base's.
  Status ChangedRanges(const Guid& snap, const SnapshotProperties& base,
                       std::vector<ByteRange>* out) override;
  ChangeTracker tracker() const override { return ChangeTracker::kReflinkFiemap; }
  // The clone's extents the live file no longer shares.
  uint64_t PinnedBytes(const SnapshotProperties& p) override;

 private:
  struct Snap {
    SnapshotProperties props;
    int src_fd = -1, dst_fd = -1;
    // Advancing a base: dst_fd is the base's file, undo_fd the file holding
    // the base's old extents of every range in `undo` (disjoint).
    bool advance = false;
    SnapshotProperties base;
    std::string undo_path;
    int undo_fd = -1;
    // The base's map after the early pass, read before the freeze.
    std::vector<FileExtent> base_map;
    std::vector<ByteRange> ranges;  // cloned into the base: what changed
    std::vector<ByteRange> undo;
  };
  void CloseFds(Snap* s);
  HResult PrepareAdvance(Snap* s, const std::string& file);
  HResult CommitAdvance(Snap* s);
  // Clones each of `wanted` from the live file into the base, first saving
  // the base's old extents of what `covered` (ranges already in the undo
  // file) does not hold.
  HResult AdvanceRanges(Snap* s, const std::vector<ByteRange>& wanted,
                        const std::vector<ByteRange>& covered);
  // Removes a snapshot of this process: a clone is deleted; an advanced base
  // gets its old extents back and is a base again.
  HResult Discard(Snap* s);
  SnapshotRegistry registry_;
  std::mutex mu_;
  std::map<Guid, Snap> snaps_;
  std::map<Guid, SnapshotProperties> advance_;  // requests not yet prepared
};

}  // namespace gnomon::vss
