#include "format/quarantine.h"

#include <cstring>

#include "format/coding.h"

namespace gnomon {

std::string EncodeQuarantine(uint64_t time, const std::vector<BadChunk>& chunks) {
  std::string out;
  PutU64(&out, time);
  PutU32(&out, static_cast<uint32_t>(chunks.size()));
  for (const auto& c : chunks) {
    Digest id;
    Digest::FromHex(c.pack, &id);
    out.append(reinterpret_cast<const char*>(id.bytes.data()), 16);
    out.append(reinterpret_cast<const char*>(c.digest.bytes.data()), 16);
  }
  return out;
}

Status DecodeQuarantine(const std::string& path, const std::string& body, uint64_t* time,
                        std::vector<BadChunk>* chunks) {
  auto p = reinterpret_cast<const uint8_t*>(body.data());
  if (body.size() < 12) return Status::Corruption(path + ": quarantine file is cut short");
  *time = GetU64(p);
  uint32_t n = GetU32(p + 8);
  if ((body.size() - 12) % 32 != 0 || (body.size() - 12) / 32 != n)
    return Status::Corruption(path + ": quarantine file lists " + std::to_string(n) +
                              " chunks but holds " + std::to_string(body.size() - 12) + " bytes");
  chunks->clear();
  chunks->reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    Digest id;
    BadChunk c;
    std::memcpy(id.bytes.data(), p + 12 + 32 * i, 16);
    std::memcpy(c.digest.bytes.data(), p + 28 + 32 * i, 16);
    c.pack = id.Hex();
    chunks->push_back(std::move(c));
  }
  return Status::OK();
}

}  // namespace gnomon
