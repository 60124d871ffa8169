// Prune: garbage collection that runs beside backups (FORMAT.md §9a). Marks
// what the remaining backups need, repacks packs that are mostly dead,
// and deletes what nothing needs in a short step during which no other
// process reads the repository (gc/users held exclusively), after marking
// again what backups committed meanwhile.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/progress.h"
#include "format/repository.h"

namespace gnomon {

struct PruneOptions {
  // Dead bytes that may stay, as a fraction of the stored bytes; packs are
  // repacked (most dead first) only while more than this would stay.
  double max_unused = 0.05;
  bool dry_run = false;  // plan and report; write and delete nothing
  // How long the deletion step may wait for running backups and readers.
  int64_t max_wait_ms = 60 * 60 * 1000;
  ProgressFn progress;
  const CancelFlag* cancel = nullptr;
};

struct PruneResult {
  size_t backups = 0, packs = 0;
  uint64_t stored_bytes = 0, live_bytes = 0;
  // The plan (what a dry run reports), then what was done.
  size_t plan_delete = 0, plan_repack = 0;
  uint64_t plan_delete_bytes = 0, plan_repack_live_bytes = 0, plan_repack_dead_bytes = 0;
  size_t packs_deleted = 0, packs_revived = 0, packs_written = 0, chunks_repacked = 0;
  size_t index_files_replaced = 0, quarantine_files_deleted = 0, check_files_deleted = 0;
  uint64_t bytes_deleted = 0, bytes_written = 0;
  bool deleted = false;               // the deletion step ran
  bool deferred = false;              // it could not get the repository to itself in time
  std::vector<std::string> problems;  // what could not be read: nothing was deleted
  std::vector<std::string> warnings;  // packs kept for a reason the user should know
  std::vector<std::string> cleaned;   // leftovers of dead runs removed
  double seconds = 0;
  bool complete() const { return problems.empty(); }
};

// The repository must be open without a lock (LockMode::kNone): prune
// takes gc/lock, and gc/users only for its deletion step. Returns non-OK
// when prune could not run (or was interrupted, or its deletion step could
// not get the repository to itself in time: Locked); unreadable backups or
// indexes are reported in out->problems and delete nothing.
Status RunPrune(Repository* repo, const PruneOptions& opt, PruneResult* out);

}  // namespace gnomon
