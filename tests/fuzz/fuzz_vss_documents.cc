// What a backup record's VSS part holds and writers send: the Writer
// Metadata Document, the Backup Components Document, the Volume Image
// Writer's stamp, and backup options text. The first byte picks which.
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/fuzz/fuzz_target.h"
#include "vss/backup_options.h"
#include "vss/documents.h"
#include "vss/volume_stamp.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0: {
      const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
      gnomon::vss::WriterMetadata md;
      if (!j.is_discarded()) (void)gnomon::vss::WriterMetadata::FromJson(j, &md);
      break;
    }
    case 1: {
      const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
      gnomon::vss::BackupComponentsDocument bcd;
      if (!j.is_discarded()) (void)gnomon::vss::BackupComponentsDocument::FromJson(j, &bcd);
      break;
    }
    case 2: {
      gnomon::vss::VolumeStamp st;
      (void)gnomon::vss::VolumeStamp::Decode(text, &st);
      break;
    }
    case 3: {
      static const std::vector<gnomon::vss::BackupOptionSpec> kSpec = {
          {"checkpoint", {"fast", "spread"}, "fast"}, {"mode", {}, ""}};
      std::map<std::string, std::string> out;
      (void)gnomon::vss::ReadBackupOptions(text, kSpec, &out);
      break;
    }
  }
  return 0;
}
