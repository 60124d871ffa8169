#include "format/repository.h"

#include <algorithm>
#include <cstring>

#include "format/framed_file.h"
#include "format/names.h"
#include "format/patch.h"
#include "format/repository_layout.h"

namespace gnomon {

namespace {
constexpr size_t kMaxOpenPacks = 256;
}  // namespace

std::string IndexHealth::Describe() const {
  std::string out;
  auto add = [&](const std::string& s) { out += (out.empty() ? "" : "; ") + s; };
  if (!lost.empty())
    add(std::to_string(lost.size()) + " chunk(s) have no intact copy (first: " +
        lost.begin()->first.Hex() + " in pack " + lost.begin()->second + ")");
  for (const auto& p : missing_packs) add("pack " + p + " is missing");
  for (const auto& e : damaged_files) add(e.message());
  return out;
}

Status Repository::Open(std::unique_ptr<Backend> backend, LockMode mode, const std::string& purpose,
                        std::unique_ptr<Repository>* out) {
  const std::string& path = backend->location();
  const std::string cfg_path = backend->Describe(kConfig);
  if (Status s = backend->CheckLocation(); !s.ok())
    return s.IsNotFound() ? Status::NotFound(path + ": repository does not exist") : s;
  std::unique_ptr<Repository> r(new Repository(std::move(backend)));
  Backend* b = r->backend();
  std::string file, body;
  Status s = b->Get(kConfig, &file);
  if (s.IsNotFound())
    return Status::NotFound(path + ": not a gnomon repository (no config file; run 'gnomon init')");
  GNOMON_RETURN_IF_ERROR(s);
  GNOMON_RETURN_IF_ERROR(DecodeFrame(kConfigFrame, cfg_path, file, &body, nullptr));
  GNOMON_RETURN_IF_ERROR(RepoConfig::Decode(cfg_path, body, &r->config_));
  r->backend_ = WithMetadataCache(std::move(r->backend_), r->config_.id);
  b = r->backend();
  // Key slots say the repository is encrypted whatever the (unauthenticated)
  // config says: a config swapped for a plain one must not make gnomon
  // write in the clear, even when no key was given.
  std::vector<std::string> slots;
  if (!r->config_.encrypted()) GNOMON_RETURN_IF_ERROR(b->List(kKeys, &slots));
  if (std::any_of(slots.begin(), slots.end(),
                  [](const std::string& n) { return IsHexName(n, 16); }))
    return Status::Corruption(cfg_path +
                              ": says the repository is not encrypted, but it holds key slots "
                              "(keys/): the config has been replaced or damaged; refusing to use "
                              "it");
  if (mode != LockMode::kNone) {
    const std::string info = r->HolderText("gnomon " + purpose);
    // gc/users first: waiting at the gate must not hold the repository
    // lock, which prune's deletion step takes too.
    GNOMON_RETURN_IF_ERROR(r->EnterAsUser());
    r->exclusive_ =
        mode == LockMode::kExclusive || (mode == LockMode::kAppend && !b->ConcurrentWriters());
    if (mode != LockMode::kReader)
      GNOMON_RETURN_IF_ERROR(b->Lock(kLock, r->exclusive_, info, &r->lock_, &r->stale_lock_));
    r->mode_ = mode;
    // An encrypted repository's index files need the key: it cleans up
    // when it is unlocked (SetKey).
    if (r->Writes() && !r->encrypted()) r->CleanUpDeadRuns();
  }
  *out = std::move(r);
  return Status::OK();
}

void Repository::CleanUpDeadRuns() {
  // A prune that is running writes temporaries and a journal of its own,
  // and cleans up when it deletes: leave it all to it.
  std::unique_ptr<FileLock> gc;
  std::string ignored;
  if (backend_->Lock(P(kGc, "lock"), false, "", &gc, &ignored).ok()) RemoveLeftovers();
}

std::string Repository::HolderText(const std::string& what) const {
  return "pid " + std::to_string(getpid()) +
         (encrypted() ? std::string() : " on host " + HostName()) + " since " + NowRfc3339() +
         " (" + what + ")";
}

Status Repository::ListIndexFiles(std::vector<std::string>* names) {
  std::vector<std::string> all;
  GNOMON_RETURN_IF_ERROR(backend_->List(kIndex, &all));
  names->clear();
  for (auto& n : all)
    if (IsHexName(n, 32)) names->push_back(n);
  std::sort(names->begin(), names->end());
  return Status::OK();
}

Status Repository::ReadIndexFile(const std::string& name, std::vector<PackSummary>* packs) {
  std::string path = D(P(kIndex, name)), body;
  GNOMON_RETURN_IF_ERROR(ReadFramed(kIndexFrame, P(kIndex, name), &body));
  GNOMON_RETURN_IF_ERROR(DecodeIndexFile(path, body, packs));
  // Lengths decide allocations later: no chunk can be larger than a slot,
  // and a stored chunk is never larger than its raw bytes (FORMAT.md §4).
  for (const auto& p : *packs)
    for (const auto& e : p.entries)
      if (e.raw_len == 0 || e.raw_len > config_.chunk_size || e.stored_len > e.raw_len)
        return Status::Corruption(
            path + ": chunk " + e.digest.Hex() + " claims " + std::to_string(e.raw_len) +
            " raw and " + std::to_string(e.stored_len) +
            " stored bytes, impossible with chunk size " + std::to_string(config_.chunk_size));
  return Status::OK();
}

Status Repository::LoadChunkIndex(ChunkIndex* index, IndexHealth* health, IndexUse use) {
  *health = IndexHealth();
  std::vector<std::string> names;
  GNOMON_RETURN_IF_ERROR(ListIndexFiles(&names));
  std::set<BadChunk> bad;
  GNOMON_RETURN_IF_ERROR(ReadQuarantine(&bad, &health->damaged_files));
  std::vector<std::string> ids;
  GNOMON_RETURN_IF_ERROR(ListPacks(&ids));
  const std::set<std::string> present(ids.begin(), ids.end());
  std::unordered_map<Digest, std::string, DigestHash> dropped;
  std::set<std::string> missing;
  std::vector<PackSummary> last_resort;  // quarantined copies, for readers only
  for (const auto& n : names) {
    std::vector<PackSummary> packs;
    Status s = ReadIndexFile(n, &packs);
    if (!s.ok()) {
      health->damaged_files.push_back(s);
      continue;
    }
    for (auto& p : packs) {
      const bool gone = !present.count(p.id);
      if (gone) missing.insert(p.id);
      PackSummary quarantined{p.id, {}};
      std::erase_if(p.entries, [&](const PackEntry& e) {
        const bool q = !gone && bad.count(BadChunk{p.id, e.digest});
        if (q) quarantined.entries.push_back(e);
        if (gone || q) dropped.emplace(e.digest, p.id);
        health->quarantined += q;
        return gone || q;
      });
      index->AddPack(p);
      if (!quarantined.entries.empty()) last_resort.push_back(std::move(quarantined));
    }
  }
  // A reader falls back to a quarantined copy when nothing else holds the
  // digest: the digest check still stands between it and wrong bytes, and a
  // copy quarantined after a passing error (a pack moved away and back)
  // still restores. Backups never deduplicate against one.
  if (use == IndexUse::kRead)
    for (const auto& p : last_resort) index->AddPack(p);  // first insert wins: only gaps
  health->missing_packs.assign(missing.begin(), missing.end());
  for (const auto& [d, pack] : dropped)
    if (!index->Contains(d)) health->lost.emplace(d, pack);
  return Status::OK();
}

Status Repository::WriteIndexFile(const std::vector<PackSummary>& packs, std::string* name) {
  const std::string body = EncodeIndexFile(packs);
  for (int attempt = 0;; ++attempt) {
    *name = RandomHexId(16);
    Status s = WriteFramed(kIndexFrame, 2, P(kIndex, *name), body);
    if (!s.IsExists() || attempt == 8) return s;  // a clash: never overwrite, pick another
  }
}

std::string Repository::PackName(const std::string& id) { return P(kPacks, id.substr(0, 2), id); }

Status Repository::ListPacks(std::vector<std::string>* ids) {
  ids->clear();
  std::vector<std::string> names;
  GNOMON_RETURN_IF_ERROR(backend_->List(kPacks, &names));
  for (auto& n : names)  // "ab/<id>": temporaries and strays are not packs
    if (n.size() == 35 && n[2] == '/' && IsHexName(n.substr(3), 32) &&
        n.compare(0, 2, n, 3, 2) == 0)
      ids->push_back(n.substr(3));
  std::sort(ids->begin(), ids->end());
  return Status::OK();
}

Status Repository::OpenPack(const std::string& id, std::shared_ptr<RandomAccessFile>* out) {
  std::lock_guard<std::mutex> g(pack_cache_mu_);
  auto it = pack_cache_.find(id);
  if (it != pack_cache_.end()) {
    *out = it->second;
    return Status::OK();
  }
  std::unique_ptr<RandomAccessFile> f;
  Status s = backend_->Open(PackName(id), &f);
  if (s.IsNotFound())
    return Status::Corruption(PackPath(id) + ": pack is missing (the chunk index refers to it)");
  GNOMON_RETURN_IF_ERROR(s);
  // Readers still holding a shared_ptr keep their file open; we only drop
  // our references so the fd count stays bounded on huge repositories.
  if (pack_cache_.size() >= kMaxOpenPacks) pack_cache_.clear();
  *out = pack_cache_[id] = std::shared_ptr<RandomAccessFile>(std::move(f));
  return Status::OK();
}

Status Repository::ReadChunk(const ChunkIndex& index, const Digest& d, uint8_t* out,
                             ChunkDecompressor* dec) {
  const ChunkLocation* loc = index.Find(d);
  if (!loc) return Status::Corruption("chunk " + d.Hex() + " is not in the chunk index");
  std::shared_ptr<RandomAccessFile> f;
  GNOMON_RETURN_IF_ERROR(OpenPack(index.pack_id(loc->pack), &f));
  return ReadChunkFrom(index, d, *loc, *f, out, dec);
}

Status Repository::ReadChunkFrom(const ChunkIndex& index, const Digest& d, const ChunkLocation& loc,
                                 const RandomAccessFile& f, uint8_t* out, ChunkDecompressor* dec) {
  thread_local std::vector<uint8_t> stored;
  return ReadBlob(index.pack_id(loc.pack), f, EntryOf(d, loc), &stored, out, dec);
}

PackEntry Repository::EntryOf(const Digest& d, const ChunkLocation& loc) {
  PackEntry e;
  e.digest = d;
  e.offset = loc.offset;
  e.stored_len = loc.stored_len;
  e.raw_len = loc.raw_len;
  e.codec = loc.codec;
  e.patch_depth = loc.patch_depth;
  return e;
}

Status Repository::ReadSlot(const ChunkIndex& index, const Digest& d, uint8_t* out,
                            uint32_t slot_len, ChunkDecompressor* dec) {
  if (d.IsZero()) {
    std::memset(out, 0, slot_len);
    return Status::OK();
  }
  const ChunkLocation* loc = index.Find(d);
  if (!loc) return Status::Corruption("chunk " + d.Hex() + " is not in the chunk index");
  if (loc->patch_depth == 0) {
    if (loc->raw_len != slot_len)
      return Status::Corruption("chunk " + d.Hex() + " holds " + std::to_string(loc->raw_len) +
                                " bytes, its slot " + std::to_string(slot_len));
    return ReadChunk(index, d, out, dec);
  }
  std::vector<uint8_t> patch(loc->raw_len);
  GNOMON_RETURN_IF_ERROR(ReadChunk(index, d, patch.data(), dec));
  PatchView pv;
  const std::string where = "patch " + d.Hex();
  GNOMON_RETURN_IF_ERROR(DecodePatch(patch, where, &pv));
  if (pv.chunk_len != slot_len)
    return Status::Corruption(where + ": rebuilds " + std::to_string(pv.chunk_len) +
                              " bytes, its slot holds " + std::to_string(slot_len));
  if (!pv.base.IsZero()) {
    const ChunkLocation* base = index.Find(pv.base);
    if (!base)
      return Status::Corruption(where + ": its base chunk " + pv.base.Hex() +
                                " is not in the chunk index");
    if (base->patch_depth >= loc->patch_depth)
      return Status::Corruption(where + ": its base does not descend in depth (damaged chain)");
  }
  GNOMON_RETURN_IF_ERROR(ReadSlot(index, pv.base, out, slot_len, dec));
  ApplyPatch(pv, out);
  return Status::OK();
}

Status Repository::WriteVolumeIndex(const std::string& rel_path, const VolumeIndex& vi,
                                    uint64_t* checksum) {
  std::string file = EncodeFrame(kVolumeIndexFrame, 1, vi.Encode());
  *checksum = Checksum64({reinterpret_cast<const uint8_t*>(file.data()), file.size()});
  if (encrypted()) {
    GNOMON_RETURN_IF_ERROR(NeedKey(D(P(rel_path))));
    file = SealObject(*key_, P(rel_path), file);  // the checksum is of the plaintext
  }
  return backend_->Put(P(rel_path), {reinterpret_cast<const uint8_t*>(file.data()), file.size()});
}

Status Repository::ReadVolumeIndex(const VolumeRecord& v, VolumeIndex* vi) {
  const std::string name = P(v.index), path = D(name);
  std::string file, body;
  Status s = backend_->Get(name, &file);
  if (s.IsNotFound())
    return Status::Corruption(path + ": volume index of volume '" + v.name + "' is missing");
  GNOMON_RETURN_IF_ERROR(s);
  if (encrypted()) {
    GNOMON_RETURN_IF_ERROR(NeedKey(path));
    std::string sealed = std::move(file);
    GNOMON_RETURN_IF_ERROR(OpenObject(*key_, name, path, sealed, &file));
  }
  GNOMON_RETURN_IF_ERROR(DecodeFrame(kVolumeIndexFrame, path, file, &body, nullptr));
  if (Checksum64({reinterpret_cast<const uint8_t*>(file.data()), file.size()}) != v.index_checksum)
    return Status::Corruption(path +
                              ": volume index is not the one its backup record names "
                              "(checksum differs)");
  if (v.chunk_size != config_.chunk_size)
    return Status::Corruption(path + ": volume '" + v.name + "' claims chunk size " +
                              std::to_string(v.chunk_size) + ", the repository's is " +
                              std::to_string(config_.chunk_size));
  GNOMON_RETURN_IF_ERROR(VolumeIndex::Decode(path, body, vi));
  if (vi->volume_size != v.size || vi->chunk_size != v.chunk_size)
    return Status::Corruption(path +
                              ": volume index size or chunk size disagrees with the "
                              "backup record");
  return Status::OK();
}

bool Repository::BackupIdTaken(const std::string& id) {
  return backend_->Exists(P(kBackups, id)) || backend_->Exists(P(VolumeIndexName(id, 0)));
}

bool Repository::BackupExists(const std::string& id) {
  return IsBackupId(id) && backend_->Exists(P(kBackups, id));
}

Status Repository::WriteBackupRecord(const BackupRecord& r) {
  return WriteFramed(kBackupFrame, r.Version(), P(kBackups, r.id), r.Encode());
}

Status Repository::ListBackups(std::vector<BackupRecord>* out, std::vector<Status>* errors) {
  std::vector<std::string> names;
  GNOMON_RETURN_IF_ERROR(backend_->List(kBackups, &names));
  out->clear();
  for (const auto& n : names) {
    if (!IsHexName(n, 16)) continue;
    std::string path = D(P(kBackups, n)), body;
    BackupRecord r;
    Status s = ReadFramed(kBackupFrame, P(kBackups, n), &body);
    if (s.IsNotFound()) continue;  // forgotten since it was listed
    if (s.ok()) s = BackupRecord::Decode(path, body, &r);
    if (s.ok() && r.id != n) s = Status::Corruption(path + ": record id " + r.id + " != file name");
    if (!s.ok()) {
      if (errors) errors->push_back(s);
      continue;
    }
    out->push_back(std::move(r));
  }
  std::sort(out->begin(), out->end(), [](const BackupRecord& a, const BackupRecord& b) {
    return a.time != b.time ? a.time < b.time : a.id < b.id;
  });
  return Status::OK();
}

Status Repository::FindBackup(const std::string& spec, BackupRecord* out) {
  std::vector<BackupRecord> all;
  std::vector<Status> errors;
  GNOMON_RETURN_IF_ERROR(ListBackups(&all, &errors));
  if (spec == "latest") {
    // A record that cannot be read may be the newest: never pass an older
    // backup off as the latest.
    if (!errors.empty())
      return errors.front().WithContext(
          "cannot tell which backup is the latest (name one by id, or remove the unreadable "
          "record with forget --force)");
    if (all.empty()) return Status::NotFound(path() + ": repository has no backups");
    *out = all.back();
    return Status::OK();
  }
  if (spec.empty()) return Status::InvalidArgument("empty backup id");
  // A record that exists but cannot be read must not pass for "no such
  // backup", nor let a prefix it shares seem unambiguous.
  const std::string named = P(kBackups, spec);  // the start of such a record's path
  for (const auto& e : errors)
    if (spec.size() < kBackupIdHex && e.message().find(named) != std::string::npos) return e;
  const BackupRecord* match = nullptr;
  for (const auto& r : all) {
    if (r.id.compare(0, spec.size(), spec) == 0) {
      if (match) return Status::InvalidArgument("backup id prefix '" + spec + "' is ambiguous");
      match = &r;
    }
  }
  if (!match) {
    for (const auto& e : errors)
      if (e.message().find(named) != std::string::npos) return e;
    return Status::NotFound("no backup with id '" + spec + "' in " + path());
  }
  *out = *match;
  return Status::OK();
}

}  // namespace gnomon
