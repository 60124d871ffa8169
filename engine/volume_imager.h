// Images one volume into the repository through a oneTBB pipeline
//   read (serial, in order) -> zero test + XXH3-128 (parallel)
//   -> dedup (serial, in order; first occurrence wins) -> zstd (parallel)
//   -> append to pack (serial, in order)
// With a parent, a chunk that change tracking proved unchanged keeps the
// parent's digest unread, and a chunk with few changed 4 KiB blocks is
// stored as a patch on the parent's (format/patch.h). Memory is bounded by
// the token count, never by the volume size.
#pragma once

#include <atomic>
#include <string>
#include <unordered_set>
#include <vector>

#include "engine/block_map.h"
#include "engine/pack_sink.h"
#include "engine/pipeline_util.h"
#include "engine/progress.h"
#include "engine/source_volume.h"
#include "format/backup_record.h"
#include "format/repository.h"
#include "vss/types.h"

namespace gnomon {

// How one volume is read, decided before imaging it (engine/backup_job.cc).
struct VolumePlan {
  // The parent backup's index of this volume (same size and chunk size):
  // every chunk's digest is compared with it.
  bool have_parent = false;
  VolumeIndex parent;
  // Change tracking can be trusted: only `changed` chunks are read, and
  // `ranges` (volume byte ranges) let a mostly unchanged one be a patch.
  bool tracked = false;
  std::vector<bool> changed;
  std::vector<vss::ByteRange> ranges;
};

// Chunks of a parent that could not be read to patch against: each is
// stored whole instead (correct, only larger), and the backup says so.
struct UnreadBases {
  std::atomic<uint64_t> count{0};
  FirstError first;
};

// What every volume of one backup run shares.
struct ImageContext {
  Repository* repo = nullptr;
  const ChunkIndex* index = nullptr;  // the repository's usable chunks (kDedup)
  // What is known damaged or missing. While anything is, a parent's patch is
  // trusted only after its chain has been read back.
  const IndexHealth* health = nullptr;
  std::unordered_set<Digest, DigestHash>* seen = nullptr;  // new chunks of this run
  PackSink* sink = nullptr;
  FirstError* error = nullptr;
  UnreadBases* unread_bases = nullptr;
  int threads = 1;
  size_t tokens = 4;
  // Adaptive compression's highest zstd level (engine/level_governor.h); at
  // or below the repository's level, every chunk is stored at that level.
  int max_level = 0;
  const CancelFlag* cancel = nullptr;
  ProgressFn progress;
};

// map: the bytes to read; the rest is stored as zeros. label: for progress.
Status ImageVolume(const ImageContext& ctx, const SourceVolume& src, const std::string& label,
                   const BlockMap& map, const VolumePlan& plan, VolumeIndex* vi,
                   VolumeStats* stats);

}  // namespace gnomon
