#include "vss/fs_freeze_writer.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

namespace gnomon::vss {

namespace {

// Runs in the forked child: async-signal-safe calls only (the parent has
// other threads, so nothing that could take a lock or allocate).
[[noreturn]] void GuardianMain(int pipe_fd, const int* fds, int nfds, int64_t deadline_ms) {
  ::setsid();
  struct sigaction ign = {};
  ign.sa_handler = SIG_IGN;
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) ::sigaction(sig, &ign, nullptr);
  // Keep only the pipe and the mount fds: the guardian must not hold the
  // parent's devices, sockets or pipes open after the parent is gone.
  struct rlimit rl;
  int maxfd = ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536
                  ? static_cast<int>(rl.rlim_cur)
                  : 65536;
  for (int fd = 0; fd < maxfd; ++fd) {
    bool keep = fd == pipe_fd;
    for (int i = 0; i < nfds && !keep; ++i) keep = fds[i] == fd;
    if (!keep) ::close(fd);
  }
  for (;;) {
    struct timespec now;
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t left = deadline_ms - (now.tv_sec * 1000 + now.tv_nsec / 1000000);
    if (left <= 0) break;  // freeze window over: thaw
    struct pollfd p = {pipe_fd, POLLIN, 0};
    int r = ::poll(&p, 1, left > 1000 ? 1000 : static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r > 0) {
      char c;
      ssize_t n = ::read(pipe_fd, &c, 1);
      if (n == 1 && c == 'T') ::_exit(0);  // parent thawed: nothing to do
      break;                               // EOF (parent died) or garbage: thaw
    }
  }
  // FITHAW of a filesystem that is not frozen fails with EINVAL: harmless.
  for (int i = nfds - 1; i >= 0; --i) ::ioctl(fds[i], FITHAW, 0);
  ::_exit(1);
}

int64_t NowMs() {
  struct timespec now;
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

}  // namespace

Guid FsFreezeWriter::ClassId() {
  Guid g;
  Guid::Parse("6e1bb1d4-3f2a-4c55-9b1e-67a0d5c0f7e1", &g);
  return g;
}

FsFreezeWriter::FsFreezeWriter(uint32_t freeze_timeout_ms) {
  Initialize(ClassId(), "Filesystem Freeze Writer", UsageType::kSystemService, SourceType::kOther,
             ApplicationLevel::kSystem, freeze_timeout_ms);
}

FsFreezeWriter::~FsFreezeWriter() {
  std::lock_guard<std::mutex> g(mu_);
  ThawAll();
  StopGuardian();
  CloseTargets();
}

bool FsFreezeWriter::OnIdentify(WriterMetadata* md) {
  ComponentInfo c;
  c.type = ComponentType::kFileGroup;
  c.name = "Mounted filesystems";
  c.caption = "Filesystems mounted from volumes of the snapshot set, frozen for the snapshot";
  FileSpec all;
  all.path = "/";
  all.recursive = true;  // the default mask: a snapshot is required for every type
  c.files.push_back(all);
  md->components.push_back(c);
  md->backup_schema = schema::kCopy;
  return true;
}

bool FsFreezeWriter::OnPrepareSnapshot() {
  std::lock_guard<std::mutex> g(mu_);
  CloseTargets();
  std::vector<MountEntry> mounts;
  std::set<dev_t> seen;
  for (const auto& vol : GetCurrentVolumeArray()) {
    VolumeIdentity v;
    if (Status s = IdentifyVolume(vol, &v); !s.ok()) {
      SetWriterFailure(VSS_E_WRITERERROR_NONRETRYABLE, s.message());
      return false;
    }
    for (auto& m : MountsOnVolume(v))
      if (seen.insert(m.dev).second) mounts.push_back(m);
  }
  // Reverse mount order: a filesystem mounted inside another freezes first.
  for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) {
    Target t;
    t.mount_point = it->mount_point;
    t.fd = ::open(t.mount_point.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (t.fd < 0) {
      SetWriterFailure(VSS_E_WRITERERROR_NONRETRYABLE,
                       "opening mount point " + t.mount_point + ": " + std::strerror(errno));
      CloseTargets();
      return false;
    }
    targets_.push_back(t);
  }
  // Flush now, while nothing is frozen, so that FIFREEZE (which flushes
  // again) has only what was written since: the freeze window is what
  // applications wait through, this is not. A writeback error is a veto:
  // data applications wrote is not on the volume, so the snapshot would
  // miss it, and FIFREEZE does not report it (it succeeds regardless).
  // syncfs reports each error once per open file, and these fds are new,
  // so only an error of this very flush counts.
  for (const auto& t : targets_)
    if (::syncfs(t.fd) != 0) {
      const int e = errno;
      SetWriterFailure(VSS_E_WRITERERROR_NONRETRYABLE,
                       "writing back " + t.mount_point + " failed: " + std::strerror(e) +
                           " (data written to it may be lost; see the kernel log)");
      CloseTargets();
      return false;
    }
  return true;
}

Status FsFreezeWriter::StartGuardian() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Status::FromErrno("pipe", errno);
  std::vector<int> fds;
  for (const auto& t : targets_) fds.push_back(t.fd);
  // The guardian's window ends a little after ours: our own timer thaws
  // first and reports the timeout; the guardian is the last resort.
  int64_t deadline = NowMs() + freeze_timeout_ms() + 1000;
  pid_t pid = ::fork();
  if (pid < 0) {
    Status s = Status::FromErrno("fork", errno);
    ::close(p[0]);
    ::close(p[1]);
    return s;
  }
  if (pid == 0) GuardianMain(p[0], fds.data(), static_cast<int>(fds.size()), deadline);
  ::close(p[0]);
  guardian_ = pid;
  guardian_pipe_ = p[1];
  return Status::OK();
}

void FsFreezeWriter::StopGuardian() {
  if (guardian_pipe_ >= 0) {
    char c = 'T';
    ssize_t n = ::write(guardian_pipe_, &c, 1);
    (void)n;
    ::close(guardian_pipe_);
    guardian_pipe_ = -1;
  }
  if (guardian_ > 0) {
    ::waitpid(guardian_, nullptr, 0);
    guardian_ = -1;
  }
}

void FsFreezeWriter::CloseTargets() {
  for (auto& t : targets_)
    if (t.fd >= 0) ::close(t.fd);
  targets_.clear();
}

bool FsFreezeWriter::OnFreeze() {
  std::lock_guard<std::mutex> g(mu_);
  if (targets_.empty()) return true;  // nothing mounted from the set's volumes
  if (Status s = StartGuardian(); !s.ok()) {
    SetWriterFailure(VSS_E_WRITERERROR_OUTOFRESOURCES,
                     s.WithContext("starting the thaw guardian").message());
    return false;
  }
  for (auto& t : targets_) {
    if (::ioctl(t.fd, FIFREEZE, 0) == 0) {
      t.frozen = true;
      continue;
    }
    int e = errno;
    // As the QEMU guest agent does: a filesystem that cannot freeze, or is
    // already frozen by someone else, is not an error; anything else is.
    if (e == EOPNOTSUPP || e == EBUSY) continue;
    ThawAll();
    StopGuardian();
    SetWriterFailure(VSS_E_WRITERERROR_NONRETRYABLE,
                     "freezing " + t.mount_point + ": " + std::strerror(e));
    return false;
  }
  return true;
}

Status FsFreezeWriter::ThawAll() {
  std::string failures;
  for (auto it = targets_.rbegin(); it != targets_.rend(); ++it) {
    if (!it->frozen) continue;
    it->frozen = false;
    if (::ioctl(it->fd, FITHAW, 0) != 0) {
      const int e = errno;
      failures +=
          (failures.empty() ? "" : "; ") + std::string("thawing ") + it->mount_point + ": " +
          (e == EINVAL ? "it was no longer frozen (the freeze window ran out)" : std::strerror(e));
    }
  }
  return failures.empty() ? Status::OK() : Status::IOError(failures);
}

bool FsFreezeWriter::OnThaw() {
  std::lock_guard<std::mutex> g(mu_);
  Status s = ThawAll();
  StopGuardian();
  if (!s.ok()) {
    // A filesystem thawed behind our back means writes may have reached the
    // volume inside the window: the snapshot cannot be trusted.
    SetWriterFailure(VSS_E_WRITERERROR_TIMEOUT, s.message());
    return false;
  }
  return true;
}

bool FsFreezeWriter::OnAbort() {
  std::lock_guard<std::mutex> g(mu_);
  ThawAll();
  StopGuardian();
  return true;
}

bool FsFreezeWriter::OnBackupShutdown(const Guid&) {
  std::lock_guard<std::mutex> g(mu_);
  ThawAll();
  StopGuardian();
  CloseTargets();
  return true;
}

std::vector<std::string> FsFreezeWriter::frozen() const {
  std::lock_guard<std::mutex> g(mu_);
  std::vector<std::string> out;
  for (const auto& t : targets_)
    if (t.frozen) out.push_back(t.mount_point);
  return out;
}

}  // namespace gnomon::vss
