// A pack file read from its tail: the trailer, the header of entries, and
// each entry's stored bytes decoded (zstd or raw) and, for a patch, parsed.
// The header checksum is recomputed over the input first: it guards against
// damage, not against a hostile file, which can carry a valid one, so the
// fuzzer must get past it to reach the parser.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "format/codec.h"
#include "format/coding.h"
#include "format/pack.h"
#include "format/patch.h"
#include "tests/fuzz/fuzz_target.h"
#include "tests/fuzz/memory_file.h"

namespace {

using gnomon::fuzz::MemoryFile;

// Makes the tail's checksum match whatever header the input claims.
void FixChecksum(std::vector<uint8_t>* f) {
  if (f->size() < gnomon::kPackTailSize) return;
  uint8_t* tail = f->data() + f->size() - gnomon::kPackTailSize;
  const uint64_t header_len = uint64_t{gnomon::GetU32(tail)} * gnomon::kPackEntrySize;
  if (header_len + gnomon::kPackTailSize > f->size()) return;
  std::vector<uint8_t> b(tail - header_len, tail);
  b.insert(b.end(), tail, tail + 8);
  const uint64_t sum = gnomon::Checksum64(b);
  for (int i = 0; i < 8; ++i) tail[8 + i] = static_cast<uint8_t>(sum >> (8 * i));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  FixChecksum(&bytes);
  MemoryFile f(std::move(bytes));
  std::vector<gnomon::PackEntry> entries;
  if (!gnomon::ReadPackHeader(f, &entries).ok()) return 0;
  gnomon::ChunkDecompressor dec;
  for (const auto& e : entries) {
    if (gnomon::Status s = gnomon::CheckBlobLengths(e.stored_len, e.raw_len, "fuzz"); !s.ok())
      continue;  // what every reader checks before it allocates
    std::vector<uint8_t> stored(e.stored_len), raw(e.raw_len);
    if (!f.ReadAt(e.offset, e.stored_len, stored.data()).ok()) continue;
    if (!dec.Decompress(e.codec, stored, raw.data(), raw.size(), "fuzz").ok()) continue;
    gnomon::PatchView pv;
    if (e.patch_depth > 0 && gnomon::DecodePatch(raw, "fuzz", &pv).ok() &&
        pv.chunk_len <= (1u << 24)) {
      std::vector<uint8_t> chunk(pv.chunk_len);
      gnomon::ApplyPatch(pv, chunk.data());
    }
  }
  return 0;
}
