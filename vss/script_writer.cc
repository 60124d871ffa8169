#include "vss/script_writer.h"

#include "base/paths.h"
#include "base/system.h"

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>

extern char** environ;

namespace gnomon::vss {

namespace {

using Clock = std::chrono::steady_clock;

// The same script keeps the same class id from backup to backup, so its
// status and components match across runs.
Guid ClassIdFor(const std::string& path) {
  Guid g;
  const size_t h1 = std::hash<std::string>{}("gnomon-script:" + path);
  const size_t h2 = std::hash<std::string>{}(path + ":gnomon-script");
  std::memcpy(g.b.data(), &h1, 8);
  std::memcpy(g.b.data() + 8, &h2, 8);
  g.b[6] = static_cast<uint8_t>((g.b[6] & 0x0f) | 0x50);  // a name-based GUID
  g.b[8] = static_cast<uint8_t>((g.b[8] & 0x3f) | 0x80);
  return g;
}

// Reads the script's stderr (keeping the first 64 KiB) until it is closed;
// false if the deadline came first.
bool ReadUntilClosed(int fd, Clock::time_point deadline, std::string* text) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), INT_MAX)));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return r != 0;
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return true;  // the script closed stderr: it is exiting
    if (text->size() < 64 * 1024) text->append(buf, static_cast<size_t>(n));
  }
}

// Without a pidfd (pidfd_open(2) needs Linux 5.3, and a free descriptor):
// the exit can only be asked for, so ask every 2 ms.
bool PollForExit(pid_t pid, Clock::time_point deadline, int* status) {
  while (::waitpid(pid, status, WNOHANG) == 0) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// Waits for the child's exit and reaps it; false, with the child still
// running, if the deadline came first. The pidfd becomes readable when the
// child exits, so the wait sleeps until then or the deadline.
bool WaitForExit(pid_t pid, int pidfd, Clock::time_point deadline, int* status) {
  if (pidfd < 0) return PollForExit(pid, deadline, status);
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd p{pidfd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(std::clamp<int64_t>(left.count(), 0, INT_MAX)));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return PollForExit(pid, deadline, status);
    if (r == 0) return false;
    ::waitpid(pid, status, 0);  // it has exited: at once
    return true;
  }
}

}  // namespace

ScriptWriter::ScriptWriter(std::string path, uint32_t timeout_ms, uint32_t freeze_timeout_ms)
    : path_(std::move(path)), timeout_ms_(timeout_ms) {
  Initialize(ClassIdFor(path_), "script " + FileName(path_), UsageType::kUserData,
             SourceType::kOther, ApplicationLevel::kFrontEnd, freeze_timeout_ms);
}

bool ScriptWriter::OnIdentify(WriterMetadata* md) {
  // One component without files: included in every backup, so the script
  // hears every event.
  ComponentInfo c;
  c.type = ComponentType::kFileGroup;
  c.logical_path = "scripts";
  c.name = FileName(path_);
  c.caption = path_;
  md->components.push_back(c);
  return true;
}

bool ScriptWriter::OnPrepareBackup(WriterComponents* components) {
  // The backup options (--writer-option) reach the script in every event of
  // this backup, from PrepareForBackup on; a script that does not know one
  // should veto rather than ignore it.
  options_ = components && !components->empty() ? components->front().GetBackupOptions() : "";
  return Run(WriterEvent::kPrepareBackup, timeout_ms_);
}
bool ScriptWriter::OnPrepareSnapshot() { return Run(WriterEvent::kPrepareSnapshot, timeout_ms_); }
bool ScriptWriter::OnFreeze() {
  return Run(WriterEvent::kFreeze, std::min(timeout_ms_, freeze_timeout_ms() / 2));
}
bool ScriptWriter::OnThaw() {
  return Run(WriterEvent::kThaw, std::min(timeout_ms_, freeze_timeout_ms() / 2));
}
bool ScriptWriter::OnPostSnapshot(WriterComponents*) {
  return Run(WriterEvent::kPostSnapshot, timeout_ms_);
}
bool ScriptWriter::OnAbort() { return Run(WriterEvent::kAbort, timeout_ms_); }
bool ScriptWriter::OnBackupComplete(WriterComponents*) {
  return Run(WriterEvent::kBackupComplete, timeout_ms_);
}
bool ScriptWriter::OnBackupShutdown(const Guid&) {
  return Run(WriterEvent::kBackupShutdown, timeout_ms_);
}

bool ScriptWriter::Run(WriterEvent ev, uint32_t deadline_ms) {
  const std::string event = WriterEventName(ev);
  int err_fd = -1;
  const pid_t pid = Spawn(event, &err_fd);
  if (pid < 0) return false;
  // Opened before anything can reap the child, so it is surely this one.
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  const auto deadline = Clock::now() + std::chrono::milliseconds(deadline_ms);
  std::string err_text;
  bool timed_out = !ReadUntilClosed(err_fd, deadline, &err_text);
  ::close(err_fd);
  int status = 0;
  // stderr closed; wait for the exit, still within the deadline.
  if (!timed_out) timed_out = !WaitForExit(pid, pidfd, deadline, &status);
  if (pidfd >= 0) ::close(pidfd);
  if (timed_out) {
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    SetWriterFailure(VSS_E_WRITERERROR_TIMEOUT, path_ + " " + event + ": killed after its " +
                                                    std::to_string(deadline_ms) + " ms deadline");
    return false;
  }
  while (!err_text.empty() && (err_text.back() == '\n' || err_text.back() == ' '))
    err_text.pop_back();
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
  const std::string how = WIFEXITED(status)
                              ? "exited with status " + std::to_string(WEXITSTATUS(status))
                              : "was killed by signal " + std::to_string(WTERMSIG(status));
  SetWriterFailure(VSS_E_WRITERERROR_RETRYABLE,
                   path_ + " " + event + " " + how + (err_text.empty() ? "" : ": " + err_text));
  return false;
}

pid_t ScriptWriter::Spawn(const std::string& event, int* err_fd) {
  const std::string set_id =
      GetCurrentSnapshotSetId().IsNull() ? std::string() : GetCurrentSnapshotSetId().ToString();
  const std::string type = BackupTypeName(GetBackupType());
  const std::vector<std::string> volumes = GetCurrentVolumeArray();
  std::string vol_env;
  for (const auto& v : volumes) vol_env += (vol_env.empty() ? "" : "\n") + v;

  std::vector<std::string> args = {path_, event, set_id, type};
  args.insert(args.end(), volumes.begin(), volumes.end());
  std::vector<std::string> env = {"GNOMON_EVENT=" + event, "GNOMON_SNAPSHOT_SET_ID=" + set_id,
                                  "GNOMON_BACKUP_TYPE=" + type, "GNOMON_VOLUMES=" + vol_env,
                                  "GNOMON_BACKUP_OPTIONS=" + options_};
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    SetWriterFailure(VSS_E_WRITERERROR_RETRYABLE, path_ + ": pipe: " + std::strerror(errno));
    return -1;
  }
  // Everything the child needs is built before fork: after it, in a
  // process with other threads, only async-signal-safe calls are allowed.
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "GNOMON_EVENT=", 13) && std::strncmp(*e, "GNOMON_SNAPSHOT_SET_ID=", 23) &&
        std::strncmp(*e, "GNOMON_BACKUP_TYPE=", 19) && std::strncmp(*e, "GNOMON_VOLUMES=", 15) &&
        std::strncmp(*e, "GNOMON_BACKUP_OPTIONS=", 22))
      envp.push_back(*e);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);  // its own group: a deadline kills the script's children too
    int nul = ::open("/dev/null", O_RDWR);
    ::dup2(nul, 0);
    ::dup2(nul, 1);
    ::dup2(err_pipe[1], 2);
    ::execve(argv[0], argv.data(), envp.data());
    static const char kMsg[] = "cannot execute the script\n";
    ::write(2, kMsg, sizeof kMsg - 1);
    _exit(127);
  }
  ::close(err_pipe[1]);
  if (pid < 0) {
    ::close(err_pipe[0]);
    SetWriterFailure(VSS_E_WRITERERROR_RETRYABLE, path_ + ": fork: " + std::strerror(errno));
    return -1;
  }
  *err_fd = err_pipe[0];
  return pid;
}

std::string DefaultHooksDir() {
  const char* d = std::getenv("GNOMON_HOOKS_DIR");
  return d && *d ? d : "/etc/gnomon/writers.d";
}

std::string UntrustedReason(const std::string& path, const struct stat& st) {
  const uid_t me = ::geteuid();
  if (st.st_uid != 0 && st.st_uid != me)
    return path + " is owned by uid " + std::to_string(st.st_uid) + ", not by root" +
           (me ? " or uid " + std::to_string(me) : std::string());
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return path + " is writable by " + ((st.st_mode & S_IWOTH) ? "everyone" : "its group") +
           " (mode " + mode + ")";
  }
  return "";
}

std::string UntrustedPathReason(const std::string& path, std::string* resolved) {
  // The file and every directory above it, on its real path (symlinks
  // resolved): anyone who can write one of them could swap the script. A
  // sticky directory (/tmp) lets nobody rename what they do not own.
  char real[PATH_MAX];
  if (!::realpath(path.c_str(), real)) return path + ": " + std::strerror(errno);
  std::string p = real;
  if (resolved) *resolved = real;
  for (bool leaf = true;; leaf = false) {
    struct stat st;
    if (::stat(p.c_str(), &st) != 0) return p + ": " + std::strerror(errno);
    const bool sticky_dir = !leaf && (st.st_mode & S_ISVTX);
    std::string why = UntrustedReason(p, st);
    if (!why.empty() && !(sticky_dir && why.find(" is writable by") != std::string::npos))
      return leaf || p == real ? why : "a directory above it: " + why;
    if (p == "/") return "";
    const auto slash = p.find_last_of('/');
    p = slash == 0 ? "/" : p.substr(0, slash);
  }
}

std::vector<std::shared_ptr<ScriptWriter>> DiscoverScriptWriters(
    const std::string& dir, uint32_t freeze_timeout_ms, std::vector<std::string>* refused) {
  std::vector<std::string> paths;
  struct stat dst;
  if (::stat(dir.c_str(), &dst) != 0) return {};  // no hooks directory: no script writers
  if (std::string why = UntrustedPathReason(dir, nullptr); !why.empty()) {
    refused->push_back("script writers refused: " + why + "; no script in it is run");
    return {};
  }
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name.empty() || name[0] == '.' || name.back() == '~' ||
          name.find(".dpkg-") != std::string::npos)
        continue;
      const std::string p = dir + "/" + name;
      if (!IsUtf8(p)) {  // its name is its component's: it must fit in JSON
        refused->push_back("script writer refused: its name " + EscapeForTerminal(p) +
                           " is not UTF-8; rename it");
        continue;
      }
      struct stat st;
      if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || ::access(p.c_str(), X_OK) != 0)
        continue;
      // The script is run by its resolved path, the one that was checked: a
      // link on the way (owned by anyone) cannot be turned elsewhere later.
      std::string real;
      if (std::string why = UntrustedPathReason(p, &real); !why.empty())
        refused->push_back("script writer refused: " + why + "; it is not run");
      else
        paths.push_back(real);
    }
    ::closedir(d);
  }
  std::sort(paths.begin(), paths.end());
  std::vector<std::shared_ptr<ScriptWriter>> out;
  for (const auto& p : paths)
    out.push_back(std::make_shared<ScriptWriter>(p, 30000, freeze_timeout_ms));
  return out;
}

}  // namespace gnomon::vss
