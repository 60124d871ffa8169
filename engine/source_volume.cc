#include "engine/source_volume.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace gnomon {

SourceVolume::~SourceVolume() {
  if (fd_ >= 0) ::close(fd_);
}

SourceVolume::SourceVolume(SourceVolume&& o) noexcept
    : path_(std::move(o.path_)),
      fd_(o.fd_),
      offset_(o.offset_),
      size_(o.size_),
      block_(o.block_),
      extents_(std::move(o.extents_)) {
  o.fd_ = -1;
}

SourceVolume& SourceVolume::operator=(SourceVolume&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(o.path_);
    fd_ = o.fd_;
    offset_ = o.offset_;
    size_ = o.size_;
    block_ = o.block_;
    extents_ = std::move(o.extents_);
    o.fd_ = -1;
  }
  return *this;
}

Status BlockDeviceSize(int fd, const std::string& path, uint64_t* size) {
  if (::ioctl(fd, BLKGETSIZE64, size) != 0)
    return Status::FromErrno("reading the size of block device " + path, errno);
  return Status::OK();
}

Status SourceVolume::Open(const std::string& path, SourceVolume* out) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::NotFound(path + ": no such file or device");
    return Status::FromErrno(path, errno);
  }
  SourceVolume v;
  v.path_ = path;
  if (S_ISBLK(st.st_mode)) {
    v.block_ = true;
    v.fd_ = ::open(path.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
    if (v.fd_ < 0 && errno == EBUSY)
      return Status::InvalidArgument(
          path +
          ": device is in use (mounted, or held open exclusively); a live device cannot "
          "be imaged consistently without a snapshot");
    if (v.fd_ < 0) return Status::FromErrno("opening " + path, errno);
    GNOMON_RETURN_IF_ERROR(BlockDeviceSize(v.fd_, path, &v.size_));
    if (v.size_) v.extents_.push_back({0, v.size_});
  } else if (S_ISREG(st.st_mode)) {
    v.fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (v.fd_ < 0) return Status::FromErrno("opening " + path, errno);
    v.size_ = static_cast<uint64_t>(st.st_size);
    v.FindDataExtents();
    ::posix_fadvise(v.fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
  } else {
    return Status::InvalidArgument(path + ": not a block device or regular file");
  }
  *out = std::move(v);
  return Status::OK();
}

void SourceVolume::FindDataExtents() {
  extents_.clear();
  const off_t start = static_cast<off_t>(offset_);
  const off_t end = static_cast<off_t>(offset_ + size_);
  off_t pos = start;
  while (pos < end) {
    off_t data = ::lseek(fd_, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole remains
      // No SEEK_DATA on this filesystem: treat everything as data.
      extents_.assign(1, Extent{0, size_});
      return;
    }
    if (data >= end) break;
    off_t hole = ::lseek(fd_, data, SEEK_HOLE);
    if (hole < 0 || hole > end) hole = end;
    extents_.push_back({static_cast<uint64_t>(data - start), static_cast<uint64_t>(hole - data)});
    pos = hole;
  }
}

Status SourceVolume::OpenSnapshot(const std::string& device, uint64_t offset, uint64_t size,
                                  SourceVolume* out) {
  SourceVolume v;
  v.path_ = device;
  v.offset_ = offset;
  v.size_ = size;
  v.fd_ = ::open(device.c_str(), O_RDONLY | O_CLOEXEC);
  if (v.fd_ < 0) return Status::FromErrno("opening snapshot " + device, errno);
  struct stat st;
  if (::fstat(v.fd_, &st) != 0) return Status::FromErrno("stat " + device, errno);
  v.block_ = S_ISBLK(st.st_mode);
  if (S_ISREG(st.st_mode)) {
    v.FindDataExtents();
  } else if (size) {
    v.extents_.push_back({0, size});
  }
  ::posix_fadvise(v.fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
  *out = std::move(v);
  return Status::OK();
}

void SourceVolume::Prefetch(uint64_t offset, uint64_t n) const {
  ::posix_fadvise(fd_, static_cast<off_t>(offset_ + offset), static_cast<off_t>(n),
                  POSIX_FADV_WILLNEED);
}

Status SourceVolume::ReadAt(uint64_t offset, size_t n, uint8_t* dst) const {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd_, dst + done, n - done, static_cast<off_t>(offset_ + offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("reading " + path_ + " at offset " + std::to_string(offset + done),
                               errno);
    }
    if (r == 0)
      return Status::IOError(path_ + ": volume ended at " + std::to_string(offset + done) +
                             " bytes, before its size of " + std::to_string(size_) +
                             " (did it shrink during the backup?)");
    done += static_cast<size_t>(r);
  }
  return Status::OK();
}

}  // namespace gnomon

namespace gnomon {

Status VolumeSize(const std::string& path, uint64_t* size) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::NotFound(path + ": no such file or device");
    return Status::FromErrno(path, errno);
  }
  if (S_ISREG(st.st_mode)) {
    *size = static_cast<uint64_t>(st.st_size);
    return Status::OK();
  }
  if (!S_ISBLK(st.st_mode))
    return Status::InvalidArgument(path + ": not a block device or regular file");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("opening " + path, errno);
  Status s = BlockDeviceSize(fd, path, size);
  ::close(fd);
  return s;
}

}  // namespace gnomon
