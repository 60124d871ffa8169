// The writers a backup gathers, and what `gnomon writers` shows of them
// (like `vssadmin list writers`): each one's metadata, kind and the status
// it had at the end of the last backup, kept in the state directory.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/snapshot_session.h"
#include "vss/backup_components.h"
#include "vss/provider.h"
#include "vss/writer.h"

namespace gnomon {

// Every writer a backup gathers: the built-in ones (the volume writer told
// how each of `providers` tracks changes), those listening in
// opt.writer_dir, and the scripts in opt.hooks_dir. Unreachable writers are
// left out with a line in *notes.
std::vector<std::shared_ptr<vss::Writer>> GatherWriters(
    const std::vector<std::string>& volumes, const SnapshotOptions& opt,
    const std::vector<std::shared_ptr<vss::Provider>>& providers, std::vector<std::string>* notes);

// The writer status at the end of the last backup, saved by every backup
// (best effort: `gnomon writers` says "unknown" if it is missing).
struct LastWriterStatus {
  std::string time;  // RFC 3339 UTC; "" when no backup saved one
  std::vector<vss::WriterStatus> writers;
};
void SaveWriterStatus(const std::string& state_dir, const std::vector<vss::WriterStatus>& status);
// A damaged or hostile file is ignored, never trusted: only well-formed
// entries are returned.
LastWriterStatus LoadWriterStatus(const std::string& state_dir);

// The writers a backup would gather (their metadata, from Identify), each
// with its kind (built-in, process, script) and last known status; with
// components, also each writer's "components" (DescribeComponents in
// engine/component_selection.h).
nlohmann::json DescribeWriters(const SnapshotOptions& opt, std::vector<std::string>* notes,
                               bool components = false);

}  // namespace gnomon
