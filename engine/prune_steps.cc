// Prune's steps that write: repacking (step 3) and the deletion step
// (step 4) of FORMAT.md §9a.
#include <memory>

#include "engine/prune_internal.h"
#include "format/codec.h"
#include "format/repository_layout.h"

namespace gnomon {

namespace {

// Reads the stored bytes of e in f and checks them against its digest.
Status ReadChecked(const RandomAccessFile& f, const PackEntry& e, ChunkDecompressor* dec,
                   std::vector<uint8_t>* stored) {
  const std::string where = f.path() + ": chunk " + e.digest.Hex();
  stored->resize(e.stored_len);
  GNOMON_RETURN_IF_ERROR(f.ReadAt(e.offset, e.stored_len, stored->data()).WithContext(where));
  thread_local std::vector<uint8_t> raw;
  raw.resize(e.raw_len);
  GNOMON_RETURN_IF_ERROR(dec->Decompress(e.codec, *stored, raw.data(), e.raw_len, where));
  if (Digest::Of(raw) != e.digest)
    return Status::Corruption(where + ": content does not match its digest (data is damaged)");
  return Status::OK();
}

class Repacker {
 public:
  Repacker(Repository* repo, PruneResult* out) : repo_(repo), out_(out) {}
  Status Add(const PackEntry& e, std::span<const uint8_t> stored) {
    if (!w_) GNOMON_RETURN_IF_ERROR(repo_->NewPackWriter(&w_));
    GNOMON_RETURN_IF_ERROR(w_->Add(e.digest, e.codec, stored, e.raw_len, e.patch_depth));
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
                   std::set<std::string>* repack, PruneResult* out) {
  Repacker repacker(repo, out);
  ChunkDecompressor dec;
  std::vector<uint8_t> stored;
  for (auto it = repack->begin(); it != repack->end();) {
    std::shared_ptr<RandomAccessFile> f;
    Status s = repo->OpenPack(*it, &f);
    for (const auto& e : claims.at(*it)) {
      if (!s.ok()) break;
      if (!IsKeeper(index, live, *it, e)) continue;
      s = ReadChecked(*f, e, &dec, &stored);
      // A copy already made of an earlier chunk stays a harmless duplicate.
      if (s.ok()) GNOMON_RETURN_IF_ERROR(repacker.Add(e, stored));
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

// Doomed packs that hold a live chunk no pack that stays serves: a backup
// committed since the plan deduplicated against it. They stay.
void Revive(const Census& c, const DigestSet& live, std::set<std::string>* dead,
            PruneResult* out) {
  DigestSet served;
  for (const auto& [id, entries] : c.claims)
    if (c.present.count(id) && !dead->count(id))
      for (const auto& e : entries)
        if (!c.quarantined.count({id, e.digest})) served.insert(e.digest);
  for (auto it = dead->begin(); it != dead->end();) {
    const auto& entries = c.claims.count(*it) ? c.claims.at(*it) : std::vector<PackEntry>{};
    const bool needed = std::any_of(entries.begin(), entries.end(), [&](const PackEntry& e) {
      return live.count(e.digest) && !served.count(e.digest);
    });
    out->packs_revived += needed;
    it = needed ? dead->erase(it) : std::next(it);
  }
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
  // Durable before any pack goes: an index file naming a deleted pack
  // must not come back after a crash.
  GNOMON_RETURN_IF_ERROR(repo->env()->SyncDir(RepoPath(repo->path(), kIndex)));
  out->index_files_replaced = replaced.size();
  return Status::OK();
}

Status DeletePacks(Repository* repo, const std::set<std::string>& dead, PruneResult* out) {
  for (const auto& id : dead) {
    std::unique_ptr<RandomAccessFile> f;
    uint64_t size = 0;
    if (repo->env()->NewRandomAccessFile(repo->PackPath(id), &f).ok()) size = f->Size();
    f.reset();
    GNOMON_RETURN_IF_ERROR(repo->DeletePack(id));
    out->bytes_deleted += size;
    ++out->packs_deleted;
  }
  return Status::OK();
}

// Quarantine files all of whose packs are gone say nothing any more.
Status DropQuarantine(Repository* repo, const Census& c, const std::set<std::string>& dead,
                      PruneResult* out) {
  std::vector<Repository::QuarantineFile> files;
  std::vector<Status> errors;
  GNOMON_RETURN_IF_ERROR(repo->ListQuarantineFiles(&files, &errors));
  for (const auto& q : files) {
    if (!std::all_of(q.chunks.begin(), q.chunks.end(), [&](const BadChunk& b) {
          return dead.count(b.pack) || !c.present.count(b.pack);
        }))
      continue;
    GNOMON_RETURN_IF_ERROR(repo->DeleteQuarantineFile(q.name));
    ++out->quarantine_files_deleted;
  }
  return Status::OK();
}

// Check files all of whose packs are gone, likewise. One that cannot be
// read is left for verify to report.
Status DropChecks(Repository* repo, const Census& c, const std::set<std::string>& dead,
                  PruneResult* out) {
  std::vector<std::string> names;
  GNOMON_RETURN_IF_ERROR(repo->ListCheckFiles(&names));
  for (const auto& n : names) {
    uint64_t time = 0;
    std::vector<PackCheck> checks;
    if (!repo->ReadCheckFile(n, &time, &checks).ok()) continue;
    if (!std::all_of(checks.begin(), checks.end(), [&](const PackCheck& k) {
          return dead.count(k.pack) || !c.present.count(k.pack);
        }))
      continue;
    GNOMON_RETURN_IF_ERROR(repo->DeleteCheckFile(n));
    ++out->check_files_deleted;
  }
  return Status::OK();
}

}  // namespace

Status DeleteStep(Repository* repo, const PruneOptions& opt,
                  const std::vector<BackupRecord>& marked, DigestSet* live,
                  const std::set<std::string>& doomed, PruneResult* out) {
  std::unique_ptr<FileLock> gate, users;
  Status s = repo->EnterDeletion(opt.max_wait_ms, &gate, &users);
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
  Revive(c, *live, &dead, out);
  GNOMON_RETURN_IF_ERROR(ReplaceIndexFiles(repo, c, dead, out));
  GNOMON_RETURN_IF_ERROR(DeletePacks(repo, dead, out));
  GNOMON_RETURN_IF_ERROR(DropQuarantine(repo, c, dead, out));
  GNOMON_RETURN_IF_ERROR(DropChecks(repo, c, dead, out));
  repo->RemoveLeftoversForGc();
  out->cleaned = repo->cleaned();
  out->deleted = true;
  return Status::OK();
}

}  // namespace gnomon
