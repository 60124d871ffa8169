// Check files: what one verify run read of each pack, and what it found
// (FORMAT.md §5b). A pack's last check is the newest time among the files
// that name it; `verify --read-data-subset N%` reads the packs whose last
// check is oldest, so repeated runs cover every pack without a schedule.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace gnomon {

// What reading one pack whole found (the u32 `result` of §5b).
enum PackCheckResult : uint32_t {
  kPackIntact = 0,      // every chunk checked out
  kPackDamaged = 1,     // damaged chunks were found (and quarantined)
  kPackUnreadable = 2,  // the pack could not be opened or read: nothing quarantined
};

struct PackCheck {
  std::string pack;  // 32 hex
  uint32_t result = kPackIntact;
  friend bool operator==(const PackCheck&, const PackCheck&) = default;
};

// time: microseconds since the Unix epoch, when the verify run started.
std::string EncodeChecks(uint64_t time, const std::vector<PackCheck>& checks);
// Rejects a body that is cut short or too long for its count, and unknown
// result values; errors name `path`. Allocates only after the count has
// been checked against the body's length.
Status DecodeChecks(const std::string& path, const std::string& body, uint64_t* time,
                    std::vector<PackCheck>* checks);

}  // namespace gnomon
