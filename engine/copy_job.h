// gnomon copy: backups from one repository into another (a local one to S3
// for an off-site copy, or back), sending only the chunks the target lacks
// (Proxmox "sync", restic "copy"). Every chunk is read and checked against
// its id in the source, given the target's id (keyed there if the target
// is encrypted), and stored only if the target has no chunk of that id; a
// copied backup keeps its id, time, host, volumes and VSS documents.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "format/repository.h"

namespace gnomon {

struct CopyOptions {
  std::vector<std::string> backups;  // ids, prefixes or "latest"; empty: every backup
  int threads = 0;                   // 0: one per core
  std::function<void(uint64_t done, uint64_t total)> progress;  // bytes of volume
  const std::atomic<bool>* cancel = nullptr;
};

struct CopyResult {
  std::vector<std::string> copied, already_there;
  uint64_t volume_bytes = 0;    // bytes of the copied volumes
  uint64_t chunks_sent = 0;     // stored anew in the target
  uint64_t chunks_present = 0;  // the target had them
  uint64_t bytes_sent = 0;      // stored bytes written to the target
  double seconds = 0;
};

// `from` is open for reading, `to` for appending (LockMode::kAppend), both
// unlocked if encrypted. Their chunk sizes must be equal.
Status CopyBackups(Repository* from, Repository* to, const CopyOptions& opt, CopyResult* out);

}  // namespace gnomon
