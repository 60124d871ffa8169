// What a volume is on this machine: a block device or a regular file, the
// loop devices that present a file as a disk, and the mounted filesystems
// that live on it (from /proc/self/mountinfo, in mount order).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace gnomon::vss {

struct MountEntry {
  dev_t dev = 0;  // st_dev of files on the mount (major:minor of its device)
  std::string mount_point, fstype, source;
};

// Every mount, in the order they were mounted.
std::vector<MountEntry> ReadMountTable();

struct LoopInfo {
  std::string device;  // /dev/loopN
  dev_t rdev = 0;
  std::string backing_file;  // as the kernel reports it
  uint64_t offset = 0, sizelimit = 0;
};
std::vector<LoopInfo> ListLoopDevices();
bool LoopInfoFor(dev_t rdev, LoopInfo* out);

struct VolumeIdentity {
  std::string path;       // as given
  std::string real_path;  // canonical
  bool is_block = false;
  dev_t rdev = 0;     // block devices
  uint64_t size = 0;  // bytes
  // Block devices that present this volume: the device itself, or the loop
  // devices backed by this file.
  std::vector<dev_t> devices;
  bool is_loop = false;
  LoopInfo loop;  // if is_loop
};

// Fills *out, or returns an error naming the path: NotFound if nothing is
// there, InvalidArgument for something that is not a block device or a
// regular file, IOError otherwise.
Status IdentifyVolume(const std::string& path, VolumeIdentity* out);
// Mounted filesystems on the volume, in mount order (bind mounts of one
// filesystem appear once, at their first mount).
std::vector<MountEntry> MountsOnVolume(const VolumeIdentity& v);
// True if path (a file or directory that exists) is on one of the volumes,
// or, for a recursive file set, if a filesystem mounted below path is.
bool PathOnVolumes(const std::string& path, bool recursive, const std::vector<VolumeIdentity>& vs);

}  // namespace gnomon::vss
