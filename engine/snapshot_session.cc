#include "engine/snapshot_session.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <thread>

#include "base/durable_file.h"
#include "base/json.h"
#include "base/system.h"
#include "vss/extent_diff.h"
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
    std::shared_ptr<vss::Async> a;
    if (bc_->GatherWriterStatus(&a) == vss::S_OK_) {
      status_.clear();
      for (size_t i = 0; i < bc_->GetWriterStatusCount(); ++i) {
        vss::WriterStatus s;
        bc_->GetWriterStatus(i, &s);
        status_.push_back(s);
      }
    }
    SaveWriterStatus();
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

Status SnapshotSession::CheckWriters(const char* phase) {
  std::shared_ptr<vss::Async> a;
  bc_->GatherWriterStatus(&a);
  vss::WaitForAsync(a);
  status_.clear();
  std::string failed;
  for (size_t i = 0; i < bc_->GetWriterStatusCount(); ++i) {
    vss::WriterStatus s;
    bc_->GetWriterStatus(i, &s);
    status_.push_back(s);
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
                               const std::map<std::string, std::string>& previous_stamps) {
  std::vector<std::shared_ptr<vss::Writer>> writers = GatherWriters(volumes, opt_, &notes_);
  providers_ = vss::MakeProviders(opt_.state_dir);
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
    std::string err;
    if (!vss::IdentifyVolume(v, &id, &err)) {
      struct stat st;
      if (::stat(v.c_str(), &st) != 0 && errno == ENOENT)
        return Status::NotFound(v + ": no such file or device");
      return Status::InvalidArgument(err);
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
  // Component mode: every component with a file set on one of the volumes
  // (or with no files at all: it cannot be told apart, so it is included).
  for (size_t i = 0; i < bc_->GetWriterMetadataCount(); ++i) {
    const vss::WriterMetadata* md = bc_->GetWriterMetadata(i);
    for (const auto& c : md->components) {
      bool affected = c.files.empty();
      for (const auto& f : c.files) affected |= vss::PathOnVolumes(f.path, f.recursive, ids);
      if (!affected) continue;
      hr = bc_->AddComponent(md->instance_id, md->class_id, c.type, c.logical_path, c.name);
      if (hr != vss::S_OK_) return Fail(hr, "AddComponent " + c.FullPath());
    }
  }
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
  // The parents' stamps go back to the volume writer, which decides in
  // PrepareForBackup whether they can be trusted.
  for (const auto& [volume, stamp] : previous_stamps) {
    hr = bc_->SetPreviousBackupStamp(vss::VolumeWriter::ClassId(), vss::ComponentType::kFileGroup,
                                     vss::VolumeWriter::kLogicalPath, volume, stamp);
    if (hr != vss::S_OK_) return Fail(hr, "SetPreviousBackupStamp " + volume);
  }
  if ((hr = bc_->PrepareForBackup(&a)) != vss::S_OK_ || (hr = vss::WaitForAsync(a)))
    return Fail(hr, "PrepareForBackup");
  GNOMON_RETURN_IF_ERROR(CheckWriters("PrepareForBackup"));

  if (!bc_->IsSnapshotRequired()) {
    // §5.4: no included file set needs a snapshot for this backup type.
    skipped_ = true;
    for (size_t i = 0; i < volumes.size(); ++i)
      sources_.push_back({volumes[i], vss::VolumeKey(ids[i]), "", 0, 0, ""});
    return Status::OK();
  }
  // An incremental whose trusted base is an incremental's snapshot advances
  // that base in place: only what changed is cloned. A full's base stays as
  // it is, since differentials are built on it.
  if (opt_.type == vss::BackupType::kIncremental) {
    vss::SnapshotRegistry registry(opt_.state_dir + "/snapshots");
    for (size_t i = 0; i < volumes.size(); ++i) {
      TrackingVerdict v = VerdictFor(volumes[i]);
      vss::SnapshotProperties base;
      vss::Guid id;
      if (v.tracked && vss::Guid::Parse(v.base_snapshot, &id) && registry.Get(id, &base) &&
          base.state == "base" && base.backup_type == "incremental" &&
          base.volume_key == vss::VolumeKey(ids[i]))
        if (vss::Provider* p = ProviderNamed(base.provider)) p->AdvanceBase(snapshot_ids_[i], base);
    }
  }
  if ((hr = bc_->DoSnapshotSet(&a)) != vss::S_OK_ || (hr = vss::WaitForAsync(a)))
    return Fail(hr, "creating the snapshot set failed");
  GNOMON_RETURN_IF_ERROR(CheckWriters("PostSnapshot"));
  for (size_t i = 0; i < volumes.size(); ++i) {
    vss::SnapshotProperties p;
    if ((hr = bc_->GetSnapshotProperties(snapshot_ids_[i], &p)) != vss::S_OK_)
      return Fail(hr, "GetSnapshotProperties " + volumes[i]);
    SnapshotSource src{volumes[i], vss::VolumeKey(ids[i]), p.device, p.offset, p.size, p.provider};
    if (vss::Provider* prov = ProviderNamed(p.provider)) {
      src.retainable = prov->CanRetainSnapshots();
      if (std::vector<vss::ByteRange> r; prov->ChangedRanges(snapshot_ids_[i], &r))
        src.changes = std::move(r);
    }
    sources_.push_back(std::move(src));
  }
  return Status::OK();
}

vss::Provider* SnapshotSession::ProviderNamed(const std::string& name) const {
  for (const auto& p : providers_)
    if (p->name() == name) return p.get();
  return nullptr;
}

TrackingVerdict SnapshotSession::VerdictFor(const std::string& volume) const {
  TrackingVerdict v;
  v.reason = "the volume writer gave no verdict";
  for (const auto& c : bc_->document().components) {
    if (c.class_id != vss::VolumeWriter::ClassId() || c.name != volume) continue;
    json j = json::parse(c.backup_metadata, nullptr, false);
    if (j.is_discarded()) break;
    v.tracked = j.value("change_tracking", "") == "reflink-fiemap";
    v.base_device = j.value("base_device", "");
    v.base_snapshot = j.value("base_snapshot", "");
    v.reason = j.value("reason", "");
  }
  return v;
}

Status SnapshotSession::RetainBase(size_t i, const std::string& backup_id,
                                   const std::string& type) {
  const std::string& key = sources_[i].key;
  HResult hr = bc_->KeepSnapshot(snapshot_ids_[i], backup_id, type, key);
  if (hr != vss::S_OK_)
    return Status::IOError("keeping the snapshot of " + sources_[i].volume + " as the next base: " +
                           bc_->last_error() + " (the next incremental will read everything)");
  // Keep the new base, and for an incremental also the newest full's base
  // (differentials are built on it); every older base of this volume goes.
  std::string keep_full;
  std::string newest_full_time;
  auto all = vss::SnapshotRegistry(opt_.state_dir + "/snapshots").List();
  for (const auto& p : all)
    if (p.state == "base" && p.volume_key == key && p.backup_type == "full" &&
        p.created >= newest_full_time) {
      newest_full_time = p.created;
      keep_full = p.snapshot_id.ToString();
    }
  for (const auto& p : all) {
    if (p.state != "base" || p.volume_key != key) continue;
    std::string id = p.snapshot_id.ToString();
    if (id == snapshot_ids_[i].ToString() || (type == "incremental" && id == keep_full)) continue;
    Status d = DeleteRecorded(opt_.state_dir, p);
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
  for (const auto& s : status_)
    st.push_back({{"name", s.name},
                  {"class_id", s.class_id.ToString()},
                  {"instance_id", s.instance_id.ToString()},
                  {"state", static_cast<int>(s.state)},
                  {"state_name", vss::WriterStateName(s.state)},
                  {"failure", s.failure},
                  {"failure_name", vss::HResultName(s.failure)},
                  {"message", s.message}});
  json sources = json::array();
  for (const auto& s : sources_)
    sources.push_back({{"volume", s.volume}, {"provider", s.provider}, {"device", s.device}});
  return json{{"bcd", bc_->document().ToJson()},
              {"writers", wmds},
              {"writer_status", st},
              {"snapshot_skipped", skipped_},
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
  std::shared_ptr<vss::Async> g;
  bc_->GatherWriterStatus(&g);
  status_.clear();
  for (size_t i = 0; i < bc_->GetWriterStatusCount(); ++i) {
    vss::WriterStatus s;
    bc_->GetWriterStatus(i, &s);
    status_.push_back(s);
  }
  bc_->Release();
  SaveWriterStatus();
  if (hr != vss::S_OK_)
    return Status::SnapshotFailed("BackupComplete: " + vss::DescribeHResult(hr));
  return Status::OK();
}

void SnapshotSession::SaveWriterStatus() {
  // Best effort: `gnomon writers` shows "unknown" if this cannot be written.
  json j{{"time", vss::NowUtc()}, {"writers", json::array()}};
  for (const auto& s : status_)
    j["writers"].push_back({{"name", s.name},
                            {"class_id", s.class_id.ToString()},
                            {"instance_id", s.instance_id.ToString()},
                            {"state", static_cast<int>(s.state)},
                            {"failure", s.failure},
                            {"message", s.message}});
  ::mkdir(opt_.state_dir.c_str(), 0700);
  std::string err;
  ReplaceFileDurably(opt_.state_dir + "/writers.json", j.dump(1) + "\n", &err);  // best effort
}

Status SnapshotSession::CheckIntact() const {
  if (!bc_ || skipped_) return Status::OK();
  std::string why;
  if (vss::Failed(bc_->CheckSnapshotsIntact(&why)))
    return Status::SnapshotFailed("no consistent snapshot: " + why +
                                  "; nothing was saved (stop the writer, or use a provider "
                                  "that takes a real snapshot)");
  return Status::OK();
}

json LoadWriterStatus(const std::string& state_dir) {
  // A damaged or hostile state file is ignored, never trusted: only
  // well-formed entries are kept, so `gnomon writers` cannot crash on it.
  std::ifstream f(state_dir + "/writers.json");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>()), err;
  json j, out = json::object();
  if (!f.good() && !f.eof()) return out;
  if (!ParseJsonBounded(text, &j, &err, 4u << 20) || !j.is_object()) return out;
  if (j.contains("time") && j["time"].is_string()) out["time"] = j["time"];
  out["writers"] = json::array();
  if (!j.contains("writers") || !j["writers"].is_array()) return out;
  for (const auto& w : j["writers"]) {
    if (!w.is_object()) continue;
    auto str = [&](const char* k) { return w.contains(k) && w[k].is_string(); };
    auto uint = [&](const char* k) { return w.contains(k) && w[k].is_number_unsigned(); };
    if (str("class_id") && uint("state") && uint("failure") && str("message") &&
        w["state"].get<uint64_t>() <= 15 && w["failure"].get<uint64_t>() <= 0xffffffffu)
      out["writers"].push_back(w);
  }
  return out;
}

}  // namespace gnomon

namespace gnomon {

std::vector<std::shared_ptr<vss::Writer>> GatherWriters(const std::vector<std::string>& volumes,
                                                        const SnapshotOptions& opt,
                                                        std::vector<std::string>* notes) {
  std::vector<std::shared_ptr<vss::Writer>> writers = {
      std::make_shared<vss::FsFreezeWriter>(opt.freeze_timeout_ms),
      std::make_shared<vss::VolumeWriter>(volumes, opt.state_dir)};
  writers.insert(writers.end(), opt.extra_writers.begin(), opt.extra_writers.end());
  if (!opt.writer_dir.empty())
    for (auto& w : vss::DiscoverRemoteWriters(opt.writer_dir, 5000, notes)) writers.push_back(w);
  if (!opt.hooks_dir.empty())
    for (auto& w : vss::DiscoverScriptWriters(opt.hooks_dir, opt.freeze_timeout_ms, notes))
      writers.push_back(w);
  return writers;
}

json DescribeWriters(const SnapshotOptions& opt, std::vector<std::string>* notes) {
  const std::string& state_dir = opt.state_dir;
  std::vector<std::shared_ptr<vss::Writer>> writers = GatherWriters({}, opt, notes);
  vss::RequesterOptions ro;
  ro.runtime_dir = opt.runtime_dir;
  ro.event_timeout_ms = 10000;
  vss::BackupComponents bc(writers, {}, ro);
  std::shared_ptr<vss::Async> a;
  bc.InitializeForBackup();
  bc.GatherWriterMetadata(&a);
  vss::WaitForAsync(a);
  json last = LoadWriterStatus(state_dir);
  json out = json::array();
  for (size_t i = 0; i < bc.GetWriterMetadataCount(); ++i) {
    const vss::WriterMetadata* md = bc.GetWriterMetadata(i);
    json w{{"name", md->name},
           {"class_id", md->class_id.ToString()},
           {"level", vss::ApplicationLevelName(md->level)},
           {"kind", "built-in"},
           {"detail", ""},
           {"state", static_cast<int>(vss::WriterState::kStable)},
           {"failure", 0},
           {"message", ""},
           {"last_backup", nullptr}};
    for (const auto& s : last.value("writers", json::array()))
      if (s.value("class_id", "") == md->class_id.ToString()) {
        w["state"] = s.value("state", 1);
        w["failure"] = s.value("failure", 0u);
        w["message"] = s.value("message", "");
        w["last_backup"] = last.value("time", "");
      }
    for (const auto& wr : writers)
      if (wr->instance_id() == md->instance_id) {
        w["kind"] = wr->kind();
        w["detail"] = wr->detail();
      }
    w["state_text"] = vss::WriterStateText(static_cast<vss::WriterState>(w["state"].get<int>()));
    w["failure_name"] = vss::HResultName(w["failure"].get<uint32_t>());
    out.push_back(w);
  }
  return out;
}

std::vector<SnapshotEntry> ListSnapshots(const std::string& state_dir, bool with_pinned) {
  std::vector<SnapshotEntry> out;
  const std::string host = HostName();
  for (auto& p : vss::SnapshotRegistry(state_dir + "/snapshots").List()) {
    SnapshotEntry e;
    e.in_use = p.host == host && ProcessAlive(p.pid);
    // What the snapshot pins: its extents the live file no longer shares.
    std::string live = p.volume_key.rfind("file:", 0) == 0 ? p.volume_key.substr(5) : "";
    if (auto at = live.rfind('@'); at != std::string::npos) live.resize(at);
    std::vector<vss::FileExtent> snap, now;
    std::string err;
    if (with_pinned && !live.empty() && vss::ReadExtents(p.device, &snap, &err) &&
        vss::ReadExtents(live, &now, &err))
      e.pinned_bytes = vss::PinnedBytes(snap, now);
    e.props = std::move(p);
    out.push_back(std::move(e));
  }
  std::sort(out.begin(), out.end(), [](const SnapshotEntry& a, const SnapshotEntry& b) {
    return a.props.created < b.props.created;
  });
  return out;
}

Status DeleteSnapshot(const std::string& state_dir, const std::string& id_prefix) {
  const SnapshotEntry* match = nullptr;
  auto all = ListSnapshots(state_dir);
  for (const auto& e : all)
    if (!id_prefix.empty() && e.props.snapshot_id.ToString().rfind(id_prefix, 0) == 0) {
      if (match) return Status::InvalidArgument("snapshot id '" + id_prefix + "' is ambiguous");
      match = &e;
    }
  if (!match) return Status::NotFound("no snapshot with id '" + id_prefix + "'");
  if (match->in_use)
    return Status::InvalidArgument("snapshot " + match->props.snapshot_id.ToString() +
                                   " is in use by pid " + std::to_string(match->props.pid) +
                                   " (a running backup); not deleting it");
  return DeleteRecorded(state_dir, match->props);
}

Status DeleteRecorded(const std::string& state_dir, const vss::SnapshotProperties& props) {
  std::shared_ptr<vss::Provider> p = vss::MakeProvider(props.provider, state_dir);
  if (!p)
    return Status::Unsupported("snapshot " + props.snapshot_id.ToString() +
                               " is from unknown provider '" + props.provider + "'");
  if (p->DeleteLeftover(props) != vss::S_OK_)
    return Status::IOError("deleting snapshot " + props.snapshot_id.ToString() + ": " +
                           p->last_error());
  return Status::OK();
}

std::vector<std::string> SnapshotProviderNames() { return vss::ProviderNames(); }

}  // namespace gnomon
