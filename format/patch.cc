#include "format/patch.h"

#include <cstring>

#include "format/coding.h"
#include "format/config.h"

namespace gnomon {

size_t PatchHeaderSize(size_t ranges) { return 32 + 8 * ranges; }

void EncodePatchHeader(const Digest& base, uint32_t chunk_len,
                       const std::vector<PatchRange>& ranges, std::vector<uint8_t>* out) {
  std::string h;
  h.append(kPatchMagic, 4);
  PutU32(&h, kPatchVersion);
  h.append(reinterpret_cast<const char*>(base.bytes.data()), 16);
  PutU32(&h, chunk_len);
  PutU32(&h, static_cast<uint32_t>(ranges.size()));
  for (const auto& r : ranges) {
    PutU32(&h, r.offset);
    PutU32(&h, r.length);
  }
  out->insert(out->end(), h.begin(), h.end());
}

Status DecodePatch(std::span<const uint8_t> patch, const std::string& where, PatchView* out) {
  auto bad = [&](const std::string& m) {
    return Status::Corruption(where + ": patch is malformed (" + m + ")");
  };
  if (patch.size() < 32) return bad("header cut short");
  const uint8_t* p = patch.data();
  if (std::memcmp(p, kPatchMagic, 4) != 0) return bad("bad magic");
  if (GetU32(p + 4) != kPatchVersion)
    return Status::Unsupported(where + ": patch version " + std::to_string(GetU32(p + 4)) +
                               " is not supported");
  std::memcpy(out->base.bytes.data(), p + 8, 16);
  out->chunk_len = GetU32(p + 24);
  // No slot is empty or larger than the largest chunk; restore compares the
  // length with the slot's, but a reader that sizes a buffer by it must not
  // be the first to find out.
  if (out->chunk_len == 0 || out->chunk_len > kMaxChunkSize)
    return bad("chunk length " + std::to_string(out->chunk_len) + " is not 1.." +
               std::to_string(kMaxChunkSize));
  uint32_t n = GetU32(p + 28);
  if ((patch.size() - 32) / 8 < n) return bad("more ranges than bytes");
  out->ranges.resize(n);
  uint64_t data = 0, end = 0;
  for (uint32_t i = 0; i < n; ++i) {
    out->ranges[i] = {GetU32(p + 32 + 8 * i), GetU32(p + 36 + 8 * i)};
    const auto& r = out->ranges[i];
    if (r.offset < end || uint64_t{r.offset} + r.length > out->chunk_len)
      return bad("range " + std::to_string(i) + " overlaps or leaves the chunk");
    end = uint64_t{r.offset} + r.length;
    data += r.length;
  }
  if (patch.size() - PatchHeaderSize(n) != data) return bad("data length disagrees with ranges");
  out->data = patch.subspan(PatchHeaderSize(n));
  return Status::OK();
}

void ApplyPatch(const PatchView& p, uint8_t* chunk) {
  const uint8_t* src = p.data.data();
  for (const auto& r : p.ranges) {
    if (r.length == 0) continue;  // legal, if pointless; no memcpy at the chunk's end
    std::memcpy(chunk + r.offset, src, r.length);
    src += r.length;
  }
}

}  // namespace gnomon
