// A backup record's body, and its JSON extra (VSS documents, writer status)
// the way `show` and incrementals read it.
#include <string>

#include "format/backup_record.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gnomon::BackupRecord r;
  (void)gnomon::BackupRecord::Decode("fuzz", std::string(reinterpret_cast<const char*>(data), size),
                                     &r);
  return 0;
}
