#include "engine/disk_probe.h"

#include <blkid/blkid.h>
#include <libfdisk/libfdisk.h>

#include <algorithm>
#include <memory>

namespace gnomon {

namespace {

struct FdiskDeleter {
  void operator()(fdisk_context* c) const { fdisk_unref_context(c); }
  void operator()(fdisk_table* t) const { fdisk_unref_table(t); }
  void operator()(fdisk_iter* i) const { fdisk_free_iter(i); }
};
struct BlkidDeleter {
  void operator()(blkid_struct_probe* p) const { blkid_free_probe(p); }
};
using Probe = std::unique_ptr<blkid_struct_probe, BlkidDeleter>;

std::string Str(const char* s) { return s ? s : ""; }

// The partition table type blkid sees, or "" when the bytes start with a
// filesystem (or hold nothing it knows).
std::string TableType(int fd, uint64_t size) {
  Probe fs(blkid_new_probe());
  if (!fs || blkid_probe_set_device(fs.get(), fd, 0, static_cast<blkid_loff_t>(size)) != 0)
    return "";
  blkid_probe_enable_superblocks(fs.get(), 1);
  blkid_probe_enable_partitions(fs.get(), 0);
  if (blkid_do_safeprobe(fs.get()) == 0) {
    const char* type = nullptr;
    // A protective MBR is not a filesystem; anything else found at 0 is.
    if (blkid_probe_lookup_value(fs.get(), "TYPE", &type, nullptr) == 0) return "";
  }
  Probe pt(blkid_new_probe());
  if (!pt || blkid_probe_set_device(pt.get(), fd, 0, static_cast<blkid_loff_t>(size)) != 0)
    return "";
  blkid_probe_enable_superblocks(pt.get(), 0);
  blkid_probe_enable_partitions(pt.get(), 1);
  if (blkid_do_safeprobe(pt.get()) != 0) return "";
  const char* type = nullptr;
  if (blkid_probe_lookup_value(pt.get(), "PTTYPE", &type, nullptr) != 0) return "";
  return Str(type);
}

void ReadPartition(fdisk_partition* pa, DiskLayout* d) {
  DiskPartition p;
  const uint64_t ss = d->sector_size;
  p.number = static_cast<uint32_t>(fdisk_partition_get_partno(pa)) + 1;
  p.start = static_cast<uint64_t>(fdisk_partition_get_start(pa)) * ss;
  p.size = static_cast<uint64_t>(fdisk_partition_get_size(pa)) * ss;
  fdisk_parttype* t = fdisk_partition_get_type(pa);
  if (d->label == "gpt") {
    p.type = Str(t ? fdisk_parttype_get_string(t) : nullptr);
    p.uuid = Str(fdisk_partition_get_uuid(pa));
    p.name = Str(fdisk_partition_get_name(pa));
    p.attrs = Str(fdisk_partition_get_attrs(pa));
  } else {
    char hex[8];
    std::snprintf(hex, sizeof hex, "%x", t ? fdisk_parttype_get_code(t) : 0);
    p.type = hex;
    p.bootable = fdisk_partition_is_bootable(pa) == 1;
    p.kind = fdisk_partition_is_container(pa) ? "extended"
             : fdisk_partition_is_nested(pa)  ? "logical"
                                              : "primary";
  }
  d->partitions.push_back(std::move(p));
}

}  // namespace

FsIdentity ProbeFilesystem(int fd, uint64_t offset, uint64_t size) {
  FsIdentity id;
  Probe pr(blkid_new_probe());
  if (!pr || blkid_probe_set_device(pr.get(), fd, static_cast<blkid_loff_t>(offset),
                                    static_cast<blkid_loff_t>(size)) != 0)
    return id;
  blkid_probe_enable_superblocks(pr.get(), 1);
  blkid_probe_set_superblocks_flags(pr.get(),
                                    BLKID_SUBLKS_LABEL | BLKID_SUBLKS_UUID | BLKID_SUBLKS_TYPE);
  blkid_probe_enable_partitions(pr.get(), 0);
  if (blkid_do_safeprobe(pr.get()) != 0) return id;
  auto get = [&](const char* k) {
    const char* v = nullptr;
    return blkid_probe_lookup_value(pr.get(), k, &v, nullptr) == 0 ? Str(v) : std::string();
  };
  id.type = get("TYPE");
  id.uuid = get("UUID");
  id.label = get("LABEL");
  return id;
}

Status ProbeDisk(int fd, const std::string& name, uint64_t size, bool* is_disk, DiskLayout* out) {
  *is_disk = false;
  const std::string pttype = TableType(fd, size);
  if (pttype != "gpt" && pttype != "dos") return Status::OK();
  auto fail = [&](const std::string& what) {
    return Status::Corruption(name + ": its " + pttype + " partition table cannot be read (" +
                              what + ")");
  };
  std::unique_ptr<fdisk_context, FdiskDeleter> cxt(fdisk_new_context());
  if (!cxt) return Status::IOError("out of memory");
  // libfdisk opens its own descriptor of the snapshot, read-only.
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (fdisk_assign_device(cxt.get(), path.c_str(), 1) != 0) return fail("libfdisk cannot open it");
  if (!fdisk_has_label(cxt.get())) return fail("libfdisk finds no table");
  DiskLayout d;
  d.label = fdisk_is_label(cxt.get(), GPT) ? "gpt" : fdisk_is_label(cxt.get(), DOS) ? "dos" : "";
  if (d.label != pttype) return fail("blkid and libfdisk disagree on its type");
  d.size = size;
  d.sector_size = static_cast<uint32_t>(fdisk_get_sector_size(cxt.get()));
  char* id = nullptr;
  if (fdisk_get_disklabel_id(cxt.get(), &id) == 0 && id) {
    d.disk_id = id;
    free(id);
  }
  if (d.label == "dos") {
    // libfdisk spells it 0xABCD1234; the format keeps lower case.
    std::transform(d.disk_id.begin(), d.disk_id.end(), d.disk_id.begin(), ::tolower);
  } else {
    d.table_length = static_cast<uint32_t>(fdisk_get_npartitions(cxt.get()));
    d.first_lba = static_cast<uint64_t>(fdisk_get_first_lba(cxt.get()));
  }
  fdisk_table* raw = nullptr;
  if (fdisk_get_partitions(cxt.get(), &raw) != 0) return fail("cannot list its partitions");
  std::unique_ptr<fdisk_table, FdiskDeleter> tb(raw);
  std::unique_ptr<fdisk_iter, FdiskDeleter> it(fdisk_new_iter(FDISK_ITER_FORWARD));
  fdisk_partition* pa = nullptr;
  while (fdisk_table_next_partition(tb.get(), it.get(), &pa) == 0)
    if (fdisk_partition_is_used(pa)) ReadPartition(pa, &d);
  std::sort(d.partitions.begin(), d.partitions.end(),
            [](const DiskPartition& a, const DiskPartition& b) { return a.start < b.start; });
  for (auto& p : d.partitions) {
    if (p.kind == "extended") continue;
    const FsIdentity fs = ProbeFilesystem(fd, p.start, p.size);
    p.fs_type = fs.type;
    p.fs_uuid = fs.uuid;
    p.fs_label = fs.label;
  }
  *out = std::move(d);
  *is_disk = true;
  return Status::OK();
}

std::string PartitionTypeName(const std::string& label, const std::string& type) {
  std::unique_ptr<fdisk_context, FdiskDeleter> cxt(fdisk_new_context());
  if (!cxt) return "";
  fdisk_label* lb = fdisk_get_label(cxt.get(), label.c_str());
  if (!lb) return "";
  fdisk_parttype* t = fdisk_label_get_parttype_from_string(lb, type.c_str());
  if (!t) return "";
  std::string name = Str(fdisk_parttype_get_name(t));
  const bool unknown = fdisk_parttype_is_unknown(t);
  fdisk_unref_parttype(t);
  return unknown ? "" : name;
}

}  // namespace gnomon
