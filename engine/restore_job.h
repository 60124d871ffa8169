// RestoreJob: writes one volume of a backup to a regular file or a block
// device. Chunks are fetched, decompressed and verified against their digest
// in parallel and written at their offsets; zero slots become holes in a file.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/progress.h"
#include "format/repository.h"

namespace gnomon {

struct RestoreOptions {
  std::string backup = "latest";  // id, unique prefix, or "latest"
  std::string volume;             // name or position; "" if the backup has one volume
  std::string target;             // file (created) or block device
  bool overwrite = false;         // replace an existing regular file
  // A whole disk backup (engine/disk_restore.h): extend the last partition
  // and its ext2/3/4 filesystem to the end of a larger target; or only
  // print what would be written where (*plan in the result).
  bool grow = false;
  bool plan = false;
  // Onto a smaller target: shrink the last partition's ext2/3/4 filesystem
  // when its used blocks fit.
  bool shrink = false;
  // New disk GUID (or MBR id), partition GUIDs and filesystem UUIDs, for a
  // clone that runs beside the original.
  bool new_ids = false;
  int threads = 0;
  ProgressFn progress;
  const CancelFlag* cancel = nullptr;
};

struct RestoreResult {
  std::string backup_id, volume;
  uint64_t bytes = 0, bytes_written = 0;
  double seconds = 0;
  std::vector<std::string> cleaned;   // partial restores of killed runs that were removed
  nlohmann::json plan;                // a disk restore's plan (engine/disk_restore.h)
  std::vector<std::string> warnings;  // the restore succeeded, but tell the user
};

Status RunRestore(Repository* repo, const RestoreOptions& opt, RestoreResult* out);

class RestoreTarget;
// One volume written into target at offset base: only the volume's byte
// ranges in *only (every byte when null). Adds the bytes written.
Status RestoreVolumeInto(Repository* repo, const RestoreOptions& opt, const VolumeRecord& vol,
                         const VolumeIndex& vi, const ChunkIndex& index, RestoreTarget* target,
                         uint64_t base, const std::vector<DiskLayout::Range>* only,
                         uint64_t* written);
// Reads a volume's index and checks that every chunk it names is known,
// before a byte of the target is written.
Status LoadVolumeForRestore(Repository* repo, const VolumeRecord& vol, const ChunkIndex& index,
                            const IndexHealth& health, VolumeIndex* vi);

// Resolves "BACKUP[:VOLUME]" against a record: VOLUME is a name or a 0-based
// position; empty means the only volume.
Status PickVolume(const BackupRecord& rec, const std::string& volume, const VolumeRecord** out);

}  // namespace gnomon
