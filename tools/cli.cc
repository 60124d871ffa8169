#include <fmt/core.h>
#include <cstdio>
#include <iostream>

#include "base/system.h"
#include "tools/cli.h"

namespace gnomon::cli {

using nlohmann::json;

CancelFlag g_cancel{false};

int ExitFor(const Status& s) {
  using C = Status::Code;
  switch (s.code()) {
    case C::kOk:
      return kOk;
    case C::kCorruption:
      return kDamaged;
    case C::kLocked:
      return kLocked;
    case C::kUnsupported:
      return kUnsupported;
    case C::kAborted:
      return kInterrupted;
    case C::kSnapshotFailed:
      return kSnapshotFailed;
    case C::kWrongKey:
      return kWrongKey;
    default:
      return kFailed;
  }
}

int Fail(const Globals& g, const Status& s, int code) {
  if (code < 0) code = ExitFor(s);
  // The message may name what a file held (a volume, a writer, a path).
  fmt::print(stderr, "gnomon: error: {}\n", EscapeForTerminal(s.message()));
  if (g.json) std::cout << json{{"error", s.message()}, {"exit_code", code}}.dump() << "\n";
  return code;
}

int OpenRepo(const Globals& g, LockMode mode, const std::string& purpose,
             std::unique_ptr<Repository>* out, bool need_key) {
  if (g.repo.empty())
    return Fail(g,
                Status::InvalidArgument("no repository given: use --repo PATH or set GNOMON_REPO"),
                kUsage);
  Status s = Repository::OpenLocation(g.repo, mode, purpose, out);
  if (s.IsNotFound()) return Fail(g, s, kNoRepo);
  if (!s.ok()) return Fail(g, s);
  // Unlocked first: an encrypted repository cleans up after dead runs then.
  if (need_key)
    if (int rc = UnlockRepo(g, out->get())) return rc;
  if (!(*out)->broken_stale_lock().empty() && !g.quiet)
    fmt::print(stderr, "gnomon: removed a stale lock left by {} (that process is gone)\n",
               EscapeForTerminal((*out)->broken_stale_lock()));
  if (!g.quiet)
    for (const auto& c : (*out)->cleaned())
      fmt::print(stderr, "gnomon: removed what an interrupted run left: {}\n",
                 EscapeForTerminal(c));  // names a journal in the repository's tmp/
  if (!g.quiet)
    for (const auto& w : (*out)->upkeep_warnings())
      fmt::print(stderr, "gnomon: warning: {}\n", EscapeForTerminal(w));
  return kOk;
}

json StatsJson(const VolumeStats& s) {
  json j = s.ToJson();
  j["mb_per_s"] = s.seconds > 0 ? static_cast<double>(s.bytes) / s.seconds / 1e6 : 0;
  return j;
}

json BackupJson(const BackupRecord& r) {
  json vols = json::array();
  for (const auto& v : r.volumes)
    vols.push_back({{"name", v.name},
                    {"source", v.source},
                    {"size", v.size},
                    {"parent", v.parent},
                    {"tracking", v.tracking},
                    {"tracking_reason", v.tracking_reason},
                    {"block_map", v.block_map},
                    {"block_map_reason", v.block_map_reason},
                    {"stats", StatsJson(v.stats)}});
  json j{
      {"id", r.id},         {"time", r.time}, {"host", r.host},  {"type", r.type},
      {"parent", r.parent}, {"tags", r.tags}, {"volumes", vols}, {"totals", StatsJson(r.totals)}};
  if (r.disk.present()) j["disk"] = r.disk.ToJson();
  return j;
}

}  // namespace gnomon::cli
