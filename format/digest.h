// Chunk digests: XXH3-128 of the uncompressed chunk, stored in xxHash's
// canonical (big-endian) byte order so the bytes on disk do not depend on the
// host. The all-zero digest is reserved to mean "this slot is all zeros".
#pragma once

#include "base/random.h"  // RandomHexId: every id in the repository

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

namespace gnomon {

struct Digest {
  std::array<uint8_t, 16> bytes{};

  static Digest Of(std::span<const uint8_t> data);
  static Digest Zero() { return Digest{}; }
  bool IsZero() const {
    uint64_t a, b;
    std::memcpy(&a, bytes.data(), 8);
    std::memcpy(&b, bytes.data() + 8, 8);
    return (a | b) == 0;
  }
  std::string Hex() const;
  static bool FromHex(const std::string& hex, Digest* out);
  // The low 64 bits, already uniformly distributed: a hash table key.
  uint64_t Hash64() const {
    uint64_t h;
    std::memcpy(&h, bytes.data() + 8, 8);
    return h;
  }
  friend bool operator==(const Digest&, const Digest&) = default;
  friend auto operator<=>(const Digest&, const Digest&) = default;
};

struct DigestHash {
  size_t operator()(const Digest& d) const { return static_cast<size_t>(d.Hash64()); }
};

// XXH3-64 of a byte range: the checksum of every gnomon metadata file.
uint64_t Checksum64(std::span<const uint8_t> data);

// True if every byte of data is zero. Fast path for the imaging pipeline.
bool IsAllZero(std::span<const uint8_t> data);

}  // namespace gnomon
