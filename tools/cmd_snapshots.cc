// The VSS-facing commands: writers (like `vssadmin list writers`) and
// snapshots (list and delete snapshots left behind by crashed backups).
#include <fmt/core.h>
#include <cstdio>
#include <iostream>

#include "base/system.h"
#include "engine/snapshot_session.h"
#include "engine/snapshots_admin.h"
#include "engine/writers_admin.h"
#include "tools/cli.h"
#include "tools/progress_display.h"

namespace gnomon::cli {

using nlohmann::json;

// A writer's components (--components): path, type, selectability, role,
// component sets, file specs.
static void PrintComponents(const json& comps) {
  auto E = [](const json& j) { return EscapeForTerminal(j.get<std::string>()); };
  fmt::print("   Components:{}\n", comps.empty() ? " none" : "");
  for (const auto& c : comps) {
    std::string role = E(c["role"]);
    if (c["required"].get<bool>()) role += " (taken whenever the writer takes part)";
    if (!c["component_set"].is_null())
      role += ", in the component set of '" + E(c["component_set"]) + "'" +
              (c["selectable"].get<bool>() ? " (comes in with it, or on its own)"
                                           : " (comes in only with it)");
    std::string sel = E(c["selectability"]);
    if (c["selectable"].get<bool>() && c["selectable_for_restore"].get<bool>())
      sel += ", selectable for restore";
    fmt::print("      '{}': {}, {}, {}\n", E(c["path"]), E(c["type"]), sel, role);
    if (!c["set_members"].empty()) {
      std::string members;
      for (const auto& m : c["set_members"]) members += (members.empty() ? "" : ", ") + E(m);
      fmt::print("         defines a component set: {}\n", members);
    }
    for (const auto& f : c["files"]) {
      std::string line = "         file: " + E(f["path"]);
      if (!f["spec"].get<std::string>().empty()) line += ", spec '" + E(f["spec"]) + "'";
      if (f["recursive"].get<bool>()) line += ", recursive";
      if (!f["alternate_path"].get<std::string>().empty())
        line += ", read from " + E(f["alternate_path"]);
      if (f["is_log"].get<bool>()) line += ", log files";
      fmt::print("{}, mask {}\n", line, E(f["mask_hex"]));
    }
  }
}

int CmdWriters(const Globals& g, bool components) {
  std::vector<std::string> notes;
  json ws = DescribeWriters(SnapshotOptions{}, &notes, components);
  for (const auto& n : notes) fmt::print(stderr, "gnomon: warning: {}\n", EscapeForTerminal(n));
  if (g.json) {
    std::cout << ws.dump() << "\n";
    return kOk;
  }
  // What a writer reports (its name, where it is, its failure) and what a
  // status file held: escaped, so they cannot drive the terminal.
  auto E = [](const json& j) { return EscapeForTerminal(j.get<std::string>()); };
  for (const auto& w : ws) {
    fmt::print("Writer name: '{}'\n", E(w["name"]));
    fmt::print("   Writer Id: {{{}}}\n", E(w["class_id"]));
    fmt::print("   Kind: {}, application level {}\n", E(w["kind"]), E(w["level"]));
    if (!w.value("detail", "").empty()) fmt::print("   Where: {}\n", E(w["detail"]));
    fmt::print("   State: {}\n", E(w["state_text"]));
    uint32_t f = w["failure"].get<uint32_t>();
    fmt::print("   Last error: {}\n",
               f == 0 ? std::string("No error") : E(w["failure_name"]) + ": " + E(w["message"]));
    if (!w["last_backup"].is_null()) fmt::print("   Last backup: {}\n", E(w["last_backup"]));
    if (components) PrintComponents(w["components"]);
    fmt::print("\n");
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
      if (!g.json && !g.quiet) fmt::print("deleted snapshot {}\n", id);
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
                     {"for_differentials", e.props.for_differentials},
                     {"pinned_bytes", e.pinned_bytes}});
    std::cout << arr.dump() << "\n";
    return kOk;
  }
  if (all.empty()) {
    fmt::print("no snapshots (state directory {})\n", state);
    return kOk;
  }
  fmt::print("{:<36}  {:<20}  {:<8}  {:<34}  {:>10}  {:>10}  {}\n", "ID", "CREATED", "PROVIDER",
             "STATUS", "SIZE", "PINS", "VOLUME -> SNAPSHOT");
  for (const auto& e : all) {
    std::string status =
        e.in_use ? "in use (pid " + std::to_string(e.props.pid) + ")"
        : e.props.state == vss::SnapshotState::kBase
            ? "base of " + vss::BackupTypeName(e.props.backup_type) + " " + e.props.backup_id +
                  (e.props.for_differentials ? " (kept for differentials)" : "")
        : e.props.state == vss::SnapshotState::kAdvancing ? "left behind, half-updated base"
                                                          : "left behind";
    // Every field but the id and the numbers is what a registry file held.
    fmt::print("{:<36}  {:<20}  {:<8}  {:<34}  {:>10}  {:>10}  {} -> {}\n",
               e.props.snapshot_id.ToString(), EscapeForTerminal(e.props.created),
               EscapeForTerminal(e.props.provider), EscapeForTerminal(status),
               HumanBytes(static_cast<double>(e.props.size)),
               HumanBytes(static_cast<double>(e.pinned_bytes)), EscapeForTerminal(e.props.volume),
               EscapeForTerminal(e.props.device));
  }
  return kOk;
}

}  // namespace gnomon::cli
