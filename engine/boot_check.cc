#include "engine/boot_check.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace gnomon {
namespace {

constexpr const char* kEsp = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
constexpr const char* kBiosBoot = "21686148-6449-6E6F-744E-656564454649";
constexpr const char* kOvmfCode = "/usr/share/OVMF/OVMF_CODE.fd";
constexpr const char* kOvmfVars = "/usr/share/OVMF/OVMF_VARS.fd";

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs argv with stdin from /dev/null and stdout and stderr into log.
Status Spawn(const std::vector<std::string>& argv, const std::string& log, pid_t* pid) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const int rc = posix_spawnp(pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return Status::FromErrno("cannot run " + argv[0], rc);
  return Status::OK();
}

bool Exited(pid_t pid, int* status) { return ::waitpid(pid, status, WNOHANG) == pid; }

void Stop(pid_t pid, int sig) {
  if (pid <= 0) return;
  ::kill(pid, sig);
  for (int i = 0; i < 100; ++i) {  // 10 s, then no more asking
    int status = 0;
    if (Exited(pid, &status)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

bool Connects(const std::string& socket_path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, socket_path.c_str(), sizeof a.sun_path - 1);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

std::string Tail(const std::string& text, size_t bytes) {
  return text.size() <= bytes ? text : text.substr(text.size() - bytes);
}

struct Children {
  pid_t serve = -1, qemu = -1;
  std::string dir;
  ~Children() {
    Stop(qemu, SIGKILL);  // its overlay is thrown away
    Stop(serve, SIGTERM);
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  }
};

Status StartServe(const BackupRecord& rec, const BootCheckOptions& opt, Children* c,
                  const std::string& sock, BootCheckResult* out) {
  const auto t0 = Clock::now();
  GNOMON_RETURN_IF_ERROR(Spawn({opt.gnomon, "--repo", opt.repo, "serve", rec.id, "--socket", sock},
                               c->dir + "/serve.log", &c->serve));
  while (!Connects(sock)) {
    int status = 0;
    if (Exited(c->serve, &status)) {
      c->serve = -1;
      return Status::IOError("gnomon serve ended before the export was ready: " +
                             Tail(Slurp(c->dir + "/serve.log"), 2000));
    }
    if (Since(t0) > 120) return Status::IOError("gnomon serve was not ready within 120 s");
    if (opt.cancel && *opt.cancel) return Status::Aborted("interrupted");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  out->serve_seconds = Since(t0);
  return Status::OK();
}

std::vector<std::string> QemuArgs(const BootCheckOptions& opt, const std::string& dir,
                                  const std::string& sock, const std::string& firmware) {
  std::vector<std::string> a = {"qemu-system-x86_64",
                                "-machine",
                                "q35,accel=kvm:tcg",
                                "-cpu",
                                "max",
                                "-m",
                                std::to_string(opt.memory_mib),
                                "-no-reboot",
                                "-serial",
                                "file:" + dir + "/console.log",
                                "-monitor",
                                "none",
                                "-display",
                                "none"};
  if (firmware == "uefi")
    a.insert(a.end(), {"-drive", std::string("if=pflash,format=raw,readonly=on,file=") + kOvmfCode,
                       "-drive", "if=pflash,format=raw,file=" + dir + "/vars.fd"});
  // snapshot=on: QEMU keeps the guest's writes in a temporary file of its
  // own; the export is read-only.
  a.insert(a.end(),
           {"-drive", "file=nbd+unix:///?socket=" + sock + ",format=raw,if=virtio,snapshot=on"});
  return a;
}

// Watches the console until a marker appears, QEMU ends, time runs out or
// the user interrupts.
Status Watch(const BootCheckOptions& opt, Children* c, BootCheckResult* out) {
  const auto t0 = Clock::now();
  const std::string console = c->dir + "/console.log";
  for (;;) {
    const std::string text = Slurp(console);
    for (const auto& m : opt.markers) {
      size_t at = text.find(m);
      if (at == std::string::npos) continue;
      size_t from = text.rfind('\n', at);
      from = from == std::string::npos ? 0 : from + 1;
      std::string line = text.substr(from, text.find('\n', at) - from);
      line.erase(std::remove(line.begin(), line.end(), '\r'), line.end());
      out->booted = true;
      out->marker_line = line;
      out->boot_seconds = Since(t0);
      return Status::OK();
    }
    int status = 0;
    const bool ended = Exited(c->qemu, &status);
    if (ended) c->qemu = -1;
    if (ended || Since(t0) > opt.timeout_s) {
      out->boot_seconds = Since(t0);
      out->console_tail = Tail(text, 3000);
      if (ended && (!WIFEXITED(status) || WEXITSTATUS(status) != 0))
        out->console_tail += "\n[qemu] " + Tail(Slurp(c->dir + "/qemu.log"), 1000);
      return Status::OK();
    }
    if (opt.cancel && *opt.cancel) return Status::Aborted("interrupted");
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

}  // namespace

std::string ChooseFirmware(const DiskLayout& disk) {
  bool esp = false, bios_boot = false;
  for (const auto& p : disk.partitions) {
    esp |= p.type == kEsp;
    bios_boot |= p.type == kBiosBoot;
  }
  return disk.label == "gpt" && esp && !bios_boot ? "uefi" : "bios";
}

Status RunBootCheck(const BackupRecord& rec, const BootCheckOptions& opt, BootCheckResult* out) {
  if (!rec.disk.present())
    return Status::InvalidArgument("backup " + rec.id +
                                   " is not a disk backup: only a whole disk boots");
  out->firmware = opt.firmware == "auto" ? ChooseFirmware(rec.disk) : opt.firmware;
  if (out->firmware == "uefi" && (access(kOvmfCode, R_OK) != 0 || access(kOvmfVars, R_OK) != 0))
    return Status::NotFound(std::string(kOvmfCode) + " is missing (Debian package ovmf)");
  Children c;
  std::string tmpl = (std::filesystem::temp_directory_path() / "gnomon-boot-XXXXXX").string();
  if (!mkdtemp(tmpl.data())) return Status::FromErrno("making a temporary directory", errno);
  c.dir = tmpl;
  const std::string sock = c.dir + "/nbd.sock";
  GNOMON_RETURN_IF_ERROR(StartServe(rec, opt, &c, sock, out));
  if (out->firmware == "uefi") {
    std::error_code ec;
    std::filesystem::copy_file(kOvmfVars, c.dir + "/vars.fd", ec);
    if (ec) return Status::IOError("copying " + std::string(kOvmfVars) + ": " + ec.message());
  }
  GNOMON_RETURN_IF_ERROR(
      Spawn(QemuArgs(opt, c.dir, sock, out->firmware), c.dir + "/qemu.log", &c.qemu));
  Status st = Watch(opt, &c, out);
  if (!opt.console_log.empty()) {
    std::error_code ec;
    std::filesystem::copy_file(c.dir + "/console.log", opt.console_log,
                               std::filesystem::copy_options::overwrite_existing, ec);
  }
  return st;
}

}  // namespace gnomon
