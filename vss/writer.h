// Writer: the base class of an in-process writer, mirroring CVssWriter.
// The handlers VSS makes pure virtual are pure virtual here. Handlers run on
// a thread the requester starts for each event; the helpers (GetBackupType,
// SetWriterFailure, ...) are valid only on that thread while a handler runs.
//
// Contract (shared/vss-behaviour.md §2.2): return true unless the error is
// fatal; for a fatal error call SetWriterFailure(code) and return false. An
// exception escaping a handler is treated as a fatal NONRETRYABLE failure.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <string>
#include <vector>

#include "base/status.h"
#include "vss/codes.h"
#include "vss/documents.h"
#include "vss/types.h"

namespace gnomon::vss {

// The events a writer receives, in the order of a backup.
enum class WriterEvent {
  kIdentify,
  kPrepareBackup,
  kPrepareSnapshot,
  kFreeze,
  kThaw,
  kPostSnapshot,
  kAbort,
  kBackupComplete,
  kBackupShutdown
};
inline constexpr int kWriterEventCount = 9;
// VSS's names: "Identify", "PrepareForBackup", "PrepareForSnapshot",
// "Freeze", "Thaw", "PostSnapshot", "Abort", "BackupComplete",
// "BackupShutdown" (also the writer protocol's and script writers' names).
const char* WriterEventName(WriterEvent e);
// The event of a name, or false.
bool WriterEventFromName(const std::string& name, WriterEvent* out);

// What a writer may learn about the session during an event.
struct SessionView {
  BackupType backup_type = BackupType::kUndefined;
  bool select_components = true;
  bool bootable_system_state = false;
  bool partial_file_support = false;
  uint32_t context = ctx::kBackup;
  Guid snapshot_set_id;
  std::vector<std::string> volumes;
  std::vector<std::pair<std::string, std::string>> snapshot_devices;  // volume -> device
  std::vector<std::pair<std::string, std::string>> volume_providers;  // volume -> provider
  std::vector<std::pair<std::string, std::string>> snapshot_ids;      // volume -> snapshot id
  std::function<bool(const std::string&)> path_affected;
};

class Writer {
 public:
  Writer() = default;
  virtual ~Writer() = default;
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // CVssWriter::Initialize. A second call returns E_FAIL.
  HResult Initialize(const Guid& class_id, const std::string& name, UsageType usage,
                     SourceType source, ApplicationLevel level = ApplicationLevel::kFrontEnd,
                     uint32_t freeze_timeout_ms = 60000, const std::string& instance_name = "");

  bool initialized() const { return initialized_; }
  const Guid& class_id() const { return class_id_; }
  const Guid& instance_id() const { return instance_id_; }
  const std::string& name() const { return name_; }
  const std::string& instance_name() const { return instance_name_; }
  ApplicationLevel level() const { return level_; }
  UsageType usage() const { return usage_; }
  SourceType source() const { return source_; }
  uint32_t freeze_timeout_ms() const { return freeze_timeout_ms_; }
  // What the writer is, for `gnomon writers`: "built-in", "process" (a
  // program on a socket) or "script", and where it is.
  virtual std::string kind() const { return "built-in"; }
  virtual std::string detail() const { return ""; }

  // Events. `md` arrives with the identity filled in; add components to it.
  virtual bool OnIdentify(WriterMetadata* md) {
    (void)md;
    return true;
  }
  virtual bool OnPrepareBackup(WriterComponents* components) {
    (void)components;
    return true;
  }
  virtual bool OnPrepareSnapshot() = 0;
  virtual bool OnFreeze() = 0;
  virtual bool OnThaw() = 0;
  virtual bool OnPostSnapshot(WriterComponents* components) {
    (void)components;
    return true;
  }
  virtual bool OnAbort() = 0;
  virtual bool OnBackupComplete(WriterComponents* components) {
    (void)components;
    return true;
  }
  virtual bool OnBackupShutdown(const Guid& snapshot_set_id) {
    (void)snapshot_set_id;
    return true;
  }

  // Whether work begun with StartPreparation is still running. The
  // requester asks when OnPrepareSnapshot has returned: VSS lets such work
  // run on past PrepareForBackup but requires it to end before
  // PrepareForSnapshot does, so a writer still preparing then fails
  // (FAILED_AT_PREPARE_SNAPSHOT) and nothing freezes. Virtual for proxies
  // of writers in other processes, which learn it from the writer.
  virtual bool PreparationRunning() const { return preparing_.load(); }

 protected:
  // Runs `work` on a thread of its own, so that slow preparation (a
  // database checkpoint) overlaps what the requester does between
  // PrepareForBackup and DoSnapshotSet. Call it in OnPrepareBackup (a second
  // call first waits for the first work), and FinishPreparation in
  // OnPrepareSnapshot. A writer whose work uses its own members calls
  // FinishPreparation in its destructor too (this base class waits for the
  // work only after the derived object is gone).
  void StartPreparation(std::function<Status()> work);
  // Waits for the work and returns its outcome (OK if there was none). Its
  // errors are the writer's to report, with SetWriterFailure on the thread
  // the event was delivered on, as VSS requires of work on other threads.
  Status FinishPreparation();

  BackupType GetBackupType() const;
  bool IsBootableStateBackedUp() const;
  bool AreComponentsSelected() const;
  bool IsPartialFileSupportEnabled() const;
  // True if path lies on a volume of the snapshot set.
  bool IsPathAffected(const std::string& path) const;
  uint32_t GetContext() const;
  // Valid in PrepareForSnapshot, Freeze, Thaw and PostSnapshot only.
  Guid GetCurrentSnapshotSetId() const;
  std::vector<std::string> GetCurrentVolumeArray() const;
  // The device or file the snapshot of `volume` can be read from (PostSnapshot).
  std::string GetSnapshotDeviceName(const std::string& volume) const;
  // Which provider snapshots `volume`, and the snapshot's id (from
  // PrepareForBackup on, once the set is known); "" if unknown.
  std::string GetVolumeProvider(const std::string& volume) const;
  std::string GetSnapshotId(const std::string& volume) const;
  // Accepts only the five VSS_E_WRITERERROR_* codes VSS allows (else
  // E_INVALIDARG); the message is shown to the user with the writer status.
  HResult SetWriterFailure(HResult hr, const std::string& message = "");
  // For proxies of writers in other processes (RemoteWriter): the writer
  // cannot be reached, which the requester reports as
  // VSS_E_WRITER_NOT_RESPONDING rather than as the writer's own failure.
  void ReportNotResponding(const std::string& message);

 private:
  bool initialized_ = false;
  Guid class_id_, instance_id_;
  std::string name_, instance_name_;
  UsageType usage_ = UsageType::kUndefined;
  SourceType source_ = SourceType::kUndefined;
  ApplicationLevel level_ = ApplicationLevel::kFrontEnd;
  uint32_t freeze_timeout_ms_ = 60000;
  void Launch(std::function<Status()> work);  // StartPreparation's thread
  // Declared last: the future is destroyed first, and waits for the work.
  std::atomic<bool> preparing_{false};
  std::future<Status> preparation_;
};

namespace detail {
// Set by the requester on the delivering thread for the duration of one
// handler call; the Writer helpers read it.
struct EventContext {
  const SessionView* session = nullptr;
  bool set_id_valid = false;  // PrepareForSnapshot .. PostSnapshot
  HResult failure = S_OK_;
  std::string failure_message;
  bool not_responding = false;
};
EventContext*& CurrentEvent();
}  // namespace detail

}  // namespace gnomon::vss
