// A volume index's body: the slot digests of one volume of one backup.
#include <string>

#include "format/volume_index.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gnomon::VolumeIndex vi;
  (void)gnomon::VolumeIndex::Decode("fuzz", std::string(reinterpret_cast<const char*>(data), size),
                                    &vi);
  return 0;
}
