// RestoreJob: writes one volume of a backup to a regular file or a block
// device. Chunks are fetched, decompressed and verified against their digest
// in parallel and written at their offsets; zero slots become holes in a file.
#pragma once

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
  int threads = 0;
  ProgressFn progress;
  const CancelFlag* cancel = nullptr;
};

struct RestoreResult {
  std::string backup_id, volume;
  uint64_t bytes = 0, bytes_written = 0;
  double seconds = 0;
  std::vector<std::string> cleaned;  // partial restores of killed runs that were removed
};

Status RunRestore(Repository* repo, const RestoreOptions& opt, RestoreResult* out);

// Resolves "BACKUP[:VOLUME]" against a record: VOLUME is a name or a 0-based
// position; empty means the only volume.
Status PickVolume(const BackupRecord& rec, const std::string& volume, const VolumeRecord** out);

}  // namespace gnomon
