// Prune's steps that write: repacking (step 3) and the deletion step
// (step 4) of FORMAT.md §9a.
#include <memory>

#include "engine/prune_internal.h"
#include "format/codec.h"
#include "format/repository_layout.h"

namespace gnomon {

namespace {

// Reads the stored bytes of e in pack `id` and checks them against its digest.
// *raw_check: what a sealed copy of it carries (FORMAT.md §14.3).
Status ReadChecked(Repository* repo, const std::string& id, const RandomAccessFile& f,
                   const PackEntry& e, ChunkDecompressor* dec, std::vector<uint8_t>* stored,
                   uint64_t* raw_check = nullptr) {
  thread_local std::vector<uint8_t> raw;
  raw.resize(e.raw_len);
  return repo->ReadBlob(id, f, e, stored, raw.data(), dec, false, raw_check);
}

class Repacker {
 public:
  Repacker(Repository* repo, PruneResult* out) : repo_(repo), out_(out) {}
  Status Add(const PackEntry& e, std::span<const uint8_t> stored, uint64_t raw_check) {
    if (!w_) GNOMON_RETURN_IF_ERROR(repo_->NewPackWriter(&w_));
    GNOMON_RETURN_IF_ERROR(w_->Add(e.digest, e.codec, stored, e.raw_len, e.patch_depth, raw_check));
    ++out_->chunks_repacked;
    return w_->size() >= repo_->config().pack_size ? Seal() : Status::OK();
  }
  // Seals the last pack and names them all in one index file.
  Status Finish() {
    GNOMON_RETURN_IF_ERROR(Seal());
    std::string name;
    if (!written_.empty()) GNOMON_RETURN_IF_ERROR(repo_->WriteIndexFile(written_, &name));
    repo_->EndWrite();
    return Status::OK();
  }
  ~Repacker() {
    if (w_) w_->Abandon();
  }

 private:
  Status Seal() {
    if (!w_) return Status::OK();
    GNOMON_RETURN_IF_ERROR(w_->Finish());
    written_.push_back({w_->id(), w_->entries()});
    out_->bytes_written += w_->size();
    ++out_->packs_written;
    w_.reset();
    return Status::OK();
  }
  Repository* repo_;
  PruneResult* out_;
  std::unique_ptr<PackWriter> w_;
  std::vector<PackSummary> written_;
};

}  // namespace

Status RepackPacks(Repository* repo, const ChunkIndex& index, const DigestSet& live,
                   const std::map<std::string, std::vector<PackEntry>>& claims,
                   const CancelFlag* cancel, std::set<std::string>* repack, DigestSet* checked,
                   PruneResult* out) {
  Repacker repacker(repo, out);
  ChunkDecompressor dec;
  std::vector<uint8_t> stored;
  for (auto it = repack->begin(); it != repack->end();) {
    if (cancel && cancel->load()) return Status::Aborted("prune interrupted");
    std::shared_ptr<RandomAccessFile> f;
    Status s = repo->OpenPack(*it, &f);
    for (const auto& e : claims.at(*it)) {
      if (!s.ok()) break;
      if (!IsKeeper(index, live, *it, e)) continue;
      uint64_t raw_check = 0;
      s = ReadChecked(repo, *it, *f, e, &dec, &stored, &raw_check);
      // A copy already made of an earlier chunk stays a harmless duplicate.
      if (!s.ok()) break;
      GNOMON_RETURN_IF_ERROR(repacker.Add(e, stored, raw_check));
      checked->insert(e.digest);
    }
    if (s.ok()) {
      ++it;
      continue;
    }
    out->warnings.push_back("kept pack " + *it + " whole: " + s.message() +
                            "; run 'gnomon verify --read-data'");
    it = repack->erase(it);
  }
  return repacker.Finish();
}

namespace {

// Doomed packs that hold a live chunk no checked copy in a pack that
// stays serves: a backup committed since the plan deduplicated against
// it. A copy counts if this prune wrote it or read it back (*checked), or
// reads back intact now; otherwise the doomed pack stays.
void Revive(Repository* repo, const Census& c, const DigestSet& live, DigestSet* checked,
            std::set<std::string>* dead, PruneResult* out) {
  DigestSet need;
  for (const auto& id : *dead)
    if (auto it = c.claims.find(id); it != c.claims.end())
      for (const auto& e : it->second)
        if (live.count(e.digest) && !checked->count(e.digest)) need.insert(e.digest);
  std::map<Digest, std::vector<std::pair<std::string, PackEntry>>> copies;
  for (const auto& [id, entries] : c.claims)
    if (c.present.count(id) && !dead->count(id))
      for (const auto& e : entries)
        if (need.count(e.digest) && !c.quarantined.count({id, e.digest}))
          copies[e.digest].push_back({id, e});
  ChunkDecompressor dec;
  std::vector<uint8_t> stored;
  for (const auto& d : need)
    for (const auto& [id, e] : copies[d]) {
      std::shared_ptr<RandomAccessFile> f;
      if (repo->OpenPack(id, &f).ok() && ReadChecked(repo, id, *f, e, &dec, &stored).ok()) {
        checked->insert(d);
        break;
      }
    }
  for (auto it = dead->begin(); it != dead->end();) {
    const auto& entries = c.claims.count(*it) ? c.claims.at(*it) : std::vector<PackEntry>{};
    const bool needed = std::any_of(entries.begin(), entries.end(), [&](const PackEntry& e) {
      return live.count(e.digest) && !checked->count(e.digest);
    });
    out->packs_revived += needed;
    it = needed ? dead->erase(it) : std::next(it);
  }
}

// Replacing index files changes which copy of a duplicated chunk readers
// use (the first index file by name wins). A new keeper that was never
// checked is read back; one found damaged is quarantined (FORMAT.md §5a),
// so readers keep using the copy they used before.
Status CheckNewKeepers(Repository* repo, const ChunkIndex& before, const DigestSet& live,
                       const DigestSet& checked, PruneResult* out) {
  ChunkIndex after;
  IndexHealth health;
  GNOMON_RETURN_IF_ERROR(repo->LoadChunkIndex(&after, &health, IndexUse::kRead));
  ChunkDecompressor dec;
  std::vector<uint8_t> buf;
  std::vector<BadChunk> bad;
  for (const auto& d : live) {
    const ChunkLocation* b = before.Find(d);
    const ChunkLocation* a = after.Find(d);
    if (!a || checked.count(d) ||
        (b && before.pack_id(b->pack) == after.pack_id(a->pack) && b->offset == a->offset))
      continue;
    buf.resize(a->raw_len);
    if (Status s = repo->ReadChunk(after, d, buf.data(), &dec); s.IsCorruption()) {
      bad.push_back({after.pack_id(a->pack), d});
      out->warnings.push_back(s.message() + " (quarantined; readers use another copy)");
    }
  }
  return repo->WriteQuarantine(bad);
}

// One new index file with every entry of the files that name a dead or
// missing pack, less those packs; then those files go.
Status ReplaceIndexFiles(Repository* repo, const Census& c, const std::set<std::string>& dead,
                         PruneResult* out) {
  auto gone = [&](const std::string& p) { return dead.count(p) || !c.present.count(p); };
  std::vector<std::string> replaced;
  std::set<std::string> kept;
  for (const auto& [file, packs] : c.packs_of_file) {
    if (std::none_of(packs.begin(), packs.end(), gone)) continue;
    replaced.push_back(file);
    for (const auto& p : packs)
      if (!gone(p)) kept.insert(p);
  }
  if (replaced.empty()) return Status::OK();
  std::vector<PackSummary> summary;
  for (const auto& p : kept) summary.push_back({p, c.claims.at(p)});
  std::string name;
  if (!summary.empty()) GNOMON_RETURN_IF_ERROR(repo->WriteIndexFile(summary, &name));
  for (const auto& f : replaced) GNOMON_RETURN_IF_ERROR(repo->DeleteIndexFile(f));
  // (Each deletion is durable when it returns: an index file naming a
  // deleted pack cannot come back after a crash.)
  out->index_files_replaced = replaced.size();
  return Status::OK();
}

Status DeletePacks(Repository* repo, const std::set<std::string>& dead, PruneResult* out) {
  for (const auto& id : dead) {
    uint64_t size = 0;
    if (!repo->backend()->Head(repo->PackName(id), &size).ok()) size = 0;
    GNOMON_RETURN_IF_ERROR(repo->DeletePack(id));
    out->bytes_deleted += size;
    ++out->packs_deleted;
  }
  return Status::OK();
}

// Quarantine files all of whose packs are gone say nothing any more.
Status DropQuarantine(Repository* repo, const std::set<std::string>& present, PruneResult* out) {
  std::vector<Repository::QuarantineFile> files;
  std::vector<Status> errors;
  GNOMON_RETURN_IF_ERROR(repo->ListQuarantineFiles(&files, &errors));
  for (const auto& q : files) {
    if (!std::all_of(q.chunks.begin(), q.chunks.end(),
                     [&](const BadChunk& b) { return !present.count(b.pack); }))
      continue;
    GNOMON_RETURN_IF_ERROR(repo->DeleteQuarantineFile(q.name));
    ++out->quarantine_files_deleted;
  }
  return Status::OK();
}

// Check files all of whose packs are gone, likewise. One that cannot be
// read is left for verify to report.
Status DropChecks(Repository* repo, const std::set<std::string>& present, PruneResult* out) {
  std::vector<std::string> names;
  GNOMON_RETURN_IF_ERROR(repo->ListCheckFiles(&names));
  for (const auto& n : names) {
    uint64_t time = 0;
    std::vector<PackCheck> checks;
    if (!repo->ReadCheckFile(n, &time, &checks).ok()) continue;
    if (!std::all_of(checks.begin(), checks.end(),
                     [&](const PackCheck& k) { return !present.count(k.pack); }))
      continue;
    GNOMON_RETURN_IF_ERROR(repo->DeleteCheckFile(n));
    ++out->check_files_deleted;
  }
  return Status::OK();
}

}  // namespace

bool StaleSideFiles(Repository* repo, const std::set<std::string>& present) {
  std::vector<Repository::QuarantineFile> files;
  std::vector<Status> errors;
  if (repo->ListQuarantineFiles(&files, &errors).ok())
    for (const auto& q : files)
      if (std::none_of(q.chunks.begin(), q.chunks.end(),
                       [&](const BadChunk& b) { return present.count(b.pack) > 0; }))
        return true;
  std::vector<std::string> names;
  if (repo->ListCheckFiles(&names).ok())
    for (const auto& n : names) {
      uint64_t time = 0;
      std::vector<PackCheck> checks;
      if (repo->ReadCheckFile(n, &time, &checks).ok() &&
          std::none_of(checks.begin(), checks.end(),
                       [&](const PackCheck& k) { return present.count(k.pack) > 0; }))
        return true;
    }
  return false;
}

Status DeleteStep(Repository* repo, const PruneOptions& opt,
                  const std::vector<BackupRecord>& marked, DigestSet* live, DigestSet* checked,
                  const std::set<std::string>& doomed, PruneResult* out) {
  Repository::DeletionLocks locks;
  Status s = repo->EnterDeletion(opt.max_wait_ms, opt.cancel, &locks);
  out->deferred = s.IsLocked();
  GNOMON_RETURN_IF_ERROR(s);
  // a. Mark again what backups committed since the first mark.
  std::vector<BackupRecord> now, fresh;
  std::vector<Status> errors;
  GNOMON_RETURN_IF_ERROR(repo->ListBackups(&now, &errors));
  for (const auto& e : errors) out->problems.push_back(e.message());
  std::set<std::string> seen;
  for (const auto& r : marked) seen.insert(r.id);
  for (auto& r : now)
    if (!seen.count(r.id)) fresh.push_back(std::move(r));
  Census c;
  GNOMON_RETURN_IF_ERROR(TakeCensus(repo, &c, &out->problems));
  ChunkIndex index;
  GNOMON_RETURN_IF_ERROR(Mark(repo, fresh, &index, live, &out->problems));
  if (!out->complete()) return Status::OK();
  // b-d. Spare what turned out live, replace the index files, delete.
  std::set<std::string> dead;
  for (const auto& id : doomed)
    if (c.present.count(id)) dead.insert(id);
  Revive(repo, c, *live, checked, &dead, out);
  for (const auto& [id, entries] : c.claims)
    if (!c.present.count(id))
      out->warnings.push_back("dropped the index entries of missing pack " + id +
                              " (no remaining backup needs what it held)");
  GNOMON_RETURN_IF_ERROR(ReplaceIndexFiles(repo, c, dead, out));
  GNOMON_RETURN_IF_ERROR(CheckNewKeepers(repo, index, *live, *checked, out));
  GNOMON_RETURN_IF_ERROR(DeletePacks(repo, dead, out));
  repo->RemoveLeftoversForGc();
  out->cleaned = repo->cleaned();
  out->warnings.insert(out->warnings.end(), repo->upkeep_warnings().begin(),
                       repo->upkeep_warnings().end());
  // Quarantine and check files name packs: those all of whose packs are
  // gone now (this prune's, or an earlier one's killed) go too.
  std::vector<std::string> ids;
  GNOMON_RETURN_IF_ERROR(repo->ListPacks(&ids));
  c.present = std::set<std::string>(ids.begin(), ids.end());
  GNOMON_RETURN_IF_ERROR(DropQuarantine(repo, c.present, out));
  GNOMON_RETURN_IF_ERROR(DropChecks(repo, c.present, out));
  out->deleted = true;
  return Status::OK();
}

}  // namespace gnomon
