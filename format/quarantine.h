// Quarantine files: the chunk copies that verify found damaged (FORMAT.md
// §5a). A quarantined (pack, digest) location is never used again: loading
// the chunk index drops it, so the next backup that meets the same data
// stores it anew instead of deduplicating against the damaged copy, and
// every older backup that names the digest reads the new copy (Proxmox
// renames a bad chunk for the same reason).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "format/digest.h"

namespace gnomon {

struct BadChunk {
  std::string pack;  // 32 hex
  Digest digest;
  friend bool operator<(const BadChunk& a, const BadChunk& b) {
    return a.pack != b.pack ? a.pack < b.pack : a.digest < b.digest;
  }
  friend bool operator==(const BadChunk&, const BadChunk&) = default;
};

// time: microseconds since the Unix epoch, when verify found the damage.
std::string EncodeQuarantine(uint64_t time, const std::vector<BadChunk>& chunks);
Status DecodeQuarantine(const std::string& path, const std::string& body, uint64_t* time,
                        std::vector<BadChunk>* chunks);

}  // namespace gnomon
