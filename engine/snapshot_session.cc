#include "engine/snapshot_session.h"

#include "engine/backup_plan.h"
#include "engine/component_selection.h"
#include "engine/snapshots_admin.h"
#include "engine/writers_admin.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <set>
#include <thread>

#include "base/durable_file.h"
#include "base/json.h"
#include "base/system.h"
#include "vss/fs_freeze_writer.h"
#include "vss/provider_registry.h"
#include "vss/remote_writer.h"
#include "vss/volume_stamp.h"
#include "vss/volume_writer.h"

namespace gnomon {

using nlohmann::json;
using vss::HResult;

SnapshotSession::SnapshotSession(SnapshotOptions opt) : opt_(std::move(opt)) {}

SnapshotSession::~SnapshotSession() {
  if (bc_ && !completed_) bc_->AbortBackup();
  bc_.reset();  // release: BackupShutdown, snapshots deleted
}

Status SnapshotSession::Fail(HResult hr, const std::string& what) {
  std::string detail = bc_ ? bc_->last_error() : "";
  std::string msg = what + ": " + vss::DescribeHResult(hr) + (detail.empty() ? "" : ": " + detail);
  if (bc_) {
    bc_->AbortBackup();
    GatherStatus();
    SaveWriterStatus(opt_.state_dir, status_);
  }
  if (hr == vss::VSS_S_ASYNC_CANCELLED || (opt_.cancel && opt_.cancel->load()))
    return Status::Aborted("backup interrupted; every frozen filesystem was thawed");
  switch (hr) {
    case vss::VSS_E_VOLUME_NOT_SUPPORTED:
    case vss::VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER:
    case vss::VSS_E_PROVIDER_NOT_REGISTERED:
      return Status::InvalidArgument(msg);
    case vss::VSS_E_OBJECT_NOT_FOUND:
      return Status::NotFound(msg);
    default:
      return Status::SnapshotFailed(msg);
  }
}

void SnapshotSession::GatherStatus() {
  std::shared_ptr<vss::Async> a;
  if (bc_->GatherWriterStatus(&a) != vss::S_OK_) return;
  vss::WaitForAsync(a);
  status_.clear();
  for (size_t i = 0; i < bc_->GetWriterStatusCount(); ++i) {
    vss::WriterStatus s;
    bc_->GetWriterStatus(i, &s);
    status_.push_back(s);
  }
}

// Component mode: what engine/component_selection.h chooses (each writer's
// required components and its component sets with data on the volumes, for
// the writers --component names, or all); set members come in implicitly.
Status SnapshotSession::AddComponents(const std::vector<vss::VolumeIdentity>& ids) {
  std::vector<const vss::WriterMetadata*> mds;
  for (size_t i = 0; i < bc_->GetWriterMetadataCount(); ++i)
    mds.push_back(bc_->GetWriterMetadata(i));
  auto on_volumes = [&](const vss::FileSpec& f) {
    return vss::PathOnVolumes(f.path, f.recursive, ids);
  };
  std::vector<ComponentChoice> chosen;
  if (Status s = ChooseComponents(mds, on_volumes, opt_.components, &chosen, &notes_); !s.ok()) {
    bad_selection_ = true;
    return s;
  }
  for (const ComponentChoice& c : chosen)
    for (size_t k : c.components) {
      const vss::ComponentInfo& info = c.writer->components[k];
      HResult hr = bc_->AddComponent(c.writer->instance_id, c.writer->class_id, info.type,
                                     info.logical_path, info.name);
      if (hr != vss::S_OK_) return Fail(hr, "AddComponent " + info.FullPath());
    }
  return Status::OK();
}

Status SnapshotSession::CheckWriters(const char* phase) {
  GatherStatus();
  std::string failed;
  for (const vss::WriterStatus& s : status_) {
    if (vss::IsFailedState(s.state))
      failed += (failed.empty() ? "" : "; ") + std::string("writer '") + s.name + "' " +
                vss::WriterStateText(s.state) + ", " + vss::DescribeHResult(s.failure) +
                (s.message.empty() ? "" : ": " + s.message);
  }
  if (failed.empty() || opt_.ignore_writer_failures) return Status::OK();
  return Fail(vss::VSS_E_UNEXPECTED_WRITER_ERROR,
              std::string("a writer failed at ") + phase + " (" + failed + ")");
}

Status SnapshotSession::Create(const std::vector<std::string>& volumes,
                               const std::map<std::string, std::string>& previous_stamps,
                               const std::vector<ComponentStamp>& component_stamps) {
  providers_ = opt_.providers.empty() ? vss::MakeProviders(opt_.state_dir) : opt_.providers;
  std::vector<std::shared_ptr<vss::Writer>> writers =
      GatherWriters(volumes, opt_, providers_, &notes_);
  vss::RequesterOptions ro;
  ro.event_timeout_ms = opt_.event_timeout_ms;
  ro.hold_window_ms = opt_.hold_window_ms;
  ro.runtime_dir = opt_.runtime_dir;
  ro.cancel = opt_.cancel;
  bc_ = std::make_unique<vss::BackupComponents>(writers, providers_, ro);

  // Identify every volume first: a typo is a plain "not found".
  std::vector<vss::VolumeIdentity> ids;
  for (const auto& v : volumes) {
    vss::VolumeIdentity id;
    if (Status s = vss::IdentifyVolume(v, &id); !s.ok()) {
      if (s.IsNotFound()) return Status::NotFound(v + ": no such file or device");
      return Status::InvalidArgument(s.message());
    }
    ids.push_back(id);
  }

  HResult hr;
  std::shared_ptr<vss::Async> a;
  if ((hr = bc_->InitializeForBackup()) != vss::S_OK_) return Fail(hr, "InitializeForBackup");
  if ((hr = bc_->SetBackupState(true, false, opt_.type)) != vss::S_OK_)
    return Fail(hr, "SetBackupState");
  if ((hr = bc_->GatherWriterMetadata(&a)) != vss::S_OK_ || (hr = vss::WaitForAsync(a)))
    return Fail(hr, "GatherWriterMetadata");
  GNOMON_RETURN_IF_ERROR(AddComponents(ids));
  vss::Guid set_id;
  const auto give_up =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(opt_.set_wait_ms);
  while ((hr = bc_->StartSnapshotSet(&set_id)) == vss::VSS_E_SNAPSHOT_SET_IN_PROGRESS &&
         std::chrono::steady_clock::now() < give_up && !(opt_.cancel && opt_.cancel->load()))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (hr != vss::S_OK_) return Fail(hr, "StartSnapshotSet");
  for (const auto& v : volumes) {
    vss::Guid snap;
    if ((hr = bc_->AddToSnapshotSet(v, opt_.provider, &snap)) != vss::S_OK_)
      return Fail(hr, "cannot snapshot " + v);
    snapshot_ids_.push_back(snap);
  }
  // The parents' stamps go back to their writers, which decide in
  // PrepareForBackup whether they can be trusted; the user's options too.
  GNOMON_RETURN_IF_ERROR(SetComponentOptions(previous_stamps, component_stamps));
  if ((hr = bc_->PrepareForBackup(&a)) != vss::S_OK_ || (hr = vss::WaitForAsync(a)))
    return Fail(hr, "PrepareForBackup");
  GNOMON_RETURN_IF_ERROR(CheckWriters("PrepareForBackup"));

  // §5.4 lets a requester skip DoSnapshotSet when no included file set needs
  // a snapshot. An image backup never can: the Volume Image Writer's
  // component for each volume is required, and its file set (the volume
  // itself, mask 0xF0F) needs a snapshot for every backup type (docs/vss.md,
  // "The file-set mask rule"). Were it missing, the volumes would be read
  // live: refuse instead.
  if (!bc_->IsSnapshotRequired())
    return Fail(vss::VSS_E_UNEXPECTED,
                "no included file set needs a snapshot (the Volume Image Writer did not take "
                "part); a volume is imaged only from a snapshot, never live");
  if (opt_.type == vss::BackupType::kIncremental) AdvanceBases(volumes, ids);
  if ((hr = bc_->DoSnapshotSet(&a)) != vss::S_OK_ || (hr = vss::WaitForAsync(a)))
    return Fail(hr, "creating the snapshot set failed");
  GNOMON_RETURN_IF_ERROR(CheckWriters("PostSnapshot"));
  for (size_t i = 0; i < volumes.size(); ++i) {
    vss::SnapshotProperties p;
    if ((hr = bc_->GetSnapshotProperties(snapshot_ids_[i], &p)) != vss::S_OK_)
      return Fail(hr, "GetSnapshotProperties " + volumes[i]);
    SnapshotSource src{volumes[i], vss::VolumeKey(ids[i]), p.device, p.offset, p.size, p.provider};
    if (vss::Provider* prov = ProviderNamed(p.provider))
      src.retainable = prov->CanRetainSnapshots();
    sources_.push_back(std::move(src));
  }
  NoteWriterMessages();
  return Status::OK();
}

Status SnapshotSession::SetComponentOptions(const std::map<std::string, std::string>& volume_stamps,
                                            const std::vector<ComponentStamp>& component_stamps) {
  std::vector<WriterIdentity> writers;
  for (size_t i = 0; i < bc_->GetWriterMetadataCount(); ++i)
    writers.push_back({bc_->GetWriterMetadata(i)->name, bc_->GetWriterMetadata(i)->class_id,
                       bc_->GetWriterMetadata(i)->instance_id});
  std::map<vss::Guid, std::string> options;
  // A writer option that names no writer is a mistake on the command line
  // (a usage error), found here, before anything is frozen. (Asking the
  // writers beforehand would cost a session of its own, which script
  // writers would see as events.)
  if (Status s = ResolveWriterOptions(opt_.writer_options, writers, &options); !s.ok()) {
    bad_selection_ = s.code() == Status::Code::kInvalidArgument;
    bc_->AbortBackup();
    return s;
  }
  auto metadata_of = [&](const vss::Guid& instance) -> const vss::WriterMetadata* {
    for (size_t i = 0; i < bc_->GetWriterMetadataCount(); ++i)
      if (bc_->GetWriterMetadata(i)->instance_id == instance) return bc_->GetWriterMetadata(i);
    return nullptr;
  };
  std::set<vss::Guid> reached;
  // A copy: the calls below edit the document.
  const std::vector<vss::ComponentRecord> components = bc_->document().components;
  for (const auto& c : components) {
    HResult hr;
    if (auto it = options.find(c.instance_id); it != options.end()) {
      hr = bc_->SetBackupOptions(c.class_id, c.type, c.logical_path, c.name, it->second);
      if (hr != vss::S_OK_) return Fail(hr, "SetBackupOptions " + c.FullPath());
      reached.insert(c.instance_id);
    }
    // As VSS requesters do, only a writer that keeps stamps gets one back
    // (and the session keeps stamps only from such writers).
    const vss::WriterMetadata* md = metadata_of(c.instance_id);
    if (!md || !(md->backup_schema & vss::schema::kTimestamped)) continue;
    std::string stamp;
    if (c.class_id == vss::VolumeWriter::ClassId()) {
      // By volume key (FindParents), since the path may have changed.
      if (auto it = volume_stamps.find(c.name); it != volume_stamps.end()) stamp = it->second;
    } else {
      const std::string cls = c.class_id.ToString();
      for (const auto& p : component_stamps)
        if (p.class_id == cls && p.logical_path == c.logical_path && p.name == c.name)
          stamp = p.stamp;
    }
    if (stamp.empty()) continue;
    hr = bc_->SetPreviousBackupStamp(c.class_id, c.type, c.logical_path, c.name, stamp);
    if (hr != vss::S_OK_) return Fail(hr, "SetPreviousBackupStamp " + c.FullPath());
  }
  for (const auto& [instance, text] : options)
    if (!reached.count(instance))
      for (const auto& w : writers)
        if (w.instance_id == instance)
          notes_.push_back("--writer-option for writer '" + w.name +
                           "' reaches nothing: it has no component in this backup");
  return Status::OK();
}

void SnapshotSession::NoteWriterMessages() {
  for (const vss::WriterStatus& s : status_)
    if (!vss::IsFailedState(s.state) && !s.message.empty())
      notes_.push_back("writer '" + s.name + "': " + s.message);
}

vss::Provider* SnapshotSession::ProviderNamed(const std::string& name) const {
  for (const auto& p : providers_)
    if (p->name() == name) return p.get();
  return nullptr;
}

// An incremental advances its trusted base in place: only what changed is
// copied, where a whole clone costs a remap per extent of the volume. The
// one base left as it is is a full's kept for differentials
// (--for-differentials): they read what changed since it.
void SnapshotSession::AdvanceBases(const std::vector<std::string>& volumes,
                                   const std::vector<vss::VolumeIdentity>& ids) {
  vss::SnapshotRegistry registry(opt_.state_dir + "/snapshots");
  for (size_t i = 0; i < volumes.size(); ++i) {
    vss::TrackingVerdict v = VerdictFor(volumes[i]);
    vss::SnapshotProperties base;
    vss::Guid id;
    if (v.tracked() && vss::Guid::Parse(v.base_snapshot, &id) && registry.Get(id, &base) &&
        base.state == vss::SnapshotState::kBase && !base.for_differentials &&
        (base.backup_type == vss::BackupType::kIncremental ||
         base.backup_type == vss::BackupType::kFull) &&
        base.volume_key == vss::VolumeKey(ids[i]))
      if (vss::Provider* p = ProviderNamed(base.provider)) p->AdvanceBase(snapshot_ids_[i], base);
  }
}

vss::TrackingVerdict SnapshotSession::VerdictFor(const std::string& volume) const {
  for (const auto& c : bc_->document().components)
    if (c.class_id == vss::VolumeWriter::ClassId() && c.name == volume)
      return vss::TrackingVerdict::Decode(c.backup_metadata);
  vss::TrackingVerdict none;
  none.reason = "the volume writer gave no verdict";
  return none;
}

// The base a tracked verdict names, read back from the registry, must be
// the one the stamp (stored in the repository) and the volume writer
// vouched for: same file, same volume, same provider and tracker, and
// either untouched since it was kept or being advanced by this very
// process. Anything else is a full read: a registry record alone never
// decides what a backup leaves unread.
Status SnapshotSession::CheckBase(size_t i, const vss::TrackingVerdict& v,
                                  const vss::SnapshotProperties& base) const {
  const SnapshotSource& src = sources_[i];
  auto mismatch = [&](const std::string& what) {
    return Status::InvalidArgument("the base snapshot " + v.base_snapshot + "'s record " + what +
                                   "; not trusting it");
  };
  if (base.device != v.base_device) return mismatch("names another file than the stamp");
  if (base.volume_key != src.key) return mismatch("is of another volume");
  if (base.provider != src.provider) return mismatch("is from another provider");
  const vss::Provider* p = ProviderNamed(src.provider);
  if (!p || p->tracker() != v.tracker) return mismatch("was kept by another change tracker");
  if (base.state == vss::SnapshotState::kAdvancing) {
    if (base.pid != ::getpid()) return mismatch("is being advanced by another process");
    return Status::OK();
  }
  if (base.state != vss::SnapshotState::kBase) return mismatch("is not a kept base");
  const std::string& expect = base.file_id.empty() ? base.generation : base.file_id;
  if (vss::FileGeneration(base.device) != expect) return mismatch("names a file that was replaced");
  return Status::OK();
}

Status SnapshotSession::ChangedSinceBase(size_t i, const vss::TrackingVerdict& v,
                                         std::vector<vss::ByteRange>* out) const {
  vss::SnapshotProperties base;
  vss::Guid id;
  if (!v.tracked() || !vss::Guid::Parse(v.base_snapshot, &id) ||
      !vss::SnapshotRegistry(opt_.state_dir + "/snapshots").Get(id, &base))
    return Status::NotFound("the base snapshot " + v.base_snapshot + " is no longer recorded");
  GNOMON_RETURN_IF_ERROR(CheckBase(i, v, base));
  std::vector<vss::ByteRange> ranges;
  GNOMON_RETURN_IF_ERROR(
      ProviderNamed(sources_[i].provider)->ChangedRanges(snapshot_ids_[i], base, &ranges));
  // Checked again after the base was read: a backup of the same volume in
  // another process may have begun advancing it meanwhile (its record then
  // says advancing, or is gone, and the file's ctime moved), and a map read
  // from a half-advanced base would miss changes.
  vss::SnapshotProperties after;
  if (!vss::SnapshotRegistry(opt_.state_dir + "/snapshots").Get(id, &after))
    return Status::NotFound("the base snapshot " + v.base_snapshot +
                            " was removed while it was read");
  GNOMON_RETURN_IF_ERROR(CheckBase(i, v, after));
  // A provider's ranges may come in any order (a range log is in write
  // order), overlap, or reach past the volume: the planner needs them
  // sorted, merged and within the volume.
  *out = NormalizeRanges(std::move(ranges), sources_[i].offset, sources_[i].size);
  return Status::OK();
}

Status SnapshotSession::RetainBase(size_t i, const std::string& backup_id, vss::BackupType type) {
  const std::string& key = sources_[i].key;
  vss::BaseLabel label{backup_id, type, key,
                       type == vss::BackupType::kFull && opt_.for_differentials};
  HResult hr = bc_->KeepSnapshot(snapshot_ids_[i], label);
  if (hr != vss::S_OK_)
    return Status::IOError("keeping the snapshot of " + sources_[i].volume + " as the next base: " +
                           bc_->last_error() + " (the next incremental will read everything)");
  // Keep the new base, and for an incremental also the newest full's base if
  // it was kept for differentials; every older base of this volume goes.
  std::string keep_full;
  std::string newest_full_time;
  auto all = vss::SnapshotRegistry(opt_.state_dir + "/snapshots").List();
  for (const auto& p : all)
    if (p.state == vss::SnapshotState::kBase && p.volume_key == key &&
        p.backup_type == vss::BackupType::kFull && p.created >= newest_full_time) {
      newest_full_time = p.created;
      keep_full = p.for_differentials ? p.snapshot_id.ToString() : "";
    }
  for (const auto& p : all) {
    if (p.state != vss::SnapshotState::kBase || p.volume_key != key) continue;
    std::string id = p.snapshot_id.ToString();
    if (id == snapshot_ids_[i].ToString() ||
        (type == vss::BackupType::kIncremental && id == keep_full))
      continue;
    Status d = DeleteRecorded(opt_.state_dir, p, providers_);
    if (!d.ok())
      return d.WithContext(
          "removing a superseded base (it still takes space; 'gnomon "
          "snapshots --delete' removes it)");
  }
  return Status::OK();
}

json SnapshotSession::Documents() const {
  json wmds = json::array();
  for (size_t i = 0; i < bc_->GetWriterMetadataCount(); ++i)
    wmds.push_back(bc_->GetWriterMetadata(i)->ToJson());
  json st = json::array();
  for (const auto& s : status_) st.push_back(vss::WriterStatusToJson(s));
  json sources = json::array();
  for (const auto& s : sources_)
    sources.push_back({{"volume", s.volume}, {"provider", s.provider}, {"device", s.device}});
  // DoSnapshotSet is never skipped (see Create); the key stays for readers.
  return json{{"bcd", bc_->document().ToJson()},
              {"writers", wmds},
              {"writer_status", st},
              {"snapshot_skipped", false},
              {"frozen_ms", bc_->frozen_ms()},
              {"sources", sources}};
}

Status SnapshotSession::Complete(bool succeeded) {
  for (const auto& c : bc_->document().components)
    bc_->SetBackupSucceeded(c.instance_id, c.class_id, c.type, c.logical_path, c.name, succeeded);
  std::shared_ptr<vss::Async> a;
  HResult hr = bc_->BackupComplete(&a);
  if (hr == vss::S_OK_) hr = vss::WaitForAsync(a);
  completed_ = true;
  GatherStatus();
  bc_->Release();
  SaveWriterStatus(opt_.state_dir, status_);
  if (hr != vss::S_OK_)
    return Status::SnapshotFailed("BackupComplete: " + vss::DescribeHResult(hr));
  return Status::OK();
}

Status SnapshotSession::CheckIntact() const {
  if (!bc_) return Status::OK();
  std::string why;
  if (vss::Failed(bc_->CheckSnapshotsIntact(&why)))
    return Status::SnapshotFailed("no consistent snapshot: " + why +
                                  "; nothing was saved (stop the writer, or use a provider "
                                  "that takes a real snapshot)");
  return Status::OK();
}

}  // namespace gnomon
