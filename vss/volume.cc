#include "vss/volume.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

namespace gnomon::vss {

namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (int k = 1; k <= 3; ++k) {
        if (i + k >= s.size() || s[i + k] < '0' || s[i + k] > '7')
          ok = false;
        else
          v = v * 8 + (s[i + k] - '0');
      }
      if (ok) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

std::string ReadLine(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

std::string RealPath(const std::string& p) {
  char buf[PATH_MAX];
  if (::realpath(p.c_str(), buf)) return buf;
  return p;
}

}  // namespace

std::vector<MountEntry> ReadMountTable() {
  std::vector<MountEntry> out;
  std::ifstream f("/proc/self/mountinfo");
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string id, parent, majmin, root, mp, opts, tok;
    in >> id >> parent >> majmin >> root >> mp >> opts;
    while (in >> tok && tok != "-") {
    }
    MountEntry e;
    in >> e.fstype >> e.source;
    unsigned maj = 0, min = 0;
    if (std::sscanf(majmin.c_str(), "%u:%u", &maj, &min) != 2) continue;
    e.dev = makedev(maj, min);
    e.mount_point = Unescape(mp);
    e.source = Unescape(e.source);
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<LoopInfo> ListLoopDevices() {
  std::vector<LoopInfo> out;
  DIR* d = ::opendir("/sys/block");
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind("loop", 0) != 0) continue;
    std::string base = "/sys/block/" + n;
    std::string backing = ReadLine(base + "/loop/backing_file");
    if (backing.empty()) continue;  // not attached
    LoopInfo li;
    li.device = "/dev/" + n;
    li.backing_file = backing;
    li.offset = std::strtoull(ReadLine(base + "/loop/offset").c_str(), nullptr, 10);
    li.sizelimit = std::strtoull(ReadLine(base + "/loop/sizelimit").c_str(), nullptr, 10);
    unsigned maj = 0, min = 0;
    if (std::sscanf(ReadLine(base + "/dev").c_str(), "%u:%u", &maj, &min) == 2)
      li.rdev = makedev(maj, min);
    out.push_back(std::move(li));
  }
  ::closedir(d);
  return out;
}

bool LoopInfoFor(dev_t rdev, LoopInfo* out) {
  for (auto& l : ListLoopDevices())
    if (l.rdev == rdev) {
      *out = l;
      return true;
    }
  return false;
}

Status IdentifyVolume(const std::string& path, VolumeIdentity* out) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(path, errno);
  VolumeIdentity v;
  v.path = path;
  v.real_path = RealPath(path);
  if (S_ISBLK(st.st_mode)) {
    v.is_block = true;
    v.rdev = st.st_rdev;
    v.devices.push_back(st.st_rdev);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::ioctl(fd, BLKGETSIZE64, &v.size) != 0) {
      Status s = Status::IOError(path + ": cannot read the device size: " + std::strerror(errno));
      if (fd >= 0) ::close(fd);
      return s;
    }
    ::close(fd);
    v.is_loop = LoopInfoFor(st.st_rdev, &v.loop);
    // A disk is presented by its partitions too (sda1, nvme0n1p1), and by
    // loop devices over it (a partition mapped with --offset).
    const std::string sys = "/sys/dev/block/" + std::to_string(major(st.st_rdev)) + ":" +
                            std::to_string(minor(st.st_rdev));
    if (DIR* d = ::opendir(sys.c_str())) {
      while (auto* e = ::readdir(d)) {
        const std::string part = sys + "/" + e->d_name;
        unsigned maj = 0, min = 0;
        if (e->d_name[0] != '.' && ::access((part + "/partition").c_str(), F_OK) == 0 &&
            std::sscanf(ReadLine(part + "/dev").c_str(), "%u:%u", &maj, &min) == 2)
          v.devices.push_back(makedev(maj, min));
      }
      ::closedir(d);
    }
    for (auto& l : ListLoopDevices()) {
      if (RealPath(l.backing_file) == v.real_path) v.devices.push_back(l.rdev);
      // A loop device over a disk image: another loop device over the same
      // file starting inside this one's range is one of its partitions.
      if (v.is_loop && l.rdev != st.st_rdev &&
          RealPath(l.backing_file) == RealPath(v.loop.backing_file) && l.offset >= v.loop.offset &&
          l.offset < v.loop.offset + v.size)
        v.devices.push_back(l.rdev);
    }
  } else if (S_ISREG(st.st_mode)) {
    v.size = static_cast<uint64_t>(st.st_size);
    for (auto& l : ListLoopDevices())
      if (RealPath(l.backing_file) == v.real_path) v.devices.push_back(l.rdev);
  } else {
    return Status::InvalidArgument(path + ": not a block device or regular file");
  }
  *out = std::move(v);
  return Status::OK();
}

std::vector<MountEntry> MountsOnVolume(const VolumeIdentity& v) {
  std::vector<MountEntry> out;
  std::set<dev_t> seen;
  for (auto& m : ReadMountTable()) {
    if (std::find(v.devices.begin(), v.devices.end(), m.dev) == v.devices.end()) continue;
    if (!seen.insert(m.dev).second) continue;
    out.push_back(m);
  }
  return out;
}

bool PathOnVolumes(const std::string& path, bool recursive, const std::vector<VolumeIdentity>& vs) {
  std::set<dev_t> devs;
  std::string rp = RealPath(path);
  for (const auto& v : vs) {
    devs.insert(v.devices.begin(), v.devices.end());
    if (!v.is_block && v.real_path == rp) return true;  // the image file itself
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return false;
  if (devs.count(st.st_dev)) return true;
  if (S_ISBLK(st.st_mode) && devs.count(st.st_rdev)) return true;  // the device node itself
  if (!recursive) return false;
  std::string prefix = rp == "/" ? "/" : rp + "/";
  for (auto& m : ReadMountTable())
    if (devs.count(m.dev) && m.mount_point.rfind(prefix, 0) == 0) return true;
  return false;
}

}  // namespace gnomon::vss
