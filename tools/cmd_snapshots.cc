// The VSS-facing commands: writers (like `vssadmin list writers`) and
// snapshots (list and delete snapshots left behind by crashed backups).
#include <cstdio>
#include <iostream>

#include "engine/snapshot_session.h"
#include "engine/snapshots_admin.h"
#include "engine/writers_admin.h"
#include "tools/cli.h"
#include "tools/progress_display.h"

namespace gnomon::cli {

using nlohmann::json;

int CmdWriters(const Globals& g) {
  std::vector<std::string> notes;
  json ws = DescribeWriters(SnapshotOptions{}, &notes);
  for (const auto& n : notes) std::fprintf(stderr, "gnomon: warning: %s\n", n.c_str());
  if (g.json) {
    std::cout << ws.dump() << "\n";
    return kOk;
  }
  for (const auto& w : ws) {
    std::printf("Writer name: '%s'\n", w["name"].get<std::string>().c_str());
    std::printf("   Writer Id: {%s}\n", w["class_id"].get<std::string>().c_str());
    std::printf("   Kind: %s, application level %s\n", w["kind"].get<std::string>().c_str(),
                w["level"].get<std::string>().c_str());
    if (!w.value("detail", "").empty())
      std::printf("   Where: %s\n", w["detail"].get<std::string>().c_str());
    std::printf("   State: %s\n", w["state_text"].get<std::string>().c_str());
    uint32_t f = w["failure"].get<uint32_t>();
    std::printf("   Last error: %s\n", f == 0 ? "No error"
                                              : (w["failure_name"].get<std::string>() + ": " +
                                                 w["message"].get<std::string>())
                                                    .c_str());
    if (!w["last_backup"].is_null())
      std::printf("   Last backup: %s\n", w["last_backup"].get<std::string>().c_str());
    std::printf("\n");
  }
  return kOk;
}

int CmdSnapshots(const Globals& g, const std::string& delete_id, bool delete_all) {
  const std::string state = vss::DefaultStateDir();
  if (!delete_id.empty() || delete_all) {
    int rc = kOk;
    std::vector<std::string> ids;
    if (delete_all) {
      // Left-behind snapshots only: a base is deleted by id, on purpose.
      for (const auto& e : ListSnapshots(state))
        if (!e.in_use && e.props.state != vss::SnapshotState::kBase)
          ids.push_back(e.props.snapshot_id.ToString());
    } else {
      ids.push_back(delete_id);
    }
    json done = json::array();
    for (const auto& id : ids) {
      Status s = DeleteSnapshot(state, id);
      // Deleting a snapshot that was advancing a base also removes that
      // base's record.
      if (delete_all && s.IsNotFound()) continue;
      if (!s.ok()) {
        rc = Fail(g, s);
        continue;
      }
      done.push_back(id);
      if (!g.json && !g.quiet) std::printf("deleted snapshot %s\n", id.c_str());
    }
    if (g.json) std::cout << json{{"deleted", done}}.dump() << "\n";
    return rc;
  }
  auto all = ListSnapshots(state, /*with_pinned=*/true);
  if (g.json) {
    json arr = json::array();
    for (const auto& e : all)
      arr.push_back({{"id", e.props.snapshot_id.ToString()},
                     {"set_id", e.props.snapshot_set_id.ToString()},
                     {"volume", e.props.volume},
                     {"provider", e.props.provider},
                     {"device", e.props.device},
                     {"size", e.props.size},
                     {"created", e.props.created},
                     {"state", e.props.state},
                     {"in_use", e.in_use},
                     {"pid", e.props.pid},
                     {"backup_id", e.props.backup_id},
                     {"backup_type", e.props.backup_type == vss::BackupType::kUndefined
                                         ? ""
                                         : vss::BackupTypeName(e.props.backup_type)},
                     {"volume_key", e.props.volume_key},
                     {"pinned_bytes", e.pinned_bytes}});
    std::cout << arr.dump() << "\n";
    return kOk;
  }
  if (all.empty()) {
    std::printf("no snapshots (state directory %s)\n", state.c_str());
    return kOk;
  }
  std::printf("%-36s  %-20s  %-8s  %-34s  %10s  %10s  %s\n", "ID", "CREATED", "PROVIDER", "STATUS",
              "SIZE", "PINS", "VOLUME -> SNAPSHOT");
  for (const auto& e : all) {
    std::string status =
        e.in_use ? "in use (pid " + std::to_string(e.props.pid) + ")"
        : e.props.state == vss::SnapshotState::kBase
            ? "base of " + vss::BackupTypeName(e.props.backup_type) + " " + e.props.backup_id
        : e.props.state == vss::SnapshotState::kAdvancing ? "left behind, half-updated base"
                                                          : "left behind";
    std::printf("%-36s  %-20s  %-8s  %-34s  %10s  %10s  %s -> %s\n",
                e.props.snapshot_id.ToString().c_str(), e.props.created.c_str(),
                e.props.provider.c_str(), status.c_str(),
                HumanBytes(static_cast<double>(e.props.size)).c_str(),
                HumanBytes(static_cast<double>(e.pinned_bytes)).c_str(), e.props.volume.c_str(),
                e.props.device.c_str());
  }
  return kOk;
}

}  // namespace gnomon::cli
