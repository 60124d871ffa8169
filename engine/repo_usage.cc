#include "engine/repo_usage.h"

#include <oneapi/tbb/parallel_for.h>

#include <map>
#include <set>

#include "format/codec.h"
#include "format/patch.h"

namespace gnomon {

namespace {

// The base a live patch names, read from the patch itself (verified
// against its digest: a damaged patch must not name a wrong base).
Status PatchBase(Repository* repo, const ChunkIndex& index, const Digest& d, Digest* base) {
  const ChunkLocation* loc = index.Find(d);
  thread_local ChunkDecompressor dec;
  thread_local std::vector<uint8_t> raw;
  raw.resize(loc->raw_len);
  GNOMON_RETURN_IF_ERROR(repo->ReadChunk(index, d, raw.data(), &dec));
  PatchView view;
  GNOMON_RETURN_IF_ERROR(DecodePatch(raw, "patch " + d.Hex(), &view));
  *base = view.base;
  return Status::OK();
}

}  // namespace

Status MarkLive(Repository* repo, const ChunkIndex& index, const std::vector<BackupRecord>& records,
                std::unordered_set<Digest, DigestHash>* live, std::vector<std::string>* problems,
                size_t* patches_followed) {
  std::vector<Digest> pending;  // live patches whose base is not yet marked
  auto mark = [&](const Digest& d) {
    if (d.IsZero() || !live->insert(d).second) return;
    const ChunkLocation* loc = index.Find(d);
    // A live chunk the index does not know (its pack is missing, its index
    // file gone): if it is a patch, its base is unknown too.
    if (!loc)
      problems->push_back("chunk " + d.Hex() +
                          ", named by a remaining backup, is in no readable pack");
    else if (loc->patch_depth > 0)
      pending.push_back(d);
  };
  for (const auto& r : records)
    for (const auto& v : r.volumes) {
      VolumeIndex vi;
      if (Status s = repo->ReadVolumeIndex(v, &vi); !s.ok()) {
        // A forget running beside us removes the record, then its volume
        // indexes: a backup gone since it was listed needs nothing.
        if (repo->BackupExists(r.id)) problems->push_back(s.message());
        continue;
      }
      for (const auto& d : vi.slots) mark(d);
    }
  // A level of the patch chains at a time, each level's patches read in
  // parallel (reading them is nearly all of the mark's time).
  while (!pending.empty()) {
    std::vector<Digest> level;
    level.swap(pending);
    std::vector<Digest> bases(level.size());
    std::vector<Status> errors(level.size());
    tbb::parallel_for(size_t{0}, level.size(),
                      [&](size_t i) { errors[i] = PatchBase(repo, index, level[i], &bases[i]); });
    for (size_t i = 0; i < level.size(); ++i) {
      if (!errors[i].ok()) {
        problems->push_back(errors[i].message());
        continue;
      }
      ++*patches_followed;
      mark(bases[i]);
    }
  }
  return Status::OK();
}

Status MeasureUsage(Repository* repo, RepoUsage* out) {
  std::vector<BackupRecord> records;
  std::vector<Status> errors;
  GNOMON_RETURN_IF_ERROR(repo->ListBackups(&records, &errors));
  out->backups = records.size();
  out->unreadable_backups = errors.size();
  for (const auto& e : errors) out->problems.push_back(e.message());
  ChunkIndex index;
  IndexHealth health;
  GNOMON_RETURN_IF_ERROR(repo->LoadChunkIndex(&index, &health, IndexUse::kRead));
  for (const auto& e : health.damaged_files) out->problems.push_back(e.message());
  // A volume index whose record was moved away is kept for when it comes
  // back (FORMAT.md §9): what it names is unknown here.
  Leftovers left;
  GNOMON_RETURN_IF_ERROR(repo->FindLeftovers(&left));
  for (const auto& o : left.orphan_indexes)
    out->problems.push_back(o + " has no backup record (put the record back, or remove it)");
  std::unordered_set<Digest, DigestHash> live;
  GNOMON_RETURN_IF_ERROR(
      MarkLive(repo, index, records, &live, &out->problems, &out->patches_followed));
  out->live_chunks = live.size();

  // Every copy the index files list, by pack: live if it is the copy reads
  // use of a live chunk.
  std::vector<std::string> names;
  GNOMON_RETURN_IF_ERROR(repo->ListIndexFiles(&names));
  struct PackUse {
    bool live = false;
    uint64_t dead = 0;
  };
  std::vector<std::string> ids;
  GNOMON_RETURN_IF_ERROR(repo->ListPacks(&ids));
  const std::set<std::string> present(ids.begin(), ids.end());
  std::map<std::string, PackUse> by_pack;
  for (const auto& n : names) {
    std::vector<PackSummary> packs;
    if (!repo->ReadIndexFile(n, &packs).ok()) continue;  // named in health already
    for (const auto& p : packs) {
      if (!present.count(p.id)) continue;  // missing: nothing of it is stored
      for (const auto& e : p.entries) {
        const ChunkLocation* loc = index.Find(e.digest);
        const bool used = live.count(e.digest) && loc && index.pack_id(loc->pack) == p.id &&
                          loc->offset == e.offset;
        PackUse& use = by_pack[p.id];
        use.live |= used;
        use.dead += used ? 0 : e.stored_len;
        ++out->chunks;
        out->stored_bytes += e.stored_len;
        out->live_bytes += used ? e.stored_len : 0;
      }
    }
  }
  for (const auto& id : ids) {
    std::shared_ptr<RandomAccessFile> f;
    uint64_t size = 0;
    if (Status s = repo->OpenPack(id, &f); s.ok())
      size = f->Size();
    else
      out->problems.push_back(s.message());
    ++out->packs;
    out->pack_bytes += size;
    auto it = by_pack.find(id);
    if (it == by_pack.end()) {
      // In no index file: a run that died before its index file (the next
      // writer removes those its journal names), or put here by hand.
      ++out->unindexed_packs;
      out->unindexed_pack_bytes += size;
      continue;
    }
    if (!it->second.live) {
      ++out->dead_packs;
      out->dead_pack_bytes += size;
    } else if (it->second.dead > 0) {
      ++out->mixed_packs;
      out->mixed_dead_bytes += it->second.dead;
    }
  }
  out->complete = out->problems.empty();
  return Status::OK();
}

}  // namespace gnomon
