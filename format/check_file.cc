#include "format/check_file.h"

#include <cstring>

#include "format/coding.h"
#include "format/digest.h"

namespace gnomon {

namespace {
constexpr size_t kHead = 12;   // u64 time, u32 count
constexpr size_t kEntry = 20;  // 16-byte pack id, u32 result
}  // namespace

std::string EncodeChecks(uint64_t time, const std::vector<PackCheck>& checks) {
  std::string out;
  out.reserve(kHead + kEntry * checks.size());
  PutU64(&out, time);
  PutU32(&out, static_cast<uint32_t>(checks.size()));
  for (const auto& c : checks) {
    Digest id;
    Digest::FromHex(c.pack, &id);
    out.append(reinterpret_cast<const char*>(id.bytes.data()), 16);
    PutU32(&out, c.result);
  }
  return out;
}

Status DecodeChecks(const std::string& path, const std::string& body, uint64_t* time,
                    std::vector<PackCheck>* checks) {
  auto p = reinterpret_cast<const uint8_t*>(body.data());
  if (body.size() < kHead) return Status::Corruption(path + ": check file is cut short");
  const uint32_t n = GetU32(p + 8);
  // The count is untrusted: it must match the length before anything is
  // allocated from it.
  if ((body.size() - kHead) % kEntry != 0 || (body.size() - kHead) / kEntry != n)
    return Status::Corruption(path + ": check file lists " + std::to_string(n) +
                              " packs but holds " + std::to_string(body.size() - kHead) +
                              " bytes of entries");
  std::vector<PackCheck> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    const uint8_t* e = p + kHead + kEntry * i;
    Digest id;
    std::memcpy(id.bytes.data(), e, 16);
    PackCheck c{id.Hex(), GetU32(e + 16)};
    if (c.result > kPackUnreadable)
      return Status::Corruption(path + ": check file gives pack " + c.pack +
                                " the unknown result " + std::to_string(c.result));
    out.push_back(std::move(c));
  }
  *time = GetU64(p);
  *checks = std::move(out);
  return Status::OK();
}

}  // namespace gnomon
