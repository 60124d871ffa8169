// Used-block maps: which bytes of a volume its filesystem uses, read from the
// filesystem's own allocation bitmaps (libext2fs for ext2/3/4), so a backup
// reads and stores only those and restores everything else as zeros, as
// partclone does. Anything the map cannot vouch for counts as used.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/source_volume.h"

namespace gnomon {

struct BlockMap {
  // "ext4" (the ext2/3/4 block bitmaps) or "all" (every byte counts as used).
  std::string kind = "all";
  // Why the whole volume is imaged, when that was not asked for.
  std::string reason;
  std::vector<Extent> used;  // sorted, disjoint, in volume coordinates
  uint64_t used_bytes = 0;

  bool whole() const { return kind == "all"; }
  // The whole-volume map of a `size`-byte volume.
  static BlockMap All(uint64_t size, std::string reason);
};

// Reads the used-block map of the filesystem in `size` bytes at `offset` of
// `device` (a snapshot: a clone file or a held device, never a live volume).
// Never fails: a volume that is not ext2/3/4, or whose superblock, bitmaps
// or journal state cannot be trusted, gets the whole-volume map and a reason.
BlockMap ReadBlockMap(const std::string& device, uint64_t offset, uint64_t size);

}  // namespace gnomon
