// The repository's life cycle around the data: creating it, the journal of
// a run's packs, the quarantine, the check files, forgetting backups, and
// cleaning up after runs that died (FORMAT.md §1, §5a, §5b, §9).
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <filesystem>

#include "format/framed_file.h"
#include "format/names.h"
#include "format/repository.h"
#include "format/repository_layout.h"

namespace gnomon {

namespace {

// An empty directory, or one holding only what an interrupted `init` makes
// (the layout's empty directories and no config), can become a repository.
bool IsEmptyOrHalfBuilt(Env* env, const std::string& path, bool* half_built) {
  std::vector<std::string> names, sub;
  if (!env->ListDir(path, &names).ok()) return false;
  *half_built = !names.empty();
  for (const auto& n : names) {
    if (n != kPacks && n != kIndex && n != kVolumes && n != kBackups && n != kTmp &&
        n != kQuarantine && n != kKeys)
      return false;
    if (!env->ListDir(RepoPath(path, n), &sub).ok()) return false;
    for (const auto& s : sub) {
      std::vector<std::string> leaf;
      if (n == kKeys) continue;  // slots of an init that died before its config
      if (n != kPacks || !IsHexName(s, 2) || !env->ListDir(RepoPath(path, n, s), &leaf).ok() ||
          !leaf.empty())
        return false;
    }
  }
  return true;
}

// Removes the layout directories an init made (all empty), best effort.
void RemoveSkeleton(Env* env, const std::string& path) {
  char sub[3];
  for (int i = 0; i < 256; ++i) {
    std::snprintf(sub, sizeof sub, "%02x", i);
    env->RemoveDir(RepoPath(path, kPacks, sub));
  }
  std::vector<std::string> slots;
  if (env->ListDir(RepoPath(path, kKeys), &slots).ok())
    for (const auto& n : slots)
      if (IsHexName(n, 16)) env->RemoveFile(RepoPath(path, kKeys, n));
  for (const char* d : {kPacks, kIndex, kVolumes, kBackups, kTmp, kQuarantine, kKeys})
    env->RemoveDir(RepoPath(path, d));
}

Status MakeSkeleton(Env* env, const std::string& path) {
  GNOMON_RETURN_IF_ERROR(env->CreateDir(path));
  for (const char* d : {kPacks, kIndex, kVolumes, kBackups, kTmp, kQuarantine})
    GNOMON_RETURN_IF_ERROR(env->CreateDir(RepoPath(path, d)));
  char sub[3];
  for (int i = 0; i < 256; ++i) {
    std::snprintf(sub, sizeof sub, "%02x", i);
    GNOMON_RETURN_IF_ERROR(env->CreateDir(RepoPath(path, kPacks, sub)));
  }
  return env->SyncDir(RepoPath(path, kPacks));
}

}  // namespace

Status Repository::CheckInitPath(Env* env, const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_symlink(path, ec)) {
    const auto real = std::filesystem::canonical(path, ec);
    if (!ec) return CheckInitPath(env, real.string());
  }
  if (!env->FileExists(path)) return Status::OK();
  std::vector<std::string> names;
  if (!env->ListDir(path, &names).ok())
    return Status::InvalidArgument(path + ": exists and is not a directory");
  if (env->FileExists(RepoPath(path, kConfig)))
    return Status::InvalidArgument(path + ": a repository already exists here");
  bool half_built = false;
  if (!IsEmptyOrHalfBuilt(env, path, &half_built))
    return Status::InvalidArgument(path +
                                   ": directory is not empty; refusing to create a "
                                   "repository in it");
  return Status::OK();
}

Status Repository::Init(Env* env, const std::string& path, RepoConfig config,
                        const std::vector<KeySlot>& slots) {
  // A repository path the user gives may be a symlink (to an empty
  // directory on another disk): resolve it, since directories inside a
  // repository are never opened through one.
  std::error_code ec;
  if (std::filesystem::is_symlink(path, ec)) {
    const auto real = std::filesystem::canonical(path, ec);
    if (!ec) return Init(env, real.string(), std::move(config), slots);
  }
  if (config.id.empty()) config.id = RandomHexId(16);
  if (config.created.empty()) config.created = NowRfc3339();
  GNOMON_RETURN_IF_ERROR(config.Validate("init " + path));
  if (config.encrypted() == slots.empty())
    return Status::InvalidArgument("init " + path +
                                   (slots.empty() ? ": an encrypted repository needs a key"
                                                  : ": key slots for a plain repository"));
  GNOMON_RETURN_IF_ERROR(CheckInitPath(env, path));
  bool half_built = false;
  if (env->FileExists(path) && IsEmptyOrHalfBuilt(env, path, &half_built) && half_built)
    RemoveSkeleton(env, path);  // an interrupted init: start again
  // The config goes last: a directory without one is not yet a repository.
  Status s = MakeSkeleton(env, path);
  if (s.ok() && !slots.empty()) s = env->CreateDir(RepoPath(path, kKeys));
  for (const auto& k : slots)
    if (s.ok()) s = WriteFrameFile(env, kKeySlotFrame, 1, RepoPath(path, kKeys, k.id), k.Encode());
  if (s.ok()) s = WriteFrameFile(env, kConfigFrame, 1, RepoPath(path, kConfig), config.Encode());
  if (s.ok()) s = env->SyncDir(ParentDir(path));
  if (!s.ok()) RemoveSkeleton(env, path);  // nothing half-built stays behind
  return s;
}

Status Repository::OpenJournal() {
  // The host is named only where nothing else is plaintext-free.
  journal_path_ = P(kTmp, (encrypted() ? std::string("host") : SafeHostName(HostName())) + "-" +
                              std::to_string(getpid()) + "-" + RandomHexId(8) + kJournalSuffix);
  Status s = env_->NewWritableFile(journal_path_, &journal_);
  if (s.ok()) s = env_->SyncDir(P(kTmp));
  if (!s.ok()) journal_.reset();
  return s;
}

Status Repository::NewPackWriter(std::unique_ptr<PackWriter>* out) {
  GNOMON_RETURN_IF_ERROR(NeedKey("writing a pack"));
  if (!journal_) GNOMON_RETURN_IF_ERROR(OpenJournal());
  std::string id = RandomHexId(16);
  // Durable in the journal before the pack can exist.
  const std::string line = id + "\n";
  GNOMON_RETURN_IF_ERROR(
      journal_->Append({reinterpret_cast<const uint8_t*>(line.data()), line.size()}));
  GNOMON_RETURN_IF_ERROR(journal_->Sync());
  std::string tmp = P(kTmp, id + ".pack");
  std::unique_ptr<WritableFile> f;
  GNOMON_RETURN_IF_ERROR(env_->NewWritableFile(tmp, &f));
  *out = std::make_unique<PackWriter>(env_, id, tmp, PackPath(id), std::move(f), key_);
  return Status::OK();
}

Status Repository::JournalBackup(const std::string& id) {
  if (!journal_) GNOMON_RETURN_IF_ERROR(OpenJournal());
  const std::string line = "backup " + id + "\n";
  GNOMON_RETURN_IF_ERROR(
      journal_->Append({reinterpret_cast<const uint8_t*>(line.data()), line.size()}));
  return journal_->Sync();
}

void Repository::EndWrite() {
  if (!journal_) return;
  journal_->Close();
  journal_.reset();
  env_->RemoveFile(journal_path_);
}

Status Repository::ReadQuarantine(std::set<BadChunk>* out, std::vector<Status>* errors,
                                  std::map<Digest, std::string>* since) {
  std::vector<std::string> names;
  if (!env_->FileExists(P(kQuarantine))) return Status::OK();  // a version-5 repository
  GNOMON_RETURN_IF_ERROR(env_->ListDir(P(kQuarantine), &names));
  for (const auto& n : names) {
    if (!IsObjectId(n)) continue;
    std::string path = P(kQuarantine, n), body;
    uint64_t t = 0;
    std::vector<BadChunk> chunks;
    Status s = ReadFramed(kQuarantineFrame, path, &body);
    if (s.ok()) s = DecodeQuarantine(path, body, &t, &chunks);
    if (!s.ok()) {
      errors->push_back(s);
      continue;
    }
    out->insert(chunks.begin(), chunks.end());
    if (since)
      for (const auto& c : chunks) {
        const std::string when = Rfc3339FromMicros(static_cast<int64_t>(t));
        auto [it, fresh] = since->emplace(c.digest, when);
        if (!fresh && when < it->second) it->second = when;
      }
  }
  return Status::OK();
}

Status Repository::WriteQuarantine(const std::vector<BadChunk>& chunks) {
  if (chunks.empty()) return Status::OK();
  GNOMON_RETURN_IF_ERROR(env_->CreateDir(P(kQuarantine)));
  const std::string body = EncodeQuarantine(static_cast<uint64_t>(NowMicros()), chunks);
  for (int attempt = 0;; ++attempt) {
    Status s = WriteFramed(kQuarantineFrame, 1, P(kQuarantine, RandomHexId(16)), body);
    if (!s.IsExists() || attempt == 8) return s;
  }
}

Status Repository::WriteCheckFile(uint64_t time, const std::vector<PackCheck>& checks) {
  for (const auto& c : checks)
    if (!IsObjectId(c.pack))
      return Status::InvalidArgument("check file: '" + c.pack + "' is not a pack id");
  GNOMON_RETURN_IF_ERROR(env_->CreateDir(P(kChecks)));  // a version-7 repository has none
  const std::string body = EncodeChecks(time, checks);
  for (int attempt = 0;; ++attempt) {
    Status s = WriteFramed(kCheckFrame, 1, P(kChecks, RandomHexId(16)), body);
    if (!s.IsExists() || attempt == 8) return s;
  }
}

Status Repository::ListCheckFiles(std::vector<std::string>* names) {
  names->clear();
  if (!env_->FileExists(P(kChecks))) return Status::OK();  // none written yet
  std::vector<std::string> all;
  GNOMON_RETURN_IF_ERROR(env_->ListDir(P(kChecks), &all));
  for (auto& n : all)
    if (IsObjectId(n)) names->push_back(std::move(n));  // not .tmp- files
  std::sort(names->begin(), names->end());
  return Status::OK();
}

Status Repository::ReadCheckFile(const std::string& name, uint64_t* time,
                                 std::vector<PackCheck>* checks) {
  if (!IsObjectId(name)) return Status::InvalidArgument("'" + name + "' is not a check file name");
  const std::string path = P(kChecks, name);
  std::string body;
  GNOMON_RETURN_IF_ERROR(ReadFramed(kCheckFrame, path, &body));
  return DecodeChecks(path, body, time, checks);
}

Status Repository::ReadLastChecks(std::map<std::string, uint64_t>* last_checked,
                                  std::vector<Status>* errors) {
  std::vector<std::string> names;
  GNOMON_RETURN_IF_ERROR(ListCheckFiles(&names));
  for (const auto& n : names) {
    uint64_t t = 0;
    std::vector<PackCheck> checks;
    if (Status s = ReadCheckFile(n, &t, &checks); !s.ok()) {
      errors->push_back(s);
      continue;
    }
    for (const auto& c : checks) {
      auto [it, fresh] = last_checked->emplace(c.pack, t);
      if (!fresh && t > it->second) it->second = t;
    }
  }
  return Status::OK();
}

Status Repository::ForgetBackup(const BackupRecord& r) {
  // The record goes first: once it is gone the backup does not exist, and
  // its volume indexes are merely unreferenced files. Their names were
  // checked when the record was read (BackupRecord::Decode), and are
  // rebuilt here from the id all the same.
  // The journal names the backup first, so a forget killed between the two
  // leaves volume indexes the next writer knows to remove (FORMAT.md §9),
  // not ones that look like a record moved away (which stop prune).
  if (!IsBackupId(r.id)) return Status::Corruption("backup id '" + r.id + "' is malformed");
  GNOMON_RETURN_IF_ERROR(JournalBackup(r.id));
  GNOMON_RETURN_IF_ERROR(env_->RemoveFile(P(kBackups, r.id)));
  GNOMON_RETURN_IF_ERROR(env_->SyncDir(P(kBackups)));
  for (size_t i = 0; i < r.volumes.size(); ++i) env_->RemoveFile(P(VolumeIndexName(r.id, i)));
  EndWrite();
  return Status::OK();
}

// Volume indexes whose record is gone (a forget killed half way by an
// older gnomon, or a record removed by hand): forget --force ID removes them.
Status Repository::ForgetRecordless(const std::string& id, std::string* what) {
  std::vector<std::string> names;
  size_t removed = 0;
  if (env_->ListDir(P(kVolumes), &names).ok())
    for (const auto& n : names)
      if (n.rfind(id + ".", 0) == 0 && n.find(".tmp-") == std::string::npos &&
          env_->RemoveFile(P(kVolumes, n)).ok())
        ++removed;
  if (!removed) return Status::NotFound("no backup with id '" + id + "' in " + path_);
  *what = std::to_string(removed) + " volume index(es) of backup " + id + ", which has no record";
  return Status::OK();
}

Status Repository::ForgetUnreadable(const std::string& id, std::string* what) {
  if (!IsBackupId(id))
    return Status::InvalidArgument("'" + id + "' is not a backup id (16 hex characters)");
  const std::string path = P(kBackups, id);
  std::unique_ptr<RandomAccessFile> f;
  if (Status s = env_->NewRandomAccessFile(path, &f); !s.ok())
    return s.IsNotFound() ? ForgetRecordless(id, what) : s;
  std::string body;
  Status s = ReadFramed(kBackupFrame, path, &body);
  BackupRecord r;
  if (s.ok()) s = BackupRecord::Decode(path, body, &r);
  *what = path + " (" + std::to_string(f->Size()) +
          " bytes): " + (s.ok() ? "a readable record of " + r.time : s.message());
  f.reset();
  GNOMON_RETURN_IF_ERROR(env_->RemoveFile(path));
  GNOMON_RETURN_IF_ERROR(env_->SyncDir(P(kBackups)));
  std::vector<std::string> names;
  if (env_->ListDir(P(kVolumes), &names).ok())
    for (const auto& n : names)
      if (n.rfind(id + ".", 0) == 0 && n.find(".tmp-") == std::string::npos)
        env_->RemoveFile(P(kVolumes, n));
  return Status::OK();
}

Status Repository::FindLeftovers(Leftovers* out) {
  *out = Leftovers();
  std::vector<std::string> names;
  // A directory that is missing (copied by a tool that drops empty ones)
  // holds nothing left over; one that cannot be listed is an error.
  if (Status s = env_->ListDir(P(kTmp), &names); !s.ok() && !s.IsNotFound()) return s;
  for (const auto& n : names) {
    out->temporaries.push_back(RepoPath(kTmp, n));
    if (n.size() <= 8 || n.compare(n.size() - 8, 8, kJournalSuffix) != 0) continue;
    if (P(kTmp, n) == journal_path_) continue;  // our own run
    std::string text;
    // Gone meanwhile (its run ended) is fine; unreadable is not: the packs
    // it lists would pass unseen.
    if (Status s = env_->ReadFileToString(P(kTmp, n), &text); !s.ok()) {
      if (s.IsNotFound()) continue;
      return s;
    }
    Leftovers::Journal j{n, {}, {}};
    for (size_t pos = 0, end; (end = text.find('\n', pos)) != std::string::npos; pos = end + 1) {
      const std::string line = text.substr(pos, end - pos);  // a torn last line has no '\n'
      if (IsObjectId(line)) j.packs.push_back(line);
      if (line.rfind("backup ", 0) == 0 && IsBackupId(line.substr(7)))
        j.backups.push_back(line.substr(7));
    }
    out->journals.push_back(std::move(j));
  }
  for (const char* d : {kIndex, kVolumes, kBackups, kQuarantine, kChecks, ""}) {
    std::string dir = *d ? P(d) : path_;
    if (Status s = env_->ListDir(dir, &names); !s.ok()) {
      if (s.IsNotFound()) continue;
      return s;
    }
    for (const auto& n : names)
      if (n.find(".tmp-") != std::string::npos) out->temporaries.push_back(RepoPath(d, n));
  }
  std::set<std::string> journaled;
  for (const auto& j : out->journals) journaled.insert(j.backups.begin(), j.backups.end());
  names.clear();
  if (Status s = env_->ListDir(P(kVolumes), &names); !s.ok() && !s.IsNotFound()) return s;
  for (const auto& n : names) {
    const std::string id = n.substr(0, n.find('.'));
    if (IsBackupId(id) && n.find(".tmp-") == std::string::npos &&
        !env_->FileExists(P(kBackups, id)))
      (journaled.count(id) ? out->journaled_orphans : out->orphan_indexes)
          .push_back(RepoPath(kVolumes, n));
  }
  return Status::OK();
}

void Repository::RemoveUnindexedPacks(const Leftovers& l, const std::set<std::string>& indexed) {
  // Left by a prune killed between deleting an index file and the packs it
  // alone named (FORMAT.md §9a); a live run's packs are in its journal.
  std::set<std::string> journaled;
  for (const auto& j : l.journals) journaled.insert(j.packs.begin(), j.packs.end());
  std::vector<std::string> ids;
  if (!ListPacks(&ids).ok()) return;
  size_t removed = 0;
  for (const auto& id : ids)
    if (!indexed.count(id) && !journaled.count(id) && DeletePack(id).ok()) ++removed;
  if (removed) cleaned_.push_back(std::to_string(removed) + " pack(s) that no index file names");
}

void Repository::RemoveLeftovers(bool unjournaled) {
  // We hold the exclusive lock and no prune runs (or we are prune, holding
  // gc/users exclusively), so every other journal and temporary file
  // belongs to a run that is gone.
  Leftovers l;
  if (Status s = FindLeftovers(&l); !s.ok())
    return upkeep_warnings_.push_back("could not look for what interrupted runs left (" +
                                      s.message() + "); the next run tries again");
  bool all_read = true;
  if (!l.journals.empty() || unjournaled) {
    // A journaled pack that an index file names was committed (or its
    // index was written before the run died): keep it. If any index file
    // cannot be read, it might name one: keep them all.
    std::vector<std::string> names;
    std::set<std::string> indexed;
    all_read = ListIndexFiles(&names).ok();
    for (const auto& n : names) {
      std::vector<PackSummary> packs;
      if (!ReadIndexFile(n, &packs).ok()) all_read = false;
      for (const auto& p : packs) indexed.insert(p.id);
    }
    if (unjournaled && all_read) RemoveUnindexedPacks(l, indexed);
    for (const auto& j : l.journals) {
      size_t removed = 0;
      for (const auto& id : j.packs)
        if (all_read && !indexed.count(id) && env_->RemoveFile(PackPath(id)).ok()) ++removed;
      if (removed)
        cleaned_.push_back(std::to_string(removed) + " pack(s) of an interrupted backup (" +
                           j.name + ")");
      if (!all_read && !j.packs.empty())
        upkeep_warnings_.push_back("kept the packs of interrupted run " + j.name +
                                   ": an index file is damaged and may name them");
    }
  }
  // Volume indexes before the journal that names them, so a crash in
  // between cannot leave them unnamed.
  for (const auto& v : l.journaled_orphans) env_->RemoveFile(P(v));
  if (!l.journaled_orphans.empty())
    cleaned_.push_back(std::to_string(l.journaled_orphans.size()) +
                       " volume index(es) of backups that never committed");
  for (const auto& t : l.temporaries)  // a journal whose packs were kept stays for the next run
    if (all_read || t.find(kJournalSuffix) == std::string::npos) env_->RemoveFile(P(t));
  if (!l.temporaries.empty())
    cleaned_.push_back(std::to_string(l.temporaries.size()) +
                       " temporary file(s) of interrupted runs");
}

}  // namespace gnomon
