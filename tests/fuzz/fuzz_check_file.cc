// A check file's body (verify --read-data-subset's record of checked packs)
// and a quarantine file's (damaged chunks); the first byte picks which.
#include <string>
#include <vector>

#include "format/check_file.h"
#include "format/quarantine.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  uint64_t time = 0;
  if (data[0] & 1) {
    std::vector<gnomon::PackCheck> checks;
    (void)gnomon::DecodeChecks("fuzz", body, &time, &checks);
  } else {
    std::vector<gnomon::BadChunk> chunks;
    (void)gnomon::DecodeQuarantine("fuzz", body, &time, &chunks);
  }
  return 0;
}
