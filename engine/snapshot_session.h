// SnapshotSession: the requester side of a gnomon backup. Runs the VSS
// sequence over the volumes to back up (writers gathered, components added,
// snapshot set created with writers frozen only around the provider commit),
// hands the pipeline the snapshot devices, and finishes with BackupComplete
// and release (BackupShutdown, snapshots deleted) however the backup ends.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/backup_plan.h"
#include "engine/writer_options.h"
#include "vss/backup_components.h"
#include "vss/contracts.h"
#include "vss/provider.h"
#include "vss/script_writer.h"
#include "vss/writer_protocol.h"

namespace gnomon {

struct SnapshotOptions {
  vss::BackupType type = vss::BackupType::kFull;
  // A full only: keep its snapshot unchanged as the base of later
  // differentials (vss::BaseLabel::for_differentials).
  bool for_differentials = false;
  std::string provider;  // "" = automatic: the first of SnapshotProviderNames() that can
  uint32_t freeze_timeout_ms = 60000;
  uint32_t hold_window_ms = 10000;
  uint32_t event_timeout_ms = 120000;
  // Carry on when a writer fails PrepareForBackup or PostSnapshot (VSS lets
  // the requester decide); off, such a failure fails the backup.
  bool ignore_writer_failures = false;
  // How long to wait for another snapshot set on this system to be created
  // (VSS: "wait and retry"); the window is normally well under a second.
  uint32_t set_wait_ms = 30000;
  // Which writers' components take part (--component WRITER[\LOGICAL\PATH]);
  // empty: every writer with data on the volumes (engine/component_selection.h).
  std::vector<std::string> components;
  std::vector<std::shared_ptr<vss::Writer>> extra_writers;
  // The snapshot providers to try, in order; empty = every provider of this
  // build (vss/provider_registry.h).
  std::vector<std::shared_ptr<vss::Provider>> providers;
  std::string state_dir = vss::DefaultStateDir();
  std::string runtime_dir = vss::DefaultRuntimeDir();
  // Writers in other processes listen here; executables here are script
  // writers ("" = none of either).
  std::string writer_dir = vss::proto::DefaultWriterDir();
  std::string hooks_dir = vss::DefaultHooksDir();
  const std::atomic<bool>* cancel = nullptr;
  // --writer-option: backup options for the components of the writers they
  // name (SetBackupOptions). One that names no writer fails Create.
  std::vector<WriterOption> writer_options;
};

// Where the pipeline reads one volume from.
struct SnapshotSource {
  std::string volume;  // as given by the user
  std::string key;     // stable volume identity (vss::VolumeKey)
  std::string device;  // snapshot device or file
  uint64_t offset = 0, size = 0;
  std::string provider;
  bool retainable = false;  // the provider can keep it as the next backup's base
};

class SnapshotSession {
 public:
  explicit SnapshotSession(SnapshotOptions opt);
  ~SnapshotSession();

  // Everything up to and including DoSnapshotSet. On failure the session has
  // already aborted (writers thawed) and the status says why.
  // previous_stamps: volume -> the backup stamp of its parent backup, handed
  // to the volume writer with SetPreviousBackupStamp; component_stamps: the
  // parents' stamps of every other writer's components, handed back to
  // each included component with the same writer class, logical path and
  // name. Only writers whose backup schema declares VSS_BS_TIMESTAMPED get
  // a stamp back.
  Status Create(const std::vector<std::string>& volumes,
                const std::map<std::string, std::string>& previous_stamps = {},
                const std::vector<ComponentStamp>& component_stamps = {});
  const std::vector<SnapshotSource>& sources() const { return sources_; }
  // What the user should know that did not stop the backup (a stale writer
  // socket, a writer that did not answer hello).
  const std::vector<std::string>& notes() const { return notes_; }
  // Create failed because SnapshotOptions::components named a writer or
  // component that does not exist or cannot be selected (a usage error).
  bool bad_selection() const { return bad_selection_; }
  // What the volume writer decided about change tracking for volume i.
  vss::TrackingVerdict Verdict(size_t i) const { return VerdictFor(sources_[i].volume); }
  // The byte ranges of volume i's snapshot device (file coordinates) that
  // changed since the base a tracked verdict names, from its provider:
  // sorted, merged and within the volume. An error says why not (then read
  // everything): the base's record does not match the stamp, or the
  // provider cannot say.
  Status ChangedSinceBase(size_t i, const vss::TrackingVerdict& v,
                          std::vector<vss::ByteRange>* out) const;
  // Keeps volume i's snapshot as the change-tracking base of backup_id, and
  // deletes the bases of that volume it supersedes. Call after the backup
  // record is durable and before Complete().
  Status RetainBase(size_t i, const std::string& backup_id, vss::BackupType type);
  // After the snapshots were read, before the backup is published:
  // SnapshotFailed if a provider says what was read is not point-in-time
  // (something wrote to a volume the offline provider was reading).
  Status CheckIntact() const;
  // The documents to store with the backup: BCD, every WMD, writer status.
  nlohmann::json Documents() const;
  // SetBackupSucceeded for every component, then BackupComplete and release.
  Status Complete(bool succeeded);

 private:
  Status Fail(vss::HResult hr, const std::string& what);
  Status AddComponents(const std::vector<vss::VolumeIdentity>& ids);
  vss::TrackingVerdict VerdictFor(const std::string& volume) const;
  Status CheckBase(size_t i, const vss::TrackingVerdict& v,
                   const vss::SnapshotProperties& base) const;
  Status CheckWriters(const char* phase);
  // SetBackupOptions (--writer-option) and SetPreviousBackupStamp for each
  // included component, between AddToSnapshotSet and PrepareForBackup.
  Status SetComponentOptions(const std::map<std::string, std::string>& volume_stamps,
                             const std::vector<ComponentStamp>& component_stamps);
  // What writers that did not fail said in their status (a stamp ignored, a
  // non-fatal failure), as notes for the user.
  void NoteWriterMessages();
  void GatherStatus();
  void AdvanceBases(const std::vector<std::string>& volumes,
                    const std::vector<vss::VolumeIdentity>& ids);

  SnapshotOptions opt_;
  std::unique_ptr<vss::BackupComponents> bc_;
  std::vector<std::shared_ptr<vss::Provider>> providers_;  // vss/provider_registry.h
  vss::Provider* ProviderNamed(const std::string& name) const;
  std::vector<SnapshotSource> sources_;
  std::vector<vss::Guid> snapshot_ids_;
  std::vector<vss::WriterStatus> status_;
  std::vector<std::string> notes_;
  bool bad_selection_ = false;
  bool completed_ = false;
};

}  // namespace gnomon
