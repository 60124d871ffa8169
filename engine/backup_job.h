// BackupJob: snapshots volumes through the VSS sequence (SnapshotSession),
// then images the snapshots into a repository through a oneTBB pipeline
//   read (serial, in order) -> zero test + XXH3-128 (parallel)
//   -> dedup (serial, in order; first occurrence wins) -> zstd (parallel)
//   -> append to pack (serial, in order)
// Memory is bounded by the token count (each token holds one chunk and its
// compressed form), never by the volume size.
#pragma once

#include <string>
#include <vector>

#include "engine/progress.h"
#include "engine/snapshot_session.h"
#include "format/backup_record.h"
#include "format/repository.h"

namespace gnomon {

// Adaptive compression's default ceiling: chosen in bench/RESULTS.md,
// "Adaptive compression".
inline constexpr int kDefaultMaxLevel = 6;

struct BackupOptions {
  std::vector<std::string> sources;  // block devices or regular files
  std::string type = "full";         // full | copy
  // How the point-in-time snapshot is taken (providers, writers, windows).
  // The type and cancel flag are taken from the fields here.
  SnapshotOptions snapshot;
  std::vector<std::string> tags;
  // Image every byte, not only the blocks the filesystem uses.
  bool all_blocks = false;
  // A source with a partition table is still one volume, not a disk backup.
  bool volumes_only = false;
  int threads = 0;  // 0 = all cores
  int tokens = 0;   // chunks in flight; 0 = DefaultTokens()
  // The highest zstd level adaptive compression may raise new chunks to
  // while the source, not the CPU, is what limits the backup.
  int max_level = kDefaultMaxLevel;
  ProgressFn progress;
  const CancelFlag* cancel = nullptr;
};

struct BackupResult {
  BackupRecord record;
  size_t packs_written = 0;
  std::vector<std::string> warnings;  // the backup succeeded, but tell the user
  // It failed because --component named what does not exist or cannot be
  // selected: a usage error.
  bool bad_selection = false;
};

// The repository must be open with LockMode::kExclusive.
Status RunBackup(Repository* repo, const BackupOptions& opt, BackupResult* out);

// The imaging pipeline alone, for measuring it (gnomon bench): images the
// first max_bytes of each of opt.sources as they are, with no writers and no
// snapshot. A source that changes meanwhile is imaged inconsistently, which
// is why backups never do this.
Status RunPipelineOnly(Repository* repo, const BackupOptions& opt, uint64_t max_bytes,
                       BackupResult* out);

int DefaultThreads();
// Chunks in flight by default: 2 per thread plus 2, capped so that the
// tokens (a chunk and its compressed form each) stay within 128 MiB on many
// cores.
size_t DefaultTokens(int threads, uint32_t chunk_size);

}  // namespace gnomon
