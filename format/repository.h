// A gnomon repository on disk: the directory layout, the lock, and typed
// access to every file kind. Everything goes through an Env. See FORMAT.md.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/system.h"
#include "format/backend.h"
#include "format/backup_record.h"
#include "format/check_file.h"
#include "format/chunk_index.h"
#include "format/config.h"
#include "format/crypto.h"
#include "format/env.h"
#include "format/framed_file.h"
#include "format/key_slot.h"
#include "format/pack.h"
#include "format/quarantine.h"
#include "format/repository_layout.h"
#include "format/volume_index.h"

namespace gnomon {

// kReader: gc/users only (FORMAT.md §8), for a reader that stays for hours
// (mount, serve): prune's deletions wait for it, backups run beside it.
// kAppend: a backup. Exclusive where the backend allows one writer at a
// time (a local directory); shared on an object store, where backups on
// many hosts run side by side, each holding a run lock of its own.
enum class LockMode { kNone, kReader, kShared, kAppend, kExclusive };
// kDedup: a backup's index, without quarantined copies (data met again is
// stored anew). kRead: a reader's, with quarantined copies as a last resort
// for digests nothing else holds (each read is still checked).
enum class IndexUse { kDedup, kRead };

// What loading the chunk index found wrong without failing: every problem is
// named, and the index holds only locations that can still be used.
struct IndexHealth {
  std::vector<Status> damaged_files;       // index or quarantine files that cannot be read
  std::vector<std::string> missing_packs;  // named by an index file, absent
  size_t quarantined = 0;                  // locations known damaged
  // Digests with no usable location left (kRead: none at all), each with
  // the pack of a damaged or missing copy (for messages).
  std::unordered_map<Digest, std::string, DigestHash> lost;
  bool clean() const { return damaged_files.empty() && missing_packs.empty() && lost.empty(); }
  // One line for a user, e.g. "2 chunks have no intact copy (pack ... is
  // missing); index file ... is damaged".
  std::string Describe() const;
};

// What an interrupted run left in the repository (see FORMAT.md §9).
struct Leftovers {
  struct Journal {
    std::string name;                  // under tmp/
    std::vector<std::string> packs;    // pack ids the dead run created
    std::vector<std::string> backups;  // backup ids whose volume indexes it began to publish
  };
  std::vector<Journal> journals;
  std::vector<std::string> temporaries;  // tmp/ and *.tmp-* files, relative paths
  // volumes/<id>.<n> without a backups/<id>; journaled: a dead run's, which
  // the next run removes; others are only reported (a record moved away by
  // hand must find its volume indexes when it comes back).
  std::vector<std::string> orphan_indexes, journaled_orphans;
};

class Repository {
 public:
  // Creates the layout at path. Refuses a path that already holds anything
  // but an empty directory, so an existing repository is never overwritten.
  // An encrypted config (RepoConfig::SetEncrypted) needs at least one key
  // slot; the slots are written before the config.
  // Whether Init could create a repository at path (touches nothing).
  static Status CheckInit(Backend* backend);
  static Status Init(Backend* backend, RepoConfig config, const std::vector<KeySlot>& slots = {});
  // `purpose` (e.g. "backup") goes into the lock file for the next person.
  static Status Open(std::unique_ptr<Backend> backend, LockMode mode, const std::string& purpose,
                     std::unique_ptr<Repository>* out);
  // The same for a local directory through env.
  static Status CheckInitPath(Env* env, const std::string& path) {
    return CheckInit(NewLocalBackend(env, path).get());
  }
  static Status Init(Env* env, const std::string& path, RepoConfig config,
                     const std::vector<KeySlot>& slots = {}) {
    return Init(NewLocalBackend(env, path).get(), std::move(config), slots);
  }
  static Status Open(Env* env, const std::string& path, LockMode mode, const std::string& purpose,
                     std::unique_ptr<Repository>* out) {
    return Open(NewLocalBackend(env, path), mode, purpose, out);
  }
  // The same for a location a user gave: a local path or an S3 URL.
  static Status OpenLocation(const std::string& location, LockMode mode, const std::string& purpose,
                             std::unique_ptr<Repository>* out) {
    std::unique_ptr<Backend> b;
    GNOMON_RETURN_IF_ERROR(OpenBackend(Env::Default(), location, &b));
    return Open(std::move(b), mode, purpose, out);
  }

  const RepoConfig& config() const { return config_; }
  // The location, for messages and for telling which disk it is on.
  const std::string& path() const { return backend_->location(); }
  Backend* backend() const { return backend_.get(); }
  // Text of a stale exclusive lock that Open broke (holder died), else "".
  const std::string& broken_stale_lock() const { return stale_lock_; }

  // Encryption (FORMAT.md §14). An encrypted repository opens locked:
  // everything that needs the key fails with WrongKey until it is unlocked.
  bool encrypted() const { return config_.encrypted(); }
  bool unlocked() const { return key_ != nullptr; }
  // WrongKey if no slot opens with the secret (each password slot costs
  // one Argon2id run).
  Status UnlockWithPassword(std::string_view password);
  Status UnlockWithKeyFile(std::span<const uint8_t> file_key);
  // A key unlocked elsewhere (serve hands it to its NBD plugin).
  void SetKey(std::shared_ptr<const MasterKey> key);
  const std::shared_ptr<const MasterKey>& key() const { return key_; }
  // The key slot the repository was unlocked with ("" if none, or handed over).
  const std::string& unlocked_slot() const { return unlocked_slot_; }
  // The chunk id function: keyed in an encrypted repository.
  const ChunkHasher& hasher() const { return hasher_; }
  // Key slots under keys/. Adding needs the key; removing refuses the last.
  Status ListKeySlots(std::vector<KeySlot>* out, std::vector<Status>* errors);
  Status AddKeySlot(const KeySlot& slot);
  Status RemoveKeySlot(const std::string& id);
  // The check a storage host can run without the key (verify
  // --without-key): every object's length, magic and XXH3-128 trailer.
  // Damaged objects go to *damaged; *objects and *bytes count what was read.
  Status ScrubWithoutKey(std::vector<Status>* damaged, uint64_t* objects, uint64_t* bytes,
                         const std::atomic<bool>* cancel);

  // A framed file of FORMAT.md §2 named `name` ("backups/<id>"), sealed
  // (§14.2) in an encrypted repository.
  Status WriteFramed(const FrameKind& kind, uint32_t version, const std::string& name,
                     std::string_view body);
  Status ReadFramed(const FrameKind& kind, const std::string& name, std::string* body,
                    uint32_t* version = nullptr);

  // Chunk index: every readable index file, merged, less the quarantined
  // locations and those in packs that are gone (so a chunk stored again
  // after its pack went missing is found at its new place). A damaged index
  // file does not fail the load: it is named in *health, and only what it
  // alone held is unknown.
  Status LoadChunkIndex(ChunkIndex* index, IndexHealth* health, IndexUse use);
  Status ListIndexFiles(std::vector<std::string>* names);
  // Reads one index file, checking every length against the configuration.
  Status ReadIndexFile(const std::string& name, std::vector<PackSummary>* packs);
  // Writes an index file for packs; *name is its file name under index/.
  Status WriteIndexFile(const std::vector<PackSummary>& packs, std::string* name);

  // Quarantine (FORMAT.md §5a): chunk copies known to be damaged.
  // since (optional): each quarantined digest's earliest quarantine time,
  // RFC 3339 as in backup records, so it compares with a record's time.
  Status ReadQuarantine(std::set<BadChunk>* out, std::vector<Status>* errors,
                        std::map<Digest, std::string>* since = nullptr);
  Status WriteQuarantine(const std::vector<BadChunk>& chunks);
  // Check files (FORMAT.md §5b): which packs each verify run read whole.
  // Write-once under checks/<random id>; checks/ is made if missing.
  Status WriteCheckFile(uint64_t time, const std::vector<PackCheck>& checks);
  // The check files' names under checks/ (none if it does not exist), sorted.
  Status ListCheckFiles(std::vector<std::string>* names);
  Status ReadCheckFile(const std::string& name, uint64_t* time, std::vector<PackCheck>* checks);
  // Each pack's last check: the newest time among the check files that name
  // it. A file that cannot be read goes to *errors (its packs may then look
  // older than they are) and does not fail the call.
  Status ReadLastChecks(std::map<std::string, uint64_t>* last_checked, std::vector<Status>* errors);

  // Packs. The first pack of a run opens its journal (tmp/*.journal), and
  // every pack id is durable there before the pack exists, so the packs of a
  // run that is killed can be found and removed by the next one.
  Status NewPackWriter(std::unique_ptr<PackWriter>* out);
  // Records in the journal that the run is about to publish backup `id`'s
  // volume indexes, so a run killed before its record leaves volume
  // indexes the next run knows to remove (and no others). Beside other
  // writers, first takes id's publish lock (FORMAT.md §8) until EndWrite.
  Status JournalBackup(const std::string& id);
  // The run's packs are committed (named by an index file) or removed: its
  // journal goes. keep_journal: a pack could not be removed, and the journal
  // is all that names it; it stays, its run lock released, so the next run
  // removes what it names (FORMAT.md §9).
  void EndWrite(bool keep_journal = false);
  Status ListPacks(std::vector<std::string>* ids);
  // Pack id's object name ("packs/ab/<id>"), and how messages name it.
  static std::string PackName(const std::string& id);
  std::string PackPath(const std::string& id) const { return backend_->Describe(PackName(id)); }
  Status OpenPack(const std::string& id, std::shared_ptr<RandomAccessFile>* out);
  // Reads and validates pack `id`'s header (opened with the key when sealed).
  Status ReadPackHeader(const std::string& id, const RandomAccessFile& f,
                        std::vector<PackEntry>* entries);
  // Reads blob e of pack `id` into *stored (its stored form, opened when
  // sealed) and decodes it into raw (e.raw_len bytes), checking it: against
  // its id, or in a sealed pack (authenticated) against the raw bytes'
  // XXH3-64 sealed with it, and its keyed id too only when full_check.
  // *raw_check (if given): that XXH3-64, for a copy into another pack.
  Status ReadBlob(const std::string& id, const RandomAccessFile& f, const PackEntry& e,
                  std::vector<uint8_t>* stored, uint8_t* raw, ChunkDecompressor* dec,
                  bool full_check = false, uint64_t* raw_check = nullptr);
  // Reads, decodes and verifies one chunk against its digest into out
  // (which must hold loc.raw_len bytes).
  Status ReadChunk(const ChunkIndex& index, const Digest& d, uint8_t* out, ChunkDecompressor* dec);
  // The same, reading from f, which holds pack `loc.pack`'s bytes (or a
  // window of them already fetched: see BlobExtent).
  Status ReadChunkFrom(const ChunkIndex& index, const Digest& d, const ChunkLocation& loc,
                       const RandomAccessFile& f, uint8_t* out, ChunkDecompressor* dec);
  // The pack entry of chunk d at loc, for ReadBlob.
  static PackEntry EntryOf(const Digest& d, const ChunkLocation& loc);
  // How many bytes of its pack a chunk takes from loc.offset on: blobs lie
  // back to back, so a reader can fetch a run of them in one request.
  uint64_t BlobExtent(const ChunkLocation& loc) const {
    return loc.stored_len + (encrypted() ? kSealedBlobOverhead : 0);
  }
  // Reads the content of a volume slot of slot_len bytes: zeros for the zero
  // digest, a whole chunk, or a patch applied to its base chain. Every blob
  // read is checked against its digest; a chain must descend in depth.
  Status ReadSlot(const ChunkIndex& index, const Digest& d, uint8_t* out, uint32_t slot_len,
                  ChunkDecompressor* dec);

  // Volume indexes.
  Status WriteVolumeIndex(const std::string& rel_path, const VolumeIndex& vi, uint64_t* checksum);
  Status ReadVolumeIndex(const VolumeRecord& v, VolumeIndex* vi);

  // Backup records. Write-once: Exists if the id is taken.
  Status WriteBackupRecord(const BackupRecord& r);
  // Whether a backup's record is there; kUnknown if the store cannot say.
  enum class RecordState { kAbsent, kVisible, kUnknown };
  RecordState RecordStateOf(const std::string& id);
  struct PublishOutcome {
    // Whether the record is there: a failed write may have stored it (a
    // lost answer, a directory sync that failed after the rename).
    RecordState record = RecordState::kAbsent;
    bool volumes_left = false;  // a volume index it wrote could not be removed
  };
  // Publishes backup rec (FORMAT.md §9): journals its id, writes its volume
  // indexes (setting each volume's index name and checksum), then the
  // record. On failure removes the volume indexes it wrote only if the
  // record is known absent; Exists if a name of the id is taken (another
  // backup's: nothing of it is touched).
  Status PublishBackup(BackupRecord* rec, const std::vector<VolumeIndex>& indexes,
                       PublishOutcome* out);
  bool BackupIdTaken(const std::string& id);
  bool BackupExists(const std::string& id);  // its record is there
  // All readable records, oldest first; unreadable ones are reported in errors.
  Status ListBackups(std::vector<BackupRecord>* out, std::vector<Status>* errors);
  // Removes a backup: its record, then its volume indexes. Chunks stay (the
  // garbage collection of a later prune removes those no backup uses).
  // Every other backup still restores: each has a complete volume index.
  Status ForgetBackup(const BackupRecord& r);
  // Removes a record that cannot be read (forget --force), and the volume
  // indexes named after it; *what describes the file before it goes. With
  // no record, removes the volume indexes named after id, if any.
  Status ForgetUnreadable(const std::string& id, std::string* what);
  // spec: a full id, a unique id prefix, or "latest".
  Status FindBackup(const std::string& spec, BackupRecord* out);

  // Garbage collection's locks (FORMAT.md §8). Open takes gc/users shared
  // for every locked mode (waiting at gc/gate while a prune deletes); these
  // are prune's. LockGc: gc/lock, exclusive, for the whole prune.
  Status LockGc(const std::string& purpose, std::unique_ptr<FileLock>* out);
  // gc/gate, then gc/users, then the repository lock, exclusively: no
  // other process that reads the repository runs until they are released
  // (the repository lock keeps out a gnomon older than format version 8,
  // which knows no gc/ locks). Waits for the users to drain at most 60 s
  // at a time, letting go of the gate in between, up to max_wait_ms in
  // all; then Locked. Aborted as soon as *cancel is set.
  struct DeletionLocks {
    std::unique_ptr<FileLock> gate, users, repository;
  };
  Status EnterDeletion(int64_t max_wait_ms, const std::atomic<bool>* cancel, DeletionLocks* out);
  // Told (once per wait) when Open waits at the gate, for the user.
  static void SetWaitNotice(std::function<void(const std::string&)> notice);

  // Prune's deletions (the caller holds gc/users exclusively).
  Status DeletePack(const std::string& id);
  Status DeleteIndexFile(const std::string& name);
  struct QuarantineFile {
    std::string name;
    std::vector<BadChunk> chunks;
  };
  Status ListQuarantineFiles(std::vector<QuarantineFile>* out, std::vector<Status>* errors);
  Status DeleteQuarantineFile(const std::string& name);
  Status DeleteCheckFile(const std::string& name);
  // Removes what dead runs left, as an exclusive Open does, and (if every
  // index file reads) packs that no index file and no journal names; one
  // line per kind in cleaned(). Only under gc/users held exclusively.
  void RemoveLeftoversForGc();

  // What interrupted runs left behind (verify reports it; the next
  // exclusive Open removes it).
  Status FindLeftovers(Leftovers* out);
  // What Open removed, one line each, for the user.
  const std::vector<std::string>& cleaned() const { return cleaned_; }
  // What that cleanup could not do (it is best effort; the next run tries
  // again), one line each, for the user.
  const std::vector<std::string>& upkeep_warnings() const { return upkeep_warnings_; }

 private:
  explicit Repository(std::unique_ptr<Backend> backend) : backend_(std::move(backend)) {}
  // An object's name ("index/<id>"), and how a message names it.
  template <class... Parts>
  static std::string P(const Parts&... parts) {
    return RepoPath("", parts...);
  }
  std::string D(const std::string& name) const { return backend_->Describe(name); }
  // Removes what runs that died left: their packs no index names,
  // temporaries, volume indexes without a record. Without the exclusive
  // lock, only what journals of dead runs name (their run lock is free).
  // unjournaled: also packs no index file and no journal names.
  void RemoveLeftovers(bool unjournaled = false);
  bool Writes() const { return mode_ == LockMode::kAppend || mode_ == LockMode::kExclusive; }
  // The run lock of journal tmp/<name>.
  static std::string RunLockName(const std::string& journal);
  // Whether journal tmp/<name>'s writer is alive (its run lock is held).
  bool RunAlive(const std::string& journal);
  // gc/backup-<id>: held by a run beside others while it publishes id.
  static std::string PublishLockName(const std::string& id);
  // Removes volume indexes of dead runs' unrecorded backups (names), each
  // id's under its publish lock; returns the ids whose volume indexes stay
  // (a live run publishes that id, or a removal failed): their journals stay.
  std::set<std::string> RemoveJournaledOrphans(const std::vector<std::string>& names);
  // RemoveLeftovers under gc/lock shared, unless a prune runs (exclusive
  // opens: at Open, or when an encrypted repository is unlocked).
  void CleanUpDeadRuns();
  Status ForgetRecordless(const std::string& id, std::string* what);
  void RemoveUnindexedPacks(const Leftovers& l, const std::set<std::string>& indexed);
  Status OpenJournal();
  // Appends a line to the journal, durable when it returns OK.
  Status AddToJournal(const std::string& line);
  // gc/users shared for the life of this object (FORMAT.md §8).
  Status EnterAsUser();

  // What a lock file says of its holder: no host name in an encrypted
  // repository (FORMAT.md §14.5), where the host is in no plaintext byte.
  std::string HolderText(const std::string& what) const;
  // A framed file never sealed (config, key slots): name is its object name.
  Status WritePlainFramed(const FrameKind& kind, uint32_t version, const std::string& name,
                          std::string_view body);
  Status ReadPlainFramed(const FrameKind& kind, const std::string& name, std::string* body,
                         uint32_t* version = nullptr);
  Status NeedKey(const std::string& what) const;

  std::unique_ptr<Backend> backend_;
  RepoConfig config_;
  std::shared_ptr<const MasterKey> key_;
  ChunkHasher hasher_;
  std::string unlocked_slot_;
  LockMode mode_ = LockMode::kNone;
  // users_lock_ goes last: a process never holds the repository lock
  // without gc/users (FORMAT.md §8), which prune's deletion step relies on.
  std::unique_ptr<FileLock> users_lock_, lock_;
  // Whether this process holds the repository lock exclusively: no other
  // writer runs, so whatever another run left is a dead run's.
  bool exclusive_ = false;
  // A concurrent writer's run lock (gc/run-<journal>), held while its
  // journal exists: clean-ups leave a journal whose run lock is held.
  std::unique_ptr<FileLock> run_lock_;
  std::unique_ptr<FileLock> publish_lock_;  // beside other writers, while publishing
  std::string stale_lock_;
  std::vector<std::string> cleaned_;
  std::vector<std::string> upkeep_warnings_;
  // The journal (FORMAT.md §9): put-replaced whole as lines are added.
  std::string journal_name_, journal_text_;
  std::mutex pack_cache_mu_;
  std::unordered_map<std::string, std::shared_ptr<RandomAccessFile>> pack_cache_;
};

}  // namespace gnomon
