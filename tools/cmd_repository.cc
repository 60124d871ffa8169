// The repository commands: init, backup, list, restore, verify, show.
#include <fmt/core.h>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "base/clock.h"
#include "base/random.h"
#include "base/system.h"
#include "engine/disk_probe.h"
#include "engine/disk_restore.h"
#include "engine/verify_job.h"
#include "engine/vss_summary.h"
#include "engine/writers_admin.h"
#include "tools/cli.h"
#include "tools/progress_display.h"

namespace gnomon::cli {

using nlohmann::json;

int CmdInit(const Globals& g, uint32_t chunk_kib, int level, uint32_t pack_mib,
            const std::string& encryption) {
  if (g.repo.empty())
    return Fail(g,
                Status::InvalidArgument("no repository given: use --repo PATH or set "
                                        "GNOMON_REPO"),
                kUsage);
  RepoConfig c;
  if (chunk_kib) c.chunk_size = chunk_kib * 1024;
  if (level) c.compression_level = level;
  if (pack_mib) c.pack_size = uint64_t{pack_mib} << 20;
  // Unsaid, a repository is encrypted when the user gave a key for it.
  const bool encrypt = encryption.empty() ? KeyGiven(g) : encryption != "none";
  std::vector<KeySlot> slots;
  // Checked before a key file is made or a passphrase asked for.
  std::unique_ptr<Backend> backend;
  if (Status s = OpenBackend(Env::Default(), g.repo, &backend); !s.ok()) return Fail(g, s, kUsage);
  if (Status s = Repository::CheckInit(backend.get()); !s.ok()) return Fail(g, s);
  if (encrypt) {
    c.SetEncrypted();
    c.id = RandomHexId(16);  // the key slots are bound to it
    std::shared_ptr<const MasterKey> key;
    if (Status s = MakeFirstSlots(g, c.id, &key, &slots); !s.ok()) return Fail(g, s);
  }
  Status s = Repository::Init(backend.get(), c, slots);
  if (!s.ok()) return Fail(g, s);
  std::unique_ptr<Repository> repo;
  if (int rc = OpenRepo(g, LockMode::kNone, "init", &repo, false)) return rc;
  const auto& cfg = repo->config();
  if (g.json) {
    std::cout << json{{"repository", g.repo},
                      {"id", cfg.id},
                      {"chunk_size", cfg.chunk_size},
                      {"compression", cfg.compression},
                      {"compression_level", cfg.compression_level},
                      {"encryption", cfg.encryption},
                      {"key_slots", slots.size()}}
                     .dump()
              << "\n";
  } else if (!g.quiet) {
    fmt::print("created gnomon repository {} at {} (chunk size {}, zstd level {}, {})\n",
               cfg.id.substr(0, 8), g.repo, HumanBytes(cfg.chunk_size), cfg.compression_level,
               encrypt ? "encrypted with AES-256-GCM; without the " +
                             std::string(slots[0].kind == "password" ? "passphrase" : "key file") +
                             " nothing in it can be read"
                       : "not encrypted");
  }
  return kOk;
}

int CmdBackup(const Globals& g, BackupOptions opt) {
  if (opt.snapshot.for_differentials && opt.type != "full")
    return Fail(g, Status::InvalidArgument("--for-differentials is for a full backup only"),
                kUsage);
  std::unique_ptr<Repository> repo;
  if (int rc = OpenRepo(g, LockMode::kAppend, "backup", &repo)) return rc;
  ProgressDisplay progress(!g.json && !g.quiet);
  opt.threads = g.threads;
  opt.progress = progress.Callback();
  opt.cancel = &g_cancel;
  BackupResult res;
  Status s = RunBackup(repo.get(), opt, &res);
  progress.Finish();
  if (!s.ok()) return Fail(g, s, res.bad_selection ? kUsage : -1);
  for (const auto& w : res.warnings)
    fmt::print(stderr, "gnomon: warning: {}\n", EscapeForTerminal(w));
  const auto& r = res.record;
  if (g.json) {
    std::cout << BackupJson(r).dump() << "\n";
  } else if (g.quiet) {
    fmt::print("{}\n", r.id);
  } else {
    fmt::print("backup {} saved ({})\n", r.id, r.type);
    for (const auto& v : r.volumes) {
      const auto& st = v.stats;
      fmt::print("  {:<12} {}: {} chunks, {} new ({} -> {} stored), {} duplicate, {} zero\n",
                 EscapeForTerminal(v.name), HumanBytes(static_cast<double>(v.size)), st.chunks,
                 st.new_chunks, HumanBytes(static_cast<double>(st.new_raw_bytes)),
                 HumanBytes(static_cast<double>(st.new_stored_bytes)), st.dup_chunks,
                 st.zero_chunks);
      if (!st.levels.empty()) {
        std::string levels;
        for (const auto& [level, n] : st.levels)
          levels += fmt::format("{}{} {}", levels.empty() ? "" : ", ", n,
                                level ? "at zstd level " + std::to_string(level) : "uncompressed");
        fmt::print("  {:<12} new chunks stored: {}\n", "", levels);
      }
      if (v.block_map == "ext4")
        fmt::print("  {:<12} used blocks only (ext4 bitmaps): {} free, not read\n", "",
                   HumanBytes(static_cast<double>(st.unused_bytes)));
      else if (!v.block_map_reason.empty())
        fmt::print("  {:<12} every block imaged: {}\n", "", EscapeForTerminal(v.block_map_reason));
      if (!v.parent.empty()) {
        if (v.tracking != kTrackingFullRead)
          fmt::print(
              "  {:<12} based on {}: change tracking ({}) found {} changed chunks "
              "({} stored as patches); {} unchanged were not read\n",
              "", v.parent, EscapeForTerminal(v.tracking), st.changed_chunks, st.patched_chunks,
              st.unchanged_chunks);
        else
          fmt::print("  {:<12} based on {}: full read, {} chunks differ from it ({})\n", "",
                     v.parent, st.changed_chunks, EscapeForTerminal(v.tracking_reason));
      } else if (r.type == "incremental" || r.type == "differential") {
        fmt::print("  {:<12} full read: {}\n", "", EscapeForTerminal(v.tracking_reason));
      }
    }
    fmt::print("  {} in {:.2f} s = {}\n", HumanBytes(static_cast<double>(r.totals.bytes)),
               r.totals.seconds, HumanRate(static_cast<double>(r.totals.bytes), r.totals.seconds));
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
  for (const auto& e : errors)
    fmt::print(stderr, "gnomon: warning: {}\n", EscapeForTerminal(e.message()));
  if (g.json) {
    json arr = json::array();
    for (const auto& r : all) arr.push_back(BackupJson(r));
    std::cout << arr.dump() << "\n";
  } else {
    fmt::print("{:<16}  {:<20}  {:<12}  {:<6}  {:>10}  {:>10}  {}\n", "ID", "TIME", "HOST", "TYPE",
               "SIZE", "ADDED", "VOLUMES");
    for (const auto& r : all) {
      // Names come from files: escaped, so they cannot drive the terminal.
      std::string vols;
      for (const auto& v : r.volumes) vols += (vols.empty() ? "" : ",") + v.name;
      fmt::print("{:<16}  {:<20}  {:<12}  {:<6}  {:>10}  {:>10}  {}\n", r.id,
                 EscapeForTerminal(r.time.substr(0, 19)), EscapeForTerminal(r.host.substr(0, 12)),
                 EscapeForTerminal(r.type), HumanBytes(static_cast<double>(r.totals.bytes)),
                 HumanBytes(static_cast<double>(r.totals.new_stored_bytes)),
                 EscapeForTerminal(vols));
    }
    fmt::print("{} backups\n", all.size());
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
    for (const auto& c : res.cleaned) fmt::print(stderr, "gnomon: {}\n", EscapeForTerminal(c));
  for (const auto& w : res.warnings)
    fmt::print(stderr, "gnomon: warning: {}\n", EscapeForTerminal(w));
  // A target that cannot take the restore (too small, in use, holding the
  // repository, an existing file without --overwrite) is a usage error:
  // nothing was written.
  if (!s.ok()) return Fail(g, s, s.code() == Status::Code::kInvalidArgument ? kUsage : -1);
  if (opt.plan) {
    if (g.json) {
      std::cout << res.plan.dump() << "\n";
    } else {
      std::istringstream lines(DescribeDiskPlan(res.plan));
      for (std::string line; std::getline(lines, line);)
        fmt::print("{}\n", EscapeForTerminal(line));
    }
    return kOk;
  }
  if (g.json) {
    std::cout << json{{"backup", res.backup_id},
                      {"volume", res.volume},
                      {"target", opt.target},
                      {"bytes", res.bytes},
                      {"bytes_written", res.bytes_written},
                      {"seconds", res.seconds},
                      {"mb_per_s", res.seconds > 0 ? res.bytes / res.seconds / 1e6 : 0},
                      {"disk", res.plan}}
                     .dump()
              << "\n";
  } else if (!g.quiet) {
    fmt::print("restored {}:{} to {}: {} in {:.2f} s = {}\n", res.backup_id,
               EscapeForTerminal(res.volume), opt.target,
               HumanBytes(static_cast<double>(res.bytes)), res.seconds,
               HumanRate(static_cast<double>(res.bytes), res.seconds));
    // What a disk restore changed that boot files may name.
    if (res.plan.is_object() && res.plan.contains("new_ids")) {
      std::istringstream lines(DescribeDiskPlan(res.plan));
      bool ids = false;
      for (std::string line; std::getline(lines, line);)
        if (ids || (ids = line.find("new ids") != std::string::npos))
          fmt::print("{}\n", EscapeForTerminal(line));
    }
  }
  return kOk;
}

namespace {

// What a storage host can check of an encrypted repository without its
// key: every object whole against its XXH3-128 trailer (FORMAT.md §14.4).
int VerifyWithoutKey(const Globals& g, Repository* repo) {
  std::vector<Status> damaged;
  uint64_t objects = 0, bytes = 0;
  Status s = repo->ScrubWithoutKey(&damaged, &objects, &bytes, &g_cancel);
  if (!s.ok()) return Fail(g, s);
  std::vector<std::string> errors;
  for (const auto& d : damaged) errors.push_back(d.message());
  if (g.json) {
    std::cout << json{{"ok", errors.empty()},
                      {"without_key", true},
                      {"objects", objects},
                      {"bytes_read", bytes},
                      {"errors", errors}}
                     .dump()
              << "\n";
  } else {
    for (const auto& e : errors) fmt::print("damaged: {}\n", EscapeForTerminal(e));
    fmt::print("{}: {} objects, {} read without the key; {} damaged\n",
               errors.empty() ? "ok" : "DAMAGED", objects, HumanBytes(static_cast<double>(bytes)),
               errors.size());
  }
  return errors.empty() ? kOk : kDamaged;
}

}  // namespace

int CmdVerify(const Globals& g, bool read_data, const VerifySubset& subset, bool without_key) {
  std::unique_ptr<Repository> repo;
  if (int rc = OpenRepo(g, LockMode::kShared, "verify", &repo, !without_key)) return rc;
  repo->backend()->BypassCache();  // what is stored is checked, not a local copy
  if (without_key && repo->encrypted()) return VerifyWithoutKey(g, repo.get());
  // A plain repository needs no key to be read whole.
  if (without_key) read_data = true;
  ProgressDisplay progress(!g.json && !g.quiet);
  VerifyOptions opt;
  opt.read_data = read_data;
  opt.subset = subset;
  opt.threads = g.threads;
  opt.progress = progress.Callback();
  opt.cancel = &g_cancel;
  VerifyResult res;
  Status s = RunVerify(repo.get(), opt, &res);
  progress.Finish();
  if (!s.ok()) return Fail(g, s);
  const bool reading = !res.subset.empty();
  // Seconds are enough for a person; JSON keeps the microseconds.
  const std::string oldest =
      res.oldest_check ? Rfc3339FromMicros(static_cast<int64_t>(res.oldest_check)) : "";
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
                      {"read_data", reading},
                      {"subset", reading ? json(res.subset) : json()},
                      {"claimed_packs", res.claimed_packs},
                      {"packs_read", res.packs_read},
                      {"never_checked", res.never_checked},
                      {"oldest_check", oldest.empty() ? json() : json(oldest)},
                      {"chunks_read", res.chunks_read},
                      {"bytes_read", res.bytes_read}}
                     .dump()
              << "\n";
  } else {
    for (const auto& w : res.warnings) fmt::print("warning: {}\n", EscapeForTerminal(w));
    for (const auto& e : res.errors) fmt::print("error: {}\n", EscapeForTerminal(e));
    const bool all_read = reading && res.packs_read == res.claimed_packs;
    if (!g.quiet || !res.ok())
      fmt::print(
          "{}: {} backups, {} volumes, {} index files, {} packs, {} chunks{}; {} "
          "errors\n",
          res.ok() ? "repository is healthy" : "repository is DAMAGED", res.backups, res.volumes,
          res.index_files, res.packs, res.chunks,
          all_read ? " (all chunk data read and checked)" : "", res.errors.size());
    if (!g.quiet) {
      std::string coverage = res.never_checked == 0
                                 ? std::string("every pack has been checked")
                                 : fmt::format("{} packs never checked", res.never_checked);
      if (!oldest.empty()) coverage += "; oldest check " + oldest.substr(0, 19) + "Z";
      if (reading)
        fmt::print("read {} of {} packs ({}); {}\n", res.packs_read, res.claimed_packs,
                   res.subset_description, coverage);
      else
        fmt::print("no chunk data read (--read-data, --read-data-subset); {}\n", coverage);
    }
    if (res.quarantined)
      fmt::print(
          "quarantined {} damaged chunk copies: the next backup that meets their data stores "
          "it again\n",
          res.quarantined);
  }
  return res.ok() ? kOk : kDamaged;
}

}  // namespace gnomon::cli

namespace gnomon::cli {

// The disk a disk backup holds, as a table: where each partition lies, what
// it is and how it was imaged.
static void PrintDiskLayout(const BackupRecord& r) {
  auto E = [](const std::string& t) { return EscapeForTerminal(t); };
  const DiskLayout& d = r.disk;
  fmt::print("  disk:  {} partition table, {}, {}-byte sectors, id {}\n",
             d.label == "gpt" ? "GPT" : "MBR (DOS)", HumanBytes(static_cast<double>(d.size)),
             d.sector_size, E(d.disk_id));
  fmt::print("    {:<4} {:>10} {:>10}  {:<22} {:<6} {:<12} {:<36} {:>10}  {}\n", "PART", "START",
             "SIZE", "TYPE", "FS", "LABEL", "UUID", "USED", "IMAGED");
  for (const auto& p : d.partitions) {
    std::string type = PartitionTypeName(d.label, p.type);
    if (type.empty()) type = p.type;
    if (p.kind != "primary") type += " (" + p.kind + ")";
    std::string used = "-", how = p.kind == "extended" ? "its EBRs: in disk-gaps" : "";
    if (p.volume >= 0) {
      const VolumeRecord& v = r.volumes[static_cast<size_t>(p.volume)];
      used = HumanBytes(static_cast<double>(v.stats.bytes - v.stats.unused_bytes));
      how = v.block_map == "ext4"
                ? "used blocks (ext4) as " + v.name
                : "whole as " + v.name +
                      (v.block_map_reason.empty() ? "" : ": " + v.block_map_reason);
    }
    fmt::print("    {:<4} {:>10} {:>10}  {:<22} {:<6} {:<12} {:<36} {:>10}  {}\n", p.number,
               HumanBytes(static_cast<double>(p.start)), HumanBytes(static_cast<double>(p.size)),
               E(type.substr(0, 22)), E(p.fs_type.substr(0, 6)), E(p.fs_label.substr(0, 12)),
               E(p.fs_uuid.substr(0, 36)), used, E(how));
  }
  if (d.gaps_volume >= 0)
    fmt::print("    boot code, partition table and every byte outside the partitions: volume {}\n",
               E(r.volumes[static_cast<size_t>(d.gaps_volume)].name));
}

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
  fmt::print("backup {}\n  time:  {}\n  host:  {}\n  type:  {}\n", r.id, E(r.time), E(r.host),
             E(r.type));
  if (r.disk.present()) PrintDiskLayout(r);
  for (const auto& vol : r.volumes) {
    fmt::print("  volume {}: {}, {}, {} chunks ({} new, {} duplicate, {} zero)\n", E(vol.name),
               E(vol.source), HumanBytes(static_cast<double>(vol.size)), vol.stats.chunks,
               vol.stats.new_chunks, vol.stats.dup_chunks, vol.stats.zero_chunks);
    if (!vol.parent.empty())
      fmt::print("    built on {}: {}{}\n", vol.parent,
                 vol.tracking != kTrackingFullRead
                     ? "change tracking, " + std::to_string(vol.stats.unchanged_chunks) +
                           " chunks unchanged and not read, " +
                           std::to_string(vol.stats.patched_chunks) + " stored as patches"
                     : std::string("full read compared with the parent"),
                 vol.tracking_reason.empty() ? std::string() : " (" + E(vol.tracking_reason) + ")");
  }
  if (!v.present) {
    fmt::print("  (no VSS documents in this backup)\n");
    return kOk;
  }
  fmt::print("\nsnapshot set {{{}}}{}\n", E(v.snapshot_set_id),
             v.snapshot_skipped ? " (DoSnapshotSet skipped: no file set needed a snapshot)" : "");
  if (!v.snapshot_skipped)
    fmt::print("  writers frozen for {:.1f} ms (Freeze to Thaw)\n", v.frozen_ms);
  for (const auto& src : v.sources)
    fmt::print("  {}: provider {}, read from {}\n", E(src.volume), E(src.provider), E(src.device));
  fmt::print("\nBackup Components Document ({}): type {}, component mode {}\n", E(v.schema),
             E(v.backup_type), v.select_components ? "yes" : "no");
  for (const auto& c : v.components) {
    fmt::print("  [{}] {}{}{}\n", E(c.writer_name), E(c.logical_path),
               c.logical_path.empty() ? "" : "\\", E(c.name));
    if (!c.backup_options.empty())  // KEY=VALUE lines (vss/backup_options.h)
      fmt::print("      backup options: {}\n", E(c.backup_options));
    if (!c.backup_stamp.empty()) fmt::print("      backup stamp: {}\n", E(c.backup_stamp));
    if (!c.previous_backup_stamp.empty())
      fmt::print("      previous stamp: {}\n", E(c.previous_backup_stamp));
    if (!c.backup_metadata.empty()) fmt::print("      backup metadata: {}\n", E(c.backup_metadata));
  }
  for (const auto& c : v.implicit_components)
    fmt::print("  [{}] {}{}{} (implicit, in the component set of {})\n", E(c.writer_name),
               E(c.logical_path), c.logical_path.empty() ? "" : "\\", E(c.name),
               E(c.included_with));
  fmt::print("\nWriters ({} Writer Metadata Documents):\n", v.writers.size());
  for (const auto& w : v.writers)
    fmt::print("  '{}' {{{}}}, {} components\n", E(w.name), E(w.class_id), w.components);
  fmt::print("\nWriter status at the end of the snapshot:\n");
  for (const auto& st : v.writer_status)
    fmt::print("  '{}': {}{}\n", E(st.name), E(st.state_name),
               st.failure ? ", " + E(st.failure_name) + ": " + E(st.message) : std::string());
  return kOk;
}

}  // namespace gnomon::cli

namespace gnomon::cli {}  // namespace gnomon::cli
