#include "format/chunk_index.h"

#include <cstring>

#include "format/coding.h"

namespace gnomon {

void ChunkIndex::AddPack(const PackSummary& pack) {
  auto [it, inserted] = pack_numbers_.emplace(pack.id, static_cast<uint32_t>(pack_ids_.size()));
  if (inserted) pack_ids_.push_back(pack.id);
  uint32_t no = it->second;
  for (const auto& e : pack.entries) {
    map_.emplace(e.digest,
                 ChunkLocation{no, e.offset, e.stored_len, e.raw_len, e.codec, e.patch_depth});
  }
}

size_t ChunkIndex::ApproxBytesPerChunk() {
  // libstdc++ node: next pointer + cached hash + key + value, rounded up by
  // malloc to 16 bytes; plus one bucket pointer at load factor ~1.
  size_t node = sizeof(void*) + sizeof(size_t) + sizeof(Digest) + sizeof(ChunkLocation);
  node = (node + 8 + 15) / 16 * 16;  // malloc header and alignment
  return node + sizeof(void*);
}

std::string EncodeIndexFile(const std::vector<PackSummary>& packs) {
  std::string out;
  PutU32(&out, static_cast<uint32_t>(packs.size()));
  for (const auto& p : packs) {
    Digest id;
    Digest::FromHex(p.id, &id);
    out.append(reinterpret_cast<const char*>(id.bytes.data()), 16);
    PutU32(&out, static_cast<uint32_t>(p.entries.size()));
    for (const auto& e : p.entries) {
      out.append(reinterpret_cast<const char*>(e.digest.bytes.data()), 16);
      PutU32(&out, e.offset);
      PutU32(&out, e.stored_len);
      PutU32(&out, e.raw_len);
      PutU32(&out, EncodeCodecField(e.codec, e.patch_depth));
    }
  }
  return out;
}

Status DecodeIndexFile(const std::string& path, const std::string& body,
                       std::vector<PackSummary>* packs) {
  auto p = reinterpret_cast<const uint8_t*>(body.data());
  size_t n = body.size(), pos = 0;
  auto bad = [&](const std::string& what) {
    return Status::Corruption(path + ": chunk index file is malformed (" + what + ")");
  };
  if (n < 4) return bad("no pack count");
  uint32_t pack_count = GetU32(p);
  pos = 4;
  packs->clear();
  for (uint32_t i = 0; i < pack_count; ++i) {
    if (n - pos < 20) return bad("pack " + std::to_string(i) + " cut short");
    PackSummary s;
    Digest id;
    std::memcpy(id.bytes.data(), p + pos, 16);
    s.id = id.Hex();
    uint32_t count = GetU32(p + pos + 16);
    pos += 20;
    if ((n - pos) / 32 < count)
      return bad("pack " + s.id + " lists more chunks than the file holds");
    s.entries.resize(count);
    for (auto& e : s.entries) {
      std::memcpy(e.digest.bytes.data(), p + pos, 16);
      e.offset = GetU32(p + pos + 16);
      e.stored_len = GetU32(p + pos + 20);
      e.raw_len = GetU32(p + pos + 24);
      if (!DecodeCodecField(GetU32(p + pos + 28), &e.codec, &e.patch_depth))
        return bad("chunk " + e.digest.Hex() + " has an unknown codec");
      pos += 32;
    }
    packs->push_back(std::move(s));
  }
  if (pos != n) return bad(std::to_string(n - pos) + " trailing bytes");
  return Status::OK();
}

}  // namespace gnomon
