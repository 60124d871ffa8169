// A fixed volume index (Proxmox Backup's .fidx idea): one digest per chunk
// slot of the volume, so every backup restores on its own and two backups of
// a volume diff slot by slot. The zero digest marks an all-zero slot, which
// is stored nowhere. See FORMAT.md, "Volume index files".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "format/digest.h"

namespace gnomon {

struct VolumeIndex {
  uint64_t volume_size = 0;
  uint32_t chunk_size = 0;
  std::vector<Digest> slots;

  static uint64_t SlotCount(uint64_t size, uint32_t chunk_size) {
    return (size + chunk_size - 1) / chunk_size;
  }
  // Bytes covered by slot i (the last slot may be short).
  uint32_t SlotLength(uint64_t i) const {
    uint64_t start = i * chunk_size;
    uint64_t end = std::min<uint64_t>(start + chunk_size, volume_size);
    return static_cast<uint32_t>(end - start);
  }

  std::string Encode() const;
  static Status Decode(const std::string& path, const std::string& body, VolumeIndex* out);
};

}  // namespace gnomon
