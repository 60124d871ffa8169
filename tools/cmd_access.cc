// Use a backup without restoring it: mount (FUSE), serve (NBD), boot-check.
#include <fcntl.h>
#include <fmt/core.h>
#include <link.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <sstream>

#include "base/system.h"
#include "engine/boot_check.h"
#include "engine/fuse_mount.h"
#include "engine/key_handoff.h"
#include "engine/volume_reader.h"
#include "tools/cli.h"

namespace gnomon::cli {

using nlohmann::json;

namespace {

std::string SelfExe() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "gnomon" : p.string();
}

// The nbdkit plugin: $GNOMON_NBDKIT_PLUGIN, else beside this program (a
// build tree), else where the package installs it.
std::string FindPlugin() {
  if (const char* env = std::getenv("GNOMON_NBDKIT_PLUGIN")) return env;
  const auto dir = std::filesystem::path(SelfExe()).parent_path();
  for (const auto& p :
       {dir / "nbdkit-gnomon-plugin.so", dir.parent_path() / "lib/gnomon/nbdkit-gnomon-plugin.so"})
    if (::access(p.c_str(), R_OK) == 0) return p.string();
  return "";
}

#if defined(__SANITIZE_ADDRESS__)
// A sanitizer build's plugin needs the sanitizer runtimes this program
// loaded to come first in nbdkit too (test builds only).
int AddRuntime(dl_phdr_info* info, size_t, void* out) {
  const std::string name = info->dlpi_name ? info->dlpi_name : "";
  if (name.find("libasan.so") != std::string::npos || name.find("libubsan.so") != std::string::npos)
    *static_cast<std::string*>(out) += (static_cast<std::string*>(out)->empty() ? "" : ":") + name;
  return 0;
}
void PreloadSanitizers() {
  std::string libs;
  dl_iterate_phdr(AddRuntime, &libs);
  if (!libs.empty()) setenv("LD_PRELOAD", libs.c_str(), 1);
  const char* old = std::getenv("ASAN_OPTIONS");
  const std::string opts = std::string(old ? old : "") + (old ? ":" : "") + "detect_leaks=0";
  setenv("ASAN_OPTIONS", opts.c_str(), 1);  // nbdkit's own leaks, not ours
}
#else
void PreloadSanitizers() {}
#endif

}  // namespace

int CmdMount(const Globals& g, const MountOptions& in) {
  if (g.repo.empty())
    return Fail(g,
                Status::InvalidArgument("no repository given: use --repo PATH or set GNOMON_REPO"),
                kUsage);
  std::unique_ptr<Repository> repo;
  std::string warning;
  Status s = OpenForReading(g.repo, "mount", &repo, &warning);
  if (!s.ok()) return Fail(g, s, s.IsNotFound() ? kNoRepo : -1);
  if (!warning.empty()) fmt::print(stderr, "gnomon: warning: {}\n", warning);
  if (int rc = UnlockRepo(g, repo.get())) return rc;
  MountOptions opt = in;
  opt.ready = [&](const std::string& mp, size_t backups) {
    if (g.json)
      std::cout << json{{"mounted", mp}, {"backups", backups}}.dump() << std::endl;
    else if (!g.quiet)
      fmt::print(stderr,
                 "gnomon: {} backups mounted at {}; Ctrl-C or 'fusermount3 -u {}' unmounts\n",
                 backups, EscapeForTerminal(mp), EscapeForTerminal(mp));
  };
  opt.log = [](const std::string& line) {
    fmt::print(stderr, "gnomon: {}\n", EscapeForTerminal(line));
  };
  s = RunMount(repo.get(), opt);
  if (!s.ok()) return Fail(g, s);
  return kOk;
}

int CmdServe(const Globals& g, const ServeOptions& opt) {
  if (opt.socket.empty() == (opt.port == 0))
    return Fail(g, Status::InvalidArgument("give one of --socket PATH and --port N"), kUsage);
  auto colon = opt.what.find(':');
  const std::string backup = opt.what.substr(0, colon);
  const std::string volume = colon == std::string::npos ? "" : opt.what.substr(colon + 1);
  // Checked here, for a clear message and exit code, then again by the plugin.
  std::unique_ptr<Repository> repo;
  if (int rc = OpenRepo(g, LockMode::kNone, "serve", &repo, opt.master_key_fd < 0)) return rc;
  if (opt.master_key_fd >= 0) {  // from boot-check, which unlocked it
    std::shared_ptr<const MasterKey> key;
    Status k = KeyFromPipe(opt.master_key_fd, &key);
    if (k.ok() && !repo->encrypted())
      k = Status::WrongKey(g.repo + ": a key was handed over but the repository is not encrypted");
    if (!k.ok()) return Fail(g, k);
    repo->SetKey(key);
  }
  BackupRecord rec;
  Status s = repo->FindBackup(backup, &rec);
  if (!s.ok()) return Fail(g, s);
  const VolumeRecord* vol = nullptr;
  if (!(rec.disk.present() && volume.empty()))
    if (s = PickVolume(rec, volume, &vol); !s.ok()) return Fail(g, s, kUsage);
  const std::string plugin = FindPlugin();
  if (plugin.empty())
    return Fail(g,
                Status::NotFound("nbdkit-gnomon-plugin.so not found (set GNOMON_NBDKIT_PLUGIN)"));
  std::string overlay = opt.overlay;
  if (opt.writable && overlay.empty() && IsS3Location(g.repo))
    return Fail(g, Status::InvalidArgument("--writable on an S3 repository needs --overlay FILE"),
                kUsage);
  if (opt.writable && overlay.empty()) {
    // Beside the repository, never in it.
    const auto r = std::filesystem::absolute(g.repo).lexically_normal();
    const auto base = r.has_filename() ? r : r.parent_path();
    std::string name = vol ? vol->name : std::string("disk");
    for (char& ch : name)  // a name from a record never leaves the directory
      if (ch == '/') ch = '_';
    overlay = base.string() + "." + rec.id + "." + name + ".overlay";
  }
  // serve becomes nbdkit (exec): signals and exit codes are nbdkit's.
  std::vector<std::string> args = {"nbdkit", "--foreground"};
  if (overlay.empty()) args.push_back("--readonly");
  if (!opt.socket.empty()) {
    args.insert(args.end(), {"--unix", opt.socket});
  } else {
    // Loopback unless an address is named: NBD has no authentication.
    args.insert(args.end(), {"--port", std::to_string(opt.port), "--ipaddr",
                             opt.address.empty() ? "127.0.0.1" : opt.address});
  }
  if (g.threads > 0) args.insert(args.end(), {"--threads", std::to_string(g.threads)});
  const std::string repo_arg =
      IsS3Location(g.repo) ? g.repo : std::filesystem::absolute(g.repo).string();
  args.insert(args.end(), {plugin, "repo=" + repo_arg, "backup=" + rec.id,
                           "cache=" + std::to_string(opt.cache_bytes)});
  if (!volume.empty()) args.push_back("volume=" + volume);
  if (!overlay.empty()) args.push_back("overlay=" + std::filesystem::absolute(overlay).string());
  if (repo->key()) {  // over a pipe nbdkit inherits: never in argv or the environment
    int fd = -1;
    if (s = KeyToPipe(*repo->key(), &fd); !s.ok()) return Fail(g, s);
    if (::fcntl(fd, F_SETFD, 0) != 0) return Fail(g, Status::FromErrno("key pipe", errno));
    args.push_back("keyfd=" + std::to_string(fd));
  }
  repo.reset();
  if (!g.quiet)
    fmt::print(stderr, "gnomon: serving backup {} {} {} at {}{}\n", rec.id, vol ? "volume" : "disk",
               vol ? EscapeForTerminal(vol->name) : "",
               opt.socket.empty() ? "nbd://" + (opt.address.empty() ? "127.0.0.1" : opt.address) +
                                        ":" + std::to_string(opt.port)
                                  : "nbd+unix:///?socket=" + EscapeForTerminal(opt.socket),
               overlay.empty() ? " (read-only)" : ", writes into " + EscapeForTerminal(overlay));
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(nullptr);
  PreloadSanitizers();
  ::execvp("nbdkit", argv.data());
  return Fail(g, Status::FromErrno("cannot run nbdkit (Debian package nbdkit)", errno));
}

int CmdBootCheck(const Globals& g, const std::string& backup, BootCheckOptions opt) {
  std::unique_ptr<Repository> repo;
  if (int rc = OpenRepo(g, LockMode::kNone, "boot-check", &repo)) return rc;
  BackupRecord rec;
  Status s = repo->FindBackup(backup, &rec);
  if (!s.ok()) return Fail(g, s);
  // The gnomon serve it runs, and only it, takes the key over a pipe.
  if (repo->key())
    if (s = KeyToPipe(*repo->key(), &opt.key_fd); !s.ok()) return Fail(g, s);
  repo.reset();
  opt.gnomon = SelfExe();
  opt.repo = g.repo;
  opt.cancel = &g_cancel;
  if (!g.quiet && !g.json)
    fmt::print(
        stderr, "gnomon: booting backup {} through an NBD export ({} firmware, up to {} s)\n",
        rec.id, opt.firmware == "auto" ? ChooseFirmware(rec.disk) : opt.firmware, opt.timeout_s);
  BootCheckResult r;
  s = RunBootCheck(rec, opt, &r);
  if (!s.ok()) return Fail(g, s, s.code() == Status::Code::kInvalidArgument ? kUsage : -1);
  if (g.json) {
    std::cout << json{{"backup", rec.id},
                      {"booted", r.booted},
                      {"firmware", r.firmware},
                      {"marker_line", r.marker_line},
                      {"serve_seconds", r.serve_seconds},
                      {"boot_seconds", r.boot_seconds},
                      {"console_tail", r.console_tail}}
                     .dump()
              << "\n";
  } else if (r.booted) {
    fmt::print("booted: backup {} reached \"{}\" after {:.1f} s\n", rec.id,
               EscapeForTerminal(r.marker_line), r.boot_seconds);
  } else {
    fmt::print("did not boot: backup {} showed no marker within {:.0f} s; the console ended:\n",
               rec.id, r.boot_seconds);
    std::istringstream lines(r.console_tail);
    for (std::string line; std::getline(lines, line);)
      fmt::print("  {}\n", EscapeForTerminal(line));
  }
  return r.booted ? kOk : kFailed;
}

}  // namespace gnomon::cli
