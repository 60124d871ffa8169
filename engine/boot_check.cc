#include "engine/boot_check.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
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

// Runs argv with stdin from /dev/null and stdout and stderr into log, in
// its own process group (a Ctrl-C meant for gnomon does not end QEMU under
// it) and killed if gnomon dies (no QEMU or export outlives the check).
// inherit_fd (if >= 0) is the one close-on-exec descriptor the child keeps.
Status Spawn(const std::vector<std::string>& argv, const std::string& log, pid_t* pid,
             int inherit_fd = -1) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (out < 0) return Status::FromErrno(log, errno);
  *pid = ::fork();
  if (*pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    const int in = ::open("/dev/null", O_RDONLY);
    if (in < 0 || ::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0) _exit(127);
    if (inherit_fd >= 0 && ::fcntl(inherit_fd, F_SETFD, 0) != 0) _exit(127);
    ::execvp(args[0], args.data());
    const std::string msg = "cannot run " + argv[0] + ": " + std::strerror(errno) + "\n";
    [[maybe_unused]] ssize_t n = ::write(2, msg.data(), msg.size());
    _exit(127);
  }
  const int err = errno;
  ::close(out);
  if (*pid < 0) return Status::FromErrno("fork", err);
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
  std::vector<std::string> argv = {opt.gnomon, "--repo",   opt.repo, "serve",
                                   rec.id,     "--socket", sock};
  if (opt.key_fd >= 0) argv.insert(argv.end(), {"--master-key-fd", std::to_string(opt.key_fd)});
  Status s = Spawn(argv, c->dir + "/serve.log", &c->serve, opt.key_fd);
  if (opt.key_fd >= 0) ::close(opt.key_fd);  // the key is in the child's pipe, or nowhere
  GNOMON_RETURN_IF_ERROR(s);
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

// KVM where the CPU offers virtualization and /dev/kvm opens, else TCG
// (a /dev/kvm without vmx or svm hangs the guest rather than failing).
std::string Accel() {
  const std::string cpu = Slurp("/proc/cpuinfo");
  const bool virt = cpu.find(" vmx") != std::string::npos || cpu.find(" svm") != std::string::npos;
  return virt && ::access("/dev/kvm", R_OK | W_OK) == 0 ? "kvm" : "tcg";
}

std::vector<std::string> QemuArgs(const BootCheckOptions& opt, const std::string& dir,
                                  const std::string& sock, const std::string& firmware) {
  // No network: a clone of a production machine must not reach its peers.
  std::vector<std::string> a = {"qemu-system-x86_64",
                                "-machine",
                                "q35",
                                "-accel",
                                Accel(),
                                "-cpu",
                                "max",
                                "-m",
                                std::to_string(opt.memory_mib),
                                "-no-reboot",
                                "-nic",
                                "none",
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
    if (opt.cancel && *opt.cancel) return Status::Aborted("interrupted");
    int status = 0;
    if (Exited(c->serve, &status)) {
      c->serve = -1;
      return Status::IOError("gnomon serve ended during the boot: " +
                             Tail(Slurp(c->dir + "/serve.log"), 2000));
    }
    const bool ended = Exited(c->qemu, &status);
    if (ended) c->qemu = -1;
    // QEMU that failed before the guest printed anything did not test the
    // backup: that is an error, not "did not boot".
    if (ended && text.empty() && (!WIFEXITED(status) || WEXITSTATUS(status) != 0))
      return Status::IOError("QEMU failed: " + Tail(Slurp(c->dir + "/qemu.log"), 2000));
    if (ended || Since(t0) > opt.timeout_s) {
      out->boot_seconds = Since(t0);
      out->console_tail = Tail(text, 3000);
      return Status::OK();
    }
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
