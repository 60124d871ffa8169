// gnomon forget: by id, or by a retention policy (engine/retention.h).
#include <fmt/format.h>

#include <ctime>
#include <iostream>

#include "base/system.h"
#include "engine/retention.h"
#include "tools/cli.h"

namespace gnomon::cli {

using nlohmann::json;

namespace {

// Removes the backups named on the command line.
int ForgetIds(const Globals& g, Repository* repo, const std::vector<std::string>& ids, bool force) {
  json done = json::array();
  for (const auto& id : ids) {
    BackupRecord r;
    Status s = repo->FindBackup(id, &r);
    if (s.ok()) {
      s = repo->ForgetBackup(r);
    } else if (force && (s.IsCorruption() || s.IsNotFound())) {
      // A record that cannot be read: removed only by its full id, after
      // saying what it was.
      std::string what;
      s = repo->ForgetUnreadable(id, &what);
      if (s.ok() && !g.json) fmt::print(stderr, "gnomon: removed {}\n", EscapeForTerminal(what));
      r.id = id;
    }
    if (!s.ok()) {
      if (s.IsCorruption() && !force)
        s = s.WithContext("the record cannot be read (use 'forget --force " + id +
                          "' to remove it)");
      return Fail(g, s);
    }
    done.push_back(r.id);
    if (!g.json && !g.quiet) fmt::print("removed backup {}\n", r.id);
  }
  if (g.json) std::cout << json{{"removed", done}}.dump() << "\n";
  return kOk;
}

void PrintGroup(const RetentionGroup& group, bool dry_run) {
  std::string title = group.host.empty() ? "all hosts" : "host " + EscapeForTerminal(group.host);
  for (const auto& v : group.volumes) title += ", " + EscapeForTerminal(v);
  fmt::print("{}:\n", title);
  for (const auto& d : group.backups) {
    std::string why;
    for (const auto& r : d.reasons) why += (why.empty() ? "" : ", ") + r;
    std::string line = fmt::format("  {:<12}  {}  {:<27}  {:<12}  {}",
                                   d.keep ? "keep" : (dry_run ? "would remove" : "remove"),
                                   d.record->id, EscapeForTerminal(d.record->time),
                                   EscapeForTerminal(d.record->type), d.keep ? why : "");
    line.erase(line.find_last_not_of(' ') + 1);
    fmt::print("{}\n", line);
  }
}

json GroupJson(const RetentionGroup& group) {
  json backups = json::array();
  for (const auto& d : group.backups)
    backups.push_back({{"id", d.record->id},
                       {"time", d.record->time},
                       {"type", d.record->type},
                       {"keep", d.keep},
                       {"reasons", d.reasons}});
  return {{"host", group.host}, {"volumes", group.volumes}, {"backups", backups}};
}

// Applies the policy to every readable record; unreadable ones are left
// alone (and said), since nothing is known of them.
int ForgetByPolicy(const Globals& g, Repository* repo, const RetentionPolicy& policy,
                   bool dry_run) {
  std::vector<BackupRecord> records;
  std::vector<Status> errors;
  if (Status s = repo->ListBackups(&records, &errors); !s.ok()) return Fail(g, s);
  for (const auto& e : errors)
    fmt::print(stderr, "gnomon: warning: {} (left as it is)\n", EscapeForTerminal(e.message()));
  const std::vector<RetentionGroup> groups =
      ApplyRetention(records, policy, static_cast<int64_t>(std::time(nullptr)));
  json out_groups = json::array(), removed = json::array();
  size_t done = 0;
  for (const auto& group : groups) {
    for (const auto& d : group.backups)
      if (d.undated)
        fmt::print(stderr,
                   "gnomon: warning: backup {} has a time that cannot be read ('{}'); "
                   "kept\n",
                   d.record->id, EscapeForTerminal(d.record->time));
    if (g.json)
      out_groups.push_back(GroupJson(group));
    else if (!g.quiet)
      PrintGroup(group, dry_run);
    for (const auto& d : group.backups)
      if (!d.keep) removed.push_back(d.record->id);
  }
  // Every decision is shown before the first removal; a failure part way
  // says how far it got (each removal is whole on its own).
  if (!dry_run)
    for (const auto& group : groups)
      for (const auto& d : group.backups) {
        if (d.keep) continue;
        if (Status s = repo->ForgetBackup(*d.record); !s.ok())
          return Fail(g, s.WithContext("removed " + std::to_string(done) + " of " +
                                       std::to_string(removed.size()) + " backups, then"));
        ++done;
      }
  std::string group_by = policy.group_by_host ? "host" : "";
  if (policy.group_by_volume) group_by += group_by.empty() ? "volume" : ",volume";
  if (g.json)
    std::cout << json{{"groups", out_groups},
                      {dry_run ? "would_remove" : "removed", removed},
                      {"dry_run", dry_run},
                      {"group_by", group_by}}
                     .dump()
              << "\n";
  else if (!g.quiet)
    fmt::print("{} {} backup{}\n", dry_run ? "would remove" : "removed", removed.size(),
               removed.size() == 1 ? "" : "s");
  return kOk;
}

}  // namespace

int CmdForget(const Globals& g, const ForgetOptions& opt) {
  if (!opt.ids.empty() && opt.dry_run)
    return Fail(g, Status::InvalidArgument("--dry-run goes with a policy"), kUsage);
  if (opt.policy.empty() && opt.policy_options)
    return Fail(g, Status::InvalidArgument("--group-by goes with a policy"), kUsage);
  if (opt.force && !opt.policy.empty())
    return Fail(g, Status::InvalidArgument("--force goes with backup ids, not a policy"), kUsage);
  if (opt.ids.empty() == opt.policy.empty())
    return Fail(g,
                Status::InvalidArgument(
                    opt.ids.empty() ? "say what to forget: backup ids, or a policy (--keep-last N, "
                                      "--keep-daily N, ..., --keep-within DURATION, --keep-tag T)"
                                    : "give backup ids or a policy, not both"),
                kUsage);
  if (opt.prune && opt.dry_run)
    return Fail(g, Status::InvalidArgument("--prune does not go with --dry-run"), kUsage);
  std::unique_ptr<Repository> repo;
  if (int rc = OpenRepo(g, opt.dry_run ? LockMode::kShared : LockMode::kExclusive, "forget", &repo))
    return rc;
  int rc = !opt.ids.empty() ? ForgetIds(g, repo.get(), opt.ids, opt.force)
                            : ForgetByPolicy(g, repo.get(), opt.policy, opt.dry_run);
  if (rc != kOk || !opt.prune) return rc;
  repo.reset();  // prune's deletion step waits for every lock holder, us too
  return CmdPrune(g, PruneCliOptions{});
}

}  // namespace gnomon::cli
