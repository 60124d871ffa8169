// A real filesystem to freeze, shared by the VSS system tests and the
// freeze matrix: ext4 on a loop device whose backing file lives on a
// reflink-capable XFS, plus the applications that write to it (a SQLite
// committer, a PostgreSQL server of the test's own) and probes that tell
// whether the filesystem is frozen or writable.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/test_util.h"

namespace gnomon::test {

namespace fs = std::filesystem;

// True if the filesystem at path is frozen: a second FIFREEZE is EBUSY.
// (If it was not frozen, the probe froze it: thaw it again.)
inline bool IsFrozen(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return false;
  bool frozen = ::ioctl(fd, FIFREEZE, 0) != 0 && errno == EBUSY;
  if (!frozen) ::ioctl(fd, FITHAW, 0);
  ::close(fd);
  return frozen;
}

// The server binaries of the installed PostgreSQL: `pg_config --bindir`,
// else the newest /usr/lib/postgresql/<major>/bin that has a postgres, else "".
inline std::string PostgresBinDir() {
  auto r = Sh("pg_config --bindir 2>/dev/null");
  std::string dir = r.exit_code == 0 ? r.out.substr(0, r.out.find('\n')) : "";
  if (!dir.empty() && fs::exists(dir + "/postgres")) return dir;
  int best = -1;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const int major = std::atoi(e.path().filename().c_str());
    if (major > best && fs::exists(e.path() / "bin/postgres")) {
      best = major;
      dir = e.path() / "bin";
    }
  }
  return best >= 0 ? dir : "";
}

// A PostgreSQL server of the test's own (Debian's postgresql package) with
// its data directory in `dir`, on a Unix socket in `sock` and `port`.
struct PgServer {
  std::string bin, data, sock, port;
  CommandResult As(const std::string& cmd) const {
    return Sh("runuser -u postgres -- " + cmd + " 2>&1");
  }
  CommandResult Start() const {
    return As(bin + "/pg_ctl -D " + data + " -w -t 60 -l " + data + "/../server.log -o \"-p " +
              port + " -k " + sock + " -c listen_addresses=''\" start");
  }
  std::string StopCmd() const {
    return "runuser -u postgres -- " + bin + "/pg_ctl -D " + data + " -m fast -w stop";
  }
  CommandResult Sql(const std::string& sql) const {
    return Sh(bin + "/psql -X -A -t -h " + sock + " -p " + port + " -U postgres -d postgres -c \"" +
              sql + "\" 2>&1");
  }
  long Count(const std::string& table) const {
    auto r = Sql("select count(*) from " + table);
    return r.exit_code == 0 ? std::atol(r.out.c_str()) : -1;
  }
};

// ext4 on /dev/loopN, backed by disk.img on an XFS (reflink=1) loop mount.
class FrozenFsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GNOMON_SKIP_IF(RootSkipReason());
    mnt_ = dir_ / "mnt";
    fs::create_directories(mnt_);
    xfs_fs_ = std::make_unique<ReflinkFs>(dir_, "3G");
    ASSERT_TRUE(xfs_fs_->ok());
    xfs_ = xfs_fs_->path();
    disk_ = xfs_ + "/disk.img";
    ASSERT_EQ(
        Sh("truncate -s " + disk_size_ + " " + disk_ + " && mkfs.ext4 -q -F " + disk_).exit_code,
        0);
    auto r = Sh("losetup -f --show " + disk_);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    loop_ = r.out.substr(0, r.out.find('\n'));
    ASSERT_EQ(Sh("mount " + loop_ + " " + mnt_).exit_code, 0);
    ext4_mounted_ = true;
  }
  void TearDown() override {
    for (auto it = cleanup_.rbegin(); it != cleanup_.rend(); ++it) Sh(*it);
    for (pid_t pid : {writer_pid_, app_writer_pid_})
      if (pid > 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    if (ext4_mounted_) {
      Sh("fsfreeze -u " + mnt_ + " 2>/dev/null; umount " + mnt_);
    }
    if (!loop_.empty()) Sh("losetup -d " + loop_);
    xfs_fs_.reset();
  }
  // Creates and starts a PostgreSQL cluster of the test's own in
  // mnt/pg/data, on a Unix socket in the scratch directory (stopped before
  // the unmount).
  void StartPostgres(const std::string& bin, PgServer* pg) {
    const std::string sock = dir_ / "pgsock";
    fs::create_directories(sock);
    ::chmod(sock.c_str(), 0777);
    ::chmod(dir_.path().c_str(), 0755);
    *pg = {bin, mnt_ + "/pg/data", sock, std::to_string(20000 + ::getpid() % 20000)};
    ASSERT_EQ(Sh("mkdir -p " + mnt_ + "/pg && chown postgres " + mnt_ + "/pg").exit_code, 0);
    auto init = pg->As(bin + "/initdb -D " + pg->data + " -A trust -U postgres --no-sync");
    ASSERT_EQ(init.exit_code, 0) << init.out;
    auto start = pg->Start();
    ASSERT_EQ(start.exit_code, 0) << start.out;
    cleanup_.push_back(pg->StopCmd());
  }
  // Fills the ext4 with real files (libraries: compressible, not repetitive).
  void Fill(const std::string& budget_mb) {
    ASSERT_EQ(Sh("cd /usr/lib/x86_64-linux-gnu && find . -maxdepth 1 -type f -name '*.so*' | "
                 "sort | head -400 | tar -cf - -T - 2>/dev/null | (mkdir -p " +
                 mnt_ + "/lib && cd " + mnt_ + "/lib && head -c " + budget_mb +
                 "M | tar -xf - 2>/dev/null); sync")
                  .exit_code,
              0);
  }
  // Writes and fsyncs a file in a child process; true if that finished
  // within timeout. On timeout the filesystem is thawed by force so the
  // test cannot hang, and false is returned.
  static bool WritableWithin(const std::string& dir, std::chrono::milliseconds timeout,
                             std::chrono::milliseconds* took = nullptr) {
    using Clock = std::chrono::steady_clock;
    auto t0 = Clock::now();
    pid_t pid = ::fork();
    if (pid == 0) {
      std::string p = dir + "/probe-" + std::to_string(::getpid());
      int fd = ::open(p.c_str(), O_WRONLY | O_CREAT, 0644);
      if (fd < 0 || ::write(fd, "x", 1) != 1 || ::fsync(fd) != 0) _exit(1);
      _exit(0);
    }
    int st = 0;
    while (Clock::now() - t0 < timeout) {
      if (::waitpid(pid, &st, WNOHANG) == pid) {
        if (took) *took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
        return WIFEXITED(st) && WEXITSTATUS(st) == 0;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    Sh("fsfreeze -u " + dir);
    ::waitpid(pid, &st, 0);
    return false;
  }

  IsolatedState state_;
  TempDir dir_;
  std::unique_ptr<ReflinkFs> xfs_fs_;
  std::string disk_size_ = "512M";  // of the ext4 (set before SetUp)
  std::string xfs_, mnt_, disk_, loop_;
  bool ext4_mounted_ = false;
  pid_t writer_pid_ = -1;
  pid_t app_writer_pid_ = -1;         // a writer program (killed before the unmount)
  std::vector<std::string> cleanup_;  // shell commands, run last first, before the unmount
};

// A process that commits one row per transaction into a WAL-mode SQLite
// database as fast as it can, until killed.
inline pid_t StartSqliteApp(const std::string& db) {
  pid_t pid = ::fork();
  if (pid == 0) {
    const std::string code =
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)\n"
        "c.execute('pragma journal_mode=wal')\n"
        "c.execute('create table if not exists t(id integer primary key, v text)')\n"
        "i = 0\n"
        "while True:\n"
        "    i += 1\n"
        "    c.execute('begin immediate')\n"
        "    c.execute('insert into t values (?, ?)', (i, 'row %d ' % i * 8))\n"
        "    c.execute('commit')\n";
    execlp("python3", "python3", "-c", code.c_str(), db.c_str(), nullptr);
    _exit(127);
  }
  return pid;
}

inline long SqliteCount(const std::string& db) {
  auto r = Sh("sqlite3 -cmd '.timeout 30000' '" + db + "' 'select count(*) from t'");
  return r.exit_code == 0 ? std::atol(r.out.c_str()) : -1;
}

}  // namespace gnomon::test
