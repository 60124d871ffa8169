// The repository commands: init, backup, list, restore, verify, show.
#include <cstdio>
#include <iostream>

#include "base/system.h"
#include "engine/verify_job.h"
#include "engine/vss_summary.h"
#include "tools/cli.h"
#include "tools/progress_display.h"

namespace gnomon::cli {

using nlohmann::json;

int CmdInit(const Globals& g, uint32_t chunk_kib, int level, uint32_t pack_mib) {
  if (g.repo.empty())
    return Fail(g,
                Status::InvalidArgument("no repository given: use --repo PATH or set "
                                        "GNOMON_REPO"),
                kUsage);
  RepoConfig c;
  if (chunk_kib) c.chunk_size = chunk_kib * 1024;
  if (level) c.compression_level = level;
  if (pack_mib) c.pack_size = uint64_t{pack_mib} << 20;
  Status s = Repository::Init(Env::Default(), g.repo, c);
  if (!s.ok()) return Fail(g, s);
  std::unique_ptr<Repository> repo;
  if (int rc = OpenRepo(g, LockMode::kNone, "init", &repo)) return rc;
  const auto& cfg = repo->config();
  if (g.json) {
    std::cout << json{{"repository", g.repo},
                      {"id", cfg.id},
                      {"chunk_size", cfg.chunk_size},
                      {"compression", cfg.compression},
                      {"compression_level", cfg.compression_level}}
                     .dump()
              << "\n";
  } else if (!g.quiet) {
    std::printf("created gnomon repository %s at %s (chunk size %s, zstd level %d)\n",
                cfg.id.substr(0, 8).c_str(), g.repo.c_str(), HumanBytes(cfg.chunk_size).c_str(),
                cfg.compression_level);
  }
  return kOk;
}

int CmdBackup(const Globals& g, BackupOptions opt) {
  std::unique_ptr<Repository> repo;
  if (int rc = OpenRepo(g, LockMode::kExclusive, "backup", &repo)) return rc;
  ProgressDisplay progress(!g.json && !g.quiet);
  opt.threads = g.threads;
  opt.progress = progress.Callback();
  opt.cancel = &g_cancel;
  BackupResult res;
  Status s = RunBackup(repo.get(), opt, &res);
  progress.Finish();
  if (!s.ok()) return Fail(g, s);
  for (const auto& w : res.warnings) std::fprintf(stderr, "gnomon: warning: %s\n", w.c_str());
  const auto& r = res.record;
  if (g.json) {
    std::cout << BackupJson(r).dump() << "\n";
  } else if (g.quiet) {
    std::printf("%s\n", r.id.c_str());
  } else {
    std::printf("backup %s saved (%s)\n", r.id.c_str(), r.type.c_str());
    for (const auto& v : r.volumes) {
      const auto& st = v.stats;
      std::printf(
          "  %-12s %s: %llu chunks, %llu new (%s -> %s stored), %llu duplicate, %llu zero\n",
          v.name.c_str(), HumanBytes(static_cast<double>(v.size)).c_str(),
          static_cast<unsigned long long>(st.chunks),
          static_cast<unsigned long long>(st.new_chunks),
          HumanBytes(static_cast<double>(st.new_raw_bytes)).c_str(),
          HumanBytes(static_cast<double>(st.new_stored_bytes)).c_str(),
          static_cast<unsigned long long>(st.dup_chunks),
          static_cast<unsigned long long>(st.zero_chunks));
      if (v.block_map == "ext4")
        std::printf("  %-12s used blocks only (ext4 bitmaps): %s free, not read\n", "",
                    HumanBytes(static_cast<double>(st.unused_bytes)).c_str());
      else if (!v.block_map_reason.empty())
        std::printf("  %-12s every block imaged: %s\n", "", v.block_map_reason.c_str());
      if (!v.parent.empty()) {
        if (v.tracking != kTrackingFullRead)
          std::printf(
              "  %-12s based on %s: change tracking (%s) found %llu changed chunks "
              "(%llu stored as patches); %llu unchanged were not read\n",
              "", v.parent.c_str(), EscapeForTerminal(v.tracking).c_str(),
              static_cast<unsigned long long>(st.changed_chunks),
              static_cast<unsigned long long>(st.patched_chunks),
              static_cast<unsigned long long>(st.unchanged_chunks));
        else
          std::printf("  %-12s based on %s: full read, %llu chunks differ from it (%s)\n", "",
                      v.parent.c_str(), static_cast<unsigned long long>(st.changed_chunks),
                      v.tracking_reason.c_str());
      } else if (r.type == "incremental" || r.type == "differential") {
        std::printf("  %-12s full read: %s\n", "", v.tracking_reason.c_str());
      }
    }
    std::printf("  %s in %.2f s = %s\n", HumanBytes(static_cast<double>(r.totals.bytes)).c_str(),
                r.totals.seconds,
                HumanRate(static_cast<double>(r.totals.bytes), r.totals.seconds).c_str());
  }
  return kOk;
}

int CmdList(const Globals& g) {
  std::unique_ptr<Repository> repo;
  if (int rc = OpenRepo(g, LockMode::kShared, "list", &repo)) return rc;
  std::vector<BackupRecord> all;
  std::vector<Status> errors;
  Status s = repo->ListBackups(&all, &errors);
  if (!s.ok()) return Fail(g, s);
  for (const auto& e : errors) std::fprintf(stderr, "gnomon: warning: %s\n", e.message().c_str());
  if (g.json) {
    json arr = json::array();
    for (const auto& r : all) arr.push_back(BackupJson(r));
    std::cout << arr.dump() << "\n";
  } else {
    std::printf("%-16s  %-20s  %-12s  %-6s  %10s  %10s  %s\n", "ID", "TIME", "HOST", "TYPE", "SIZE",
                "ADDED", "VOLUMES");
    for (const auto& r : all) {
      // Names come from files: escaped, so they cannot drive the terminal.
      std::string vols;
      for (const auto& v : r.volumes) vols += (vols.empty() ? "" : ",") + v.name;
      std::printf("%-16s  %-20s  %-12s  %-6s  %10s  %10s  %s\n", r.id.c_str(),
                  EscapeForTerminal(r.time.substr(0, 19)).c_str(),
                  EscapeForTerminal(r.host.substr(0, 12)).c_str(),
                  EscapeForTerminal(r.type).c_str(),
                  HumanBytes(static_cast<double>(r.totals.bytes)).c_str(),
                  HumanBytes(static_cast<double>(r.totals.new_stored_bytes)).c_str(),
                  EscapeForTerminal(vols).c_str());
    }
    std::printf("%zu backups\n", all.size());
  }
  return errors.empty() ? kOk : kDamaged;
}

int CmdRestore(const Globals& g, const std::string& what, RestoreOptions opt) {
  auto colon = what.find(':');
  opt.backup = what.substr(0, colon);
  if (colon != std::string::npos) opt.volume = what.substr(colon + 1);
  if (opt.backup.empty())
    return Fail(g, Status::InvalidArgument("no backup named (use an id or 'latest')"), kUsage);
  std::unique_ptr<Repository> repo;
  if (int rc = OpenRepo(g, LockMode::kShared, "restore", &repo)) return rc;
  ProgressDisplay progress(!g.json && !g.quiet);
  opt.threads = g.threads;
  opt.progress = progress.Callback();
  opt.cancel = &g_cancel;
  RestoreResult res;
  Status s = RunRestore(repo.get(), opt, &res);
  progress.Finish();
  if (!g.quiet)
    for (const auto& c : res.cleaned) std::fprintf(stderr, "gnomon: %s\n", c.c_str());
  if (!s.ok()) return Fail(g, s);
  if (g.json) {
    std::cout << json{{"backup", res.backup_id},
                      {"volume", res.volume},
                      {"target", opt.target},
                      {"bytes", res.bytes},
                      {"bytes_written", res.bytes_written},
                      {"seconds", res.seconds},
                      {"mb_per_s", res.seconds > 0 ? res.bytes / res.seconds / 1e6 : 0}}
                     .dump()
              << "\n";
  } else if (!g.quiet) {
    std::printf("restored %s:%s to %s: %s in %.2f s = %s\n", res.backup_id.c_str(),
                res.volume.c_str(), opt.target.c_str(),
                HumanBytes(static_cast<double>(res.bytes)).c_str(), res.seconds,
                HumanRate(static_cast<double>(res.bytes), res.seconds).c_str());
  }
  return kOk;
}

int CmdVerify(const Globals& g, bool read_data) {
  std::unique_ptr<Repository> repo;
  if (int rc = OpenRepo(g, LockMode::kShared, "verify", &repo)) return rc;
  ProgressDisplay progress(!g.json && !g.quiet);
  VerifyOptions opt;
  opt.read_data = read_data;
  opt.threads = g.threads;
  opt.progress = progress.Callback();
  opt.cancel = &g_cancel;
  VerifyResult res;
  Status s = RunVerify(repo.get(), opt, &res);
  progress.Finish();
  if (!s.ok()) return Fail(g, s);
  if (g.json) {
    std::cout << json{{"ok", res.ok()},
                      {"errors", res.errors},
                      {"warnings", res.warnings},
                      {"backups", res.backups},
                      {"volumes", res.volumes},
                      {"index_files", res.index_files},
                      {"packs", res.packs},
                      {"chunks", res.chunks},
                      {"quarantined", res.quarantined},
                      {"damaged_backups", res.damaged_backups},
                      {"repaired_backups", res.repaired_backups},
                      {"read_data", read_data},
                      {"chunks_read", res.chunks_read},
                      {"bytes_read", res.bytes_read}}
                     .dump()
              << "\n";
  } else {
    for (const auto& w : res.warnings) std::printf("warning: %s\n", w.c_str());
    for (const auto& e : res.errors) std::printf("error: %s\n", e.c_str());
    if (!g.quiet || !res.ok())
      std::printf(
          "%s: %zu backups, %zu volumes, %zu index files, %zu packs, %zu chunks%s; %zu "
          "errors\n",
          res.ok() ? "repository is healthy" : "repository is DAMAGED", res.backups, res.volumes,
          res.index_files, res.packs, res.chunks,
          read_data ? " (all chunk data read and checked)" : "", res.errors.size());
    if (res.quarantined)
      std::printf(
          "quarantined %zu damaged chunk copies: the next backup that meets their data stores "
          "it again\n",
          res.quarantined);
  }
  return res.ok() ? kOk : kDamaged;
}

}  // namespace gnomon::cli

namespace gnomon::cli {

int CmdShow(const Globals& g, const std::string& spec) {
  std::unique_ptr<Repository> repo;
  if (int rc = OpenRepo(g, LockMode::kShared, "show", &repo)) return rc;
  BackupRecord r;
  Status s = repo->FindBackup(spec, &r);
  if (!s.ok()) return Fail(g, s);
  VssSummary v;
  s = SummarizeVss(r.extra, &v);
  if (!s.ok()) return Fail(g, s.WithContext("backup " + r.id));
  if (g.json) {
    json j = BackupJson(r);
    j["vss"] = r.extra.contains("vss") ? r.extra["vss"] : json();
    std::cout << j.dump() << "\n";
    return kOk;
  }
  auto E = [](const std::string& t) { return EscapeForTerminal(t); };
  std::printf("backup %s\n  time:  %s\n  host:  %s\n  type:  %s\n", r.id.c_str(), E(r.time).c_str(),
              E(r.host).c_str(), E(r.type).c_str());
  for (const auto& vol : r.volumes) {
    std::printf("  volume %s: %s, %s, %llu chunks (%llu new, %llu duplicate, %llu zero)\n",
                E(vol.name).c_str(), E(vol.source).c_str(),
                HumanBytes(static_cast<double>(vol.size)).c_str(),
                static_cast<unsigned long long>(vol.stats.chunks),
                static_cast<unsigned long long>(vol.stats.new_chunks),
                static_cast<unsigned long long>(vol.stats.dup_chunks),
                static_cast<unsigned long long>(vol.stats.zero_chunks));
    if (!vol.parent.empty())
      std::printf("    built on %s: %s%s\n", vol.parent.c_str(),
                  vol.tracking != kTrackingFullRead
                      ? ("change tracking, " + std::to_string(vol.stats.unchanged_chunks) +
                         " chunks unchanged and not read, " +
                         std::to_string(vol.stats.patched_chunks) + " stored as patches")
                            .c_str()
                      : "full read compared with the parent",
                  vol.tracking_reason.empty() ? "" : (" (" + E(vol.tracking_reason) + ")").c_str());
  }
  if (!v.present) {
    std::printf("  (no VSS documents in this backup)\n");
    return kOk;
  }
  std::printf("\nsnapshot set {%s}%s\n", E(v.snapshot_set_id).c_str(),
              v.snapshot_skipped ? " (DoSnapshotSet skipped: no file set needed a snapshot)" : "");
  if (!v.snapshot_skipped)
    std::printf("  writers frozen for %.1f ms (Freeze to Thaw)\n", v.frozen_ms);
  for (const auto& src : v.sources)
    std::printf("  %s: provider %s, read from %s\n", E(src.volume).c_str(), E(src.provider).c_str(),
                E(src.device).c_str());
  std::printf("\nBackup Components Document (%s): type %s, component mode %s\n",
              E(v.schema).c_str(), E(v.backup_type).c_str(), v.select_components ? "yes" : "no");
  for (const auto& c : v.components) {
    std::printf("  [%s] %s%s%s\n", E(c.writer_name).c_str(), E(c.logical_path).c_str(),
                c.logical_path.empty() ? "" : "\\", E(c.name).c_str());
    if (!c.backup_stamp.empty()) std::printf("      backup stamp: %s\n", E(c.backup_stamp).c_str());
    if (!c.previous_backup_stamp.empty())
      std::printf("      previous stamp: %s\n", E(c.previous_backup_stamp).c_str());
    if (!c.backup_metadata.empty())
      std::printf("      backup metadata: %s\n", E(c.backup_metadata).c_str());
  }
  std::printf("\nWriters (%zu Writer Metadata Documents):\n", v.writers.size());
  for (const auto& w : v.writers)
    std::printf("  '%s' {%s}, %zu components\n", E(w.name).c_str(), E(w.class_id).c_str(),
                w.components);
  std::printf("\nWriter status at the end of the snapshot:\n");
  for (const auto& st : v.writer_status)
    std::printf("  '%s': %s%s\n", E(st.name).c_str(), E(st.state_name).c_str(),
                st.failure ? (", " + E(st.failure_name) + ": " + E(st.message)).c_str() : "");
  return kOk;
}

}  // namespace gnomon::cli

namespace gnomon::cli {

int CmdForget(const Globals& g, const std::vector<std::string>& ids, bool force) {
  std::unique_ptr<Repository> repo;
  if (int rc = OpenRepo(g, LockMode::kExclusive, "forget", &repo)) return rc;
  json done = json::array();
  for (const auto& id : ids) {
    BackupRecord r;
    Status s = repo->FindBackup(id, &r);
    if (s.ok()) {
      s = repo->ForgetBackup(r);
    } else if (force && s.IsCorruption()) {
      // A record that cannot be read: removed only by its full id, after
      // saying what it was.
      std::string what;
      s = repo->ForgetUnreadable(id, &what);
      if (s.ok() && !g.json)
        std::fprintf(stderr, "gnomon: removing unreadable record %s\n",
                     EscapeForTerminal(what).c_str());
      r.id = id;
    }
    if (!s.ok()) {
      if (s.IsCorruption() && !force)
        s = s.WithContext("the record cannot be read (use 'forget --force " + id +
                          "' to remove it)");
      return Fail(g, s);
    }
    done.push_back(r.id);
    if (!g.json && !g.quiet) std::printf("removed backup %s\n", r.id.c_str());
  }
  if (g.json) std::cout << json{{"removed", done}}.dump() << "\n";
  return kOk;
}

}  // namespace gnomon::cli
