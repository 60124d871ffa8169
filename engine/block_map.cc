#include "engine/block_map.h"

// com_err's header has no C++ linkage guard.
extern "C" {
#include <et/com_err.h>
}
#include <ext2fs/ext2fs.h>

#include <mutex>
#include <string>

namespace gnomon {

BlockMap BlockMap::All(uint64_t size, std::string reason) {
  BlockMap m;
  m.reason = std::move(reason);
  if (size) m.used.push_back({0, size});
  m.used_bytes = size;
  return m;
}

namespace {

std::string Ext2Error(errcode_t e) {
  // The ext2 error table must be registered before error_message can name
  // libext2fs's codes.
  static std::once_flag once;
  std::call_once(once, [] { initialize_ext2_error_table(); });
  return error_message(e);
}

// Closes the filesystem on every path out.
struct FsCloser {
  ext2_filsys fs = nullptr;
  ~FsCloser() {
    if (fs) ext2fs_close_free(&fs);
  }
};

// libext2fs trusts a superblock's geometry and its group descriptors more
// than a hostile image deserves: fuzz_block_map found a heap overflow in
// ext2fs_read_block_bitmap (libext2fs 1.47.0) for an image whose first data
// block lay past its bitmaps. Before any bitmap is read, the geometry must
// be what mke2fs writes and the descriptors must pass e2fsck's own check
// (ext2fs_check_desc); "" if so, else why not.
std::string UntrustedGeometry(ext2_filsys fs) {
  const ext2_super_block* sb = fs->super;
  const uint64_t block = fs->blocksize;
  const uint64_t per_group = EXT2_CLUSTERS_PER_GROUP(sb);
  if (block < 1024 || block > 65536) return "block size " + std::to_string(block);
  if (sb->s_first_data_block != (block == 1024 && fs->cluster_ratio_bits == 0 ? 1u : 0u))
    return "first data block " + std::to_string(sb->s_first_data_block);
  if (per_group == 0 || per_group % 8 != 0 || per_group > 8 * block)
    return std::to_string(per_group) + " clusters per group";
  if (errcode_t e = ext2fs_check_desc(fs)) return "group descriptors: " + Ext2Error(e);
  return "";
}

}  // namespace

BlockMap ReadBlockMap(const std::string& device, uint64_t offset, uint64_t size) {
  const std::string io_options = "offset=" + std::to_string(offset);
  FsCloser c;
  // Read-only, and without EXT2_FLAG_IGNORE_CSUM_ERRORS: a bitmap whose
  // checksum fails is not trusted.
  errcode_t e = ext2fs_open2(device.c_str(), io_options.c_str(), EXT2_FLAG_64BITS, 0, 0,
                             unix_io_manager, &c.fs);
  if (e == EXT2_ET_BAD_MAGIC) return BlockMap::All(size, "not an ext2/3/4 filesystem");
  if (e) return BlockMap::All(size, "ext2/3/4 superblock unusable (" + Ext2Error(e) + ")");
  ext2_filsys fs = c.fs;
  const uint64_t block = fs->blocksize;
  const uint64_t blocks = ext2fs_blocks_count(fs->super);
  if (blocks * block > size)
    return BlockMap::All(size, "the filesystem is larger than the volume (" +
                                   std::to_string(blocks * block) + " > " + std::to_string(size) +
                                   " bytes): damaged or truncated");
  // A journal still to replay may allocate blocks the on-disk bitmaps call
  // free; zeroing those would lose committed data. (Freezing an ext4
  // flushes its journal, so a frozen snapshot never has this.)
  if (ext2fs_has_feature_journal_needs_recovery(fs->super))
    return BlockMap::All(size, "the ext4 journal needs recovery (its bitmaps may be behind)");
  if (fs->super->s_state & EXT2_ERROR_FS)
    return BlockMap::All(size, "the filesystem is marked as having errors");
  if (const std::string why = UntrustedGeometry(fs); !why.empty())
    return BlockMap::All(size, "ext2/3/4 layout not what mke2fs writes (" + why + ")");
  if ((e = ext2fs_read_block_bitmap(fs)))
    return BlockMap::All(size, "ext2/3/4 block bitmaps unreadable (" + Ext2Error(e) + ")");

  BlockMap m;
  m.kind = "ext4";
  auto add = [&m](uint64_t off, uint64_t len) {
    if (!len) return;
    if (!m.used.empty() && m.used.back().offset + m.used.back().length == off)
      m.used.back().length += len;
    else
      m.used.push_back({off, len});
    m.used_bytes += len;
  };
  // Blocks before the first data block (the boot block of a 1 KiB-block
  // filesystem) are outside the bitmaps: keep them.
  const blk64_t first = fs->super->s_first_data_block, last = blocks - 1;
  add(0, first * block);
  blk64_t at = first;
  while (at <= last) {
    blk64_t used_start, free_start;
    if (ext2fs_find_first_set_block_bitmap2(fs->block_map, at, last, &used_start)) break;
    if (ext2fs_find_first_zero_block_bitmap2(fs->block_map, used_start, last, &free_start))
      free_start = last + 1;
    add(used_start * block, (free_start - used_start) * block);
    at = free_start;
  }
  // Bytes past the filesystem's end belong to no bitmap: keep them too.
  add(blocks * block, size - blocks * block);
  return m;
}

}  // namespace gnomon
