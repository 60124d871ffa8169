#include "engine/disk_restore.h"

#include <fcntl.h>
#include <libfdisk/libfdisk.h>
#include <linux/fs.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>

#include "base/random.h"
#include "engine/restore_target.h"
#include "engine/source_volume.h"

extern char** environ;

namespace gnomon {

namespace {

constexpr uint64_t kMiB = 1 << 20;

// Sectors a GPT keeps at the disk's end: the backup entries and header.
uint64_t GptTailBytes(const DiskLayout& d) {
  if (d.label != "gpt") return 0;
  const uint64_t entries = (uint64_t{d.table_length} * 128 + d.sector_size - 1) / d.sector_size;
  return (entries + 1) * d.sector_size;
}

// The partition that ends last; with_extended: an extended container
// counts (its end is in the table), else only partitions that hold data.
const DiskPartition* LastPartition(const DiskLayout& d, bool with_extended) {
  const DiskPartition* last = nullptr;
  for (const auto& p : d.partitions)
    if ((with_extended || p.kind != "extended") &&
        (!last || p.start + p.size > last->start + last->size))
      last = &p;
  return last;
}

bool IsExt(const std::string& fs) { return fs == "ext2" || fs == "ext3" || fs == "ext4"; }

std::string Bytes(uint64_t n) {
  return std::to_string(n) + " bytes (" + std::to_string(n / kMiB) + " MiB)";
}

}  // namespace

namespace {

// A new random GUID in the form GPT tools print (version 4, upper case).
std::string NewGuid() {
  std::string h = RandomHexId(16);
  h[12] = '4';
  h[16] = "89ab"[std::stoi(h.substr(16, 1), nullptr, 16) & 3];
  for (char& c : h) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) +
         "-" + h.substr(20);
}

// Resizes `last` (a primary ext2/3/4 partition) to end at the target's last
// whole MiB before a GPT's backup (on DOS, within 2^32 sectors). A grow
// never makes it smaller: on a target where it cannot grow it stays as it is.
Status Resize(const DiskLayout& disk, const DiskPartition* last, uint64_t target_size, bool grow,
              DiskPlan* plan) {
  const char* flag = grow ? "--grow" : "--shrink";
  if (!last || last->kind != "primary" || !IsExt(last->fs_type))
    return Status::InvalidArgument(
        std::string(flag) + " resizes the last partition and its ext2/3/4 filesystem; partition " +
        (last ? std::to_string(last->number) + " is " +
                    (last->kind != "primary"
                         ? last->kind
                         : "'" +
                               (last->fs_type.empty() ? std::string("no known filesystem")
                                                      : last->fs_type) +
                               "'")
              : std::string("none")));
  const uint64_t old_end = last->start + last->size;
  uint64_t usable = target_size > GptTailBytes(disk) ? target_size - GptTailBytes(disk) : 0;
  if (disk.label == "dos")
    usable = std::min<uint64_t>(usable, (uint64_t{1} << 32) * disk.sector_size);
  uint64_t new_end = usable / kMiB * kMiB;
  if (grow && new_end < old_end) new_end = usable / disk.sector_size * disk.sector_size;
  if (grow && new_end <= old_end) return Status::OK();  // nothing to gain
  if (new_end <= last->start)
    return Status::InvalidArgument("the target leaves no room for partition " +
                                   std::to_string(last->number));
  const size_t at = static_cast<size_t>(last - disk.partitions.data());
  plan->grown = static_cast<int>(at);
  plan->grown_from = last->size;
  plan->layout.partitions[at].size = new_end - last->start;
  plan->shrunk = new_end < old_end;
  return Status::OK();
}

void NewIds(DiskPlan* plan) {
  DiskLayout& d = plan->layout;
  const std::string old_disk = d.disk_id;
  d.disk_id = d.label == "gpt" ? NewGuid() : "0x" + RandomHexId(4);
  plan->new_ids.push_back({0, "disk id", old_disk, d.disk_id});
  for (auto& p : d.partitions) {
    if (d.label == "gpt") {
      const std::string old = p.uuid;
      p.uuid = NewGuid();
      plan->new_ids.push_back({p.number, "GUID (PARTUUID)", old, p.uuid});
    }
    if (IsExt(p.fs_type)) {
      std::string u = NewGuid();
      std::transform(u.begin(), u.end(), u.begin(), ::tolower);
      plan->new_ids.push_back({p.number, p.fs_type + " UUID", p.fs_uuid, u});
      p.fs_uuid = u;
    } else if (p.fs_type == "vfat") {
      std::string serial = RandomHexId(4);
      std::transform(serial.begin(), serial.end(), serial.begin(), ::toupper);
      serial = serial.substr(0, 4) + "-" + serial.substr(4);
      plan->new_ids.push_back({p.number, "vfat serial (UUID)", p.fs_uuid, serial});
      p.fs_uuid = serial;
    }
  }
}

}  // namespace

Status PlanDisk(const DiskLayout& disk, uint64_t target_size, const DiskChoices& c, DiskPlan* out) {
  if (c.grow && c.shrink) return Status::InvalidArgument("--grow and --shrink exclude each other");
  DiskPlan plan;
  plan.layout = disk;
  plan.target_size = target_size;
  const DiskPartition* outer = LastPartition(disk, true);
  const DiskPartition* last = LastPartition(disk, false);
  const uint64_t end = outer ? outer->start + outer->size : disk.sector_size;
  plan.min_size = end + GptTailBytes(disk);
  const bool shrinkable = last && last == outer && last->kind == "primary" && IsExt(last->fs_type);
  if (shrinkable) {
    // What the filesystem uses, with room for its metadata and journal
    // growing back; resize2fs has the last word.
    const uint64_t need = c.last_used + c.last_used / 20 + 16 * kMiB;
    plan.shrink_min =
        std::min(plan.min_size, (last->start + need + kMiB - 1) / kMiB * kMiB + GptTailBytes(disk));
  }
  if (target_size % disk.sector_size)
    return Status::InvalidArgument("the target's size is not a multiple of the disk's " +
                                   std::to_string(disk.sector_size) + "-byte sectors");
  if (target_size < plan.min_size && !c.shrink)
    return Status::InvalidArgument(
        "the target holds " + Bytes(target_size) + "; the disk in the backup is " +
        Bytes(disk.size) + " and its partitions need at least " + Bytes(plan.min_size) +
        (shrinkable ? "; with --shrink about " + Bytes(plan.shrink_min) : std::string()));
  // --shrink only shrinks when the target is smaller than the layout.
  if (c.shrink && target_size < plan.min_size) {
    GNOMON_RETURN_IF_ERROR(Resize(disk, last == outer ? last : outer, target_size, false, &plan));
    if (plan.layout.partitions[static_cast<size_t>(plan.grown)].size < c.last_used)
      return Status::InvalidArgument("the target holds " + Bytes(target_size) +
                                     ", too little for the " + Bytes(c.last_used) + " partition " +
                                     std::to_string(last->number) + " uses; about " +
                                     Bytes(plan.shrink_min) + " would do");
  }
  if (c.grow) GNOMON_RETURN_IF_ERROR(Resize(disk, last, target_size, true, &plan));
  if (c.new_ids) NewIds(&plan);
  plan.layout.size = target_size;
  plan.rewrite_table =
      plan.grown >= 0 || c.new_ids || (disk.label == "gpt" && target_size != disk.size);
  const uint64_t keep_end =
      plan.grown >= 0 ? disk.partitions[static_cast<size_t>(plan.grown)].start : end;
  // A table laid out anew is not copied first: until it is written the
  // target has none (the old one may not fit it), only the boot code.
  const uint64_t table_end =
      disk.label == "gpt"
          ? (2 + (uint64_t{disk.table_length} * 128 + disk.sector_size - 1) / disk.sector_size) *
                disk.sector_size
          : 512;
  for (const auto& g : disk.Gaps()) {
    // Past the last partition a GPT keeps its backup; it is laid out anew.
    if (plan.rewrite_table && g.offset >= keep_end) continue;
    if (g.offset >= target_size) continue;
    uint64_t a = g.offset, b = std::min(g.offset + g.length, target_size);
    if (plan.rewrite_table && a < table_end && b > 440) {
      if (a < 440) plan.gaps.push_back({a, 440 - a});
      a = std::max(a, table_end);
    }
    if (a < b) plan.gaps.push_back({a, b - a});
  }
  *out = std::move(plan);
  return Status::OK();
}

std::string PartitionScript(const DiskLayout& d) {
  const uint64_t ss = d.sector_size;
  std::string s = "label: " + d.label + "\nlabel-id: " + d.disk_id + "\nunit: sectors\n";
  s += "sector-size: " + std::to_string(ss) + "\n";
  if (d.label == "gpt") {
    s += "table-length: " + std::to_string(d.table_length) + "\n";
    s += "first-lba: " + std::to_string(d.first_lba) + "\n";
  }
  s += "\n";
  for (const auto& p : d.partitions) {
    s += "p" + std::to_string(p.number) + " : start=" + std::to_string(p.start / ss) +
         ", size=" + std::to_string(p.size / ss) + ", type=" + p.type;
    if (d.label == "gpt") {
      s += ", uuid=" + p.uuid;
      if (!p.name.empty()) s += ", name=\"" + p.name + "\"";
      if (!p.attrs.empty()) s += ", attrs=\"" + p.attrs + "\"";
    } else if (p.bootable) {
      s += ", bootable";
    }
    s += "\n";
  }
  return s;
}

nlohmann::json DiskPlanJson(const BackupRecord& rec, const DiskPlan& plan,
                            const std::string& target) {
  using nlohmann::json;
  const DiskLayout& d = plan.layout;
  json gaps = json::array();
  for (const auto& g : plan.gaps) gaps.push_back({{"offset", g.offset}, {"length", g.length}});
  json writes = json::array();
  writes.push_back({{"what", "boot code, partition table and the bytes between partitions"},
                    {"volume", rec.volumes[static_cast<size_t>(d.gaps_volume)].name},
                    {"ranges", gaps}});
  for (size_t i = 0; i < d.partitions.size(); ++i) {
    const DiskPartition& p = d.partitions[i];
    if (p.volume < 0) continue;
    const VolumeRecord& v = rec.volumes[static_cast<size_t>(p.volume)];
    writes.push_back({{"what", "partition " + std::to_string(p.number)},
                      {"volume", v.name},
                      {"offset", p.start},
                      {"length", v.size},
                      {"filesystem", p.fs_type},
                      {"fs_uuid", p.fs_uuid}});
  }
  json j{{"backup", rec.id},
         {"target", target},
         {"target_size", plan.target_size},
         {"disk_size", rec.disk.size},
         {"min_size", plan.min_size},
         {"label", d.label},
         {"disk_id", d.disk_id},
         {"table", plan.rewrite_table ? "laid out for the target" : "copied as it was"},
         {"writes", writes},
         {"partition_table", PartitionScript(d)}};
  j["shrink_min_size"] = plan.shrink_min;
  if (plan.grown >= 0) {
    const DiskPartition& p = d.partitions[static_cast<size_t>(plan.grown)];
    j[plan.shrunk ? "shrink" : "grow"] = {{"partition", p.number},
                                          {"from", plan.grown_from},
                                          {"to", p.size},
                                          {"filesystem", p.fs_type}};
  }
  if (!plan.new_ids.empty()) {
    json ids = json::array();
    for (const auto& c : plan.new_ids)
      ids.push_back({{"partition", c.partition}, {"what", c.what}, {"from", c.from}, {"to", c.to}});
    j["new_ids"] = ids;
  }
  return j;
}

std::string DescribeDiskPlan(const nlohmann::json& j) {
  auto mib = [](uint64_t n) {
    char b[64];
    std::snprintf(b, sizeof b, "%.1f MiB", static_cast<double>(n) / kMiB);
    return std::string(b);
  };
  std::string s = "restore of disk backup " + j["backup"].get<std::string>() + " onto " +
                  j["target"].get<std::string>() + " (" + mib(j["target_size"].get<uint64_t>()) +
                  "; the backed-up disk was " + mib(j["disk_size"].get<uint64_t>()) +
                  ", at least " + mib(j["min_size"].get<uint64_t>()) + " needed)\n";
  for (const auto& w : j["writes"]) {
    if (w.contains("ranges")) {
      s += "  " + w["what"].get<std::string>() + ", from volume " + w["volume"].get<std::string>() +
           ":";
      for (const auto& r : w["ranges"])
        s +=
            " [" + mib(r["offset"].get<uint64_t>()) + " +" + mib(r["length"].get<uint64_t>()) + ")";
      s += "\n";
    } else {
      s += "  " + w["what"].get<std::string>() + " at " + mib(w["offset"].get<uint64_t>()) + ", " +
           mib(w["length"].get<uint64_t>()) + ", from volume " + w["volume"].get<std::string>() +
           (w["filesystem"].get<std::string>().empty()
                ? std::string()
                : " (" + w["filesystem"].get<std::string>() + " " +
                      w["fs_uuid"].get<std::string>() + ")") +
           "\n";
    }
  }
  s += "  partition table (" + j["label"].get<std::string>() + ", id " +
       j["disk_id"].get<std::string>() + "): " + j["table"].get<std::string>() + "\n";
  for (const char* k : {"grow", "shrink"})
    if (j.contains(k))
      s += "  partition " + std::to_string(j[k]["partition"].get<uint32_t>()) + " and its " +
           j[k]["filesystem"].get<std::string>() + " filesystem " + k + " from " +
           mib(j[k]["from"].get<uint64_t>()) + " to " + mib(j[k]["to"].get<uint64_t>()) + "\n";
  if (j.contains("new_ids")) {
    s += "  new ids (boot files that name the old ones need editing: /etc/fstab, /etc/crypttab,\n"
         "  /boot/grub/grub.cfg, /etc/default/grub, the EFI system partition's grub.cfg, "
         "/etc/kernel/cmdline):\n";
    for (const auto& c : j["new_ids"])
      s += "    " +
           (c["partition"].get<uint32_t>()
                ? "partition " + std::to_string(c["partition"].get<uint32_t>()) + " "
                : std::string()) +
           c["what"].get<std::string>() + ": " + c["from"].get<std::string>() + " -> " +
           c["to"].get<std::string>() + "\n";
  }
  return s;
}

namespace {

// Runs a program of e2fsprogs on the target open at fd, which the child
// sees as descriptor 3 (its name is never looked up again). Returns its exit
// code, or -1 with *output saying why it did not run.
int RunOnTarget(const std::string& tool, std::vector<std::string> args, int fd,
                std::string* output) {
  // A rescue bundle's own programs first (tools/make-rescue.sh), then the
  // system's, never through PATH.
  std::vector<std::string> dirs = {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"};
  if (const char* rescue = std::getenv("GNOMON_RESCUE_DIR"); rescue && *rescue)
    dirs.insert(dirs.begin(), std::string(rescue) + "/bin/");
  std::string path;
  for (const auto& dir : dirs)
    if (::access((dir + tool).c_str(), X_OK) == 0) {
      path = dir + tool;
      break;
    }
  if (path.empty()) {
    *output = tool + " is not installed (Debian package e2fsprogs)";
    return -1;
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    *output = "pipe: " + std::string(std::strerror(errno));
    return -1;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, pipe_fds[1], 1);
  posix_spawn_file_actions_adddup2(&fa, pipe_fds[1], 2);
  posix_spawn_file_actions_adddup2(&fa, fd, 3);
  args.insert(args.begin(), path);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  // mtools checks a FAT's geometry against a floppy's unless told not to
  // (first, so that it wins over the caller's own setting).
  std::string skip = "MTOOLS_SKIP_CHECK=1";
  std::vector<char*> envp = {skip.data()};
  for (char** e = environ; e && *e; ++e) envp.push_back(*e);
  envp.push_back(nullptr);
  const int rc = posix_spawn(&pid, path.c_str(), &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(pipe_fds[1]);
  if (rc != 0) {
    ::close(pipe_fds[0]);
    *output = "cannot run " + path + ": " + std::strerror(rc);
    return -1;
  }
  char buf[4096];
  for (ssize_t n; (n = ::read(pipe_fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR);)
    if (n > 0 && output->size() < 65536) output->append(buf, static_cast<size_t>(n));
  ::close(pipe_fds[0]);
  // One line for an error message: the tool's lines joined by "; ".
  std::string line;
  for (char c : *output)
    if (c != '\n')
      line += c;
    else if (!line.empty() && line.back() != ' ')
      line += "; ";
  *output = line;
  int st = 0;
  for (;;) {
    if (::waitpid(pid, &st, 0) == pid) break;
    if (errno != EINTR) {
      *output += "waiting for " + path + ": " + std::strerror(errno);
      return -1;  // its outcome is unknown: never taken for success
    }
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

struct FdiskUnref {
  void operator()(fdisk_context* c) const { fdisk_unref_context(c); }
  void operator()(fdisk_script* s) const { fdisk_unref_script(s); }
};

// Lays out the table with libfdisk on the target open at fd, keeping the
// boot code in the first 440 bytes that the gaps volume restored.
Status WriteTable(int fd, const std::string& name, const DiskLayout& layout) {
  uint8_t boot[440];
  if (::pread(fd, boot, sizeof boot, 0) != static_cast<ssize_t>(sizeof boot))
    return Status::FromErrno("reading the boot code back from " + name, errno);
  std::unique_ptr<fdisk_context, FdiskUnref> cxt(fdisk_new_context());
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (!cxt || fdisk_assign_device(cxt.get(), path.c_str(), 0) != 0)
    return Status::IOError(name + ": libfdisk cannot open it to write the partition table");
  std::unique_ptr<fdisk_script, FdiskUnref> dp(fdisk_new_script(cxt.get()));
  const std::string text = PartitionScript(layout);
  FILE* f = fmemopen(const_cast<char*>(text.data()), text.size(), "r");
  if (!dp || !f) {
    if (f) fclose(f);
    return Status::IOError("out of memory");
  }
  const int read_rc = fdisk_script_read_file(dp.get(), f);
  fclose(f);
  if (read_rc != 0)
    return Status::Corruption(name + ": libfdisk rejects the partition table of the backup");
  if (fdisk_apply_script(cxt.get(), dp.get()) != 0 || fdisk_write_disklabel(cxt.get()) != 0)
    return Status::IOError(name + ": libfdisk could not lay out the partition table");
  if (fdisk_deassign_device(cxt.get(), 0) != 0)
    return Status::IOError(name + ": syncing the partition table failed");
  if (::pwrite(fd, boot, sizeof boot, 0) != static_cast<ssize_t>(sizeof boot))
    return Status::FromErrno("writing the boot code to " + name, errno);
  return Status::OK();
}

// e2fsck, then resize2fs to the partition's new size (larger or smaller),
// on the filesystem at `offset` of fd. resize2fs sets a regular file's size
// to the filesystem's, whatever the offset, so a file is only ever handed
// to it with offset 0.
Status ResizeFilesystem(int fd, uint64_t offset, const std::string& name, const DiskPartition& p) {
  const std::string dev = "/proc/self/fd/3" + (offset ? "?offset=" + std::to_string(offset) : "");
  std::string out;
  int rc = RunOnTarget("e2fsck", {"-f", "-y", dev}, fd, &out);
  if (rc < 0 || rc >= 4)
    return Status::IOError(name + ": e2fsck of partition " + std::to_string(p.number) +
                           " before resizing it failed (exit " + std::to_string(rc) + "): " + out);
  out.clear();
  rc = RunOnTarget("resize2fs", {dev, std::to_string(p.size / 1024) + "K"}, fd, &out);
  if (rc != 0)
    return Status::IOError(name + ": resize2fs of partition " + std::to_string(p.number) +
                           " failed (exit " + std::to_string(rc) + "): " + out);
  return Status::OK();
}

// Copies the first n bytes of `from` (shorter: the rest is zeros) to the
// target at offset `at`. Into a file (new, so zero where not written) only
// the data, in the kernel, shared where the filesystem can; onto a device
// every byte, holes as zeros (the device holds old data there), through
// the target, which holds back its head and tail.
Status CopyInto(int from, RestoreTarget* to, uint64_t at, uint64_t n, const std::string& name) {
  auto fail = [&](int e) {
    return Status::FromErrno("copying the resized filesystem into " + name, e);
  };
  if (to->is_block()) {
    std::vector<uint8_t> buf(4 * kMiB);
    for (uint64_t off = 0; off < n;) {
      const size_t len = static_cast<size_t>(std::min<uint64_t>(buf.size(), n - off));
      size_t got = 0;
      while (got < len) {
        const ssize_t r = ::pread(from, buf.data() + got, len - got, static_cast<off_t>(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return fail(errno);
        if (r == 0) break;  // past the scratch file's end: zeros
        got += static_cast<size_t>(r);
      }
      std::fill(buf.begin() + static_cast<std::ptrdiff_t>(got),
                buf.begin() + static_cast<std::ptrdiff_t>(len), 0);
      GNOMON_RETURN_IF_ERROR(to->WriteAt(at + off, buf.data(), len));
      off += len;
    }
    return Status::OK();
  }
  const off_t end = std::min<off_t>(static_cast<off_t>(n), ::lseek(from, 0, SEEK_END));
  for (off_t data = ::lseek(from, 0, SEEK_DATA); data >= 0 && data < end;) {
    off_t hole = ::lseek(from, data, SEEK_HOLE);
    if (hole < 0 || hole > end) hole = end;
    loff_t in = data, out = static_cast<loff_t>(at) + data;
    for (size_t left = static_cast<size_t>(hole - data); left > 0;) {
      const ssize_t k = ::copy_file_range(from, &in, to->fd(), &out, left, 0);
      if (k <= 0) return fail(k < 0 ? errno : EIO);
      left -= static_cast<size_t>(k);
    }
    data = ::lseek(from, hole, SEEK_DATA);
  }
  return Status::OK();
}

// Gives a restored filesystem the id --new-ids chose: tune2fs for ext2/3/4,
// mlabel for FAT.
Status SetFilesystemId(int fd, const DiskPartition& p, const std::string& name) {
  const std::string at = std::to_string(p.start);
  std::string out;
  int rc;
  if (p.fs_type == "vfat") {
    std::string serial = p.fs_uuid;
    serial.erase(std::remove(serial.begin(), serial.end(), '-'), serial.end());
    rc = RunOnTarget("mlabel", {"-i", "/proc/self/fd/3@@" + at, "-N", serial, "::"}, fd, &out);
  } else {
    // tune2fs -U on a metadata_csum filesystem wants it freshly checked; a
    // snapshot of a mounted one never is.
    const std::string dev = "/proc/self/fd/3?offset=" + at;
    rc = RunOnTarget("e2fsck", {"-f", "-y", dev}, fd, &out);
    if (rc >= 0 && rc < 4) {
      out.clear();
      rc = RunOnTarget("tune2fs", {"-U", p.fs_uuid, dev}, fd, &out);
    }
  }
  if (rc != 0)
    return Status::IOError(name + ": setting partition " + std::to_string(p.number) +
                           "'s new filesystem id failed (exit " + std::to_string(rc) + "): " + out);
  return Status::OK();
}

// The size of the disk the restore writes: a device's, an existing file's
// (replaced with --overwrite), or the backed-up disk's for a new file.
Status TargetSize(const std::string& target, uint64_t disk_size, uint64_t* out) {
  struct stat st;
  if (::stat(target.c_str(), &st) != 0) {
    if (errno != ENOENT) return Status::FromErrno(target, errno);
    *out = disk_size;
    return Status::OK();
  }
  if (S_ISREG(st.st_mode)) {
    *out = static_cast<uint64_t>(st.st_size);
    return Status::OK();
  }
  return VolumeSize(target, out);
}

}  // namespace

namespace {

// Where a filesystem is resized before it is copied in: beside a file
// target (so the copy can share extents), else in $TMPDIR or /var/tmp.
std::string ScratchDir(const std::string& target, bool device) {
  if (!device) return std::filesystem::absolute(target).parent_path();
  const char* t = std::getenv("TMPDIR");
  return t && *t ? t : "/var/tmp";
}

// A device's logical sector size must be the disk's: a GPT of 512-byte
// sectors on a 4Kn disk would be read at the wrong places.
Status CheckSectorSize(const std::string& target, uint32_t want) {
  struct stat st;
  if (::stat(target.c_str(), &st) != 0 || !S_ISBLK(st.st_mode)) return Status::OK();
  const int fd = ::open(target.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("opening " + target, errno);
  int ss = 0;
  const int rc = ::ioctl(fd, BLKSSZGET, &ss);
  ::close(fd);
  if (rc == 0 && ss > 0 && static_cast<uint32_t>(ss) != want)
    return Status::InvalidArgument(target + " has " + std::to_string(ss) +
                                   "-byte sectors, the disk in the backup " + std::to_string(want) +
                                   "-byte ones; its partition table would not fit it");
  return Status::OK();
}

// The resized partition's filesystem, restored into an unnamed scratch
// file and resized there, before a byte of the target is written: a resize
// that fails (a shrink too far) costs the target nothing.
Status ResizeInScratch(Repository* repo, const RestoreOptions& opt, const VolumeRecord& vol,
                       const VolumeIndex& vi, const ChunkIndex& index, const DiskPartition& p,
                       uint64_t used, bool device, RestoreTarget* scratch, uint64_t* written) {
  const std::string dir = ScratchDir(opt.target, device);
  struct statvfs fs;
  if (::statvfs(dir.c_str(), &fs) == 0 && uint64_t{fs.f_bavail} * fs.f_frsize < used + used / 10)
    return Status::InvalidArgument("resizing partition " + std::to_string(p.number) +
                                   " needs about " + Bytes(used + used / 10) + " free in " + dir +
                                   " (set TMPDIR to a directory with room), which has " +
                                   Bytes(uint64_t{fs.f_bavail} * fs.f_frsize));
  GNOMON_RETURN_IF_ERROR(scratch->OpenScratch(dir, vol.size));
  GNOMON_RETURN_IF_ERROR(RestoreVolumeInto(repo, opt, vol, vi, index, scratch, 0, nullptr, written)
                             .WithContext("partition " + std::to_string(p.number)));
  return ResizeFilesystem(scratch->fd(), 0, opt.target, p);
}

// After Commit on a device: grow in place, set new ids, have the kernel
// read the new table. e2fsck, resize2fs and tune2fs open the device O_EXCL
// themselves, which our own exclusive hold would refuse, so it ends here,
// once everything is on the disk; a descriptor opened before it ends (the
// same device, whatever its name means by then) is what they are handed,
// and a flock on it keeps udev from probing or mounting it meanwhile.
Status FinishDevice(RestoreTarget* target, const std::string& name,
                    const std::function<Status(int fd)>& tools, std::vector<std::string>* notes) {
  const int fd =
      ::open(("/proc/self/fd/" + std::to_string(target->fd())).c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("reopening " + name, errno);
  target->Close();
  ::flock(fd, LOCK_EX);
  Status st = tools(fd);
  if (st.ok() && ::fsync(fd) != 0) st = Status::FromErrno("syncing " + name, errno);
  if (st.ok() && ::ioctl(fd, BLKRRPART) != 0 && errno != EINVAL)
    notes->push_back("the kernel did not re-read " + name + "'s partition table (" +
                     std::strerror(errno) + "): reboot or run 'partprobe " + name + "'");
  ::close(fd);
  return st;
}

}  // namespace

Status RunDiskRestore(Repository* repo, const RestoreOptions& opt, const BackupRecord& rec,
                      RestoreResult* out) {
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t target_size = 0;
  GNOMON_RETURN_IF_ERROR(TargetSize(opt.target, rec.disk.size, &target_size));
  GNOMON_RETURN_IF_ERROR(CheckSectorSize(opt.target, rec.disk.sector_size));
  DiskChoices choices{opt.grow, opt.shrink, opt.new_ids, 0};
  for (const auto& p : rec.disk.partitions)  // the last one's used bytes
    if (p.volume >= 0) {
      const VolumeStats& st = rec.volumes[static_cast<size_t>(p.volume)].stats;
      choices.last_used = st.bytes - std::min(st.bytes, st.unused_bytes);
    }
  DiskPlan plan;
  GNOMON_RETURN_IF_ERROR(PlanDisk(rec.disk, target_size, choices, &plan).WithContext(opt.target));
  out->backup_id = rec.id;
  out->volume = "disk";
  out->plan = DiskPlanJson(rec, plan, opt.target);
  if (opt.plan) return Status::OK();
  GNOMON_RETURN_IF_ERROR(RestoreTarget::Check(opt.target, repo->path()));

  // Every volume and every chunk it names is known before a byte is written.
  ChunkIndex index;
  IndexHealth health;
  GNOMON_RETURN_IF_ERROR(repo->LoadChunkIndex(&index, &health, IndexUse::kRead));
  std::vector<VolumeIndex> vis(rec.volumes.size());
  for (size_t i = 0; i < rec.volumes.size(); ++i)
    GNOMON_RETURN_IF_ERROR(LoadVolumeForRestore(repo, rec.volumes[i], index, health, &vis[i]));

  struct stat st;
  const bool device = ::stat(opt.target.c_str(), &st) == 0 && S_ISBLK(st.st_mode);
  const DiskPartition* resized =
      plan.grown >= 0 ? &plan.layout.partitions[static_cast<size_t>(plan.grown)] : nullptr;
  // A device grows in place, after the table; a file target, or any
  // shrink, resizes the filesystem alone in a scratch file first.
  const bool in_place = resized && device && !plan.shrunk;
  RestoreTarget scratch;
  uint64_t written = 0;
  if (resized && !in_place) {
    const auto v = static_cast<size_t>(rec.disk.partitions[static_cast<size_t>(plan.grown)].volume);
    GNOMON_RETURN_IF_ERROR(ResizeInScratch(repo, opt, rec.volumes[v], vis[v], index, *resized,
                                           choices.last_used, device, &scratch, &written));
  }

  RestoreTarget target;
  GNOMON_RETURN_IF_ERROR(
      target.Open(opt.target, target_size, opt.overwrite, repo->path(), &out->cleaned));
  const auto gv = static_cast<size_t>(rec.disk.gaps_volume);
  GNOMON_RETURN_IF_ERROR(RestoreVolumeInto(repo, opt, rec.volumes[gv], vis[gv], index, &target, 0,
                                           &plan.gaps, &written));
  // One partition after another, each through the parallel pipeline with
  // every thread: the pipeline already keeps the cores and the target busy,
  // and one partition at a time keeps a disk's writes sequential (two at
  // once would seek between them on a spinning disk, for no CPU gained).
  for (const auto& p : rec.disk.partitions) {
    if (p.volume < 0) continue;
    const auto v = static_cast<size_t>(p.volume);
    if (resized && resized->number == p.number && !in_place) {
      GNOMON_RETURN_IF_ERROR(CopyInto(scratch.fd(), &target, p.start, resized->size, opt.target));
      continue;
    }
    GNOMON_RETURN_IF_ERROR(RestoreVolumeInto(repo, opt, rec.volumes[v], vis[v], index, &target,
                                             p.start, nullptr, &written)
                               .WithContext("partition " + std::to_string(p.number)));
  }
  // After the table: grow in place, set new filesystem ids.
  auto tools = [&](int fd) -> Status {
    if (in_place)
      GNOMON_RETURN_IF_ERROR(ResizeFilesystem(fd, resized->start, opt.target, *resized));
    if (opt.new_ids)
      for (const auto& p : plan.layout.partitions)
        if (p.fs_type == "vfat" || IsExt(p.fs_type))
          GNOMON_RETURN_IF_ERROR(SetFilesystemId(fd, p, opt.target));
    return Status::OK();
  };
  GNOMON_RETURN_IF_ERROR(target.Commit([&](int fd) -> Status {
    if (plan.rewrite_table) GNOMON_RETURN_IF_ERROR(WriteTable(fd, opt.target, plan.layout));
    // A file is finished before it is published; a device after Commit.
    return device ? Status::OK() : tools(fd);
  }));
  if (device) GNOMON_RETURN_IF_ERROR(FinishDevice(&target, opt.target, tools, &out->warnings));
  if (opt.progress) opt.progress(Progress{"restore", opt.target, target_size, target_size});
  out->bytes = target_size;
  out->bytes_written = written;
  out->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return Status::OK();
}

}  // namespace gnomon
