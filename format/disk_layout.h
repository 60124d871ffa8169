// The layout of a whole disk as a disk backup stores it (FORMAT.md §7b): its
// partition table (GPT or MBR/DOS) and, per partition, where it lies, what it
// is and which volume of the backup holds its bytes. Restore lays out a new
// table from this, for the target's size, so every field that reaches a
// partition table is checked here first: a record cannot make restore write
// outside its target or hand libfdisk a malformed script.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/status.h"

namespace gnomon {

struct DiskPartition {
  uint32_t number = 0;           // as the table numbers it, from 1
  uint64_t start = 0, size = 0;  // bytes, multiples of the sector size
  std::string kind = "primary";  // primary | extended | logical (DOS); primary (GPT)
  std::string type;              // GPT type GUID, or the DOS type as 2 hex digits
  std::string uuid;              // GPT partition GUID; "" on DOS
  std::string name;              // GPT partition name; "" on DOS
  std::string attrs;      // GPT attributes as libfdisk spells them, e.g. "LegacyBIOSBootable"
  bool bootable = false;  // DOS active flag
  // What blkid found inside (informational; restore checks nothing by them).
  std::string fs_type, fs_uuid, fs_label;
  int volume = -1;  // position in BackupRecord::volumes; -1 for an extended container
};

struct DiskLayout {
  std::string label;  // "gpt" | "dos"; "" = not a disk backup
  uint64_t size = 0;  // bytes
  uint32_t sector_size = 512;
  std::string disk_id;                    // GPT disk GUID, or DOS "0x" + 8 hex digits
  uint32_t table_length = 0;              // GPT partition entries (0 on DOS)
  uint64_t first_lba = 0;                 // GPT first usable LBA (0 on DOS)
  int gaps_volume = -1;                   // the volume holding every byte outside the partitions
  std::vector<DiskPartition> partitions;  // by start

  bool present() const { return !label.empty(); }
  nlohmann::json ToJson() const;
  // Parses and checks j (see Validate); errors name `where`.
  static Status FromJson(const nlohmann::json& j, const std::string& where, DiskLayout* out);
  // Every field restore relies on is well formed: sizes are sector multiples
  // inside the disk, partitions do not overlap (logical ones lie inside the
  // extended one, after its first sector, and nothing else overlaps it),
  // numbers are unique, ids and types have their exact form,
  // names hold no quote or control character, volumes are in [0, volumes).
  Status Validate(size_t volumes) const;
  // The byte ranges outside every partition (the extended container's own
  // sectors count as outside, since its EBRs live there), sorted.
  struct Range {
    uint64_t offset, length;
  };
  std::vector<Range> Gaps() const;
};

}  // namespace gnomon
