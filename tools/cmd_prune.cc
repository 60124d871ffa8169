// gnomon prune: garbage collection beside running backups
// (engine/prune_job.h, FORMAT.md §9a).
#include <fmt/core.h>

#include <iostream>

#include "base/system.h"
#include "engine/prune_job.h"
#include "tools/cli.h"
#include "tools/progress_display.h"

namespace gnomon::cli {

using nlohmann::json;

namespace {

json PruneJson(const PruneResult& r, bool dry_run) {
  return json{{"dry_run", dry_run},
              {"complete", r.complete()},
              {"deleted", r.deleted},
              {"deferred", r.deferred},
              {"backups", r.backups},
              {"packs", r.packs},
              {"stored_bytes", r.stored_bytes},
              {"live_bytes", r.live_bytes},
              {"plan",
               {{"delete_packs", r.plan_delete},
                {"delete_dead_bytes", r.plan_delete_bytes},
                {"repack_packs", r.plan_repack},
                {"repack_live_bytes", r.plan_repack_live_bytes},
                {"repack_dead_bytes", r.plan_repack_dead_bytes}}},
              {"packs_deleted", r.packs_deleted},
              {"packs_revived", r.packs_revived},
              {"packs_written", r.packs_written},
              {"chunks_repacked", r.chunks_repacked},
              {"bytes_deleted", r.bytes_deleted},
              {"bytes_written", r.bytes_written},
              {"index_files_replaced", r.index_files_replaced},
              {"quarantine_files_deleted", r.quarantine_files_deleted},
              {"check_files_deleted", r.check_files_deleted},
              {"cleaned", r.cleaned},
              {"problems", r.problems},
              {"warnings", r.warnings},
              {"seconds", r.seconds}};
}

void PrintPrune(const PruneResult& r, bool dry_run) {
  auto B = [](uint64_t b) { return HumanBytes(static_cast<double>(b)); };
  if (!r.complete()) return;  // no plan was made
  fmt::print("{} backups, {} packs: {} stored, {} live\n", r.backups, r.packs, B(r.stored_bytes),
             B(r.live_bytes));
  fmt::print(
      "{} {} packs with nothing live ({} dead), repack {} packs ({} live copied to free {})\n",
      dry_run ? "would delete" : "plan: delete", r.plan_delete, B(r.plan_delete_bytes),
      r.plan_repack, B(r.plan_repack_live_bytes), B(r.plan_repack_dead_bytes));
  if (!r.deleted) return;
  fmt::print(
      "deleted {} packs ({}), wrote {} packs ({}), replaced {} index files{}; freed {} in "
      "{:.1f} s\n",
      r.packs_deleted, B(r.bytes_deleted), r.packs_written, B(r.bytes_written),
      r.index_files_replaced,
      r.packs_revived
          ? fmt::format(", kept {} packs backups began to use meanwhile", r.packs_revived)
          : "",
      B(r.bytes_deleted > r.bytes_written ? r.bytes_deleted - r.bytes_written : 0), r.seconds);
}

}  // namespace

int CmdPrune(const Globals& g, const PruneCliOptions& opt) {
  std::unique_ptr<Repository> repo;
  if (int rc = OpenRepo(g, LockMode::kNone, "prune", &repo)) return rc;
  ProgressDisplay progress(!g.json && !g.quiet);
  PruneOptions po;
  po.max_unused = opt.max_unused_percent / 100.0;
  po.dry_run = opt.dry_run;
  po.max_wait_ms = static_cast<int64_t>(opt.wait_seconds * 1000);
  po.progress = progress.Callback();
  po.cancel = &g_cancel;
  PruneResult r;
  Status s = RunPrune(repo.get(), po, &r);
  progress.Finish();
  if (!s.ok() && !r.deferred) return Fail(g, s);
  if (g.json)
    std::cout << PruneJson(r, opt.dry_run).dump(-1, ' ', false, json::error_handler_t::replace)
              << "\n";
  else if (!g.quiet || !r.complete())
    PrintPrune(r, opt.dry_run);
  for (const auto& c : r.cleaned)
    if (!g.quiet) fmt::print(stderr, "gnomon: removed what an interrupted run left: {}\n", c);
  for (const auto& w : r.warnings)
    fmt::print(stderr, "gnomon: warning: {}\n", EscapeForTerminal(w));
  for (const auto& p : r.problems) fmt::print(stderr, "gnomon: error: {}\n", EscapeForTerminal(p));
  if (!r.complete()) {
    fmt::print(stderr,
               "gnomon: prune deleted nothing: it cannot tell what the files named above still "
               "need (run 'gnomon verify' for damage)\n");
    return kDamaged;
  }
  if (r.deferred) {
    const std::string why =
        "prune deleted nothing: " + s.message() + "; the next prune finishes the job" +
        (r.packs_written
             ? fmt::format(" (the {} packs it wrote hold copies until then)", r.packs_written)
             : "");
    if (!g.json) return Fail(g, Status::Locked(why));
    fmt::print(stderr, "gnomon: {}\n", EscapeForTerminal(why));  // the JSON above says deferred
    return kLocked;
  }
  return kOk;
}

}  // namespace gnomon::cli
