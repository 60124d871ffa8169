// What a repository holds, what of it is live, and what a prune could give
// back (`gnomon stats`). The live set is the mark phase of garbage
// collection: every chunk a remaining backup's volume index names, and,
// transitively, the base of every live patch (FORMAT.md §4a): a patch
// names its base by digest inside its bytes, so each live patch is read
// once to find it. A copy of a chunk that reads never use (a second copy
// in another pack) is not live. (A prune must not drop such a copy before
// the one reads use has been read back: it may be the only good one.)
#pragma once

#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

#include "base/status.h"
#include "format/repository.h"

namespace gnomon {

struct RepoUsage {
  size_t backups = 0;
  size_t unreadable_backups = 0;  // records that cannot be read: their chunks count as live
  size_t packs = 0;               // pack files present
  uint64_t pack_bytes = 0;        // their size on disk
  size_t chunks = 0;              // blob copies the index files list
  uint64_t stored_bytes = 0;      // their stored (compressed) bytes, in packs present
  size_t live_chunks = 0;
  uint64_t live_bytes = 0;  // stored bytes of the copies reads use, for live chunks
  size_t patches_followed = 0;
  // Packs with no live copy: a prune deletes them whole.
  size_t dead_packs = 0;
  uint64_t dead_pack_bytes = 0;
  // Packs with live and dead copies: a prune may repack them.
  size_t mixed_packs = 0;
  uint64_t mixed_dead_bytes = 0;
  // Packs no index file names (not counted in chunks or stored_bytes).
  size_t unindexed_packs = 0;
  uint64_t unindexed_pack_bytes = 0;
  // False if anything could not be read (a record, a volume index, a patch,
  // an index file): what it named is unknown, so it must be assumed live and
  // a prune must not run on these figures.
  bool complete = true;
  std::vector<std::string> problems;
  uint64_t reclaimable_bytes() const { return stored_bytes - live_bytes; }
};

// Marks the live set: every digest the readable records' volume indexes
// name, and the bases of live patches, transitively. Problems make the
// set incomplete (see RepoUsage::complete).
Status MarkLive(Repository* repo, const ChunkIndex& index, const std::vector<BackupRecord>& records,
                std::unordered_set<Digest, DigestHash>* live, std::vector<std::string>* problems,
                size_t* patches_followed);

// Takes a shared lock's view: the repository must be open (any lock).
Status MeasureUsage(Repository* repo, RepoUsage* out);

}  // namespace gnomon
