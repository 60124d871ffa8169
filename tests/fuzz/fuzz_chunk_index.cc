// A chunk-index file's body: packs and the chunks each holds.
#include <string>
#include <vector>

#include "format/chunk_index.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<gnomon::PackSummary> packs;
  (void)gnomon::DecodeIndexFile("fuzz", std::string(reinterpret_cast<const char*>(data), size),
                                &packs);
  return 0;
}
