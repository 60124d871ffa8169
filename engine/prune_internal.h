// Shared between prune's planning (prune_job.cc) and its writing steps
// (prune_steps.cc): what the index files say, and the mark.
#pragma once

#include <map>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "engine/prune_job.h"
#include "engine/repo_usage.h"

namespace gnomon {

using DigestSet = std::unordered_set<Digest, DigestHash>;

// What the index files say: which packs each names, and what each pack
// holds (an entry named by two files counts once).
struct Census {
  std::map<std::string, std::vector<std::string>> packs_of_file;
  std::map<std::string, std::vector<PackEntry>> claims;
  std::set<std::string> present;  // pack files on disk
  std::set<BadChunk> quarantined;
};

// Whether e, in pack, is the copy of a live chunk that reads use.
inline bool IsKeeper(const ChunkIndex& index, const DigestSet& live, const std::string& pack,
                     const PackEntry& e) {
  if (!live.count(e.digest)) return false;
  const ChunkLocation* loc = index.Find(e.digest);
  return loc && index.pack_id(loc->pack) == pack && loc->offset == e.offset;
}

// Unreadable index or quarantine files go to *problems.
Status TakeCensus(Repository* repo, Census* c, std::vector<std::string>* problems);
// Adds to *live what `records` need, transitively; *index is the reader's
// index, whose choice of copy is each live chunk's keeper (FORMAT.md §9a).
Status Mark(Repository* repo, const std::vector<BackupRecord>& records, ChunkIndex* index,
            DigestSet* live, std::vector<std::string>* problems);

// Step 3: copies the keepers of *repack into new packs named by a new index
// file, adding each copied digest to *checked. A pack whose keeper cannot
// be read back intact leaves *repack (kept whole, reported).
Status RepackPacks(Repository* repo, const ChunkIndex& index, const DigestSet& live,
                   const std::map<std::string, std::vector<PackEntry>>& claims,
                   const CancelFlag* cancel, std::set<std::string>* repack, DigestSet* checked,
                   PruneResult* out);
// Step 4: with the repository to itself, marks again (records not in
// `marked`), spares doomed packs that turn out live, replaces the index
// files that name the rest, deletes them, and cleans up after dead runs.
// *checked: live digests with a copy this prune wrote or read back intact.
Status DeleteStep(Repository* repo, const PruneOptions& opt,
                  const std::vector<BackupRecord>& marked, DigestSet* live, DigestSet* checked,
                  const std::set<std::string>& doomed, PruneResult* out);
// Whether quarantine or check files name only packs that are gone.
bool StaleSideFiles(Repository* repo, const std::set<std::string>& present);

}  // namespace gnomon
