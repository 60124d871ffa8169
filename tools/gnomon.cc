// gnomon: the command-line front end. Parses arguments, runs an engine job,
// prints the result for people or (--json) for machines. No logic of its own.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>

#include "engine/backup_job.h"
#include "engine/restore_job.h"
#include "engine/verify_job.h"
#include "format/repository.h"
#include "tools/progress_display.h"

using nlohmann::json;
namespace cli = gnomon::cli;

namespace {

// Exit codes: documented in README.md, "Exit codes". Scripts depend on them.
enum Exit {
  kOk = 0,
  kFailed = 1,         // the command failed (I/O error, bad argument, ...)
  kUsage = 2,          // the command line itself is wrong
  kDamaged = 3,        // verify or restore found damaged data in the repository
  kNoRepo = 10,        // the repository does not exist or is not one
  kLocked = 11,        // another process holds the repository lock
  kUnsupported = 12,   // the repository's format is newer than this gnomon
  kInterrupted = 130,  // SIGINT/SIGTERM
};

gnomon::CancelFlag g_cancel{false};

void OnSignal(int) {
  g_cancel = true;
  // A second Ctrl-C kills at once; the repository is safe either way.
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
}

struct Globals {
  std::string repo;
  bool json = false;
  bool quiet = false;
  int threads = 0;
};

int ExitFor(const gnomon::Status& s) {
  using C = gnomon::Status::Code;
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
    default:
      return kFailed;
  }
}

int Fail(const Globals& g, const gnomon::Status& s, int code = -1) {
  if (code < 0) code = ExitFor(s);
  std::fprintf(stderr, "gnomon: error: %s\n", s.message().c_str());
  if (g.json) std::cout << json{{"error", s.message()}, {"exit_code", code}}.dump() << "\n";
  return code;
}

int OpenRepo(const Globals& g, gnomon::LockMode mode, const std::string& purpose,
             std::unique_ptr<gnomon::Repository>* out) {
  if (g.repo.empty())
    return Fail(
        g,
        gnomon::Status::InvalidArgument("no repository given: use --repo PATH or set GNOMON_REPO"),
        kUsage);
  gnomon::Status s = gnomon::Repository::Open(gnomon::Env::Default(), g.repo, mode, purpose, out);
  if (s.IsNotFound()) return Fail(g, s, kNoRepo);
  if (!s.ok()) return Fail(g, s);
  if (!(*out)->broken_stale_lock().empty() && !g.quiet)
    std::fprintf(stderr, "gnomon: removed a stale lock left by %s (that process is gone)\n",
                 (*out)->broken_stale_lock().c_str());
  return kOk;
}

json StatsJson(const gnomon::VolumeStats& s) {
  return json{{"bytes", s.bytes},
              {"bytes_read", s.bytes_read},
              {"chunks", s.chunks},
              {"zero_chunks", s.zero_chunks},
              {"dup_chunks", s.dup_chunks},
              {"new_chunks", s.new_chunks},
              {"new_raw_bytes", s.new_raw_bytes},
              {"new_stored_bytes", s.new_stored_bytes},
              {"seconds", s.seconds},
              {"mb_per_s", s.seconds > 0 ? static_cast<double>(s.bytes) / s.seconds / 1e6 : 0}};
}

json BackupJson(const gnomon::BackupRecord& r) {
  json vols = json::array();
  for (const auto& v : r.volumes)
    vols.push_back(
        {{"name", v.name}, {"source", v.source}, {"size", v.size}, {"stats", StatsJson(v.stats)}});
  return json{
      {"id", r.id},         {"time", r.time}, {"host", r.host},  {"type", r.type},
      {"parent", r.parent}, {"tags", r.tags}, {"volumes", vols}, {"totals", StatsJson(r.totals)}};
}

int CmdInit(const Globals& g, uint32_t chunk_kib, int level, uint32_t pack_mib) {
  if (g.repo.empty())
    return Fail(g,
                gnomon::Status::InvalidArgument("no repository given: use --repo PATH or set "
                                                "GNOMON_REPO"),
                kUsage);
  gnomon::RepoConfig c;
  if (chunk_kib) c.chunk_size = chunk_kib * 1024;
  if (level) c.compression_level = level;
  if (pack_mib) c.pack_size = uint64_t{pack_mib} << 20;
  gnomon::Status s = gnomon::Repository::Init(gnomon::Env::Default(), g.repo, c);
  if (!s.ok()) return Fail(g, s);
  std::unique_ptr<gnomon::Repository> repo;
  if (int rc = OpenRepo(g, gnomon::LockMode::kNone, "init", &repo)) return rc;
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
                cfg.id.substr(0, 8).c_str(), g.repo.c_str(),
                cli::HumanBytes(cfg.chunk_size).c_str(), cfg.compression_level);
  }
  return kOk;
}

int CmdBackup(const Globals& g, gnomon::BackupOptions opt) {
  std::unique_ptr<gnomon::Repository> repo;
  if (int rc = OpenRepo(g, gnomon::LockMode::kExclusive, "backup", &repo)) return rc;
  cli::ProgressDisplay progress(!g.json && !g.quiet);
  opt.threads = g.threads;
  opt.progress = progress.Callback();
  opt.cancel = &g_cancel;
  gnomon::BackupResult res;
  gnomon::Status s = gnomon::RunBackup(repo.get(), opt, &res);
  progress.Finish();
  if (!s.ok()) return Fail(g, s);
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
          v.name.c_str(), cli::HumanBytes(static_cast<double>(v.size)).c_str(),
          static_cast<unsigned long long>(st.chunks),
          static_cast<unsigned long long>(st.new_chunks),
          cli::HumanBytes(static_cast<double>(st.new_raw_bytes)).c_str(),
          cli::HumanBytes(static_cast<double>(st.new_stored_bytes)).c_str(),
          static_cast<unsigned long long>(st.dup_chunks),
          static_cast<unsigned long long>(st.zero_chunks));
    }
    std::printf("  %s in %.2f s = %s\n",
                cli::HumanBytes(static_cast<double>(r.totals.bytes)).c_str(), r.totals.seconds,
                cli::HumanRate(static_cast<double>(r.totals.bytes), r.totals.seconds).c_str());
  }
  return kOk;
}

int CmdList(const Globals& g) {
  std::unique_ptr<gnomon::Repository> repo;
  if (int rc = OpenRepo(g, gnomon::LockMode::kShared, "list", &repo)) return rc;
  std::vector<gnomon::BackupRecord> all;
  std::vector<gnomon::Status> errors;
  gnomon::Status s = repo->ListBackups(&all, &errors);
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
      std::string vols;
      for (const auto& v : r.volumes) vols += (vols.empty() ? "" : ",") + v.name;
      std::printf("%-16s  %-20s  %-12s  %-6s  %10s  %10s  %s\n", r.id.c_str(),
                  r.time.substr(0, 19).c_str(), r.host.substr(0, 12).c_str(), r.type.c_str(),
                  cli::HumanBytes(static_cast<double>(r.totals.bytes)).c_str(),
                  cli::HumanBytes(static_cast<double>(r.totals.new_stored_bytes)).c_str(),
                  vols.c_str());
    }
    std::printf("%zu backups\n", all.size());
  }
  return errors.empty() ? kOk : kDamaged;
}

int CmdRestore(const Globals& g, const std::string& what, gnomon::RestoreOptions opt) {
  auto colon = what.find(':');
  opt.backup = what.substr(0, colon);
  if (colon != std::string::npos) opt.volume = what.substr(colon + 1);
  if (opt.backup.empty())
    return Fail(g, gnomon::Status::InvalidArgument("no backup named (use an id or 'latest')"),
                kUsage);
  std::unique_ptr<gnomon::Repository> repo;
  if (int rc = OpenRepo(g, gnomon::LockMode::kShared, "restore", &repo)) return rc;
  cli::ProgressDisplay progress(!g.json && !g.quiet);
  opt.threads = g.threads;
  opt.progress = progress.Callback();
  opt.cancel = &g_cancel;
  gnomon::RestoreResult res;
  gnomon::Status s = gnomon::RunRestore(repo.get(), opt, &res);
  progress.Finish();
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
                cli::HumanBytes(static_cast<double>(res.bytes)).c_str(), res.seconds,
                cli::HumanRate(static_cast<double>(res.bytes), res.seconds).c_str());
  }
  return kOk;
}

int CmdVerify(const Globals& g, bool read_data) {
  std::unique_ptr<gnomon::Repository> repo;
  if (int rc = OpenRepo(g, gnomon::LockMode::kShared, "verify", &repo)) return rc;
  cli::ProgressDisplay progress(!g.json && !g.quiet);
  gnomon::VerifyOptions opt;
  opt.read_data = read_data;
  opt.threads = g.threads;
  opt.progress = progress.Callback();
  opt.cancel = &g_cancel;
  gnomon::VerifyResult res;
  gnomon::Status s = gnomon::RunVerify(repo.get(), opt, &res);
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
  }
  return res.ok() ? kOk : kDamaged;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "gnomon: block-level snapshot imaging for Linux.\n"
      "Backs up block devices and image files into a deduplicating, compressed\n"
      "repository, and restores them byte for byte."};
  app.set_version_flag("--version", std::string("gnomon ") + GNOMON_VERSION);
  app.require_subcommand(1);
  app.fallthrough();
  Globals g;
  if (const char* r = std::getenv("GNOMON_REPO")) g.repo = r;
  app.add_option("-r,--repo", g.repo, "Repository path (default: $GNOMON_REPO)");
  app.add_flag("--json", g.json, "Print machine-readable JSON on stdout");
  app.add_flag("-q,--quiet", g.quiet, "Print only what a script needs (e.g. the backup id)");
  app.add_option("--threads", g.threads, "Worker threads (default: all cores)")
      ->check(CLI::Range(1, 1024));

  uint32_t chunk_kib = 0;
  int level = 0;
  auto* init = app.add_subcommand("init", "Create a new repository");
  init->add_option("--chunk-size", chunk_kib,
                   "Chunk size in KiB, a power of two from 4 to 65536 (default 4096)");
  init->add_option("--compression", level, "zstd level 1..19 (default 3)");
  uint32_t pack_mib = 0;
  init->add_option("--pack-size", pack_mib, "Target pack file size in MiB (default 64)");

  gnomon::BackupOptions bopt;
  auto* backup = app.add_subcommand(
      "backup", "Back up block devices or image files; prints the new backup's id");
  backup->add_option("SOURCE", bopt.sources, "Block device or regular file to image")->required();
  backup->add_option("--type", bopt.type, "full (default) or copy (a full that is never a base)")
      ->check(CLI::IsMember({"full", "copy"}));
  backup->add_option("--tag", bopt.tags, "Tag to store with the backup (repeatable)");
  backup->add_option("--tokens", bopt.tokens, "Chunks in flight (memory bound; default 4/thread)")
      ->check(CLI::Range(1, 4096));

  auto* list = app.add_subcommand("list", "List the backups in the repository");

  std::string what;
  gnomon::RestoreOptions ropt;
  auto* restore =
      app.add_subcommand("restore", "Restore one volume of a backup to a file or block device");
  restore
      ->add_option("BACKUP[:VOLUME]", what,
                   "Backup id, unique id prefix or 'latest', and optionally the volume name "
                   "or position")
      ->required();
  restore->add_option("TARGET", ropt.target, "File to create, or block device to overwrite")
      ->required();
  restore->add_flag("--overwrite", ropt.overwrite, "Replace TARGET if it is an existing file");

  bool read_data = false;
  auto* verify = app.add_subcommand("verify", "Check the repository's structure and data");
  verify->add_flag("--read-data", read_data, "Also read, decompress and re-hash every chunk");

  app.footer(
      "Exit codes: 0 ok, 1 failed, 2 usage, 3 damaged data, 10 no repository, 11 locked,\n"
      "12 unsupported format, 130 interrupted. See README.md.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kOk : kUsage;
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);

  if (*init) return CmdInit(g, chunk_kib, level, pack_mib);
  if (*backup) return CmdBackup(g, bopt);
  if (*list) return CmdList(g);
  if (*restore) return CmdRestore(g, what, ropt);
  if (*verify) return CmdVerify(g, read_data);
  return kUsage;
}
