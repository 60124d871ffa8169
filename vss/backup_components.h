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
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
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
  // Set (by a signal handler, say) to abort, which thaws. Nothing can
  // notify a wait when it is set, so DoSnapshotSet checks it every 100 ms.
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
  // Enforces selectability (vss/component_sets.h): a non-selectable
  // subcomponent is E_INVALIDARG (it comes in only with its set), a
  // component whose set overlaps one already added is
  // VSS_E_OBJECT_ALREADY_EXISTS; last_error() says which. The members of the
  // component's set are listed in the BCD's implicit_components.
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
  // VSS_E_BAD_STATE, with nothing delivered, if a writer that takes part
  // lacks one of its required components (last_error() names it).
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
  HResult KeepSnapshot(const Guid& snapshot_id, const BaseLabel& label);

  // The documents, as they stand (save them after DoSnapshotSet).
  const BackupComponentsDocument& document() const { return bcd_; }
  // Human detail of the last failure: provider reasons, writer messages.
  std::string last_error() const;
  std::vector<EventRecord> event_log() const;
  // How long writers were frozen in DoSnapshotSet: from the first Freeze
  // delivered to the last Thaw returned (or the abort), in milliseconds.
  double frozen_ms() const;

 private:
  // The implementation is split by job over backup_components*.cc; the
  // types below are defined in vss/backup_components_internal.h.
  enum class State { kNew, kInit, kMeta, kSet, kPrepared, kSnapped, kFailed, kAborted, kCompleted };
  enum class CommitWait { kDone, kInterrupted, kHoldWindowOver };
  using Event = WriterEvent;
  using Clock = std::chrono::steady_clock;
  struct Slot;      // a writer as the session sees it
  struct Job;       // one handler call in flight
  struct Batch;     // one event's delivery, shared with its handler threads
  struct Delivery;  // Deliver's working state
  struct Member {   // a volume in the set
    VolumeIdentity volume;
    std::shared_ptr<Provider> provider;
    Guid snapshot_id;
    bool keep = false;
  };

  // The session (backup_components.cc).
  HResult CheckIdle() const;  // no async operation running
  std::shared_ptr<Async> Run(std::function<HResult(const std::atomic<bool>&)> op);
  // Cancels the running operation, wakes it if it waits on cv_, waits for it.
  void CancelAndWait(const std::shared_ptr<Async>& running);
  bool CancelRequested() const;
  void Log(const std::string& event, const std::string& target);

  // Who takes part (backup_components_selection.cc); callers hold mu_.
  bool Included(const Slot& s) const;
  std::vector<Slot*> Participants() const;                   // included, responsive, not failed
  std::vector<Slot*> AtLevel(ApplicationLevel level) const;  // participants, by freeze group
  bool SnapshotRequiredLocked() const;
  // The "path\name" of s's components included explicitly or implicitly
  // (as members of an added component set).
  std::set<std::string> IncludedLocked(const Slot& s) const;
  // PrepareForBackup's check: every writer that takes part has each of its
  // required components added; VSS_E_BAD_STATE naming one that is not.
  HResult CheckRequiredLocked();

  // The snapshot set (backup_components_set.cc).
  HResult RunProviders(const char* step, HResult (Provider::*fn)(const Guid&));
  void ReleaseSetLock();

  // Delivering events (backup_components_delivery.cc).
  std::shared_ptr<SessionView> MakeView() const;
  // Delivers ev to each slot in parallel and waits for all, their
  // deadlines, or (Freeze, Thaw) an abort. Marks failures; returns true if
  // all succeeded.
  bool Deliver(Event ev, const std::vector<Slot*>& slots);
  void Send(Delivery& d, size_t i, const std::shared_ptr<SessionView>& view);
  bool SetDeadlineLocked(Event ev, Slot* s, const std::shared_ptr<Job>& job,
                         Clock::time_point* deadline);
  void WaitForHandlers(const Delivery& d);
  bool Collect(const Delivery& d);
  bool ApplyResult(Slot* s, Event ev, const Job& job);
  // A stamp from a writer without VSS_BS_TIMESTAMPED, not kept: noted in
  // its status and the log.
  void IgnoredStampLocked(Slot* s, Event ev, const ComponentRecord& c);
  void MarkFailed(Slot* s, Event ev, HResult hr, const std::string& msg);

  // DoSnapshotSet, the abort and the watchdog (backup_components_snapshot.cc).
  HResult DoSnapshotSetWork(const std::atomic<bool>& cancelled);
  HResult PrepareProviders();
  HResult FreezeCommitThaw(const std::atomic<bool>& cancelled);
  HResult FrozenSteps(const std::atomic<bool>& cancelled);
  HResult CommitInHoldWindow(const std::atomic<bool>& cancelled);
  CommitWait WaitForCommit(Clock::time_point hold_end, const bool& committed,
                           const std::atomic<bool>& cancelled);
  HResult PostSnapshot();
  HResult StopWith(HResult hr, const std::string& why);  // AbortWriters(why), then hr
  bool Interrupted(const std::atomic<bool>& cancelled) const;
  HResult WriterFailure() const;  // the first failing writer's code
  HResult WriterFailureLocked() const;
  // Thaws by delivering OnAbort to everyone not yet past PostSnapshot and
  // aborting providers (during the provider commit: once it has returned,
  // on the commit's thread); safe from any thread, runs once per session.
  void AbortWriters(const std::string& why);
  void Watchdog();
  Clock::time_point WatchdogWakeLocked() const;
  void ExpireFreezeWindowsLocked(std::string* why);

  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<std::shared_ptr<Provider>> providers_;
  RequesterOptions opt_;

  mutable std::mutex mu_;  // guards everything below
  // Wakes the watchdog and a wait for the provider commit: a freeze window
  // armed or cancelled, the abort, the commit's end, a cancel, a stop.
  std::condition_variable cv_;
  State state_ = State::kNew;
  bool context_set_ = false;
  bool backup_state_set_ = false;
  BackupComponentsDocument bcd_;
  bool bcd_read_only_ = false;
  std::vector<Member> set_;
  bool snapshot_set_reached_ = false;  // providers got BeginPrepareSnapshot
  bool aborted_ = false;               // AbortWriters has run or is running
  // CommitSnapshots is running on the commit's thread; an abort meanwhile
  // sets provider_abort_deferred_ and that thread runs AbortSnapshots once
  // the commit has returned (CommitInHoldWindow).
  bool commit_running_ = false;
  bool provider_abort_deferred_ = false;
  // Freeze and Thaw deliveries in progress, for AbortWriters to stop.
  std::vector<std::shared_ptr<Batch>> abortable_;
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
