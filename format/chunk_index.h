// The chunk index: digest -> (pack, offset, lengths, codec). On disk it is a
// set of immutable index files, one per committed backup, each listing the
// packs that backup wrote; in memory it is one hash table over all of them.
// See FORMAT.md, "Chunk index files".
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "format/digest.h"
#include "format/env.h"
#include "format/pack.h"

namespace gnomon {

struct ChunkLocation {
  uint32_t pack = 0;  // position in ChunkIndex::pack_ids()
  uint32_t offset = 0;
  uint32_t stored_len = 0;
  uint32_t raw_len = 0;
  Codec codec = Codec::kRaw;
  uint8_t patch_depth = 0;  // 0: a whole chunk; else a patch (format/patch.h)
};

// What one finished pack contributes to an index file.
struct PackSummary {
  std::string id;  // 32 hex characters
  std::vector<PackEntry> entries;
};

class ChunkIndex {
 public:
  const ChunkLocation* Find(const Digest& d) const {
    auto it = map_.find(d);
    return it == map_.end() ? nullptr : &it->second;
  }
  bool Contains(const Digest& d) const { return map_.count(d) != 0; }
  // First insert wins: a chunk stored twice (by a crashed run, say) keeps the
  // location that was indexed first.
  void AddPack(const PackSummary& pack);
  size_t size() const { return map_.size(); }
  const std::string& pack_id(uint32_t i) const { return pack_ids_[i]; }
  size_t pack_count() const { return pack_ids_.size(); }
  // Approximate heap bytes per indexed chunk (for the published figure).
  static size_t ApproxBytesPerChunk();

 private:
  std::unordered_map<Digest, ChunkLocation, DigestHash> map_;
  std::vector<std::string> pack_ids_;
  std::unordered_map<std::string, uint32_t> pack_numbers_;
};

std::string EncodeIndexFile(const std::vector<PackSummary>& packs);
Status DecodeIndexFile(const std::string& path, const std::string& body,
                       std::vector<PackSummary>* packs);

}  // namespace gnomon
