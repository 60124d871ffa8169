// The VSS layer against real kernels and filesystems (root only): an ext4
// filesystem on a loop device whose backing file lives on a reflink-capable
// XFS, frozen for real, snapshotted with FICLONE, imaged, restored, fsck'd.
// The requester is killed and stopped while the filesystem is frozen; a real
// writer program appends records throughout a backup.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "engine/backup_job.h"
#include "tests/fault_env.h"
#include "tests/frozen_fs.h"
#include "tests/test_util.h"
#include "vss/backup_components.h"
#include "vss/fs_freeze_writer.h"
#include "vss/reflink_provider.h"
#include "vss/writer_call.h"

namespace gnomon {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;
using test::FrozenFsTest;
using test::Gnomon;
using test::IsFrozen;
using test::PgServer;
using test::PostgresBinDir;
using test::Sh;
using test::SqliteCount;
using test::StartSqliteApp;
namespace fs = std::filesystem;

TEST_F(FrozenFsTest, BackupOfAMountedLoopExt4OnXfsUsesReflinkAndRestoresClean) {
  Fill("40");
  std::string repo = dir_ / "repo";
  ASSERT_EQ(Gnomon({"init", "--repo", repo}).exit_code, 0);
  // The offline provider refuses the mounted device, naming the mount.
  auto off = Gnomon({"--repo", repo, "backup", "--provider", "offline", loop_});
  EXPECT_EQ(off.exit_code, 1);
  EXPECT_NE(off.err.find("mounted on " + mnt_), std::string::npos) << off.err;

  auto b = Gnomon({"--repo", repo, "backup", "--json", loop_});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  auto sh = Gnomon({"--repo", repo, "show", "--json", "latest"});
  ASSERT_EQ(sh.exit_code, 0) << sh.err;
  json v = json::parse(sh.out)["vss"];
  EXPECT_EQ(v["sources"][0]["provider"], "reflink");
  EXPECT_FALSE(v["snapshot_skipped"].get<bool>());
  EXPECT_EQ(v["bcd"]["components"].size(), 2u) << "filesystem and volume components";
  for (const auto& st : v["writer_status"]) EXPECT_EQ(st["failure"], 0) << st.dump();
  // How long writers were frozen is recorded with the backup: some time,
  // well inside the freeze window.
  ASSERT_TRUE(v["frozen_ms"].is_number()) << v.dump();
  EXPECT_GT(v["frozen_ms"].get<double>(), 0.0);
  EXPECT_LT(v["frozen_ms"].get<double>(), 60000.0);
  // A full backup keeps its snapshot as the base of the next incremental,
  // and nothing else; a copy backup keeps nothing.
  json snaps = json::parse(Gnomon({"snapshots", "--json"}).out);
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_EQ(snaps[0]["state"], "base");
  EXPECT_EQ(snaps[0]["backup_id"], json::parse(b.out)["id"]);
  ASSERT_EQ(Gnomon({"--repo", repo, "backup", "--type", "copy", loop_}).exit_code, 0);
  EXPECT_EQ(json::parse(Gnomon({"snapshots", "--json"}).out).size(), 1u);
  int clones = 0;
  for (auto& e : fs::directory_iterator(xfs_))
    clones += e.path().filename().string().find(".gnomon-snap-") == 0;
  EXPECT_EQ(clones, 1);

  // The restored image is a clean ext4 holding the same files.
  ASSERT_EQ(Gnomon({"--repo", repo, "restore", "latest", dir_ / "restored.img"}).exit_code, 0);
  auto fsck = Sh("e2fsck -fn " + dir_ / "restored.img");
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out << fsck.err;
  fs::create_directories(dir_ / "r");
  ASSERT_EQ(Sh("mount -o loop,ro " + dir_ / "restored.img" + " " + dir_ / "r").exit_code, 0);
  auto diff = Sh("diff -r " + mnt_ + "/lib " + dir_ / "r/lib");
  EXPECT_EQ(Sh("umount " + dir_ / "r").exit_code, 0);
  EXPECT_EQ(diff.exit_code, 0) << diff.out;
}

// A reflink provider that checks, inside the commit, that the writer really
// froze the filesystem.
class ProbingProvider : public vss::ReflinkProvider {
 public:
  ProbingProvider(std::string state, std::string mnt) : ReflinkProvider(state), mnt_(mnt) {}
  vss::HResult CommitSnapshots(const vss::Guid& set) override {
    frozen_at_commit = IsFrozen(mnt_);
    return ReflinkProvider::CommitSnapshots(set);
  }
  bool frozen_at_commit = false;

 private:
  std::string mnt_;
};

// Runs the requester sequence up to DoSnapshotSet with the filesystem writer.
vss::HResult SnapshotWithFsWriter(const std::vector<std::string>& volumes,
                                  std::shared_ptr<vss::Provider> p, uint32_t freeze_ms,
                                  const std::string& runtime_dir,
                                  std::unique_ptr<vss::BackupComponents>* out,
                                  std::vector<vss::Guid>* snaps = nullptr) {
  vss::RequesterOptions ro;
  ro.runtime_dir = runtime_dir;
  auto bc = std::make_unique<vss::BackupComponents>(
      std::vector<std::shared_ptr<vss::Writer>>{std::make_shared<vss::FsFreezeWriter>(freeze_ms)},
      std::vector<std::shared_ptr<vss::Provider>>{p}, ro);
  std::shared_ptr<vss::Async> a;
  bc->InitializeForBackup();
  bc->SetBackupState(true, false, vss::BackupType::kFull);
  bc->GatherWriterMetadata(&a);
  vss::WaitForAsync(a);
  const vss::WriterMetadata* md = bc->GetWriterMetadata(0);
  const auto& c = md->components.at(0);
  bc->AddComponent(md->instance_id, md->class_id, c.type, c.logical_path, c.name);
  vss::Guid set, snap;
  bc->StartSnapshotSet(&set);
  for (const auto& volume : volumes) {
    if (auto hr = bc->AddToSnapshotSet(volume, "", &snap); hr != vss::S_OK_) {
      *out = std::move(bc);
      return hr;
    }
    if (snaps) snaps->push_back(snap);
  }
  bc->PrepareForBackup(&a);
  vss::WaitForAsync(a);
  vss::HResult hr = bc->DoSnapshotSet(&a);
  if (hr == vss::S_OK_) hr = vss::WaitForAsync(a);
  *out = std::move(bc);
  return hr;
}

TEST_F(FrozenFsTest, TheFilesystemIsFrozenForTheCommitAndThawedAfter) {
  auto p = std::make_shared<ProbingProvider>(state_.state_dir(), mnt_);
  std::unique_ptr<vss::BackupComponents> bc;
  ASSERT_EQ(SnapshotWithFsWriter({loop_}, p, 60000, state_.runtime_dir(), &bc), vss::S_OK_)
      << bc->last_error();
  EXPECT_TRUE(p->frozen_at_commit) << "the provider committed while the filesystem was live";
  EXPECT_FALSE(IsFrozen(mnt_));
  EXPECT_TRUE(WritableWithin(mnt_, std::chrono::milliseconds(5000)));
  auto ev = bc->event_log();
  bc.reset();  // release deletes the clone
  for (auto& e : fs::directory_iterator(xfs_))
    EXPECT_EQ(e.path().filename().string().find(".gnomon-snap-"), std::string::npos);
}

// Whether the file at path holds `block` at some 4 KiB-aligned offset.
bool HoldsBlock(const std::string& path, const std::string& block) {
  std::ifstream f(path, std::ios::binary);
  std::string buf(1 << 20, '\0');
  while (f.read(buf.data(), buf.size()) || f.gcount() > 0) {
    for (std::streamsize o = 0; o + 4096 <= f.gcount(); o += 4096)
      if (buf.compare(o, 4096, block) == 0) return true;
    if (f.gcount() < static_cast<std::streamsize>(buf.size())) break;
  }
  return false;
}

// A provider that looks, before the freeze, whether a block written to the
// filesystem has reached its backing file.
class FlushProbe : public vss::ReflinkProvider {
 public:
  FlushProbe(std::string state, std::string backing, std::string block)
      : ReflinkProvider(state), backing_(backing), block_(block) {}
  vss::HResult BeginPrepareSnapshot(const vss::Guid& set, const vss::Guid& snap,
                                    const vss::VolumeIdentity& v) override {
    on_disk_before_freeze = HoldsBlock(backing_, block_);
    return ReflinkProvider::BeginPrepareSnapshot(set, snap, v);
  }
  bool on_disk_before_freeze = false;

 private:
  std::string backing_, block_;
};

// The filesystem writer flushes in PrepareForSnapshot, so FIFREEZE has
// little left to write inside the freeze window.
TEST_F(FrozenFsTest, DirtyDataIsFlushedBeforeTheFreezeWindowOpens) {
  // No fsync: the block sits in the page cache. A `sync` by a test running
  // beside this one may write it back anyway; then try another block.
  std::string block;
  for (int attempt = 0; attempt < 5 && block.empty(); ++attempt) {
    const std::vector<uint8_t> bytes = test::RandomBytes(4096, 77 + attempt);
    test::WriteFile(mnt_ + "/dirty-" + std::to_string(attempt), bytes);
    std::string b(bytes.begin(), bytes.end());
    if (!HoldsBlock(disk_, b)) block = b;
  }
  ASSERT_FALSE(block.empty()) << "written back at once five times; the test proves nothing";
  auto p = std::make_shared<FlushProbe>(state_.state_dir(), disk_, block);
  std::unique_ptr<vss::BackupComponents> bc;
  ASSERT_EQ(SnapshotWithFsWriter({loop_}, p, 60000, state_.runtime_dir(), &bc), vss::S_OK_)
      << bc->last_error();
  EXPECT_TRUE(p->on_disk_before_freeze) << "PrepareForSnapshot left the data to FIFREEZE";
  EXPECT_GE(bc->frozen_ms(), 0.0);
}

// A filesystem that cannot write back its data (an ext4 on a loop device
// whose backing tmpfs is full): FIFREEZE would succeed regardless, so the
// filesystem writer's syncfs in PrepareForSnapshot is what vetoes.
TEST(FsFreezeWriterTest, AWritebackErrorInPrepareForSnapshotIsAVeto) {
  GNOMON_SKIP_IF(test::RootSkipReason());
  test::TempDir dir;
  const std::string tmp = dir / "tmpfs", mnt = dir / "mnt";
  fs::create_directories(tmp);
  fs::create_directories(mnt);
  ASSERT_EQ(Sh("mount -t tmpfs -o size=32M tmpfs " + tmp).exit_code, 0);
  std::string loop;
  struct Cleanup {
    std::function<void()> f;
    ~Cleanup() { f(); }
  } cleanup{[&] {
    Sh("umount " + mnt + " || umount -l " + mnt);
    if (!loop.empty()) Sh("losetup -d " + loop);
    Sh("umount -l " + tmp);
  }};
  ASSERT_EQ(Sh("truncate -s 256M " + tmp + "/disk.img && mkfs.ext4 -q -F -O ^has_journal " +
               "-E nodiscard,lazy_itable_init=1 " + tmp + "/disk.img")
                .exit_code,
            0);
  auto r = Sh("losetup -f --show " + tmp + "/disk.img");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  loop = r.out.substr(0, r.out.find('\n'));
  ASSERT_EQ(Sh("mount " + loop + " " + mnt).exit_code, 0);
  Sh("dd if=/dev/zero of=" + tmp + "/fill bs=1M 2>/dev/null");  // until the tmpfs is full
  // A `sync` by a test running beside this one may consume the error
  // before the writer opens the mount point; then try again.
  vss::FsFreezeWriter w;
  vss::SessionView view;
  view.volumes = {loop};
  vss::detail::EventContext ctx;
  for (int attempt = 0; attempt < 3 && ctx.failure == vss::S_OK_; ++attempt) {
    Sh("dd if=/dev/urandom of=" + mnt + "/data-" + std::to_string(attempt) +
       " bs=1M count=16 2>/dev/null");
    ctx = vss::detail::EventContext();
    ctx.session = &view;
    ctx.set_id_valid = true;
    vss::HandlerResult res = vss::CallHandler(w, vss::WriterEvent::kPrepareSnapshot, &ctx, {});
    EXPECT_EQ(res.ok, ctx.failure == vss::S_OK_);
  }
  EXPECT_EQ(ctx.failure, vss::VSS_E_WRITERERROR_NONRETRYABLE);
  EXPECT_NE(ctx.failure_message.find("writing back " + mnt + " failed"), std::string::npos)
      << ctx.failure_message;
}

// A provider whose commit signals the test and then never returns: the
// requester is stuck inside the freeze, where the test kills or stops it.
class StuckProvider : public vss::ReflinkProvider {
 public:
  StuckProvider(std::string state, int fd) : ReflinkProvider(state), fd_(fd) {}
  vss::HResult CommitSnapshots(const vss::Guid&) override {
    char c = 'F';
    if (::write(fd_, &c, 1) != 1) _exit(3);
    ::sleep(120);
    return vss::S_OK_;
  }

 private:
  int fd_;
};

// Forks a requester that freezes mnt and gets stuck in the commit; returns
// its pid once the filesystem is frozen.
pid_t StartStuckRequester(const std::string& loop, uint32_t freeze_ms, const std::string& state_dir,
                          const std::string& runtime_dir) {
  int p[2];
  if (::pipe(p) != 0) return -1;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    std::unique_ptr<vss::BackupComponents> bc;
    SnapshotWithFsWriter({loop}, std::make_shared<StuckProvider>(state_dir, p[1]), freeze_ms,
                         runtime_dir, &bc);
    _exit(0);
  }
  ::close(p[1]);
  char c = 0;
  ssize_t n = ::read(p[0], &c, 1);  // the child signals from inside the freeze
  ::close(p[0]);
  return n == 1 && c == 'F' ? pid : -1;
}

TEST_F(FrozenFsTest, RequesterKilledWhileFrozenThawsAtOnce) {
  pid_t pid = StartStuckRequester(loop_, 30000, state_.state_dir(), state_.runtime_dir());
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(IsFrozen(mnt_)) << "the requester should be inside the freeze";
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  std::chrono::milliseconds took{};
  // Far inside the 30 s freeze window: the guardian thaws on the dropped pipe.
  EXPECT_TRUE(WritableWithin(mnt_, std::chrono::milliseconds(5000), &took))
      << "the filesystem stayed frozen after the requester died";
  RecordProperty("thawed_after_ms", static_cast<int>(took.count()));
}

TEST_F(FrozenFsTest, RequesterStoppedWhileFrozenIsThawedWhenTheFreezeWindowEnds) {
  // SIGSTOP freezes the requester's own watchdog too: only the guardian,
  // a separate process, can keep the promise.
  pid_t pid = StartStuckRequester(loop_, 1000, state_.state_dir(), state_.runtime_dir());
  ASSERT_GT(pid, 0);
  ::kill(pid, SIGSTOP);
  auto t0 = Clock::now();
  ASSERT_TRUE(IsFrozen(mnt_));
  bool thawed = WritableWithin(mnt_, std::chrono::milliseconds(8000));
  auto elapsed = Clock::now() - t0;
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  EXPECT_TRUE(thawed) << "still frozen 8 s after a 1 s freeze window";
  EXPECT_GT(elapsed, std::chrono::milliseconds(300)) << "thawed before the window ended";
}

TEST_F(FrozenFsTest, PointInTimeImageWhileAWriterAppendsRecords) {
  Fill("100");
  std::string repo = dir_ / "repo";
  // Slower imaging (zstd 6, one thread), so the writer goes on for a while
  // after the snapshot, while the snapshot is read.
  ASSERT_EQ(Gnomon({"init", "--repo", repo, "--compression", "6"}).exit_code, 0);
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  writer_pid_ = ::fork();
  if (writer_pid_ == 0) {
    ::dup2(out[1], 1);
    execl(RECORD_WRITER_BIN, RECORD_WRITER_BIN, (mnt_ + "/records.txt").c_str(), "3000", nullptr);
    _exit(127);
  }
  ::close(out[1]);
  while (!fs::exists(mnt_ + "/records.txt") || fs::file_size(mnt_ + "/records.txt") < 10 * 2000)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto b = Gnomon({"--repo", repo, "--threads", "1", "backup", "--json", loop_});
  ::kill(writer_pid_, SIGTERM);
  char buf[64] = {};
  ssize_t n = ::read(out[0], buf, sizeof buf - 1);
  ::close(out[0]);
  ::waitpid(writer_pid_, nullptr, 0);
  writer_pid_ = -1;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  ASSERT_GT(n, 0);
  long written = std::atol(buf);
  double seconds = json::parse(b.out)["totals"]["seconds"].get<double>();

  ASSERT_EQ(Gnomon({"--repo", repo, "restore", "latest", dir_ / "restored.img"}).exit_code, 0);
  auto fsck = Sh("e2fsck -fn " + dir_ / "restored.img");
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out;
  fs::create_directories(dir_ / "r");
  ASSERT_EQ(Sh("mount -o loop,ro " + dir_ / "restored.img" + " " + dir_ / "r").exit_code, 0);
  std::string content;
  {
    std::ifstream f(dir_ / "r/records.txt", std::ios::binary);
    content.assign(std::istreambuf_iterator<char>(f), {});
  }  // closed before umount, which an open file would make fail (EBUSY)
  ASSERT_EQ(Sh("umount " + dir_ / "r").exit_code, 0);
  // An unbroken prefix of whole records: 1, 2, ..., K, nothing torn.
  ASSERT_EQ(content.size() % 10, 0u) << "a torn record at the end";
  long k = static_cast<long>(content.size() / 10);
  for (long i = 0; i < k; ++i) {
    char want[32];
    std::snprintf(want, sizeof want, "%09ld\n", i + 1);
    ASSERT_EQ(content.compare(static_cast<size_t>(i) * 10, 10, want), 0) << "record " << i + 1;
  }
  EXPECT_GE(k, 2000) << "records written before the backup began are missing";
  // The writer went on during the imaging; none of that reached the image.
  EXPECT_GT(written, k + 100) << "imaging took " << seconds << " s";
  RecordProperty("records_in_image", static_cast<int>(k));
  RecordProperty("records_written", static_cast<int>(written));
}

TEST_F(FrozenFsTest, SnapshotsLeftByAKilledBackupAreListedAndDeleted) {
  Fill("120");
  std::string repo = dir_ / "repo";
  ASSERT_EQ(Gnomon({"init", "--repo", repo, "--compression", "19"}).exit_code, 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    int nul = ::open("/dev/null", O_RDWR);
    ::dup2(nul, 1);
    ::dup2(nul, 2);
    std::string bin = test::GnomonBinary();
    execl(bin.c_str(), bin.c_str(), "--repo", repo.c_str(), "--threads", "1", "backup",
          loop_.c_str(), nullptr);
    _exit(127);
  }
  json snaps;
  for (int i = 0; i < 3000; ++i) {  // until the snapshot exists (up to 30 s)
    snaps = json::parse(Gnomon({"snapshots", "--json"}).out);
    if (!snaps.empty() && snaps[0]["state"] == "committed") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_TRUE(snaps[0]["in_use"].get<bool>());
  std::string id = snaps[0]["id"], clone = snaps[0]["device"];
  EXPECT_EQ(Gnomon({"snapshots", "--delete", id}).exit_code, 1) << "in use: must be refused";
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  EXPECT_TRUE(WritableWithin(mnt_, std::chrono::milliseconds(5000)));
  snaps = json::parse(Gnomon({"snapshots", "--json"}).out);
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_FALSE(snaps[0]["in_use"].get<bool>());
  EXPECT_TRUE(fs::exists(clone));
  auto human = Gnomon({"snapshots"});
  EXPECT_NE(human.out.find("left behind"), std::string::npos) << human.out;
  auto del = Gnomon({"snapshots", "--delete-all"});
  EXPECT_EQ(del.exit_code, 0) << del.err;
  EXPECT_FALSE(fs::exists(clone));
  EXPECT_EQ(json::parse(Gnomon({"snapshots", "--json"}).out).size(), 0u);
}

TEST_F(FrozenFsTest, AFilesystemSomeoneElseFrozeIsToleratedAndLeftToThem) {
  // Frozen by another tool (fsfreeze, a hypervisor agent): FIFREEZE is EBUSY.
  ASSERT_EQ(Sh("fsfreeze -f " + mnt_).exit_code, 0);
  std::string repo = dir_ / "repo";
  ASSERT_EQ(Gnomon({"init", "--repo", repo}).exit_code, 0);
  auto b = Gnomon({"--repo", repo, "backup", loop_});
  bool still_frozen = IsFrozen(mnt_);
  Sh("fsfreeze -u " + mnt_);
  EXPECT_EQ(b.exit_code, 0) << b.err;
  EXPECT_TRUE(still_frozen) << "gnomon thawed a freeze that was not its own";
}

TEST_F(FrozenFsTest, SeveralVolumesAreSnapshottedInsideOneHoldWindow) {
  // A second ext4 on another loop device over another file on the same XFS.
  std::string disk2 = xfs_ + "/disk2.img";
  ASSERT_EQ(Sh("truncate -s 64M " + disk2 + " && mkfs.ext4 -q -F " + disk2).exit_code, 0);
  test::LoopDevice loop2(disk2);
  fs::create_directories(dir_ / "mnt2");
  ASSERT_EQ(Sh("mount " + loop2.device() + " " + dir_ / "mnt2").exit_code, 0);
  std::unique_ptr<vss::BackupComponents> bc;
  std::vector<vss::Guid> snaps;
  ASSERT_EQ(
      SnapshotWithFsWriter({loop_, loop2.device()},
                           std::make_shared<ProbingProvider>(state_.state_dir(), dir_ / "mnt2"),
                           60000, state_.runtime_dir(), &bc, &snaps),
      vss::S_OK_)
      << bc->last_error();
  ASSERT_EQ(snaps.size(), 2u);
  const vss::Guid s1 = snaps[0], s2 = snaps[1];
  int commits = 0;
  for (const auto& e : bc->event_log()) commits += e.event == "CommitSnapshots";
  EXPECT_EQ(commits, 1) << "both clones belong in one commit, inside one hold window";
  vss::SnapshotProperties p1, p2;
  ASSERT_EQ(bc->GetSnapshotProperties(s1, &p1), vss::S_OK_);
  ASSERT_EQ(bc->GetSnapshotProperties(s2, &p2), vss::S_OK_);
  EXPECT_TRUE(fs::exists(p1.device));
  EXPECT_TRUE(fs::exists(p2.device));
  EXPECT_EQ(p2.size, 64u << 20);
  bc.reset();
  EXPECT_FALSE(fs::exists(p1.device));
  EXPECT_FALSE(fs::exists(p2.device));
  Sh("umount " + dir_ / "mnt2");
}

TEST_F(FrozenFsTest, ABackupThatFailsAfterTheSnapshotStillDeletesIt) {
  Fill("30");
  std::string repo = dir_ / "repo";
  ASSERT_TRUE(Repository::Init(Env::Default(), repo, RepoConfig{}).ok());
  test::FaultEnv env(Env::Default());
  env.space_left = 1 << 20;  // the repository's disk fills up mid-backup
  std::unique_ptr<Repository> r;
  ASSERT_TRUE(Repository::Open(&env, repo, LockMode::kExclusive, "test", &r).ok());
  BackupOptions o;
  o.sources = {loop_};
  o.snapshot.state_dir = state_.state_dir();
  o.snapshot.runtime_dir = state_.runtime_dir();
  BackupResult res;
  Status s = RunBackup(r.get(), o, &res);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("No space left"), std::string::npos) << s.message();
  for (auto& e : fs::directory_iterator(xfs_))
    EXPECT_EQ(e.path().filename().string().find(".gnomon-snap-"), std::string::npos) << e.path();
  EXPECT_EQ(json::parse(Gnomon({"snapshots", "--json"}).out).size(), 0u);
  EXPECT_FALSE(IsFrozen(mnt_));
}

TEST_F(FrozenFsTest, SqliteWriterKeepsEveryRestoredDatabaseConsistent) {
  GNOMON_SKIP_IF(Sh("command -v sqlite3 && command -v python3").exit_code != 0
                     ? "sqlite3 and python3 are needed"
                     : "");
  const std::string db = mnt_ + "/app.db";
  writer_pid_ = StartSqliteApp(db);
  for (int i = 0; i < 500 && SqliteCount(db) < 200; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_GE(SqliteCount(db), 200) << "the application did not start committing";
  pid_t& writer = app_writer_pid_;
  writer = ::fork();
  if (writer == 0) {
    execl(SQLITE_WRITER_BIN, SQLITE_WRITER_BIN, "--dir", state_.writer_dir().c_str(), db.c_str(),
          nullptr);
    _exit(127);
  }
  for (int i = 0; i < 500 && !fs::exists(state_.writer_dir() + "/sqlite.sock"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::string repo = dir_ / "repo";
  ASSERT_EQ(Gnomon({"init", "--repo", repo}).exit_code, 0);
  fs::create_directories(dir_ / "r");
  // A backup option the writer does not know, or a value it does not allow,
  // fails its PrepareForBackup: exit 4, nothing stored.
  for (const char* bad : {"sqlite:vacuum=yes", "sqlite:checkpoint=sometimes"}) {
    auto r = Gnomon({"--repo", repo, "backup", "--writer-option", bad, loop_});
    EXPECT_EQ(r.exit_code, 4) << bad << ": " << r.err;
    EXPECT_NE(r.err.find("checkpoint=passive|full|restart|truncate"), std::string::npos) << r.err;
  }
  EXPECT_EQ(json::parse(Gnomon({"--repo", repo, "list", "--json"}).out).size(), 0u);
  // A full, then incrementals: from the second on, each advances the base
  // of the one before in place while the application commits.
  std::string parent_stamp;
  for (int round = 0; round < 4; ++round) {
    const long before = SqliteCount(db);
    std::vector<std::string> args = {"--repo", repo,     "backup",
                                     "--json", "--type", round == 0 ? "full" : "incremental"};
    if (round == 1) args.insert(args.end(), {"--writer-option", "sqlite:checkpoint=full"});
    args.push_back(loop_);
    auto b = Gnomon(args);
    ASSERT_EQ(b.exit_code, 0) << b.err;
    const long after = SqliteCount(db);
    if (round > 0) {
      const json done = json::parse(b.out);
      EXPECT_EQ(done["volumes"][0]["tracking"], "reflink-fiemap") << b.out;
    }
    // The writer took part: its component carries its stamp.
    auto show = Gnomon({"--repo", repo, "show", "--json", "latest"});
    json sq;
    std::string seen;
    const json shown = json::parse(show.out);  // outlives the loop
    for (const auto& c : shown["vss"]["bcd"]["components"]) {
      seen += c["writer_name"].get<std::string>() + ": " + c["name"].get<std::string>() + " [" +
              c["backup_stamp"].get<std::string>().substr(0, 40) + "]\n";
      if (c["writer_name"] == "sqlite" && c["name"] == db) sq = c;
    }
    ASSERT_FALSE(sq.is_null()) << seen << b.err;
    const json stamp = json::parse(sq["backup_stamp"].get<std::string>(), nullptr, false);
    EXPECT_EQ(stamp.value("stamp", ""), "gnomon.sqlite-stamp/1") << sq.dump();
    EXPECT_GT(stamp.value("page_count", 0), 0) << sq.dump();
    const json md = json::parse(sq["backup_metadata"].get<std::string>(), nullptr, false);
    ASSERT_TRUE(md.is_object()) << sq.dump();
    EXPECT_EQ(md["options"]["checkpoint"], round == 1 ? "full" : "truncate") << sq.dump();
    EXPECT_EQ(md["checkpoint"]["mode"], round == 1 ? "full" : "truncate") << sq.dump();
    if (round == 0) {
      EXPECT_EQ(sq["previous_backup_stamp"], "");
      EXPECT_FALSE(md.contains("since_previous")) << sq.dump();
    } else {
      // Each incremental handed the writer exactly the stamp it set on the
      // backup before, and the writer knew it for its own.
      EXPECT_EQ(sq["previous_backup_stamp"], parent_stamp);
      EXPECT_EQ(md["previous_stamp"], parent_stamp) << "what the writer received";
      const json& since = md["since_previous"];
      EXPECT_EQ(since["valid"], true) << since.dump();
      EXPECT_EQ(since["issued_by_this_writer"], true) << since.dump();
      EXPECT_EQ(since["changed"], true) << "the application commits all the time: " << since.dump();
      EXPECT_EQ(since["schema_changed"], false) << since.dump();
    }
    parent_stamp = sq["backup_stamp"];

    ASSERT_EQ(Gnomon({"--repo", repo, "restore", "--overwrite", "latest", dir_ / "restored.img"})
                  .exit_code,
              0);
    auto fsck = Sh("e2fsck -fn " + dir_ / "restored.img");
    EXPECT_EQ(fsck.exit_code, 0) << fsck.out;
    ASSERT_EQ(Sh("mount -o loop,ro " + dir_ / "restored.img" + " " + dir_ / "r").exit_code, 0);
    // SQLite needs to write the -shm of a WAL database: check a copy.
    Sh("rm -rf " + dir_ / "copy" + " && mkdir " + dir_ / "copy" + " && cp " + dir_ / "r/app.db*" +
       " " + dir_ / "copy/");
    ASSERT_EQ(Sh("umount " + dir_ / "r").exit_code, 0);
    const std::string copy = dir_ / "copy/app.db";
    auto check = Sh("sqlite3 '" + copy + "' 'pragma integrity_check'");
    EXPECT_EQ(check.out, "ok\n") << check.err;
    auto rows = Sh("sqlite3 '" + copy + "' 'select count(*), min(id), max(id) from t'");
    long n = 0, lo = 0, hi = 0;
    ASSERT_EQ(std::sscanf(rows.out.c_str(), "%ld|%ld|%ld", &n, &lo, &hi), 3) << rows.out;
    // Committed transactions, a prefix of them, with nothing torn.
    EXPECT_EQ(lo, 1);
    EXPECT_EQ(hi, n) << "rows missing inside the prefix";
    EXPECT_GE(n, before) << "transactions committed before the backup are missing";
    EXPECT_LE(n, after);
  }
  ::kill(writer, SIGTERM);
  ::waitpid(writer, nullptr, 0);
  writer = -1;
}

TEST_F(FrozenFsTest, PostgresWriterBacksUpALoadedServerThatRecoversAndChecksClean) {
  const std::string bin = PostgresBinDir();
  GNOMON_SKIP_IF(bin.empty() || Sh("id postgres").exit_code != 0
                     ? "PostgreSQL (Debian's postgresql package) is needed"
                     : "");
  PgServer pg;
  StartPostgres(bin, &pg);
  if (HasFatalFailure()) return;
  const std::string& sock = pg.sock;
  const std::string& port = pg.port;
  auto bench_init =
      Sh(pg.bin + "/pgbench -i -s 2 -q -h " + sock + " -p " + port + " -U postgres postgres 2>&1");
  ASSERT_EQ(bench_init.exit_code, 0) << bench_init.out;
  ASSERT_EQ(pg.Sql("create extension amcheck").exit_code, 0);

  pid_t& writer = app_writer_pid_;
  writer = ::fork();
  if (writer == 0) {
    const std::string conninfo =
        "host=" + sock + " port=" + port + " user=postgres dbname=postgres";
    execl(POSTGRES_WRITER_BIN, POSTGRES_WRITER_BIN, "--dir", state_.writer_dir().c_str(),
          "--data-dir", pg.data.c_str(), "--conninfo", conninfo.c_str(), nullptr);
    _exit(127);
  }
  for (int i = 0; i < 500 && !fs::exists(state_.writer_dir() + "/postgresql.sock"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  // A pgbench load for the whole backup.
  writer_pid_ = ::fork();
  if (writer_pid_ == 0) {
    int nul = ::open("/dev/null", O_RDWR);
    ::dup2(nul, 1);
    ::dup2(nul, 2);
    execl((pg.bin + "/pgbench").c_str(), "pgbench", "-c", "2", "-T", "120", "-h", sock.c_str(),
          "-p", port.c_str(), "-U", "postgres", "postgres", nullptr);
    _exit(127);
  }
  for (int i = 0; i < 1000 && pg.Count("pgbench_history") < 300; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const long before = pg.Count("pgbench_history");
  ASSERT_GE(before, 300) << "pgbench did not get going";

  std::string repo = dir_ / "repo";
  ASSERT_EQ(Gnomon({"init", "--repo", repo}).exit_code, 0);
  auto b = Gnomon(
      {"--repo", repo, "backup", "--json", "--writer-option", "postgresql:checkpoint=fast", loop_});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const std::string full_id = json::parse(b.out)["id"];
  // (Whether pgbench got a commit in during a backup this short is up to
  // the scheduler; that it ran throughout is what matters.)
  const long after = pg.Count("pgbench_history");
  ::kill(writer_pid_, SIGTERM);
  ::waitpid(writer_pid_, nullptr, 0);
  writer_pid_ = -1;

  // The writer's label is stored with the backup, with the option it was
  // given and its stamp: the cluster and the checkpoint's WAL position.
  auto pg_component = [&](const std::string& id) {
    const json shown = json::parse(Gnomon({"--repo", repo, "show", "--json", id}).out);
    for (const auto& c : shown["vss"]["bcd"]["components"])
      if (c["writer_name"] == "postgresql") return c;
    return json();
  };
  const json full = pg_component(full_id);
  ASSERT_FALSE(full.is_null());
  const json full_md = json::parse(full["backup_metadata"].get<std::string>());
  const std::string label = full_md.value("label", "");
  EXPECT_NE(label.find("START WAL LOCATION"), std::string::npos) << label;
  EXPECT_NE(label.find("LABEL: gnomon"), std::string::npos) << label;
  EXPECT_EQ(full_md["options"]["checkpoint"], "fast");
  // checkpoint=fast begins its CHECKPOINT in PrepareForBackup; it ended
  // before the freeze (else the backup would have failed).
  EXPECT_GE(full_md.value("prepare_checkpoint_ms", -1), 0) << full_md.dump();
  const json full_stamp = json::parse(full["backup_stamp"].get<std::string>(), nullptr, false);
  EXPECT_EQ(full_stamp.value("stamp", ""), "gnomon.postgresql-stamp/1") << full.dump();
  EXPECT_EQ(full_stamp.value("start_lsn", ""), full_md.value("start_lsn", "?"));
  EXPECT_FALSE(full_stamp.value("system_identifier", "").empty()) << full.dump();

  // An incremental: the writer gets back exactly the stamp it set on the
  // full, knows it for its own, and reports the WAL written since.
  auto inc = Gnomon({"--repo", repo, "backup", "--json", "--type", "incremental", loop_});
  ASSERT_EQ(inc.exit_code, 0) << inc.err;
  const json incr = pg_component(json::parse(inc.out)["id"]);
  ASSERT_FALSE(incr.is_null());
  EXPECT_EQ(incr["previous_backup_stamp"], full["backup_stamp"]);
  const json inc_md = json::parse(incr["backup_metadata"].get<std::string>());
  EXPECT_EQ(inc_md["previous_stamp"], full["backup_stamp"]) << "what the writer received";
  const json& since = inc_md["since_previous"];
  EXPECT_EQ(since["valid"], true) << since.dump();
  EXPECT_EQ(since["issued_by_this_writer"], true) << since.dump();
  EXPECT_EQ(since["previous_start_lsn"], full_stamp["start_lsn"]) << since.dump();
  EXPECT_GT(since.value("wal_bytes", 0ull), 0ull) << "two checkpoints apart: " << since.dump();
  // A value the writer does not allow fails its PrepareForBackup: exit 4.
  auto bad =
      Gnomon({"--repo", repo, "backup", "--writer-option", "postgresql:checkpoint=never", loop_});
  EXPECT_EQ(bad.exit_code, 4) << bad.err;
  EXPECT_NE(bad.err.find("checkpoint='never' is not an allowed value"), std::string::npos)
      << bad.err;

  // Restore the full, and start the restored cluster (the original still
  // running elsewhere: its postmaster.pid in the image is stale).
  ASSERT_EQ(Gnomon({"--repo", repo, "restore", full_id, dir_ / "restored.img"}).exit_code, 0);
  auto fsck = Sh("e2fsck -fn " + dir_ / "restored.img");
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out;
  fs::create_directories(dir_ / "r");
  ASSERT_EQ(Sh("mount -o loop " + dir_ / "restored.img" + " " + dir_ / "r").exit_code, 0);
  cleanup_.push_back("umount " + dir_ / "r");
  PgServer restored{pg.bin, dir_ / "r/pg/data", sock, std::to_string(std::stoi(port) + 1)};
  Sh("rm -f " + restored.data + "/postmaster.pid");
  auto rstart = restored.Start();
  ASSERT_EQ(rstart.exit_code, 0) << rstart.out << Sh("cat " + dir_ / "r/pg/server.log").out;
  cleanup_.push_back(restored.StopCmd());
  const long restored_rows = restored.Count("pgbench_history");
  EXPECT_GE(restored_rows, before) << "committed transactions are missing";
  EXPECT_LE(restored_rows, after);
  auto check = Sh(pg.bin + "/pg_amcheck -h " + sock + " -p " + restored.port +
                  " -U postgres --heapallindexed --install-missing postgres 2>&1");
  EXPECT_EQ(check.exit_code, 0) << check.out;
}

}  // namespace
}  // namespace gnomon
