#include "format/volume_index.h"

#include <cstring>

#include "format/coding.h"

namespace gnomon {

std::string VolumeIndex::Encode() const {
  std::string out;
  out.reserve(24 + slots.size() * 16);
  PutU64(&out, volume_size);
  PutU32(&out, chunk_size);
  PutU32(&out, 0);
  PutU64(&out, slots.size());
  for (const auto& d : slots) out.append(reinterpret_cast<const char*>(d.bytes.data()), 16);
  return out;
}

Status VolumeIndex::Decode(const std::string& path, const std::string& body, VolumeIndex* out) {
  auto p = reinterpret_cast<const uint8_t*>(body.data());
  if (body.size() < 24) return Status::Corruption(path + ": volume index header is cut short");
  out->volume_size = GetU64(p);
  out->chunk_size = GetU32(p + 8);
  uint64_t count = GetU64(p + 16);
  if (out->chunk_size == 0) return Status::Corruption(path + ": volume index has chunk size 0");
  if (count != SlotCount(out->volume_size, out->chunk_size)) {
    return Status::Corruption(path + ": volume index has " + std::to_string(count) +
                              " slots, a volume of " + std::to_string(out->volume_size) +
                              " bytes needs " +
                              std::to_string(SlotCount(out->volume_size, out->chunk_size)));
  }
  if ((body.size() - 24) / 16 != count || (body.size() - 24) % 16 != 0) {
    return Status::Corruption(path + ": volume index slot array has the wrong length");
  }
  out->slots.resize(count);
  if (count) std::memcpy(out->slots.data(), p + 24, count * 16);
  return Status::OK();
}

}  // namespace gnomon
