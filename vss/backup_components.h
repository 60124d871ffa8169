// BackupComponents: the requester's single-use backup session
// (IVssBackupComponents) and, since Linux has no VSS service, the
// coordinator that delivers events to writers and drives providers.
//
// The call sequence, state machine and codes follow shared/vss-behaviour.md
// §1; a call in the wrong state returns VSS_E_BAD_STATE. Long operations
// return an Async handle. Writers' handlers run on threads of their own with
// deadlines, so a writer that hangs is reported as not responding instead of
// hanging the backup; a writer that throws is a failed writer.
//
// Design choices where VSS leaves room (documented in docs/vss.md):
//  - a PrepareForSnapshot failure fails the set (that writer will not freeze);
//  - thaw runs in reverse order of application level;
//  - when DoSnapshotSet is skipped, BackupComplete and BackupShutdown are
//    still delivered;
//  - PrepareForBackup is delivered to every identified writer; later events
//    only to writers with an explicitly included component (component mode).
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "vss/async.h"
#include "vss/documents.h"
#include "vss/provider.h"
#include "vss/writer.h"

namespace gnomon::vss {

struct RequesterOptions {
  // Deadline for every handler but Freeze/Thaw (their window is the writer's
  // freeze timeout). A writer that overruns it is VSS_E_WRITER_NOT_RESPONDING.
  uint32_t event_timeout_ms = 120000;
  // The flush-and-hold window around the provider commit (VSS: 10 s).
  uint32_t hold_window_ms = 10000;
  // Directory of the system-wide snapshot-set lock.
  std::string runtime_dir = DefaultRuntimeDir();
  // Polled while waiting: set (by a signal handler, say) to abort, which
  // thaws at once.
  const std::atomic<bool>* cancel = nullptr;
};

struct WriterStatus {
  Guid instance_id, class_id;
  std::string name;
  WriterState state = WriterState::kUnknown;
  HResult failure = S_OK_;
  std::string message;
};

// One line of the session's event log: what was delivered to whom, in order.
struct EventRecord {
  std::string event;   // "Identify", "Freeze", "CommitSnapshots", ...
  std::string target;  // writer or provider name
};

class BackupComponents {
 public:
  BackupComponents(std::vector<std::shared_ptr<Writer>> writers,
                   std::vector<std::shared_ptr<Provider>> providers, RequesterOptions options = {});
  // Releasing the session: aborts what is in progress, delivers
  // BackupShutdown, deletes the snapshots, frees the snapshot-set lock.
  // Idempotent; the destructor calls it.
  void Release();
  ~BackupComponents();
  BackupComponents(const BackupComponents&) = delete;
  BackupComponents& operator=(const BackupComponents&) = delete;

  HResult InitializeForBackup();
  HResult SetContext(uint32_t context);
  HResult SetBackupState(bool select_components, bool bootable_system_state, BackupType type,
                         bool partial_file_support = false);
  HResult GatherWriterMetadata(std::shared_ptr<Async>* async);
  size_t GetWriterMetadataCount() const;
  const WriterMetadata* GetWriterMetadata(size_t i) const;
  HResult AddComponent(const Guid& instance_id, const Guid& class_id, ComponentType type,
                       const std::string& logical_path, const std::string& name);
  HResult StartSnapshotSet(Guid* set_id);
  // provider: a provider name, or "" to choose automatically (in the order
  // the providers were given).
  HResult AddToSnapshotSet(const std::string& volume, const std::string& provider,
                           Guid* snapshot_id);
  HResult SetBackupOptions(const Guid& class_id, ComponentType type,
                           const std::string& logical_path, const std::string& name,
                           const std::string& options);
  HResult SetPreviousBackupStamp(const Guid& class_id, ComponentType type,
                                 const std::string& logical_path, const std::string& name,
                                 const std::string& stamp);
  HResult PrepareForBackup(std::shared_ptr<Async>* async);
  HResult GatherWriterStatus(std::shared_ptr<Async>* async);
  size_t GetWriterStatusCount() const;
  HResult GetWriterStatus(size_t i, WriterStatus* out) const;
  // §5.4: true if some included file set needs a snapshot for the backup
  // type; if not, DoSnapshotSet may be skipped.
  bool IsSnapshotRequired() const;
  HResult DoSnapshotSet(std::shared_ptr<Async>* async);
  HResult GetSnapshotProperties(const Guid& snapshot_id, SnapshotProperties* out) const;
  // Asks each snapshot's provider whether what was read from it is still
  // point-in-time (Provider::CheckSnapshotIntact); *why names the first
  // that is not.
  HResult CheckSnapshotsIntact(std::string* why) const;
  HResult SetBackupSucceeded(const Guid& instance_id, const Guid& class_id, ComponentType type,
                             const std::string& logical_path, const std::string& name,
                             bool succeeded);
  HResult BackupComplete(std::shared_ptr<Async>* async);
  HResult AbortBackup();
  // Keeps a snapshot beyond the session (not deleted at release), labelled
  // as the change-tracking base of a committed backup. Providers that cannot
  // keep snapshots refuse.
  HResult KeepSnapshot(const Guid& snapshot_id, const std::string& backup_id,
                       BackupType backup_type, const std::string& volume_key);

  // The documents, as they stand (save them after DoSnapshotSet).
  const BackupComponentsDocument& document() const { return bcd_; }
  // Human detail of the last failure: provider reasons, writer messages.
  std::string last_error() const;
  std::vector<EventRecord> event_log() const;
  // How long writers were frozen in DoSnapshotSet: from the first Freeze
  // delivered to the last Thaw returned (or the abort), in milliseconds.
  double frozen_ms() const;

 private:
  enum class State { kNew, kInit, kMeta, kSet, kPrepared, kSnapped, kFailed, kAborted, kCompleted };
  using Event = WriterEvent;
  struct Slot;
  struct Job;
  struct Member {  // a volume in the set
    VolumeIdentity volume;
    std::shared_ptr<Provider> provider;
    Guid snapshot_id;
    bool keep = false;
  };

  HResult CheckIdle() const;  // no async operation running
  std::shared_ptr<Async> Run(std::function<HResult(const std::atomic<bool>&)> op);
  std::shared_ptr<SessionView> MakeView() const;
  bool Included(const Slot& s) const;
  std::vector<Slot*> Participants() const;                   // included, responsive, not failed
  std::vector<Slot*> AtLevel(ApplicationLevel level) const;  // participants, by freeze group
  bool SnapshotRequiredLocked() const;
  // Delivers ev to each slot in parallel and waits for all, their
  // deadlines, or an abort. Marks failures; returns true if all succeeded.
  bool Deliver(Event ev, const std::vector<Slot*>& slots);
  void MarkFailed(Slot* s, Event ev, HResult hr, const std::string& msg);
  HResult DoSnapshotSetWork(const std::atomic<bool>& cancelled);
  HResult RunProviders(const char* step, HResult (Provider::*fn)(const Guid&));
  // Thaws by delivering OnAbort to everyone not yet past PostSnapshot and
  // aborting providers; safe from any thread, runs once per session.
  void AbortWriters(const std::string& why);
  void Watchdog();
  bool CancelRequested() const;
  void Log(const std::string& event, const std::string& target);
  void ReleaseSetLock();

  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<std::shared_ptr<Provider>> providers_;
  RequesterOptions opt_;

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  State state_ = State::kNew;
  bool context_set_ = false;
  bool backup_state_set_ = false;
  BackupComponentsDocument bcd_;
  bool bcd_read_only_ = false;
  std::vector<Member> set_;
  bool snapshot_set_reached_ = false;  // providers got BeginPrepareSnapshot
  bool aborted_ = false;               // AbortWriters has run or is running
  bool do_snapshot_running_ = false;
  std::vector<WriterStatus> gathered_;
  std::string last_error_;
  std::vector<EventRecord> log_;
  std::shared_ptr<Async> running_;
  int set_lock_fd_ = -1;
  bool released_ = false;
  double frozen_ms_ = 0;
  std::thread watchdog_;
  bool watchdog_stop_ = false;
};

}  // namespace gnomon::vss
