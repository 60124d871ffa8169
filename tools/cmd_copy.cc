// gnomon copy --from REPO1 --to REPO2 [BACKUP...] (engine/copy_job.h).
#include <fmt/core.h>

#include <iostream>

#include "engine/copy_job.h"
#include "tools/cli.h"
#include "tools/progress_display.h"

namespace gnomon::cli {

using nlohmann::json;

namespace {

// One side of the copy: its own location and key, with environment names
// of its own (GNOMON_FROM_PASSWORD, GNOMON_TO_KEY_FILE, ...), so a key
// meant for one repository is never tried on the other.
Globals Side(const Globals& g, const std::string& repo, const CopyCliOptions::Key& key,
             const std::string& which) {
  Globals s = g;
  s.repo = repo;
  s.password_file = key.password_file;
  s.key_file = key.key_file;
  const std::string up = which == "from" ? "FROM" : "TO";
  s.key_env = {"GNOMON_" + up + "_PASSWORD", "GNOMON_" + up + "_PASSWORD_FILE",
               "GNOMON_" + up + "_KEY_FILE", "--" + which + "-password-file"};
  return s;
}

void PrintResult(const Globals& g, const std::string& from, const std::string& to,
                 const CopyResult& r) {
  if (g.json) {
    std::cout << json{{"from", from},
                      {"to", to},
                      {"copied", r.copied},
                      {"already_there", r.already_there},
                      {"volume_bytes", r.volume_bytes},
                      {"chunks_sent", r.chunks_sent},
                      {"chunks_present", r.chunks_present},
                      {"bytes_sent", r.bytes_sent},
                      {"seconds", r.seconds}}
                     .dump()
              << "\n";
    return;
  }
  if (g.quiet) return;
  for (const auto& id : r.copied) fmt::print("copied {}\n", id);
  for (const auto& id : r.already_there) fmt::print("{} is already in {}\n", id, to);
  fmt::print(
      "{} backup(s) copied ({} of volumes) in {:.2f} s: {} new chunks sent ({}), {} the "
      "target had\n",
      r.copied.size(), HumanBytes(static_cast<double>(r.volume_bytes)), r.seconds, r.chunks_sent,
      HumanBytes(static_cast<double>(r.bytes_sent)), r.chunks_present);
}

}  // namespace

int CmdCopy(const Globals& g, const CopyCliOptions& opt) {
  const std::string from = opt.from.empty() ? g.repo : opt.from;
  if (from.empty() || opt.to.empty())
    return Fail(g, Status::InvalidArgument("copy needs --from REPO (or --repo) and --to REPO"),
                kUsage);
  if (from == opt.to)
    return Fail(g, Status::InvalidArgument("--from and --to name the same repository"), kUsage);
  const Globals gf = Side(g, from, opt.from_key, "from"), gt = Side(g, opt.to, opt.to_key, "to");
  std::unique_ptr<Repository> src, dst;
  if (int rc = OpenRepo(gf, LockMode::kShared, "copy (source)", &src)) return rc;
  if (int rc = OpenRepo(gt, LockMode::kAppend, "copy", &dst)) return rc;
  ProgressDisplay progress(!g.json && !g.quiet);
  CopyOptions copt;
  copt.backups = opt.backups;
  copt.threads = g.threads;
  copt.cancel = &g_cancel;
  copt.progress = [&](uint64_t done, uint64_t total) {
    progress.Update(Progress{"copy", "", done, total});
  };
  CopyResult r;
  Status s = CopyBackups(src.get(), dst.get(), copt, &r);
  progress.Finish();
  // Repositories that cannot take each other's backups: a usage error.
  if (!s.ok()) return Fail(g, s, s.code() == Status::Code::kInvalidArgument ? kUsage : -1);
  PrintResult(g, from, opt.to, r);
  return kOk;
}

}  // namespace gnomon::cli
