// The reflink provider: snapshots a regular file on a filesystem with
// reflinks (XFS with reflink=1, btrfs), or a loop device whose backing file
// is one, by FICLONE into a hidden file beside it (".gnomon-snap-<id>").
// The clone is instant and shares every extent until the original changes.
// Clones are recorded in the snapshot registry from preparation to deletion.
#pragma once

#include <map>
#include <mutex>

#include "vss/provider.h"

namespace gnomon::vss {

class ReflinkProvider : public Provider {
 public:
  explicit ReflinkProvider(std::string state_dir = DefaultStateDir());
  ~ReflinkProvider() override;
  std::string name() const override { return "reflink"; }
  bool IsVolumeSupported(const VolumeIdentity& v, std::string* why) override;
  HResult BeginPrepareSnapshot(const Guid& set, const Guid& snap, const VolumeIdentity& v) override;
  HResult CommitSnapshots(const Guid& set) override;
  HResult PostCommitSnapshots(const Guid& set) override;
  HResult AbortSnapshots(const Guid& set) override;
  HResult GetSnapshotProperties(const Guid& snap, SnapshotProperties* out) override;
  HResult DeleteSnapshot(const Guid& snap) override;
  HResult DeleteLeftover(const SnapshotProperties& p) override;
  HResult RetainSnapshot(const Guid& snap, const std::string& backup_id,
                         const std::string& backup_type, const std::string& volume_key) override;

  // The file whose contents a volume is: itself, or a loop device's backing file.
  static bool SourceFile(const VolumeIdentity& v, std::string* file, std::string* why);

 private:
  struct Snap {
    SnapshotProperties props;
    int src_fd = -1, dst_fd = -1;
  };
  void CloseFds(Snap* s);
  SnapshotRegistry registry_;
  std::mutex mu_;
  std::map<Guid, Snap> snaps_;
};

}  // namespace gnomon::vss
