// A volume to image: a block device or a regular file, opened read-only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace gnomon {

struct Extent {
  uint64_t offset, length;
};

class SourceVolume {
 public:
  SourceVolume() = default;
  ~SourceVolume();
  SourceVolume(const SourceVolume&) = delete;
  SourceVolume& operator=(const SourceVolume&) = delete;
  SourceVolume(SourceVolume&& o) noexcept;
  SourceVolume& operator=(SourceVolume&& o) noexcept;

  // Opens path read-only. A block device is opened O_EXCL, which the kernel
  // refuses while it is mounted or held exclusively, so a live, changing
  // device is never imaged as if it were a consistent one.
  static Status Open(const std::string& path, SourceVolume* out);
  // Opens a snapshot a provider made: `size` bytes starting at `offset` of
  // `device` (a clone file, or the held device itself). Not O_EXCL: the
  // provider already guarantees nothing changes it.
  static Status OpenSnapshot(const std::string& device, uint64_t offset, uint64_t size,
                             SourceVolume* out);

  int fd() const { return fd_; }
  uint64_t size() const { return size_; }
  uint64_t offset() const { return offset_; }  // of the volume within path()
  bool is_block_device() const { return block_; }
  const std::string& path() const { return path_; }
  // For regular files, the ranges that hold data (SEEK_DATA/SEEK_HOLE);
  // everything else reads as zeros and need not be read at all. For block
  // devices one extent covering the whole device.
  const std::vector<Extent>& data_extents() const { return extents_; }
  // Asks the kernel to start reading n bytes at offset in the background
  // (POSIX_FADV_WILLNEED), so many small reads queue at once instead of one
  // after another. Advice only: it never fails.
  void Prefetch(uint64_t offset, uint64_t n) const;
  // Reads exactly n bytes at offset (short read = the volume shrank: error).
  Status ReadAt(uint64_t offset, size_t n, uint8_t* dst) const;

 private:
  // Data extents of a regular file within [offset_, offset_ + size_), in
  // volume coordinates.
  void FindDataExtents();

  std::string path_;
  int fd_ = -1;
  uint64_t offset_ = 0;
  uint64_t size_ = 0;
  bool block_ = false;
  std::vector<Extent> extents_;
};

// The size of the block device open at fd (BLKGETSIZE64).
Status BlockDeviceSize(int fd, const std::string& path, uint64_t* size);
// The size of a regular file or block device.
Status VolumeSize(const std::string& path, uint64_t* size);

}  // namespace gnomon
