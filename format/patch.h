// Patches: an incremental's way to store a chunk of which only a few blocks
// changed. A patch names the chunk it changes (its base, by digest, or the
// zero digest for an all-zero base) and carries the new bytes of the changed
// ranges; the volume index slot holds the patch's digest. A patch's digest,
// like every blob's, is XXH3-128 of its bytes (checked when read); the base
// is checked the same way, recursively. See FORMAT.md, "Patches".
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "format/digest.h"

namespace gnomon {

inline constexpr char kPatchMagic[5] = "GPAT";
inline constexpr uint32_t kPatchVersion = 1;
// A base chain longer than this is not extended: the chunk is stored whole,
// so restoring a slot never decodes more than this many blobs.
inline constexpr uint8_t kMaxPatchDepth = 16;

struct PatchRange {
  uint32_t offset, length;
};

struct PatchView {
  Digest base;  // zero: the base is all zeros
  uint32_t chunk_len = 0;
  std::vector<PatchRange> ranges;
  std::span<const uint8_t> data;  // the ranges' new bytes, in order
};

// Appends the patch header for (base, chunk_len, ranges) to *out; the caller
// appends the ranges' bytes after it, in order.
void EncodePatchHeader(const Digest& base, uint32_t chunk_len,
                       const std::vector<PatchRange>& ranges, std::vector<uint8_t>* out);
size_t PatchHeaderSize(size_t ranges);
// Parses and checks a whole patch; `where` names it in errors.
Status DecodePatch(std::span<const uint8_t> patch, const std::string& where, PatchView* out);
// Applies the ranges to a chunk that already holds the base's bytes.
void ApplyPatch(const PatchView& p, uint8_t* chunk);

}  // namespace gnomon
