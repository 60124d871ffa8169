#include "vss/volume_writer.h"

#include "vss/provider.h"

namespace gnomon::vss {

Guid VolumeWriter::ClassId() {
  Guid g;
  Guid::Parse("b7c3e0a2-5d14-4f8e-a9c1-2f6d8e4b3a70", &g);
  return g;
}

VolumeWriter::VolumeWriter(std::vector<std::string> volumes, std::string state_dir,
                           std::map<std::string, ChangeTracker> trackers)
    : volumes_(std::move(volumes)),
      state_dir_(std::move(state_dir)),
      trackers_(std::move(trackers)) {
  Initialize(ClassId(), "Volume Image Writer", UsageType::kUserData, SourceType::kOther,
             ApplicationLevel::kSystem);
}

bool VolumeWriter::OnIdentify(WriterMetadata* md) {
  md->backup_schema =
      schema::kCopy | schema::kTimestamped | schema::kIncremental | schema::kDifferential;
  for (const auto& v : volumes_) {
    ComponentInfo c;
    c.type = ComponentType::kFileGroup;
    c.logical_path = kLogicalPath;
    c.name = v;
    c.caption = "Block image of " + v;
    FileSpec f;
    f.path = v;
    f.spec = "";  // the volume itself, not files inside it
    c.files.push_back(f);
    md->components.push_back(c);
  }
  return true;
}

ChangeTracker VolumeWriter::TrackerOf(const std::string& volume) const {
  auto it = trackers_.find(GetVolumeProvider(volume));
  return it == trackers_.end() ? ChangeTracker::kNone : it->second;
}

std::string VolumeWriter::Validate(const std::string& volume, const std::string& text,
                                   VolumeStamp* prev) {
  BackupType type = GetBackupType();
  if (type != BackupType::kIncremental && type != BackupType::kDifferential)
    return BackupTypeName(type) + " backup: every chunk is read";
  if (text.empty()) return "no previous backup of this volume to build on";
  if (Status s = VolumeStamp::Decode(text, prev); !s.ok()) return s.message();
  VolumeIdentity v;
  if (Status s = IdentifyVolume(volume, &v); !s.ok()) return s.message();
  if (prev->volume_key != VolumeKey(v))
    return "the previous stamp is from another volume (" + prev->volume_key + ")";
  if (prev->size != v.size)
    return "the volume's size changed (" + std::to_string(prev->size) + " -> " +
           std::to_string(v.size) + " bytes)";
  if (prev->tracker == ChangeTracker::kNone)
    return "the previous backup had no change tracking (tracker none)";
  if (!prev->clean) return "the previous backup's tracker was not shut down cleanly";
  const ChangeTracker now = TrackerOf(volume);
  if (now == ChangeTracker::kNone)
    return "this backup's snapshot provider (" + GetVolumeProvider(volume) +
           ") cannot track changes";
  if (now != prev->tracker)
    return "the previous backup's changes were tracked by " + TrackerName(prev->tracker) +
           ", this backup's provider tracks by " + TrackerName(now);
  SnapshotProperties base;
  Guid base_id;
  bool found = Guid::Parse(prev->base_snapshot, &base_id) &&
               SnapshotRegistry(state_dir_ + "/snapshots").Get(base_id, &base);
  if (found && base.state == SnapshotState::kAdvancing)
    return "the base snapshot " + prev->base_snapshot +
           " was left half-updated by a backup that did not finish (tracker not shut down "
           "cleanly)";
  if (!found || base.state != SnapshotState::kBase) {
    // A full's base is advanced by the incremental after it unless the
    // full was made for differentials: say so where a differential finds
    // it gone, the one place a user would wonder.
    if (type == BackupType::kDifferential)
      return "the full's base snapshot " + prev->base_snapshot +
             " is gone: an incremental since the full advanced or replaced it (a full made "
             "with --for-differentials keeps it), or it was deleted";
    return "the base snapshot " + prev->base_snapshot + " is gone (deleted, or on another machine)";
  }
  if (base.device != prev->base_device)
    return "the base snapshot " + prev->base_snapshot + "'s record names another file (" +
           base.device + ") than the stamp (" + prev->base_device + ")";
  std::string file = FileGeneration(base.device);
  if (file.empty()) return "the base snapshot file " + base.device + " is gone";
  // The stamp names the snapshot's token; the registry vouches that the file
  // is the one it recorded (records from before file_id hold the file's
  // identity in generation).
  const std::string& expect_file = base.file_id.empty() ? base.generation : base.file_id;
  if (file != expect_file || base.generation != prev->generation)
    return "the base snapshot file " + base.device + " was replaced (tracker generation changed)";
  return "";
}

bool VolumeWriter::OnPrepareBackup(WriterComponents* components) {
  trusted_.clear();
  for (auto& c : *components) {
    VolumeStamp prev;
    std::string why = Validate(c.name(), c.GetPreviousBackupStamp(), &prev);
    TrackingVerdict verdict;
    if (why.empty()) {
      verdict.tracker = prev.tracker;
      verdict.base_device = prev.base_device;
      verdict.base_snapshot = prev.base_snapshot;
      trusted_[c.name()] = prev;
    } else {
      verdict.reason = why;
    }
    c.SetBackupMetadata(verdict.Encode());
  }
  return true;
}

bool VolumeWriter::OnPostSnapshot(WriterComponents* components) {
  const BackupType type = GetBackupType();
  for (auto& c : *components) {
    const std::string& volume = c.name();
    VolumeIdentity v;
    VolumeStamp s;
    if (IdentifyVolume(volume, &v).ok()) {
      s.volume_key = VolumeKey(v);
      s.size = v.size;
    }
    // Only fulls and incrementals become bases: a differential is built on
    // the full, and a copy never enters the history.
    const ChangeTracker tracker = TrackerOf(volume);
    bool base = tracker != ChangeTracker::kNone &&
                (type == BackupType::kFull || type == BackupType::kIncremental);
    s.tracker = base ? tracker : ChangeTracker::kNone;
    auto it = trusted_.find(volume);
    if (it != trusted_.end() && type == BackupType::kIncremental) {
      s.series = it->second.series;
      s.sequence = it->second.sequence + 1;
    } else {
      s.series = Guid::Random().ToString();
      s.sequence = 0;
    }
    if (base) {
      s.base_snapshot = GetSnapshotId(volume);
      s.base_device = GetSnapshotDeviceName(volume);
      SnapshotProperties p;
      Guid id;
      if (Guid::Parse(s.base_snapshot, &id) &&
          SnapshotRegistry(state_dir_ + "/snapshots").Get(id, &p))
        s.generation = p.generation;
    }
    c.SetBackupStamp(s.Encode());
  }
  return true;
}

}  // namespace gnomon::vss
