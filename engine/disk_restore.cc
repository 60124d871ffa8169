#include "engine/disk_restore.h"

#include <fcntl.h>
#include <libfdisk/libfdisk.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <cstdio>
#include <memory>

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

std::string Bytes(uint64_t n) { return std::to_string(n) + " bytes (" + std::to_string(n / kMiB) + " MiB)"; }

}  // namespace

Status PlanDisk(const DiskLayout& disk, uint64_t target_size, bool grow, DiskPlan* out) {
  DiskPlan plan;
  plan.layout = disk;
  plan.target_size = target_size;
  const DiskPartition* outer = LastPartition(disk, true);
  const DiskPartition* last = LastPartition(disk, false);
  const uint64_t end = outer ? outer->start + outer->size : disk.sector_size;
  plan.min_size = end + GptTailBytes(disk);
  if (target_size < plan.min_size)
    return Status::InvalidArgument(
        "the target holds " + Bytes(target_size) + "; the disk in the backup is " +
        Bytes(disk.size) + " and its partitions need at least " + Bytes(plan.min_size));
  if (target_size % disk.sector_size)
    return Status::InvalidArgument("the target's size is not a multiple of the disk's " +
                                   std::to_string(disk.sector_size) + "-byte sectors");
  if (grow) {
    if (!last || last->kind != "primary" || !IsExt(last->fs_type))
      return Status::InvalidArgument(
          "--grow extends the last partition and its ext2/3/4 filesystem; partition " +
          (last ? std::to_string(last->number) + " is " +
                      (last->kind != "primary" ? last->kind
                                               : "'" + (last->fs_type.empty() ? std::string("no known filesystem") : last->fs_type) + "'")
                : std::string("none")));
    const uint64_t usable = target_size - GptTailBytes(disk);
    // End on a MiB boundary as partitioning tools do, unless that gains nothing.
    uint64_t new_end = usable / kMiB * kMiB;
    if (new_end <= end) new_end = usable / disk.sector_size * disk.sector_size;
    const size_t at = static_cast<size_t>(last - disk.partitions.data());
    plan.grown = static_cast<int>(at);
    plan.grown_from = last->size;
    plan.layout.partitions[at].size = new_end - last->start;
  }
  plan.layout.size = target_size;
  plan.rewrite_table = grow || (disk.label == "gpt" && target_size != disk.size);
  for (const auto& g : disk.Gaps()) {
    // Past the last partition a GPT keeps its backup; it is laid out anew.
    if (plan.rewrite_table && g.offset >= end) continue;
    if (g.offset >= target_size) continue;
    plan.gaps.push_back({g.offset, std::min(g.length, target_size - g.offset)});
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
  if (plan.grown >= 0) {
    const DiskPartition& p = d.partitions[static_cast<size_t>(plan.grown)];
    j["grow"] = {{"partition", p.number},
                 {"from", plan.grown_from},
                 {"to", p.size},
                 {"filesystem", p.fs_type}};
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
                  j["target"].get<std::string>() + " (" +
                  mib(j["target_size"].get<uint64_t>()) + "; the backed-up disk was " +
                  mib(j["disk_size"].get<uint64_t>()) + ", at least " +
                  mib(j["min_size"].get<uint64_t>()) + " needed)\n";
  for (const auto& w : j["writes"]) {
    if (w.contains("ranges")) {
      s += "  " + w["what"].get<std::string>() + ", from volume " + w["volume"].get<std::string>() +
           ":";
      for (const auto& r : w["ranges"])
        s += " [" + mib(r["offset"].get<uint64_t>()) + " +" + mib(r["length"].get<uint64_t>()) + ")";
      s += "\n";
    } else {
      s += "  " + w["what"].get<std::string>() + " at " + mib(w["offset"].get<uint64_t>()) + ", " +
           mib(w["length"].get<uint64_t>()) + ", from volume " + w["volume"].get<std::string>() +
           (w["filesystem"].get<std::string>().empty()
                ? std::string()
                : " (" + w["filesystem"].get<std::string>() + " " + w["fs_uuid"].get<std::string>() + ")") +
           "\n";
    }
  }
  s += "  partition table (" + j["label"].get<std::string>() + ", id " +
       j["disk_id"].get<std::string>() + "): " + j["table"].get<std::string>() + "\n";
  if (j.contains("grow"))
    s += "  then partition " + std::to_string(j["grow"]["partition"].get<uint32_t>()) + " and its " +
         j["grow"]["filesystem"].get<std::string>() + " filesystem grow from " +
         mib(j["grow"]["from"].get<uint64_t>()) + " to " + mib(j["grow"]["to"].get<uint64_t>()) +
         "\n";
  return s;
}

namespace {

// Runs a program of e2fsprogs on the target open at fd, which the child
// sees as descriptor 3 (its name is never looked up again). Returns its exit
// code, or -1 with *output saying why it did not run.
int RunOnTarget(const std::string& tool, std::vector<std::string> args, int fd,
                std::string* output) {
  std::string path;
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"})
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
  const int rc = posix_spawn(&pid, path.c_str(), &fa, nullptr, argv.data(), environ);
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
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
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

// e2fsck, then resize2fs to the partition's new size, on the filesystem at
// `offset` of fd. resize2fs sets a regular file's size to the filesystem's,
// whatever the offset, so a file is only ever handed to it with offset 0.
Status GrowFilesystem(int fd, uint64_t offset, const std::string& name, const DiskPartition& p) {
  const std::string dev = "/proc/self/fd/3" + (offset ? "?offset=" + std::to_string(offset) : "");
  std::string out;
  int rc = RunOnTarget("e2fsck", {"-f", "-y", dev}, fd, &out);
  if (rc < 0 || rc >= 4)
    return Status::IOError(name + ": e2fsck of partition " + std::to_string(p.number) +
                           " before growing it failed (exit " + std::to_string(rc) + "): " + out);
  out.clear();
  rc = RunOnTarget("resize2fs", {dev, std::to_string(p.size / 1024) + "K"}, fd, &out);
  if (rc != 0)
    return Status::IOError(name + ": resize2fs of partition " + std::to_string(p.number) +
                           " failed (exit " + std::to_string(rc) + "): " + out);
  return Status::OK();
}

// Copies the data of `from` (holes stay holes) to `to` at offset `at`;
// in the kernel, and shared rather than copied where the filesystem can.
Status CopyInto(int from, int to, uint64_t at, const std::string& name) {
  const off_t end = ::lseek(from, 0, SEEK_END);
  for (off_t data = ::lseek(from, 0, SEEK_DATA); data >= 0 && data < end;) {
    off_t hole = ::lseek(from, data, SEEK_HOLE);
    if (hole < 0) hole = end;
    loff_t in = data, out = static_cast<loff_t>(at) + data;
    for (size_t left = static_cast<size_t>(hole - data); left > 0;) {
      const ssize_t n = ::copy_file_range(from, &in, to, &out, left, 0);
      if (n <= 0) return Status::FromErrno("copying the grown filesystem into " + name, n < 0 ? errno : EIO);
      left -= static_cast<size_t>(n);
    }
    data = ::lseek(from, hole, SEEK_DATA);
  }
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

Status RunDiskRestore(Repository* repo, const RestoreOptions& opt, const BackupRecord& rec,
                      RestoreResult* out) {
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t target_size = 0;
  GNOMON_RETURN_IF_ERROR(TargetSize(opt.target, rec.disk.size, &target_size));
  DiskPlan plan;
  GNOMON_RETURN_IF_ERROR(
      PlanDisk(rec.disk, target_size, opt.grow, &plan).WithContext(opt.target));
  out->backup_id = rec.id;
  out->volume = "disk";
  out->plan = DiskPlanJson(rec, plan, opt.target);
  if (opt.plan) return Status::OK();

  // Every volume and every chunk it names is known before a byte is written.
  ChunkIndex index;
  IndexHealth health;
  GNOMON_RETURN_IF_ERROR(repo->LoadChunkIndex(&index, &health, IndexUse::kRead));
  std::vector<VolumeIndex> vis(rec.volumes.size());
  for (size_t i = 0; i < rec.volumes.size(); ++i)
    GNOMON_RETURN_IF_ERROR(LoadVolumeForRestore(repo, rec.volumes[i], index, health, &vis[i]));

  RestoreTarget target;
  GNOMON_RETURN_IF_ERROR(
      target.Open(opt.target, target_size, opt.overwrite, repo->path(), &out->cleaned));
  uint64_t written = 0;
  if (target.is_block() && target_size > 2 * RestoreTarget::kDeviceHeadBytes) {
    // A GPT's backup header at the device's end would make a half-restored
    // disk look whole: zeroed first, laid out last.
    std::vector<uint8_t> zeros(RestoreTarget::kDeviceHeadBytes, 0);
    GNOMON_RETURN_IF_ERROR(
        target.WriteAt(target_size - zeros.size(), zeros.data(), zeros.size()));
  }
  const auto gv = static_cast<size_t>(rec.disk.gaps_volume);
  GNOMON_RETURN_IF_ERROR(RestoreVolumeInto(repo, opt, rec.volumes[gv], vis[gv], index, &target, 0,
                                           &plan.gaps, &written));
  // One partition after another, each through the parallel pipeline.
  const DiskPartition* grown =
      plan.grown >= 0 ? &plan.layout.partitions[static_cast<size_t>(plan.grown)] : nullptr;
  for (const auto& p : rec.disk.partitions) {
    if (p.volume < 0) continue;
    const auto v = static_cast<size_t>(p.volume);
    const std::string what = "partition " + std::to_string(p.number);
    if (grown && grown->number == p.number && !target.is_block()) {
      // A file target: the filesystem grows alone in a scratch file beside
      // it, which is then copied in (see GrowFilesystem).
      RestoreTarget scratch;
      const std::string dir = std::filesystem::absolute(opt.target).parent_path();
      GNOMON_RETURN_IF_ERROR(scratch.OpenScratch(dir, grown->size));
      GNOMON_RETURN_IF_ERROR(RestoreVolumeInto(repo, opt, rec.volumes[v], vis[v], index, &scratch,
                                               0, nullptr, &written)
                                 .WithContext(what));
      GNOMON_RETURN_IF_ERROR(GrowFilesystem(scratch.fd(), 0, opt.target, *grown));
      GNOMON_RETURN_IF_ERROR(CopyInto(scratch.fd(), target.fd(), p.start, opt.target));
      continue;
    }
    GNOMON_RETURN_IF_ERROR(RestoreVolumeInto(repo, opt, rec.volumes[v], vis[v], index, &target,
                                             p.start, nullptr, &written)
                               .WithContext(what));
  }
  GNOMON_RETURN_IF_ERROR(target.Commit([&](int fd) -> Status {
    if (!plan.rewrite_table) return Status::OK();
    GNOMON_RETURN_IF_ERROR(WriteTable(fd, opt.target, plan.layout));
    if (!grown || !target.is_block()) return Status::OK();
    // A device is grown in place, after everything else is on it.
    if (::fsync(fd) != 0) return Status::FromErrno("syncing " + opt.target, errno);
    return GrowFilesystem(fd, grown->start, opt.target, *grown);
  }));
  if (opt.progress) opt.progress(Progress{"restore", opt.target, target_size, target_size});
  out->bytes = target_size;
  out->bytes_written = written;
  out->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return Status::OK();
}

}  // namespace gnomon
