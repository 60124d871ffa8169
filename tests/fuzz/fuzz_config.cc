// The repository config's body (after its frame: the checksum is no
// defence against a hostile file, which can carry a valid one).
#include <string>

#include "format/config.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gnomon::RepoConfig c;
  (void)gnomon::RepoConfig::Decode("fuzz", std::string(reinterpret_cast<const char*>(data), size),
                                   &c);
  return 0;
}
