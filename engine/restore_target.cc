#include "engine/restore_target.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "base/random.h"
#include "base/system.h"
#include "engine/source_volume.h"
#include "vss/volume.h"

namespace gnomon {

namespace fs = std::filesystem;

std::vector<std::string> ProcessesUsing(const std::string& real_path) {
  std::vector<std::string> out;
  const int self = ::getpid();
  std::error_code ec;
  for (const auto& p : fs::directory_iterator("/proc", ec)) {
    const std::string name = p.path().filename();
    const int pid = std::atoi(name.c_str());
    if (pid <= 0 || pid == self) continue;
    std::error_code ec2;
    for (const auto& fd : fs::directory_iterator(p.path() / "fd", ec2)) {
      std::error_code ec3;
      if (fs::read_symlink(fd.path(), ec3) != real_path) continue;
      std::string comm;
      std::ifstream(p.path() / "comm") >> comm;
      out.push_back("pid " + name + " (" + comm + ")");
      break;
    }
  }
  return out;
}

namespace {

// Holders of a block device (device-mapper, md, a partition table user),
// from /sys/class/block/<dev>/holders.
std::vector<std::string> Holders(const std::string& real_path) {
  std::vector<std::string> out;
  std::error_code ec;
  const std::string dev = fs::path(real_path).filename();
  for (const auto& h : fs::directory_iterator("/sys/class/block/" + dev + "/holders", ec))
    out.push_back(h.path().filename());
  return out;
}

std::string Join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// ".<name>.gnomon-restore-<host>-<pid>-": the prefix of this process's
// temporary files for target `name`; other pids' files share it up to the pid.
std::string TempPrefix(const std::string& name) {
  return "." + name + ".gnomon-restore-" + HostName() + "-";
}

// Removes partial restores of the same target left by killed runs on this
// host: our naming, a regular file we own, a pid that no longer exists.
void RemoveDeadPartials(const fs::path& target, std::vector<std::string>* cleaned) {
  const std::string prefix = TempPrefix(target.filename());
  std::error_code ec;
  for (const auto& e :
       fs::directory_iterator(target.parent_path().empty() ? "." : target.parent_path(), ec)) {
    const std::string n = e.path().filename();
    if (n.rfind(prefix, 0) != 0) continue;
    const int pid = std::atoi(n.c_str() + prefix.size());
    struct stat st;
    if (pid <= 0 || ProcessAlive(pid) || ::lstat(e.path().c_str(), &st) != 0 ||
        !S_ISREG(st.st_mode) || st.st_uid != ::geteuid())
      continue;
    if (::unlink(e.path().c_str()) == 0 && cleaned)
      cleaned->push_back("removed " + e.path().string() + ", a partial restore left by pid " +
                         std::to_string(pid));
  }
}

// True if dir is root or below it, by device and inode (a bind mount or a
// symlink of the repository is still the repository).
bool Inside(const fs::path& dir, const std::string& root) {
  struct stat r, d;
  if (::stat(root.c_str(), &r) != 0) return false;
  for (fs::path p = dir;; p = p.parent_path()) {
    if (::stat(p.c_str(), &d) == 0 && d.st_dev == r.st_dev && d.st_ino == r.st_ino) return true;
    if (p == p.root_path() || p.empty()) return false;
  }
}

// rename(2) that fails with EEXIST if `to` exists; link + unlink where the
// filesystem has no RENAME_NOREPLACE (NFS, CIFS).
bool PublishNoReplace(const std::string& from, const std::string& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return true;
  if (errno != EINVAL && errno != ENOSYS) return false;
  if (::link(from.c_str(), to.c_str()) != 0) return false;
  ::unlink(from.c_str());
  return true;
}

}  // namespace

RestoreTarget::~RestoreTarget() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !tmp_.empty()) ::unlink(tmp_.c_str());
}

namespace {

Status RefuseInUse(const std::string& path) {
  return Status::InvalidArgument(path +
                                 ": device is in use (mounted or held open exclusively); "
                                 "refusing to restore over it");
}

// Holders and openers, which O_EXCL cannot see.
Status RefuseUsers(const std::string& path, const std::string& real) {
  if (auto h = Holders(real); !h.empty())
    return Status::InvalidArgument(path + ": device is held by " + Join(h) +
                                   "; refusing to restore over it");
  if (auto users = ProcessesUsing(real); !users.empty())
    return Status::InvalidArgument(path + ": device is open in " + Join(users) +
                                   "; refusing to restore over it");
  return Status::OK();
}

std::string RealPath(const std::string& path) {
  char real[PATH_MAX];
  return ::realpath(path.c_str(), real) ? real : path;
}

// The repository inside the target's directory, or on the target disk.
Status RefusePlace(const std::string& path, const std::string& repo_dir) {
  std::error_code ec;
  const fs::path dir = fs::weakly_canonical(fs::absolute(path).parent_path(), ec);
  if (!repo_dir.empty() && Inside(dir, repo_dir))
    return Status::InvalidArgument(path + ": is inside the repository " + repo_dir +
                                   "; restore somewhere else");
  // A disk (device or image file) with the repository on one of its
  // filesystems, mounted from it or from a loop device over it.
  if (vss::VolumeIdentity id; !repo_dir.empty() && vss::IdentifyVolume(path, &id).ok() &&
                              vss::PathOnVolumes(repo_dir, false, {id}))
    return Status::InvalidArgument(path + ": the repository " + repo_dir +
                                   " lives on it; restore onto another disk");
  return Status::OK();
}

}  // namespace

Status RestoreTarget::Check(const std::string& path, const std::string& repo_dir) {
  GNOMON_RETURN_IF_ERROR(RefusePlace(path, repo_dir));
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISBLK(st.st_mode)) return Status::OK();
  const int fd = ::open(path.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
  if (fd < 0 && errno == EBUSY) return RefuseInUse(path);
  if (fd >= 0) ::close(fd);
  return RefuseUsers(path, RealPath(path));
}

Status RestoreTarget::Open(const std::string& path, uint64_t size, bool overwrite,
                           const std::string& repo_dir, std::vector<std::string>* cleaned) {
  path_ = path;
  GNOMON_RETURN_IF_ERROR(RefusePlace(path, repo_dir));
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISBLK(st.st_mode)) return OpenDevice(path, size);
  return OpenFile(path, size, overwrite, cleaned);
}

Status RestoreTarget::OpenDevice(const std::string& path, uint64_t size) {
  block_ = true;
  // O_EXCL fails while the device is mounted or held by another O_EXCL
  // opener; holders and /proc catch the openers it cannot see.
  fd_ = ::open(path.c_str(), O_RDWR | O_EXCL | O_CLOEXEC);
  if (fd_ < 0 && errno == EBUSY) return RefuseInUse(path);
  if (fd_ < 0) return Status::FromErrno("opening " + path, errno);
  GNOMON_RETURN_IF_ERROR(RefuseUsers(path, RealPath(path)));
  uint64_t dev_size = 0;
  GNOMON_RETURN_IF_ERROR(BlockDeviceSize(fd_, path, &dev_size));
  if (dev_size < size)
    return Status::InvalidArgument(path + ": device holds " + std::to_string(dev_size) +
                                   " bytes, the volume needs " + std::to_string(size));
  head_.assign(std::min<uint64_t>(size, kDeviceHeadBytes), 0);
  GNOMON_RETURN_IF_ERROR(WriteRaw(0, head_.data(), head_.size()));
  if (size >= 2 * kDeviceHeadBytes) {
    tail_off_ = size - kDeviceHeadBytes;
    tail_.assign(kDeviceHeadBytes, 0);
    GNOMON_RETURN_IF_ERROR(WriteRaw(tail_off_, tail_.data(), tail_.size()));
  }
  if (::fdatasync(fd_) != 0) return Status::FromErrno("syncing " + path, errno);
  return Status::OK();
}

Status RestoreTarget::OpenFile(const std::string& path, uint64_t size, bool overwrite,
                               std::vector<std::string>* cleaned) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    existed_ = true;
    seen_ = st;
    if (!S_ISREG(st.st_mode))
      return Status::InvalidArgument(path +
                                     ": target exists and is not a regular file or "
                                     "block device");
    if (!overwrite)
      return Status::InvalidArgument(path +
                                     ": target file exists; pass --overwrite to "
                                     "replace it");
  }
  const fs::path target(path);
  RemoveDeadPartials(target, cleaned);
  // An unpredictable name, created O_EXCL|O_NOFOLLOW: a link planted in the
  // target's directory can never redirect the write.
  const fs::path tmp = target.parent_path() / (TempPrefix(target.filename()) +
                                               std::to_string(::getpid()) + "-" + RandomHexId(8));
  fd_ = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd_ < 0) return Status::FromErrno("creating " + tmp.string(), errno);
  tmp_ = tmp;
  // Sized up front: every slot we never write is a hole that reads as zeros.
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0)
    return Status::FromErrno("sizing " + tmp_, errno);
  return Status::OK();
}

void RestoreTarget::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Status RestoreTarget::OpenScratch(const std::string& dir, uint64_t size) {
  path_ = dir + "/(scratch)";
  scratch_ = committed_ = true;
  fd_ = ::open(dir.c_str(), O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
  if (fd_ < 0) return Status::FromErrno("creating a scratch file in " + dir, errno);
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0)
    return Status::FromErrno("sizing a scratch file in " + dir, errno);
  return Status::OK();
}

Status RestoreTarget::WriteAt(uint64_t off, const uint8_t* p, size_t n) {
  // What falls in the head or the tail is held back until Commit.
  auto hold = [&](std::vector<uint8_t>& buf, uint64_t at) {
    const uint64_t a = std::max(off, at), b = std::min<uint64_t>(off + n, at + buf.size());
    if (a < b) std::memcpy(buf.data() + (a - at), p + (a - off), b - a);
  };
  hold(head_, 0);
  if (!tail_.empty()) hold(tail_, tail_off_);
  const uint64_t a = std::max<uint64_t>(off, head_.size());
  const uint64_t b = tail_.empty() ? off + n : std::min<uint64_t>(off + n, tail_off_);
  return a < b ? WriteRaw(a, p + (a - off), b - a) : Status::OK();
}

Status RestoreTarget::WriteRaw(uint64_t off, const uint8_t* p, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = ::pwrite(fd_, p + done, n - done, static_cast<off_t>(off + done));
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("writing " + path_ + " at offset " + std::to_string(off + done),
                               errno);
    }
    done += static_cast<size_t>(w);
  }
  return Status::OK();
}

void RestoreTarget::StartWriteback(uint64_t off, uint64_t n) {
  ::sync_file_range(fd_, static_cast<off_t>(off), static_cast<off_t>(n), SYNC_FILE_RANGE_WRITE);
}

Status RestoreTarget::Commit(const std::function<Status(int fd)>& finish) {
  // Permission bits only: the restoring user owns the new file, so a
  // set-id bit of another owner's file must not come along.
  if (!block_ && existed_ && ::fchmod(fd_, seen_.st_mode & 0777) != 0)
    return Status::FromErrno("setting the mode of " + tmp_, errno);
  if (::fsync(fd_) != 0) return Status::FromErrno("syncing " + path_, errno);
  if (!tail_.empty()) {  // everything else is on the disk: now the signatures
    GNOMON_RETURN_IF_ERROR(WriteRaw(tail_off_, tail_.data(), tail_.size()));
    if (::fsync(fd_) != 0) return Status::FromErrno("syncing " + path_, errno);
  }
  if (!head_.empty()) {
    GNOMON_RETURN_IF_ERROR(WriteRaw(0, head_.data(), head_.size()));
    if (::fsync(fd_) != 0) return Status::FromErrno("syncing " + path_, errno);
  }
  if (finish) {
    GNOMON_RETURN_IF_ERROR(finish(fd_));
    if (::fsync(fd_) != 0) return Status::FromErrno("syncing " + path_, errno);
  }
  if (!block_) {
    if (existed_) {
      struct stat now;
      // Device, inode and change time: an inode number alone can be reused
      // by a file created after the old one was removed.
      if (::stat(path_.c_str(), &now) != 0 || now.st_dev != seen_.st_dev ||
          now.st_ino != seen_.st_ino || now.st_ctim.tv_sec != seen_.st_ctim.tv_sec ||
          now.st_ctim.tv_nsec != seen_.st_ctim.tv_nsec)
        return Status::InvalidArgument(path_ +
                                       ": the target was replaced while the restore ran; "
                                       "not replacing it again");
      if (::rename(tmp_.c_str(), path_.c_str()) != 0)
        return Status::FromErrno("renaming " + tmp_ + " to " + path_, errno);
    } else if (!PublishNoReplace(tmp_, path_)) {
      if (errno == EEXIST)
        return Status::InvalidArgument(path_ +
                                       ": a file appeared there while the restore ran; not "
                                       "replacing it (pass --overwrite to replace it)");
      return Status::FromErrno("renaming " + tmp_ + " to " + path_, errno);
    }
    const std::string dir = fs::path(path_).parent_path().empty()
                                ? std::string(".")
                                : fs::path(path_).parent_path().string();
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);  // the rename is durable too
      ::close(dfd);
    }
  }
  committed_ = true;
  return Status::OK();
}

}  // namespace gnomon
