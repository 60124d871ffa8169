// Restoring a whole disk backup (FORMAT.md §7b): the bytes outside the
// partitions (boot code, the post-MBR gap, the partition table), then every
// partition at its place, then, when the target's size differs or the last
// partition grows, a partition table laid out for the target by libfdisk
// with the same disk and partition ids, and last a grown ext2/3/4
// filesystem (e2fsck, resize2fs).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/restore_job.h"
#include "format/backup_record.h"
#include "format/disk_layout.h"

namespace gnomon {

// What the user asked of a disk restore, and what the backup knows.
struct DiskChoices {
  bool grow = false;     // extend the last partition to the target's end
  bool shrink = false;   // fit a smaller target by shrinking the last partition
  bool new_ids = false;  // new disk, partition and filesystem ids
  // Bytes the last partition's filesystem uses (its volume's bytes less
  // its unused bytes): what a shrink must keep.
  uint64_t last_used = 0;
};

// A filesystem id the restore changes (--new-ids).
struct IdChange {
  uint32_t partition = 0;  // 0: the disk
  std::string what, from, to;
};

// What a disk restore writes onto a target of a given size. Pure but for
// the random new ids: tested without devices (tests/disk_test.cc).
struct DiskPlan {
  DiskLayout layout;           // as it will be on the target
  uint64_t target_size = 0;    // bytes
  uint64_t min_size = 0;       // the smallest target the layout fits
  bool rewrite_table = false;  // lay the table out anew (GPT on another size, or a grown partition)
  int grown = -1;              // position in layout.partitions of the grown one, or -1
  uint64_t grown_from = 0;     // its size in the backup
  bool shrunk = false;         // the resized one (`grown`) gets smaller
  uint64_t shrink_min = 0;     // the smallest target --shrink could use (an estimate)
  std::vector<IdChange> new_ids;
  // Ranges of the gaps volume written (the old GPT backup at the old end is
  // not, when the table is laid out anew).
  std::vector<DiskLayout::Range> gaps;
};

// Fails (InvalidArgument, naming both sizes and the minimum) when the
// target is too small (without shrink, or even with it), or grow or shrink
// cannot apply (the last partition is logical or holds no ext2/3/4
// filesystem).
Status PlanDisk(const DiskLayout& disk, uint64_t target_size, const DiskChoices& c, DiskPlan* out);

// The libfdisk (sfdisk) script that creates `layout`'s table on a disk of
// any size: the last LBA is left to libfdisk, so a GPT's backup header goes
// to the target's end.
std::string PartitionScript(const DiskLayout& layout);

// The plan as JSON and as the lines a person reads before a disk is wiped.
nlohmann::json DiskPlanJson(const BackupRecord& rec, const DiskPlan& plan,
                            const std::string& target);
std::string DescribeDiskPlan(const nlohmann::json& plan);

// The whole restore (RunRestore calls it for BACKUP without :VOLUME).
Status RunDiskRestore(Repository* repo, const RestoreOptions& opt, const BackupRecord& rec,
                      RestoreResult* out);

}  // namespace gnomon
