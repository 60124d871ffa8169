// The values that cross from vss/ into engine/ and tools/: change-tracking
// kinds, snapshot states, the volume writer's verdict, writer status. Each is
// a type defined once here with its JSON mapping defined once here, so no
// other folder parses these strings again.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "vss/types.h"

namespace gnomon::vss {

struct WriterStatus;  // vss/backup_components.h

// How a provider knows what changed in a volume since a retained base.
enum class ChangeTracker {
  kNone,           // it cannot: every chunk is read and compared
  kReflinkFiemap,  // reflink clones compared by their extent maps (FIEMAP)
  kRangeLog,       // the provider logs the ranges written since the base
};
NLOHMANN_JSON_SERIALIZE_ENUM(ChangeTracker, {{ChangeTracker::kNone, "none"},
                                             {ChangeTracker::kReflinkFiemap, "reflink-fiemap"},
                                             {ChangeTracker::kRangeLog, "range-log"}})
std::string TrackerName(ChangeTracker t);  // as in the JSON: "reflink-fiemap"
// False for a name this build does not know (a stamp from a newer gnomon).
bool ParseTracker(const std::string& s, ChangeTracker* out);

// Where a recorded snapshot is in its life (vss/provider.h SnapshotRegistry).
enum class SnapshotState {
  kPreparing,  // prepared, not yet committed (or its process died meanwhile)
  kCommitted,  // taken; its backup is reading it
  kBase,       // kept after its backup as the next backup's change-tracking base
  kAdvancing,  // a base being advanced in place by a running backup
};
NLOHMANN_JSON_SERIALIZE_ENUM(SnapshotState, {{SnapshotState::kPreparing, "preparing"},
                                             {SnapshotState::kCommitted, "committed"},
                                             {SnapshotState::kBase, "base"},
                                             {SnapshotState::kAdvancing, "advancing"}})
std::string SnapshotStateName(SnapshotState s);

NLOHMANN_JSON_SERIALIZE_ENUM(BackupType, {{BackupType::kUndefined, "undefined"},
                                          {BackupType::kFull, "full"},
                                          {BackupType::kIncremental, "incremental"},
                                          {BackupType::kDifferential, "differential"},
                                          {BackupType::kLog, "log"},
                                          {BackupType::kCopy, "copy"},
                                          {BackupType::kOther, "other"}})

// What the volume writer decided in PrepareForBackup about one volume: build
// on the base the previous stamp names, or read every chunk (and why). It
// travels in the component's backup metadata, so it is stored in the BCD.
struct TrackingVerdict {
  ChangeTracker tracker = ChangeTracker::kNone;  // kNone: read every chunk
  std::string base_snapshot;                     // the retained base's snapshot id
  std::string base_device;                       // and its file
  std::string reason;                            // why not, when not
  bool tracked() const { return tracker != ChangeTracker::kNone; }

  // {"change_tracking": "reflink-fiemap", "base_snapshot": ..., "base_device": ...}
  // or {"change_tracking": "full-read", "reason": ...}.
  std::string Encode() const;
  // A verdict that is not one of these reads as a full read with a reason.
  static TrackingVerdict Decode(const std::string& text);
};

// One writer's status after a backup, as stored in the BCD's documents and
// in the state directory's writers.json.
nlohmann::json WriterStatusToJson(const WriterStatus& s);
// Shape-checked: false (and *out untouched) for anything malformed.
bool WriterStatusFromJson(const nlohmann::json& j, WriterStatus* out);

}  // namespace gnomon::vss
