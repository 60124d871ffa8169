// A patch blob (an incremental's changed blocks of a chunk): parsed, then
// applied to a chunk of the length it claims, as restore does.
#include <span>
#include <vector>

#include "format/patch.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gnomon::PatchView pv;
  if (!gnomon::DecodePatch(std::span<const uint8_t>(data, size), "fuzz", &pv).ok()) return 0;
  // Restore allocates the slot's length, which it checks against the
  // patch's chunk_len first; keep the fuzzer's memory bounded the same way.
  if (pv.chunk_len > (64u << 20)) return 0;
  std::vector<uint8_t> chunk(pv.chunk_len);
  gnomon::ApplyPatch(pv, chunk.data());
  return 0;
}
