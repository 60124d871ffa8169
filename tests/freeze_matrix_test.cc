// The freeze matrix (issue 20): SIGKILL and SIGSTOP of the requester (the
// real gnomon binary, with its in-process filesystem writer) and of each
// kind of writer in another process (a socket writer, a script writer, the
// SQLite writer, the PostgreSQL writer) at each VSS event, during a real
// backup of a mounted ext4 that all of them write to.
//
// A script writer is the clock: at the chosen event it says so and waits,
// and the victim is signalled while the requester is inside that event.
// After each signal, every application must get going again: a write to the
// filesystem, a SQLite commit, a PostgreSQL insert, and the socket writer
// leaving its frozen state. A stopped writer is let go (SIGCONT) once the
// others have been checked: what it holds (the SQLite lock) can only be
// released by it. Then the backup must end, the repository verify, and the
// next backup, with every writer back, succeed.
//
// By default each (victim, signal) runs at one event picked at random
// (GNOMON_FREEZE_MATRIX_SEED=N repeats a pick; the pick is printed);
// GNOMON_FREEZE_MATRIX=all runs every event. With GNOMON_FREEZE_MATRIX_OUT=FILE each
// cell appends one tab-separated line (bench/freeze-matrix.sh makes the table).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <thread>

#include "tests/frozen_fs.h"
#include "tests/test_util.h"

namespace gnomon {
namespace {

using Clock = std::chrono::steady_clock;
using test::Gnomon;
using test::Sh;
using test::Spawn;
namespace fs = std::filesystem;

// Every event a script writer hears (Identify is answered for it, not run).
const std::vector<std::string> kEvents = {
    "PrepareForBackup", "PrepareForSnapshot", "Freeze",        "Thaw",
    "PostSnapshot",     "BackupComplete",     "BackupShutdown"};
// Every writer's window, and the hold window (seconds). A writer that holds
// from PrepareForSnapshot holds for at most two windows.
constexpr const char* kWindow = "5";
constexpr auto kResumeWithin = std::chrono::seconds(15);

long long MsSince(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

void Reap(pid_t* pid) {
  if (*pid <= 0) return;
  ::kill(*pid, SIGCONT);
  ::kill(*pid, SIGKILL);
  ::waitpid(*pid, nullptr, 0);
  *pid = -1;
}

// An application action that must complete: a child process, timed from
// the signal.
struct Probe {
  std::string what;
  pid_t pid = -1;      // a child to wait for, or (if set) done_when
  bool owned = false;  // needs the stopped victim itself to go on
  long long done_ms = -1;
  int status = 0;
  std::function<bool()> done_when;
};

class FreezeMatrixTest : public test::FrozenFsTest,
                         public ::testing::WithParamInterface<std::tuple<std::string, int>> {
 protected:
  void SetUp() override {
    disk_size_ = "256M";
    FrozenFsTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    GNOMON_SKIP_IF(Sh("command -v sqlite3 && command -v python3").exit_code != 0
                       ? "sqlite3 and python3 are needed"
                       : "");
    pg_bin_ = test::PostgresBinDir();
    GNOMON_SKIP_IF(pg_bin_.empty() || Sh("id postgres").exit_code != 0
                       ? "PostgreSQL (Debian's postgresql package) is needed"
                       : "");
    repo_ = dir_ / "repo";
    ASSERT_EQ(Gnomon({"init", "--repo", repo_, "--chunk-size", "256"}).exit_code, 0);
    fs::create_directories(state_.hooks_dir());
    db_ = mnt_ + "/app.db";
    ASSERT_EQ(Sh("sqlite3 " + db_ +
                 " 'pragma journal_mode=wal; create table t(id integer primary key, v text)'")
                  .exit_code,
              0);
    StartPostgres(pg_bin_, &pg_);
    if (HasFatalFailure()) return;
    ASSERT_EQ(pg_.Sql("create table t(v int)").exit_code, 0);
    StartWriters();
  }
  void TearDown() override {
    for (pid_t* p : {&backup_pid_, &sock_writer_, &sqlite_writer_, &pg_writer_}) Reap(p);
    FrozenFsTest::TearDown();
  }

  // Starts whichever writer program is not running, and waits for its socket.
  void StartWriters() {
    const std::string wd = state_.writer_dir();
    if (sock_writer_ < 0)
      sock_writer_ = Spawn({TEST_WRITER_APP_BIN, wd, "app", dir_ / "app.log", "--freeze-ms",
                            std::string(kWindow) + "000", "--volume", mnt_ + "/app.db"});
    if (sqlite_writer_ < 0)
      sqlite_writer_ = Spawn({SQLITE_WRITER_BIN, "--dir", wd, "--freeze-timeout", kWindow, db_},
                             dir_ / "sqlite.log");
    if (pg_writer_ < 0)
      pg_writer_ =
          Spawn({POSTGRES_WRITER_BIN, "--dir", wd, "--freeze-timeout", kWindow, "--data-dir",
                 pg_.data, "--conninfo",
                 "host=" + pg_.sock + " port=" + pg_.port + " user=postgres dbname=postgres"},
                dir_ / "pg.log");
    // A killed writer's socket file stays behind: wait until a new one answers.
    for (int i = 0; i < 500; ++i) {
      auto w = Gnomon({"writers", "--json"});
      if (w.exit_code == 0 && w.out.find("\"app\"") != std::string::npos &&
          w.out.find("\"sqlite\"") != std::string::npos &&
          w.out.find("\"postgresql\"") != std::string::npos &&
          w.out.find("stale") == std::string::npos)
        return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL() << "the writer programs did not come up: " << Gnomon({"writers"}).out;
  }

  // The clock: a script writer that, at `event`, writes its pid to `held`
  // and waits for `release`; once.
  void InstallClock(const std::string& cell, const std::string& event) {
    const std::string p = state_.hooks_dir() + "/clock";
    std::ofstream(p) << "#!/bin/sh\n"
                     << "if [ \"$1\" = " << event << " ] && [ ! -e " << cell
                     << "/released ]; then\n"
                     << "  echo $$ > " << cell << "/held.tmp && /bin/mv " << cell << "/held.tmp "
                     << cell << "/held\n"
                     << "  while [ ! -e " << cell << "/release ]; do /bin/sleep 0.01; done\n"
                     << "  : > " << cell << "/released\n"
                     << "fi\n";
    ::chmod(p.c_str(), 0755);
  }

  pid_t Victim(const std::string& who, pid_t script) const {
    if (who == "requester") return backup_pid_;
    if (who == "socket-writer") return sock_writer_;
    if (who == "script-writer") return script;
    if (who == "sqlite-writer") return sqlite_writer_;
    return pg_writer_;
  }

  // True while the socket writer's log, from this cell on, ends frozen.
  bool SocketWriterFrozen() const {
    std::ifstream f(dir_ / "app.log");
    f.seekg(static_cast<std::streamoff>(sock_log_from_));
    bool frozen = false;
    for (std::string line; std::getline(f, line);) {
      if (line == "Freeze") frozen = true;
      if (line == "Thaw" || line == "Abort") frozen = false;
    }
    return frozen;
  }

  std::vector<Probe> StartProbes(const std::string& who, int sig) {
    const std::string py =
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1],isolation_level=None,timeout=120)\n"
        "c.execute('begin immediate')\nc.execute(\"insert into t values (-abs(random()), "
        "'probe')\")\n"
        "c.execute('commit')\n";
    std::vector<Probe> v;
    v.push_back({"filesystem write",
                 Spawn({"sh", "-c", "echo x > " + mnt_ + "/probe && sync " + mnt_ + "/probe"})});
    v.push_back({"SQLite commit", Spawn({"python3", "-c", py, db_}),
                 sig == SIGSTOP && who == "sqlite-writer"});
    v.push_back({"PostgreSQL insert",
                 Spawn({pg_.bin + "/psql", "-X", "-h", pg_.sock, "-p", pg_.port, "-U", "postgres",
                        "-d", "postgres", "-c", "insert into t values (1)"})});
    // A killed socket writer has nothing left to thaw.
    Probe sock{"socket writer thawed"};
    sock.done_when = [this, dead = sig == SIGKILL && who == "socket-writer"] {
      return dead || !SocketWriterFrozen();
    };
    sock.owned = sig == SIGSTOP && who == "socket-writer";
    v.push_back(sock);
    return v;
  }

  // Waits until every probe is done or `until`; true if all are done.
  static bool WaitProbes(std::vector<Probe>* probes, Clock::time_point t0, Clock::time_point until,
                         bool owned_too) {
    for (;;) {
      bool all = true;
      for (auto& p : *probes) {
        if (p.done_ms >= 0 || (p.owned && !owned_too)) continue;
        if (!p.done_when && p.pid <= 0) {  // never started: never waitpid(-1)
          p.done_ms = MsSince(t0);
          p.status = 127 << 8;
          continue;
        }
        if (p.done_when ? p.done_when() : ::waitpid(p.pid, &p.status, WNOHANG) == p.pid) {
          p.done_ms = MsSince(t0);
          p.pid = -1;
        } else {
          all = false;
        }
      }
      if (all) return true;
      if (Clock::now() > until) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  void RunCell(const std::string& who, int sig, const std::string& event);
  // Failures (and other results) recorded so far, to tell one cell's.
  static int PartCount() {
    return ::testing::UnitTest::GetInstance()->current_test_info()->result()->total_part_count();
  }

  std::string pg_bin_, repo_, db_;
  test::PgServer pg_;
  uintmax_t sock_log_from_ = 0;
  pid_t backup_pid_ = -1, sock_writer_ = -1, sqlite_writer_ = -1, pg_writer_ = -1;
};

void FreezeMatrixTest::RunCell(const std::string& who, int sig, const std::string& event) {
  SCOPED_TRACE(who + " " + strsignal(sig) + " at " + event);
  const std::string cell = dir_ / ("cell-" + who + "-" + std::to_string(sig) + "-" + event);
  fs::create_directories(cell);
  InstallClock(cell, event);
  std::error_code ec;
  sock_log_from_ = fs::file_size(dir_ / "app.log", ec);
  if (ec) sock_log_from_ = 0;
  const int parts_before = PartCount();
  backup_pid_ = Spawn({test::GnomonBinary(), "--repo", repo_, "backup", "--freeze-timeout", kWindow,
                       "--hold-timeout", kWindow, loop_},
                      cell + "/backup.out");
  for (int i = 0; i < 6000 && !fs::exists(cell + "/held"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(fs::exists(cell + "/held")) << "the backup never reached " << event << ": "
                                          << test::Sh("cat " + cell + "/backup.out").out;
  const pid_t script = std::stoi(test::Sh("cat " + cell + "/held").out);
  const pid_t victim = Victim(who, script);
  ASSERT_GT(victim, 0);

  const auto t0 = Clock::now();
  ::kill(victim, sig);
  std::vector<Probe> probes = StartProbes(who, sig);
  std::ofstream(cell + "/release");  // the clock lets the requester go on
  // While the victim is dead or stopped, every application it does not hold
  // itself gets going again, and the socket writer leaves its freeze.
  const bool resumed = WaitProbes(&probes, t0, t0 + kResumeWithin, false);
  long long cont_ms = -1;
  if (sig == SIGSTOP) {
    cont_ms = MsSince(t0);
    ::kill(victim, SIGCONT);
  }
  const bool owned_resumed = WaitProbes(&probes, t0, Clock::now() + kResumeWithin, true);
  // Whatever is still stuck: report it, then free it so the test can go on.
  std::string stuck;
  for (auto& p : probes)
    if (p.done_ms < 0) stuck += p.what + "; ";
  if (!stuck.empty()) {
    Sh("fsfreeze -u " + mnt_ + " 2>/dev/null");
    for (auto& p : probes)
      if (!p.done_when) Reap(&p.pid);
  }
  EXPECT_TRUE(resumed && owned_resumed) << "still blocked: " << stuck;
  for (const auto& p : probes)
    EXPECT_TRUE(p.done_ms < 0 || (WIFEXITED(p.status) && WEXITSTATUS(p.status) == 0))
        << p.what << " failed";

  // The backup ends (a killed requester has ended), with a clean exit code.
  int st = 0;
  int code = -1;
  for (int i = 0; i < 9000; ++i) {
    if (::waitpid(backup_pid_, &st, WNOHANG) == backup_pid_) {
      code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      backup_pid_ = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const std::string out = test::Sh("cat " + cell + "/backup.out").out;
  EXPECT_NE(code, -1) << "the backup did not end within 90 s";
  if (who != "requester") {
    EXPECT_TRUE(code == 0 || code == 4) << code << ": " << out;
  }
  Reap(&backup_pid_);
  EXPECT_FALSE(test::IsFrozen(mnt_));

  // Every writer back, the repository whole and the next backup good.
  for (pid_t* p : {&sock_writer_, &sqlite_writer_, &pg_writer_})
    if (*p > 0 && ::waitpid(*p, nullptr, WNOHANG) == *p) *p = -1;
  if (sig == SIGKILL && who != "requester" && who != "script-writer") {
    pid_t* killed = who == "socket-writer"   ? &sock_writer_
                    : who == "sqlite-writer" ? &sqlite_writer_
                                             : &pg_writer_;
    Reap(killed);
  }
  StartWriters();
  Gnomon({"snapshots", "--delete-all"});
  auto verify = Gnomon({"--repo", repo_, "verify"});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  auto next = Gnomon({"--repo", repo_, "backup", "--freeze-timeout", kWindow, loop_});
  EXPECT_EQ(next.exit_code, 0) << next.err;

  long long worst = -1;
  for (const auto& p : probes) worst = std::max(worst, p.done_ms);
  if (const char* o = std::getenv("GNOMON_FREEZE_MATRIX_OUT"))
    std::ofstream(o, std::ios::app)
        << who << '\t' << (sig == SIGKILL ? "KILL" : "STOP") << '\t' << event << '\t' << code
        << '\t' << cont_ms << '\t' << probes[0].done_ms << '\t' << probes[1].done_ms << '\t'
        << probes[2].done_ms << '\t' << probes[3].done_ms << '\t' << worst << '\t'
        << (PartCount() > parts_before ? "FAIL" : "ok") << '\t' << next.exit_code << '\n';
}

TEST_P(FreezeMatrixTest, EveryApplicationGoesOnAndTheNextBackupSucceeds) {
  const auto& [who, sig] = GetParam();
  std::vector<std::string> events = kEvents;
  const char* all = std::getenv("GNOMON_FREEZE_MATRIX");
  if (!(all && std::string(all) == "all")) {
    const char* seed_env = std::getenv("GNOMON_FREEZE_MATRIX_SEED");
    const unsigned seed = seed_env ? static_cast<unsigned>(std::strtoul(seed_env, nullptr, 10))
                                   : std::random_device{}();
    events = {events[std::mt19937(seed)() % events.size()]};
    std::printf("GNOMON_FREEZE_MATRIX_SEED=%u: %s\n", seed, events[0].c_str());
  }
  for (const auto& e : events) {
    RunCell(who, sig, e);
    if (HasFatalFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(Victims, FreezeMatrixTest,
                         ::testing::Combine(::testing::Values("requester", "socket-writer",
                                                              "script-writer", "sqlite-writer",
                                                              "postgresql-writer"),
                                            ::testing::Values(SIGKILL, SIGSTOP)),
                         [](const auto& info) {
                           std::string n = std::get<0>(info.param) +
                                           (std::get<1>(info.param) == SIGKILL ? "_KILL" : "_STOP");
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

}  // namespace
}  // namespace gnomon
