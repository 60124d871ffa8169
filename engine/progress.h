// Progress reported by long-running jobs. Jobs call the callback from one
// thread at a time; the callback must be cheap (the CLI throttles drawing).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

namespace gnomon {

struct Progress {
  std::string phase;  // "backup", "restore", "verify", "prune"
  std::string item;   // the volume or pack being worked on; prune: its step
  uint64_t done = 0;  // bytes (verify: packs; prune: steps)
  uint64_t total = 0;
};

using ProgressFn = std::function<void(const Progress&)>;

// Set (from a signal handler, say) to stop a job. The job returns Aborted
// and leaves the repository as it found it.
using CancelFlag = std::atomic<bool>;

}  // namespace gnomon
