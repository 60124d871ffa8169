// The offline provider: the "snapshot" of a volume nothing is writing to is
// the volume itself. It supports a block device it can open O_EXCL (the
// kernel refuses that while the device is mounted or held), holding it so
// until the snapshot is deleted, and a regular file that no process has open
// for writing and no loop device presents. Everything else is refused, with
// the reason.
//
// Because the "snapshot" is the live volume, nothing may write to it until
// the image has been read: CheckSnapshotIntact finds a write that happened
// anyway (a read lease on a file, which the kernel breaks when anyone opens
// it for writing; size, times and inode compared; the device's count of
// sectors written; open writers in /proc), and the backup then fails with
// "no consistent snapshot" instead of storing a torn image.
#pragma once

#include <map>
#include <mutex>

#include "vss/provider.h"

namespace gnomon::vss {

class OfflineProvider : public Provider {
 public:
  OfflineProvider() = default;
  ~OfflineProvider() override;
  std::string name() const override { return "offline"; }
  Status IsVolumeSupported(const VolumeIdentity& v) override;
  HResult BeginPrepareSnapshot(const Guid& set, const Guid& snap, const VolumeIdentity& v) override;
  HResult CommitSnapshots(const Guid& set) override;
  HResult AbortSnapshots(const Guid& set) override;
  HResult GetSnapshotProperties(const Guid& snap, SnapshotProperties* out) override;
  HResult DeleteSnapshot(const Guid& snap) override;
  HResult DeleteLeftover(const SnapshotProperties& p) override;
  HResult CheckSnapshotIntact(const Guid& snap) override;

 private:
  struct Snap {
    SnapshotProperties props;
    VolumeIdentity volume;
    int fd = -1;  // O_EXCL hold on a block device, or the read-leased file
    bool leased = false;
    struct Fingerprint {
      uint64_t ino = 0, size = 0, mtime_ns = 0, ctime_ns = 0, sectors_written = 0;
      // A loop device's backing file can be written past the device.
      uint64_t backing_size = 0, backing_mtime_ns = 0, backing_ctime_ns = 0;
      bool operator==(const Fingerprint&) const = default;
    } before;
  };
  static Status Fingerprint(const Snap& s, Snap::Fingerprint* out);
  std::mutex mu_;
  std::map<Guid, Snap> snaps_;
};

// Pids of processes that hold path open for writing (from /proc/*/fdinfo).
std::vector<int> ProcessesWritingTo(const std::string& real_path);

}  // namespace gnomon::vss
