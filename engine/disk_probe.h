// Finding a disk in a snapshot: whether it holds a partition table (GPT or
// MBR/DOS), read with libfdisk, and what each partition holds, probed with
// libblkid. A source that holds a filesystem directly is a volume, never a
// disk, even when its first sector happens to end in 0x55AA (FAT does).
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "format/disk_layout.h"

namespace gnomon {

// Reads the partition table of the `size` bytes open at fd (a snapshot of
// `name`). *is_disk is false, and *out untouched, when there is none or the
// bytes start with a filesystem. Partitions get no volume numbers here.
// An error means a table was found that cannot be read.
Status ProbeDisk(int fd, const std::string& name, uint64_t size, bool* is_disk, DiskLayout* out);

// What blkid finds in [offset, offset + size) of fd: filesystem type, UUID
// and label ("" each when nothing is recognised).
struct FsIdentity {
  std::string type, uuid, label;
};
FsIdentity ProbeFilesystem(int fd, uint64_t offset, uint64_t size);

// A partition type's name as libfdisk knows it ("Linux filesystem", "EFI
// System"), or "" for one it does not.
std::string PartitionTypeName(const std::string& label, const std::string& type);

}  // namespace gnomon
