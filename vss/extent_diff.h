// Changed-block tracking from reflink clones: two clones of one file share
// every physical extent the file did not rewrite between them, so a byte
// range mapped to the same physical address in both is unchanged (the older
// clone pins its blocks: they cannot be freed and reused while it exists).
// Holes in both are unchanged (an unwritten extent is a hole here). Anything uncertain (unknown,
// delayed, encoded, inline extents; a mapping that differs) counts as changed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "vss/types.h"  // ByteRange

namespace gnomon::vss {

struct FileExtent {
  uint64_t logical = 0, physical = 0, length = 0;
  bool certain = true;     // false: FIEMAP cannot vouch for this mapping
  bool unwritten = false;  // preallocated: reads as zeros, like a hole
};

// Every extent of the file at path (FIEMAP with FIEMAP_FLAG_SYNC), in
// logical order.
Status ReadExtents(const std::string& path, std::vector<FileExtent>* out);
// The same for an open file; an error names it as `name`.
Status ReadExtents(int fd, const std::string& name, std::vector<FileExtent>* out);

// The byte ranges of [offset, offset + size) whose mapping differs between
// the two files, in file coordinates (sorted, merged). An unwritten extent
// is a hole here: both read as zeros.
std::vector<ByteRange> DiffRanges(const std::vector<FileExtent>& base,
                                  const std::vector<FileExtent>& current, uint64_t offset,
                                  uint64_t size);

// For a volume of `size` bytes starting at `offset` in a file, sets
// changed[i] for every chunk i (of chunk_size bytes) that file_ranges touch.
// *volume_ranges, if given, receives those ranges clipped to the volume and
// in volume coordinates, so a chunk can be patched, not re-read.
void MarkChangedChunks(const std::vector<ByteRange>& file_ranges, uint64_t offset, uint64_t size,
                       uint32_t chunk_size, std::vector<bool>* changed,
                       std::vector<ByteRange>* volume_ranges = nullptr);

// DiffRanges, then MarkChangedChunks.
void DiffExtents(const std::vector<FileExtent>& base, const std::vector<FileExtent>& current,
                 uint64_t offset, uint64_t size, uint32_t chunk_size, std::vector<bool>* changed,
                 std::vector<ByteRange>* volume_ranges = nullptr);

// Bytes of `base` that `current` does not share: the space a retained base
// snapshot keeps allocated.
uint64_t PinnedBytes(const std::vector<FileExtent>& base, const std::vector<FileExtent>& current);

}  // namespace gnomon::vss
