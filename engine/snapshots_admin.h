// Snapshots recorded in the state directory, for `gnomon snapshots` (like
// `vssadmin list shadows`): those left by crashed backups, in use by running
// ones, or kept as change-tracking bases; and deleting them through the
// provider that made them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "vss/provider.h"

namespace gnomon {

struct SnapshotEntry {
  vss::SnapshotProperties props;
  bool in_use = false;        // its process is alive: a backup is reading it
  uint64_t pinned_bytes = 0;  // space it keeps allocated that the volume no longer uses
};
// Oldest first. with_pinned also asks each snapshot's provider what it pins
// (which may read extent maps).
std::vector<SnapshotEntry> ListSnapshots(const std::string& state_dir, bool with_pinned = false);
// Deletes one (by id or unique prefix); refuses one in use.
Status DeleteSnapshot(const std::string& state_dir, const std::string& id_prefix);
// Deletes a recorded snapshot through the provider that made it: one of
// `providers` if named there, else this build's provider of that name.
Status DeleteRecorded(const std::string& state_dir, const vss::SnapshotProperties& props,
                      const std::vector<std::shared_ptr<vss::Provider>>& providers = {});
// The snapshot providers this build has, in the order they are tried.
std::vector<std::string> SnapshotProviderNames();

}  // namespace gnomon
