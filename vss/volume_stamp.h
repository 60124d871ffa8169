// The backup stamp of an imaged volume: what a later backup needs to trust a
// change map. Set by the VolumeWriter in PostSnapshot, stored in the BCD,
// handed back by the requester with SetPreviousBackupStamp, and validated in
// PrepareForBackup. A stamp that fails any check yields a reason and a safe
// full read, never a guess. Stamps are JSON with a version; see docs/vss.md.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "vss/contracts.h"
#include "vss/volume.h"

namespace gnomon::vss {

// Version 2: `generation` is the snapshot's token. Version 1 (still read)
// held the base file's "<inode>:<ctime ns>" there.
inline constexpr const char* kStampSchema = "gnomon.volume-stamp/2";
inline constexpr const char* kStampSchemaV1 = "gnomon.volume-stamp/1";

struct VolumeStamp {
  std::string volume_key;  // see VolumeKey()
  uint64_t size = 0;
  ChangeTracker tracker = ChangeTracker::kNone;  // how the next backup can learn what changed
  std::string series;                            // changes when a chain restarts
  uint64_t sequence = 0;                         // backups since the series began
  std::string base_snapshot;                     // snapshot id retained as the next base
  std::string base_device;                       // its file
  std::string generation;  // that snapshot's token (SnapshotProperties::generation)
  bool clean = true;

  std::string Encode() const;
  // Fails with the reason for a stamp that is damaged or incomplete
  // (Corruption), not a gnomon stamp (InvalidArgument), or from a newer
  // gnomon (Unsupported).
  static Status Decode(const std::string& text, VolumeStamp* out);
};

// A name for a volume that survives re-attaching a loop device: the backing
// file (and offset) for loop devices and files, the device path otherwise.
std::string VolumeKey(const VolumeIdentity& v);
// "<inode>:<ctime ns>" of a file, "" if it does not exist.
std::string FileGeneration(const std::string& path);

}  // namespace gnomon::vss
