#include "format/digest.h"

#include <xxhash.h>

namespace gnomon {

Digest Digest::Of(std::span<const uint8_t> data) {
  XXH128_hash_t h = XXH3_128bits(data.data(), data.size());
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, h);
  Digest d;
  std::memcpy(d.bytes.data(), c.digest, 16);
  // A real chunk hashing to the reserved zero digest would read back as
  // zeros; the odds are 2^-128, but make the reservation airtight anyway.
  if (d.IsZero()) d.bytes[15] = 1;
  return d;
}

std::string Digest::Hex() const {
  static const char* kHex = "0123456789abcdef";
  std::string s(32, '0');
  for (size_t i = 0; i < 16; ++i) {
    s[2 * i] = kHex[bytes[i] >> 4];
    s[2 * i + 1] = kHex[bytes[i] & 15];
  }
  return s;
}

static int HexVal(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool Digest::FromHex(const std::string& hex, Digest* out) {
  if (hex.size() != 32) return false;
  for (size_t i = 0; i < 16; ++i) {
    int hi = HexVal(hex[2 * i]), lo = HexVal(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

uint64_t Checksum64(std::span<const uint8_t> data) { return XXH3_64bits(data.data(), data.size()); }

bool IsAllZero(std::span<const uint8_t> data) {
  const uint8_t* p = data.data();
  size_t n = data.size();
  // Byte-wise until 8-aligned, then 64 bytes per step OR-ed together; the
  // compiler vectorises this loop. Exits at the first non-zero block.
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    if (*p) return false;
    ++p;
    --n;
  }
  while (n >= 64) {
    uint64_t w[8];
    std::memcpy(w, p, 64);
    if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0) return false;
    p += 64;
    n -= 64;
  }
  while (n > 0) {
    if (*p) return false;
    ++p;
    --n;
  }
  return true;
}

}  // namespace gnomon
