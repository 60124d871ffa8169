#include "format/repository.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "format/framed_file.h"
#include "format/patch.h"

namespace gnomon {

namespace {
constexpr const char* kConfig = "config";
constexpr const char* kLock = "lock";
constexpr const char* kPacks = "packs";
constexpr const char* kIndex = "index";
constexpr const char* kVolumes = "volumes";
constexpr const char* kBackups = "backups";
constexpr const char* kTmp = "tmp";
constexpr size_t kMaxOpenPacks = 256;

bool IsHexName(const std::string& s, size_t len) {
  return s.size() == len && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}
}  // namespace

std::string HostName() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

Status Repository::Init(Env* env, const std::string& path, RepoConfig config) {
  if (config.id.empty()) config.id = RandomHexId(16);
  if (config.created.empty()) config.created = NowRfc3339();
  GNOMON_RETURN_IF_ERROR(config.Validate("init " + path));
  if (env->FileExists(path)) {
    std::vector<std::string> names;
    Status s = env->ListDir(path, &names);
    if (!s.ok()) return Status::InvalidArgument(path + ": exists and is not a directory");
    if (!names.empty()) {
      if (env->FileExists(JoinPath(path, kConfig)))
        return Status::InvalidArgument(path + ": a repository already exists here");
      return Status::InvalidArgument(path +
                                     ": directory is not empty; refusing to create a "
                                     "repository in it");
    }
  }
  GNOMON_RETURN_IF_ERROR(env->CreateDir(path));
  for (const char* d : {kPacks, kIndex, kVolumes, kBackups, kTmp})
    GNOMON_RETURN_IF_ERROR(env->CreateDir(JoinPath(path, d)));
  char sub[3];
  for (int i = 0; i < 256; ++i) {
    std::snprintf(sub, sizeof sub, "%02x", i);
    GNOMON_RETURN_IF_ERROR(env->CreateDir(JoinPath(JoinPath(path, kPacks), sub)));
  }
  GNOMON_RETURN_IF_ERROR(env->SyncDir(JoinPath(path, kPacks)));
  // The config goes last: a directory without one is not yet a repository.
  GNOMON_RETURN_IF_ERROR(
      WriteFrameFile(env, kConfigFrame, 1, JoinPath(path, kConfig), config.Encode()));
  return env->SyncDir(DirName(path));
}

Status Repository::Open(Env* env, const std::string& path, LockMode mode,
                        const std::string& purpose, std::unique_ptr<Repository>* out) {
  std::string cfg_path = JoinPath(path, kConfig);
  if (!env->FileExists(path)) return Status::NotFound(path + ": repository does not exist");
  if (!env->FileExists(cfg_path))
    return Status::NotFound(path + ": not a gnomon repository (no config file; run 'gnomon init')");
  std::unique_ptr<Repository> r(new Repository(env, path));
  std::string body;
  GNOMON_RETURN_IF_ERROR(ReadFrameFile(env, kConfigFrame, cfg_path, &body));
  GNOMON_RETURN_IF_ERROR(RepoConfig::Decode(cfg_path, body, &r->config_));
  if (mode != LockMode::kNone) {
    std::string info = "pid " + std::to_string(getpid()) + " on host " + HostName() + " since " +
                       NowRfc3339() + " (gnomon " + purpose + ")";
    GNOMON_RETURN_IF_ERROR(env->LockFile(JoinPath(path, kLock), mode == LockMode::kExclusive, info,
                                         &r->lock_, &r->stale_lock_));
    if (mode == LockMode::kExclusive) r->RemoveStaleTemporaries();
  }
  *out = std::move(r);
  return Status::OK();
}

void Repository::RemoveStaleTemporaries() {
  // We hold the exclusive lock, so no live writer owns anything in tmp/, and
  // a ".tmp-" file beside a metadata file is a rename that never happened.
  std::vector<std::string> names;
  if (env_->ListDir(P(kTmp), &names).ok())
    for (const auto& n : names) env_->RemoveFile(JoinPath(P(kTmp), n));
  for (const char* d : {kIndex, kVolumes, kBackups, ""}) {
    std::string dir = *d ? P(d) : path_;
    if (!env_->ListDir(dir, &names).ok()) continue;
    for (const auto& n : names)
      if (n.find(".tmp-") != std::string::npos) env_->RemoveFile(JoinPath(dir, n));
  }
}

Status Repository::ListIndexFiles(std::vector<std::string>* names) {
  std::vector<std::string> all;
  GNOMON_RETURN_IF_ERROR(env_->ListDir(P(kIndex), &all));
  names->clear();
  for (auto& n : all)
    if (IsHexName(n, 32)) names->push_back(n);
  std::sort(names->begin(), names->end());
  return Status::OK();
}

Status Repository::ReadIndexFile(const std::string& name, std::vector<PackSummary>* packs) {
  std::string path = JoinPath(P(kIndex), name), body;
  GNOMON_RETURN_IF_ERROR(ReadFrameFile(env_, kIndexFrame, path, &body));
  return DecodeIndexFile(path, body, packs);
}

Status Repository::LoadChunkIndex(ChunkIndex* index, std::vector<std::string>* index_files) {
  std::vector<std::string> names;
  GNOMON_RETURN_IF_ERROR(ListIndexFiles(&names));
  for (const auto& n : names) {
    std::vector<PackSummary> packs;
    GNOMON_RETURN_IF_ERROR(ReadIndexFile(n, &packs));
    for (const auto& p : packs) index->AddPack(p);
  }
  if (index_files) *index_files = names;
  return Status::OK();
}

Status Repository::WriteIndexFile(const std::vector<PackSummary>& packs, std::string* name) {
  *name = RandomHexId(16);
  return WriteFrameFile(env_, kIndexFrame, 2, JoinPath(P(kIndex), *name), EncodeIndexFile(packs));
}

std::string Repository::PackPath(const std::string& id) const {
  return JoinPath(JoinPath(P(kPacks), id.substr(0, 2)), id);
}

Status Repository::NewPackWriter(std::unique_ptr<PackWriter>* out) {
  std::string id = RandomHexId(16);
  std::string tmp = JoinPath(P(kTmp), id + ".pack");
  std::unique_ptr<WritableFile> f;
  GNOMON_RETURN_IF_ERROR(env_->NewWritableFile(tmp, &f));
  *out = std::make_unique<PackWriter>(env_, id, tmp, PackPath(id), std::move(f));
  return Status::OK();
}

Status Repository::ListPacks(std::vector<std::string>* ids) {
  ids->clear();
  std::vector<std::string> subs, names;
  GNOMON_RETURN_IF_ERROR(env_->ListDir(P(kPacks), &subs));
  std::sort(subs.begin(), subs.end());
  for (const auto& s : subs) {
    if (!IsHexName(s, 2)) continue;
    GNOMON_RETURN_IF_ERROR(env_->ListDir(JoinPath(P(kPacks), s), &names));
    for (auto& n : names)
      if (IsHexName(n, 32) && n.compare(0, 2, s) == 0) ids->push_back(n);
  }
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
  Status s = env_->NewRandomAccessFile(PackPath(id), &f);
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
  thread_local std::vector<uint8_t> stored;
  stored.resize(loc->stored_len);
  std::string where =
      f->path() + ": chunk " + d.Hex() + " at offset " + std::to_string(loc->offset);
  Status s = f->ReadAt(loc->offset, loc->stored_len, stored.data());
  if (!s.ok()) return s.WithContext(where);
  GNOMON_RETURN_IF_ERROR(dec->Decompress(loc->codec, stored, out, loc->raw_len, where));
  if (Digest::Of({out, loc->raw_len}) != d)
    return Status::Corruption(where + ": content does not match its digest (data is damaged)");
  return Status::OK();
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
  return env_->WriteFileAtomic(P(rel_path),
                               {reinterpret_cast<const uint8_t*>(file.data()), file.size()});
}

Status Repository::ReadVolumeIndex(const VolumeRecord& v, VolumeIndex* vi) {
  std::string path = P(v.index), file, body;
  Status s = env_->ReadFileToString(path, &file);
  if (s.IsNotFound())
    return Status::Corruption(path + ": volume index of volume '" + v.name + "' is missing");
  GNOMON_RETURN_IF_ERROR(s);
  GNOMON_RETURN_IF_ERROR(DecodeFrame(kVolumeIndexFrame, path, file, &body, nullptr));
  if (Checksum64({reinterpret_cast<const uint8_t*>(file.data()), file.size()}) != v.index_checksum)
    return Status::Corruption(path +
                              ": volume index is not the one its backup record names "
                              "(checksum differs)");
  GNOMON_RETURN_IF_ERROR(VolumeIndex::Decode(path, body, vi));
  if (vi->volume_size != v.size || vi->chunk_size != v.chunk_size)
    return Status::Corruption(path +
                              ": volume index size or chunk size disagrees with the "
                              "backup record");
  return Status::OK();
}

Status Repository::WriteBackupRecord(const BackupRecord& r) {
  return WriteFrameFile(env_, kBackupFrame, kBackupRecordVersion, JoinPath(P(kBackups), r.id),
                        r.Encode());
}

Status Repository::ListBackups(std::vector<BackupRecord>* out, std::vector<Status>* errors) {
  std::vector<std::string> names;
  GNOMON_RETURN_IF_ERROR(env_->ListDir(P(kBackups), &names));
  out->clear();
  for (const auto& n : names) {
    if (!IsHexName(n, 16)) continue;
    std::string path = JoinPath(P(kBackups), n), body;
    BackupRecord r;
    Status s = ReadFrameFile(env_, kBackupFrame, path, &body);
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

Status Repository::ForgetBackup(const BackupRecord& r) {
  // The record goes first: once it is gone the backup does not exist, and
  // its volume indexes are merely unreferenced files.
  GNOMON_RETURN_IF_ERROR(env_->RemoveFile(JoinPath(P(kBackups), r.id)));
  GNOMON_RETURN_IF_ERROR(env_->SyncDir(P(kBackups)));
  for (const auto& v : r.volumes) env_->RemoveFile(P(v.index));
  return Status::OK();
}

Status Repository::FindBackup(const std::string& spec, BackupRecord* out) {
  std::vector<BackupRecord> all;
  std::vector<Status> errors;
  GNOMON_RETURN_IF_ERROR(ListBackups(&all, &errors));
  if (spec == "latest") {
    if (all.empty()) {
      if (!errors.empty()) return errors.front();
      return Status::NotFound(path_ + ": repository has no backups");
    }
    *out = all.back();
    return Status::OK();
  }
  if (spec.empty()) return Status::InvalidArgument("empty backup id");
  const BackupRecord* match = nullptr;
  for (const auto& r : all) {
    if (r.id.compare(0, spec.size(), spec) == 0) {
      if (match) return Status::InvalidArgument("backup id prefix '" + spec + "' is ambiguous");
      match = &r;
    }
  }
  if (!match) {
    // A record that exists but cannot be read must not pass for "no such backup".
    for (const auto& e : errors)
      if (e.message().find("/" + spec) != std::string::npos) return e;
    return Status::NotFound("no backup with id '" + spec + "' in " + path_);
  }
  *out = *match;
  return Status::OK();
}

}  // namespace gnomon
