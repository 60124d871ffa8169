// The built-in volume writer: owns each imaged volume as one component and
// keeps its backup stamps (shared/vss-behaviour.md §6):
//  - OnPrepareBackup validates the previous stamp the requester handed back
//    and records its TrackingVerdict (vss/contracts.h) in the component's
//    backup metadata: build on the base the stamp names, or read everything
//    and why;
//  - OnPostSnapshot sets the new stamp: the snapshot taken now, which the
//    requester retains as the next base if the backup is committed.
// Its components' file sets carry the default mask, so the §5.4 rule sees
// that a block image needs a snapshot for every backup type.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "vss/volume_stamp.h"
#include "vss/writer.h"

namespace gnomon::vss {

class VolumeWriter : public Writer {
 public:
  static Guid ClassId();
  static constexpr const char* kLogicalPath = "volumes";
  // trackers: how each snapshot provider of this backup tracks changes, by
  // provider name (Provider::tracker()); one not named tracks none.
  VolumeWriter(std::vector<std::string> volumes, std::string state_dir,
               std::map<std::string, ChangeTracker> trackers);

  bool OnIdentify(WriterMetadata* md) override;
  bool OnPrepareBackup(WriterComponents* components) override;
  // The image is taken by the provider; there is nothing to quiesce here.
  bool OnPrepareSnapshot() override { return true; }
  bool OnFreeze() override { return true; }
  bool OnThaw() override { return true; }
  bool OnPostSnapshot(WriterComponents* components) override;
  bool OnAbort() override { return true; }

 private:
  // Why the previous stamp cannot be trusted, or "" if it can.
  std::string Validate(const std::string& volume, const std::string& text, VolumeStamp* prev);

  ChangeTracker TrackerOf(const std::string& volume) const;

  std::vector<std::string> volumes_;
  std::string state_dir_;
  std::map<std::string, ChangeTracker> trackers_;
  std::map<std::string, VolumeStamp> trusted_;  // volume -> validated previous stamp
};

}  // namespace gnomon::vss
