// The frame of every small repository file (config, index, volume index,
// backup record, quarantine, check file): magic, version, length, checksum.
// The first byte picks the kind.
#include <string>

#include "format/framed_file.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const gnomon::FrameKind* const kKinds[] = {
      &gnomon::kConfigFrame, &gnomon::kIndexFrame,      &gnomon::kVolumeIndexFrame,
      &gnomon::kBackupFrame, &gnomon::kQuarantineFrame, &gnomon::kCheckFrame};
  const gnomon::FrameKind& kind = *kKinds[data[0] % 6];
  std::string file(reinterpret_cast<const char*>(data) + 1, size - 1), body;
  uint32_t version = 0;
  (void)gnomon::DecodeFrame(kind, "fuzz", file, &body, &version);
  return 0;
}
