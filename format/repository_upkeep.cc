// The repository's life cycle around the data: creating it, the journal of
// a run's packs, the quarantine, the check files, forgetting backups, and
// cleaning up after runs that died (FORMAT.md §1, §5a, §5b, §9).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <map>
#include <thread>

#include "format/framed_file.h"
#include "format/names.h"
#include "format/repository.h"
#include "format/repository_layout.h"

namespace gnomon {

Status Repository::CheckInit(Backend* backend) { return backend->CheckCreate(); }

Status Repository::Init(Backend* backend, RepoConfig config, const std::vector<KeySlot>& slots) {
  const std::string& path = backend->location();
  if (config.id.empty()) config.id = RandomHexId(16);
  if (config.created.empty()) config.created = NowRfc3339();
  GNOMON_RETURN_IF_ERROR(config.Validate("init " + path));
  if (config.encrypted() == slots.empty())
    return Status::InvalidArgument("init " + path +
                                   (slots.empty() ? ": an encrypted repository needs a key"
                                                  : ": key slots for a plain repository"));
  GNOMON_RETURN_IF_ERROR(backend->Create());
  // The config goes last: a location without one is not yet a repository.
  auto put = [&](const std::string& name, const FrameKind& kind, const std::string& body) {
    const std::string file = EncodeFrame(kind, 1, body);
    return backend->Put(name, {reinterpret_cast<const uint8_t*>(file.data()), file.size()});
  };
  Status s;
  std::vector<std::string> written;
  for (const auto& k : slots) {
    if (s.ok()) s = put(RepoPath(kKeys, k.id), kKeySlotFrame, k.Encode());
    if (s.ok()) written.push_back(RepoPath(kKeys, k.id));
  }
  if (s.ok()) s = put(kConfig, kConfigFrame, config.Encode());
  // Nothing half-built stays behind, and nothing another init wrote goes.
  if (!s.ok()) backend->DiscardCreated(written);
  return s;
}

Status Repository::OpenJournal() {
  // The host is named only where nothing else is plaintext-free.
  journal_name_ = P(kTmp, (encrypted() ? std::string("host") : SafeHostName(HostName())) + "-" +
                              std::to_string(getpid()) + "-" + RandomHexId(8) + kJournalSuffix);
  journal_text_.clear();
  // Beside other writers, the journal is ours only while our run lock is.
  if (exclusive_) return Status::OK();
  const std::string base = journal_name_.substr(std::string(kTmp).size() + 1);
  Status s = backend_->TryLock(RunLockName(base), true, &run_lock_);
  if (!s.ok()) journal_name_.clear();
  return s;
}

std::string Repository::RunLockName(const std::string& journal) {
  return P(kGc, "run-" + journal.substr(0, journal.size() - std::string(kJournalSuffix).size()));
}

bool Repository::RunAlive(const std::string& journal) {
  std::unique_ptr<FileLock> probe;
  Status s = backend_->TryLock(RunLockName(journal), true, &probe);
  return !s.ok();  // held, or cannot tell: keep what it names
}

Status Repository::AddToJournal(const std::string& line) {
  if (journal_name_.empty()) GNOMON_RETURN_IF_ERROR(OpenJournal());
  journal_text_ += line + "\n";
  Status s = backend_->PutReplace(
      journal_name_,
      {reinterpret_cast<const uint8_t*>(journal_text_.data()), journal_text_.size()});
  if (!s.ok()) journal_text_.resize(journal_text_.size() - line.size() - 1);
  return s;
}

Status Repository::NewPackWriter(std::unique_ptr<PackWriter>* out) {
  GNOMON_RETURN_IF_ERROR(NeedKey("writing a pack"));
  std::string id = RandomHexId(16);
  // Durable in the journal before the pack can exist.
  GNOMON_RETURN_IF_ERROR(AddToJournal(id));
  std::unique_ptr<Upload> upload;
  GNOMON_RETURN_IF_ERROR(backend_->NewUpload(PackName(id), &upload));
  *out = std::make_unique<PackWriter>(id, std::move(upload), key_);
  return Status::OK();
}

std::string Repository::PublishLockName(const std::string& id) { return P(kGc, "backup-" + id); }

Status Repository::JournalBackup(const std::string& id) {
  if (backend_->ConcurrentWriters() && !exclusive_) {
    // A copy publishes under its source's id, so two runs may publish one
    // id: the clean-up of a dead one's volume indexes must not remove a
    // live one's. The clean-up holds the lock for milliseconds.
    publish_lock_.reset();
    for (int attempt = 0;; ++attempt) {
      Status s = backend_->TryLock(PublishLockName(id), true, &publish_lock_);
      if (s.ok()) break;
      if (!s.IsLocked()) return s;
      if (attempt == 50) return s.WithContext("another run is publishing backup " + id);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  return AddToJournal("backup " + id);
}

void Repository::EndWrite(bool keep_journal) {
  publish_lock_.reset();
  if (journal_name_.empty()) return;
  if (!keep_journal) backend_->Delete(journal_name_);
  journal_name_.clear();
  journal_text_.clear();
  run_lock_.reset();
}

Repository::RecordState Repository::RecordStateOf(const std::string& id) {
  uint64_t size = 0;
  Status s = backend_->Head(P(kBackups, id), &size);
  return s.ok()           ? RecordState::kVisible
         : s.IsNotFound() ? RecordState::kAbsent
                          : RecordState::kUnknown;
}

Status Repository::PublishBackup(BackupRecord* rec, const std::vector<VolumeIndex>& indexes,
                                 PublishOutcome* out) {
  *out = PublishOutcome();
  GNOMON_RETURN_IF_ERROR(JournalBackup(rec->id));
  size_t written = 0;  // volume indexes that may exist under this id
  Status s;
  for (; s.ok() && written < indexes.size(); ++written) {
    rec->volumes[written].index = VolumeIndexName(rec->id, written);
    s = WriteVolumeIndex(rec->volumes[written].index, indexes[written],
                         &rec->volumes[written].index_checksum);
    if (s.IsExists()) break;  // another backup's name: not ours to remove
  }
  if (s.ok()) {
    s = WriteBackupRecord(*rec);
    // Our volume indexes are write-once and were just written: no other
    // run has published this id, so a record there is this run's own (an
    // earlier attempt whose answer was lost, told apart by no ETag).
    if (s.IsExists() && written > 0)
      s = Status::IOError(s.message() + " (stored by an earlier attempt of this run?)");
    if (s.ok()) out->record = RecordState::kVisible;
    if (!s.ok() && !s.IsExists()) out->record = RecordStateOf(rec->id);
  }
  // A record that is (or may be) there names the volume indexes: they stay,
  // and the run's journal settles it (§9). Otherwise only what this call
  // wrote is removed: a name that was taken belongs to another backup.
  if (!s.ok() && out->record == RecordState::kAbsent)
    for (size_t i = 0; i < written; ++i) {
      Status d = backend_->Delete(rec->volumes[i].index);
      if (!d.ok() && !d.IsNotFound()) out->volumes_left = true;
    }
  return s;
}

Status Repository::ReadQuarantine(std::set<BadChunk>* out, std::vector<Status>* errors,
                                  std::map<Digest, std::string>* since) {
  std::vector<std::string> names;
  GNOMON_RETURN_IF_ERROR(backend_->List(kQuarantine, &names));  // none in version 5
  for (const auto& n : names) {
    if (!IsObjectId(n)) continue;
    std::string path = D(P(kQuarantine, n)), body;
    uint64_t t = 0;
    std::vector<BadChunk> chunks;
    Status s = ReadFramed(kQuarantineFrame, P(kQuarantine, n), &body);
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
  const std::string body = EncodeChecks(time, checks);
  for (int attempt = 0;; ++attempt) {
    Status s = WriteFramed(kCheckFrame, 1, P(kChecks, RandomHexId(16)), body);
    if (!s.IsExists() || attempt == 8) return s;
  }
}

Status Repository::ListCheckFiles(std::vector<std::string>* names) {
  names->clear();
  std::vector<std::string> all;
  GNOMON_RETURN_IF_ERROR(backend_->List(kChecks, &all));  // none in version 7
  for (auto& n : all)
    if (IsObjectId(n)) names->push_back(std::move(n));  // not .tmp- files
  std::sort(names->begin(), names->end());
  return Status::OK();
}

Status Repository::ReadCheckFile(const std::string& name, uint64_t* time,
                                 std::vector<PackCheck>* checks) {
  if (!IsObjectId(name)) return Status::InvalidArgument("'" + name + "' is not a check file name");
  std::string body;
  GNOMON_RETURN_IF_ERROR(ReadFramed(kCheckFrame, P(kChecks, name), &body));
  return DecodeChecks(D(P(kChecks, name)), body, time, checks);
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
  GNOMON_RETURN_IF_ERROR(backend_->Delete(P(kBackups, r.id)));
  for (size_t i = 0; i < r.volumes.size(); ++i) backend_->Delete(P(VolumeIndexName(r.id, i)));
  EndWrite();
  return Status::OK();
}

// Volume indexes whose record is gone (a forget killed half way by an
// older gnomon, or a record removed by hand): forget --force ID removes them.
Status Repository::ForgetRecordless(const std::string& id, std::string* what) {
  std::vector<std::string> names;
  size_t removed = 0;
  if (backend_->List(kVolumes, &names).ok())
    for (const auto& n : names)
      if (n.rfind(id + ".", 0) == 0 && n.find(".tmp-") == std::string::npos &&
          backend_->Delete(P(kVolumes, n)).ok())
        ++removed;
  if (!removed) return Status::NotFound("no backup with id '" + id + "' in " + path());
  *what = std::to_string(removed) + " volume index(es) of backup " + id + ", which has no record";
  return Status::OK();
}

Status Repository::ForgetUnreadable(const std::string& id, std::string* what) {
  if (!IsBackupId(id))
    return Status::InvalidArgument("'" + id + "' is not a backup id (16 hex characters)");
  const std::string name = P(kBackups, id), path = D(name);
  uint64_t size = 0;
  if (Status s = backend_->Head(name, &size); !s.ok())
    return s.IsNotFound() ? ForgetRecordless(id, what) : s;
  std::string body;
  Status s = ReadFramed(kBackupFrame, name, &body);
  BackupRecord r;
  if (s.ok()) s = BackupRecord::Decode(path, body, &r);
  *what = path + " (" + std::to_string(size) +
          " bytes): " + (s.ok() ? "a readable record of " + r.time : s.message());
  GNOMON_RETURN_IF_ERROR(backend_->Delete(name));
  std::vector<std::string> names;
  if (backend_->List(kVolumes, &names).ok())
    for (const auto& n : names)
      if (n.rfind(id + ".", 0) == 0 && n.find(".tmp-") == std::string::npos)
        backend_->Delete(P(kVolumes, n));
  return Status::OK();
}

Status Repository::FindLeftovers(Leftovers* out) {
  *out = Leftovers();
  // Volume indexes are listed before the journals are read, and records
  // after: a run journals an id before it writes its volume indexes, so
  // one listed of a run still alive is named by its journal read next,
  // and a run that ended meanwhile has its record in the list that follows.
  std::vector<std::string> volumes, names;
  GNOMON_RETURN_IF_ERROR(backend_->List(kVolumes, &volumes));
  GNOMON_RETURN_IF_ERROR(backend_->List(kTmp, &names));
  for (const auto& n : names) {
    if (P(kTmp, n) == journal_name_) continue;  // our own run
    out->temporaries.push_back(P(kTmp, n));
    if (n.size() <= 8 || n.compare(n.size() - 8, 8, kJournalSuffix) != 0) continue;
    std::string text;
    // Gone meanwhile (its run ended) is fine; unreadable is not: the packs
    // it lists would pass unseen.
    if (Status s = backend_->Get(P(kTmp, n), &text); !s.ok()) {
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
  std::set<std::string> live_backups;
  if (backend_->ConcurrentWriters() && !exclusive_) {
    // Other writers may be running: leave their journals and what they name.
    std::set<std::string> live;
    for (const auto& j : out->journals)
      if (RunAlive(j.name)) {
        live.insert(j.name);
        live_backups.insert(j.backups.begin(), j.backups.end());
      }
    std::erase_if(out->journals, [&](const Leftovers::Journal& j) { return live.count(j.name); });
    std::erase_if(out->temporaries, [&](const std::string& t) {
      return live.count(t.substr(std::string(kTmp).size() + 1));
    });
  }
  std::vector<std::string> temporaries;
  GNOMON_RETURN_IF_ERROR(backend_->ListTemporaries(&temporaries));
  out->temporaries.insert(out->temporaries.end(), temporaries.begin(), temporaries.end());
  std::set<std::string> journaled;
  for (const auto& j : out->journals) journaled.insert(j.backups.begin(), j.backups.end());
  std::vector<std::string> records;
  GNOMON_RETURN_IF_ERROR(backend_->List(kBackups, &records));
  const std::set<std::string> recorded(records.begin(), records.end());
  for (const auto& n : volumes) {
    const std::string id = n.substr(0, n.find('.'));
    if (!IsBackupId(id) || n.find(".tmp-") != std::string::npos || recorded.count(id)) continue;
    if (journaled.count(id))
      out->journaled_orphans.push_back(P(kVolumes, n));
    else if (!live_backups.count(id))  // not a live run's, about to be recorded
      out->orphan_indexes.push_back(P(kVolumes, n));
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

std::set<std::string> Repository::RemoveJournaledOrphans(const std::vector<std::string>& names) {
  std::map<std::string, std::vector<std::string>> by_id;
  for (const auto& n : names) {
    const std::string file = n.substr(std::string(kVolumes).size() + 1);
    by_id[file.substr(0, file.find('.'))].push_back(n);
  }
  std::set<std::string> unsettled;
  size_t removed = 0;
  for (const auto& [id, files] : by_id) {
    if (backend_->ConcurrentWriters() && !exclusive_) {
      // Beside other writers a copy may be publishing the same id: while
      // we hold its publish lock none can start, and a record that came
      // meanwhile owns what is there.
      std::unique_ptr<FileLock> lock;
      if (!backend_->TryLock(PublishLockName(id), true, &lock).ok()) {
        unsettled.insert(id);
        continue;
      }
      const RecordState state = RecordStateOf(id);
      if (state == RecordState::kUnknown) unsettled.insert(id);
      if (state != RecordState::kAbsent) continue;
    }
    for (const auto& f : files) {
      Status d = backend_->Delete(f);
      if (d.ok())
        ++removed;
      else if (!d.IsNotFound())
        unsettled.insert(id);
    }
  }
  if (removed)
    cleaned_.push_back(std::to_string(removed) +
                       " volume index(es) of backups that never committed");
  return unsettled;
}

void Repository::RemoveLeftovers(bool unjournaled) {
  // We hold the exclusive lock and no prune runs (or we are prune, holding
  // gc/users exclusively), so every other journal and temporary file
  // belongs to a run that is gone; or, beside other writers on an object
  // store, FindLeftovers kept only journals whose run lock is free.
  Leftovers l;
  if (Status s = FindLeftovers(&l); !s.ok())
    return upkeep_warnings_.push_back("could not look for what interrupted runs left (" +
                                      s.message() + "); the next run tries again");
  bool all_read = true;
  std::set<std::string> kept;  // journals naming a pack that could not be removed
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
      Status failed;
      for (const auto& id : j.packs) {
        if (!all_read || indexed.count(id)) continue;
        Status d = backend_->Delete(PackName(id));
        if (d.ok())
          ++removed;
        else if (!d.IsNotFound() && failed.ok())
          failed = d;
      }
      if (!failed.ok()) {
        // The journal is all that names the pack: it stays for the next run.
        kept.insert(P(kTmp, j.name));
        upkeep_warnings_.push_back("could not remove a pack of interrupted run " + j.name + " (" +
                                   failed.message() + "); the next run tries again");
      }
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
  const std::set<std::string> unsettled = RemoveJournaledOrphans(l.journaled_orphans);
  for (const auto& j : l.journals)
    for (const auto& id : j.backups)
      if (unsettled.count(id)) kept.insert(P(kTmp, j.name));
  for (const auto& t : l.temporaries)  // a journal whose packs were kept stays for the next run
    if ((all_read && !kept.count(t)) || t.find(kJournalSuffix) == std::string::npos)
      backend_->Delete(t);
  if (!l.temporaries.empty())
    cleaned_.push_back(std::to_string(l.temporaries.size()) +
                       " temporary file(s) of interrupted runs");
}

}  // namespace gnomon
