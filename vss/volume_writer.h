// The built-in volume writer: owns each imaged volume as one component, so
// the backup components document says what was imaged and the §5.4 rule
// sees that a block image needs a snapshot (the default file-spec mask
// requires one for every backup type). Change tracking (issue 4) gives it
// its real work: backup stamps set in PostSnapshot and checked in
// PrepareForBackup.
#pragma once

#include <string>
#include <vector>

#include "vss/writer.h"

namespace gnomon::vss {

class VolumeWriter : public Writer {
 public:
  static Guid ClassId();
  static constexpr const char* kLogicalPath = "volumes";
  explicit VolumeWriter(std::vector<std::string> volumes);

  bool OnIdentify(WriterMetadata* md) override;
  // The image is taken by the provider; there is nothing to quiesce here.
  bool OnPrepareSnapshot() override { return true; }
  bool OnFreeze() override { return true; }
  bool OnThaw() override { return true; }
  bool OnAbort() override { return true; }

 private:
  std::vector<std::string> volumes_;
};

}  // namespace gnomon::vss
