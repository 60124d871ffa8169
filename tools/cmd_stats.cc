// gnomon stats: what the repository holds, what is live, what a prune
// could give back (engine/repo_usage.h).
#include <fmt/core.h>

#include <iostream>

#include "base/system.h"
#include "engine/repo_usage.h"
#include "tools/cli.h"
#include "tools/progress_display.h"

namespace gnomon::cli {

using nlohmann::json;

int CmdStats(const Globals& g) {
  std::unique_ptr<Repository> repo;
  if (int rc = OpenRepo(g, LockMode::kShared, "stats", &repo)) return rc;
  RepoUsage u;
  if (Status s = MeasureUsage(repo.get(), &u); !s.ok()) return Fail(g, s);
  if (g.json) {
    std::cout << json{{"backups", u.backups},
                      {"unreadable_backups", u.unreadable_backups},
                      {"packs", u.packs},
                      {"pack_bytes", u.pack_bytes},
                      {"chunks", u.chunks},
                      {"stored_bytes", u.stored_bytes},
                      {"live_chunks", u.live_chunks},
                      {"live_bytes", u.live_bytes},
                      {"reclaimable_bytes", u.reclaimable_bytes()},
                      {"patches_followed", u.patches_followed},
                      {"dead_packs", u.dead_packs},
                      {"dead_pack_bytes", u.dead_pack_bytes},
                      {"mixed_packs", u.mixed_packs},
                      {"mixed_dead_bytes", u.mixed_dead_bytes},
                      {"unindexed_packs", u.unindexed_packs},
                      {"unindexed_pack_bytes", u.unindexed_pack_bytes},
                      {"complete", u.complete},
                      {"problems", u.problems}}
                     .dump(-1, ' ', false, json::error_handler_t::replace)
              << "\n";
    return u.complete ? kOk : kDamaged;
  }
  auto B = [](uint64_t b) { return HumanBytes(static_cast<double>(b)); };
  fmt::print("backups:      {}{}\n", u.backups,
             u.unreadable_backups ? fmt::format(" (and {} unreadable)", u.unreadable_backups) : "");
  fmt::print("packs:        {} ({} on disk)\n", u.packs, B(u.pack_bytes));
  fmt::print("stored:       {} in {} chunk copies\n", B(u.stored_bytes), u.chunks);
  fmt::print("live:         {} in {} chunks (through {} patch{} to their bases)\n", B(u.live_bytes),
             u.live_chunks, u.patches_followed, u.patches_followed == 1 ? "" : "es");
  fmt::print(
      "reclaimable:  {}: {} packs with nothing live ({}), {} packs partly live ({} "
      "dead in them)\n",
      B(u.reclaimable_bytes()), u.dead_packs, B(u.dead_pack_bytes), u.mixed_packs,
      B(u.mixed_dead_bytes));
  if (u.unindexed_packs)
    fmt::print("unindexed:    {} packs ({}) that no index file names\n", u.unindexed_packs,
               B(u.unindexed_pack_bytes));
  for (const auto& p : u.problems)
    fmt::print(stderr, "gnomon: warning: {}\n", EscapeForTerminal(p));
  if (!u.complete)
    fmt::print(stderr,
               "gnomon: warning: the figures are incomplete (what could not be read may name "
               "chunks counted as reclaimable)\n");
  return u.complete ? kOk : kDamaged;
}

}  // namespace gnomon::cli
