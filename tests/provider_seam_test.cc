// The provider seam (issue 12 §2): a provider that lives only in this test
// drives a full and an incremental backup through the real engine, which
// names no concrete provider. The provider snapshots a plain file by copying
// it, and tracks changes with a hand-made log of written ranges, the way a
// block-layer tracker would: the engine reads exactly what the log names.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <mutex>

#include "base/random.h"
#include "base/system.h"
#include "engine/backup_job.h"
#include "engine/restore_job.h"
#include "engine/snapshots_admin.h"
#include "tests/test_util.h"
#include "vss/volume_stamp.h"

namespace gnomon {
namespace {

namespace fs = std::filesystem;
using vss::ByteRange;
using vss::Guid;
using vss::HResult;
using vss::SnapshotProperties;
using vss::SnapshotState;

// Snapshots one regular file by copying it into the state directory. Writes
// to the file go through Write(), which logs their ranges until the next
// base is retained.
class RangeLogProvider : public vss::Provider {
 public:
  RangeLogProvider(std::string file, std::string state_dir)
      : file_(std::move(file)),
        snap_dir_(state_dir + "/range-log"),
        registry_(state_dir + "/snapshots") {
    fs::create_directories(snap_dir_);
  }
  std::string name() const override { return "test-range-log"; }
  vss::ChangeTracker tracker() const override { return vss::ChangeTracker::kRangeLog; }

  void Write(uint64_t off, const std::vector<uint8_t>& data) {
    int fd = ::open(file_.c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(off)),
              static_cast<ssize_t>(data.size()));
    ::close(fd);
    std::lock_guard<std::mutex> g(mu_);
    log_.push_back({off, data.size()});
  }
  // How often the engine asked what changed, and against which base.
  int asked = 0;
  std::string asked_base;
  // Set: the provider says it cannot tell what changed (its log overflowed).
  bool refuse = false;

  Status IsVolumeSupported(const vss::VolumeIdentity& v) override {
    if (v.real_path == fs::canonical(file_).string()) return Status::OK();
    return Status::Unsupported("the test provider serves " + file_ + " only");
  }
  HResult BeginPrepareSnapshot(const Guid& set, const Guid& snap,
                               const vss::VolumeIdentity& v) override {
    SnapshotProperties p;
    p.snapshot_id = snap;
    p.snapshot_set_id = set;
    p.volume = v.path;
    p.provider = name();
    p.device = snap_dir_ + "/" + snap.ToString() + ".img";
    p.size = v.size;
    p.created = NowRfc3339Seconds();
    p.pid = ::getpid();
    p.host = HostName();
    p.generation = RandomHexId(16);
    std::lock_guard<std::mutex> g(mu_);
    snaps_[snap] = p;
    return vss::S_OK_;
  }
  HResult CommitSnapshots(const Guid& set) override {
    std::lock_guard<std::mutex> g(mu_);
    for (auto& [id, p] : snaps_) {
      if (p.snapshot_set_id != set) continue;
      std::error_code ec;
      if (!fs::copy_file(file_, p.device, fs::copy_options::overwrite_existing, ec))
        return Fail(vss::VSS_E_UNEXPECTED_PROVIDER_ERROR, ec.message());
      p.state = SnapshotState::kCommitted;
      // What was logged before this point is in the copy.
      pending_log_ = log_;
    }
    return vss::S_OK_;
  }
  HResult PreFinalCommitSnapshots(const Guid& set) override {
    std::lock_guard<std::mutex> g(mu_);
    for (auto& [id, p] : snaps_) {
      if (p.snapshot_set_id != set) continue;
      if (Status s = registry_.Put(p); !s.ok())
        return Fail(vss::VSS_E_UNEXPECTED_PROVIDER_ERROR, s.message());
    }
    return vss::S_OK_;
  }
  HResult AbortSnapshots(const Guid& set) override {
    std::lock_guard<std::mutex> g(mu_);
    for (auto it = snaps_.begin(); it != snaps_.end();)
      if (it->second.snapshot_set_id == set) {
        Remove(it->second);
        it = snaps_.erase(it);
      } else {
        ++it;
      }
    return vss::S_OK_;
  }
  HResult GetSnapshotProperties(const Guid& snap, SnapshotProperties* out) override {
    std::lock_guard<std::mutex> g(mu_);
    auto it = snaps_.find(snap);
    if (it == snaps_.end()) return vss::VSS_E_OBJECT_NOT_FOUND;
    *out = it->second;
    return vss::S_OK_;
  }
  HResult DeleteSnapshot(const Guid& snap) override {
    std::lock_guard<std::mutex> g(mu_);
    auto it = snaps_.find(snap);
    if (it == snaps_.end()) return vss::VSS_E_OBJECT_NOT_FOUND;
    Remove(it->second);
    snaps_.erase(it);
    return vss::S_OK_;
  }
  HResult DeleteLeftover(const SnapshotProperties& p) override {
    Remove(p);
    return vss::S_OK_;
  }
  HResult RetainSnapshot(const Guid& snap, const vss::BaseLabel& label) override {
    std::lock_guard<std::mutex> g(mu_);
    auto it = snaps_.find(snap);
    if (it == snaps_.end()) return vss::VSS_E_OBJECT_NOT_FOUND;
    SnapshotProperties p = it->second;
    p.state = SnapshotState::kBase;
    p.backup_id = label.backup_id;
    p.backup_type = label.backup_type;
    p.volume_key = label.volume_key;
    p.for_differentials = label.for_differentials;
    p.file_id = vss::FileGeneration(p.device);
    p.pid = -1;
    if (Status s = registry_.Put(p); !s.ok())
      return Fail(vss::VSS_E_UNEXPECTED_PROVIDER_ERROR, s.message());
    snaps_.erase(it);
    // The log restarts at the new base: what was written after the copy
    // stays in it.
    log_.erase(log_.begin(), log_.begin() + static_cast<long>(pending_log_.size()));
    base_ = snap;
    return vss::S_OK_;
  }
  Status ChangedRanges(const Guid& snap, const SnapshotProperties& base,
                       std::vector<ByteRange>* out) override {
    std::lock_guard<std::mutex> g(mu_);
    ++asked;
    asked_base = base.snapshot_id.ToString();
    if (refuse) return Status::Unsupported("the range log overflowed");
    if (!snaps_.count(snap) || base.snapshot_id != base_)
      return Status::NotFound("the range log does not start at base " +
                              base.snapshot_id.ToString());
    *out = pending_log_;  // in write order, as a log is: the engine sorts it
    return Status::OK();
  }

 private:
  void Remove(const SnapshotProperties& p) {
    ::unlink(p.device.c_str());
    registry_.Remove(p.snapshot_id);
  }
  std::string file_, snap_dir_;
  vss::SnapshotRegistry registry_;
  std::mutex mu_;
  std::map<Guid, SnapshotProperties> snaps_;
  std::vector<ByteRange> log_, pending_log_;
  Guid base_;
};

constexpr uint32_t kChunk = 64 << 10;
constexpr uint64_t kVolume = 8 << 20;

class ProviderSeamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    vol_ = dir_ / "vol.img";
    test::WriteFile(vol_, test::TextLikeBytes(kVolume, 7));
    provider_ = std::make_shared<RangeLogProvider>(vol_, state_.state_dir());
    RepoConfig c;
    c.chunk_size = kChunk;
    c.pack_size = 1 << 20;
    ASSERT_TRUE(Repository::Init(Env::Default(), dir_ / "repo", c).ok());
    ASSERT_TRUE(
        Repository::Open(Env::Default(), dir_ / "repo", LockMode::kExclusive, "t", &repo_).ok());
  }
  BackupRecord Backup(const std::string& type) {
    BackupOptions o;
    o.sources = {vol_};
    o.type = type;
    o.snapshot.providers = {provider_};
    o.snapshot.state_dir = state_.state_dir();
    o.snapshot.runtime_dir = state_.runtime_dir();
    o.snapshot.writer_dir = state_.writer_dir();
    o.snapshot.hooks_dir = state_.hooks_dir();
    BackupResult r;
    Status s = RunBackup(repo_.get(), o, &r);
    EXPECT_TRUE(s.ok()) << s.message();
    return r.record;
  }
  void ExpectRestores(const std::string& id, const std::vector<uint8_t>& expect) {
    RestoreOptions o;
    o.backup = id;
    o.target = dir_ / "restored";
    o.overwrite = true;
    RestoreResult r;
    Status s = RunRestore(repo_.get(), o, &r);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_TRUE(test::ReadFile(o.target) == expect) << "backup " << id << " restores wrong bytes";
  }

  test::IsolatedState state_;
  test::TempDir dir_;
  std::string vol_;
  std::shared_ptr<RangeLogProvider> provider_;
  std::unique_ptr<Repository> repo_;
};

TEST_F(ProviderSeamTest, FullAndIncrementalThroughAProviderTheEngineHasNeverHeardOf) {
  const BackupRecord full = Backup("full");
  ASSERT_EQ(full.volumes.size(), 1u);
  EXPECT_EQ(full.volumes[0].tracking, kTrackingFullRead);
  // The full's snapshot is kept as the base, recorded by the test provider.
  auto snaps = ListSnapshots(state_.state_dir());
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_EQ(snaps[0].props.provider, "test-range-log");
  EXPECT_EQ(snaps[0].props.state, SnapshotState::kBase);
  EXPECT_EQ(snaps[0].props.backup_id, full.id);
  const std::string base_id = snaps[0].props.snapshot_id.ToString();

  // Three writes: one small (a patch), one that spans two chunks, and one
  // that fills a chunk.
  provider_->Write(3 * kChunk + 100, test::RandomBytes(4000, 1));
  provider_->Write(10 * kChunk - 512, test::RandomBytes(1024, 2));
  provider_->Write(40 * kChunk, test::RandomBytes(kChunk, 3));
  const std::vector<uint8_t> now = test::ReadFile(vol_);

  const BackupRecord inc = Backup("incremental");
  ASSERT_EQ(inc.volumes.size(), 1u);
  const VolumeRecord& v = inc.volumes[0];
  EXPECT_EQ(v.tracking, "range-log") << v.tracking_reason;
  EXPECT_EQ(v.parent, full.id);
  EXPECT_EQ(provider_->asked, 1);
  EXPECT_EQ(provider_->asked_base, base_id);
  // Exactly the logged chunks were read: 3, 9, 10 and 40.
  EXPECT_EQ(v.stats.changed_chunks, 4u);
  EXPECT_EQ(v.stats.unchanged_chunks, kVolume / kChunk - 4);
  EXPECT_LE(v.stats.bytes_read, 4u * kChunk);
  EXPECT_GE(v.stats.patched_chunks, 2u);
  ExpectRestores(inc.id, now);
  ExpectRestores(full.id, test::TextLikeBytes(kVolume, 7));

  // The incremental's base replaces the full's: only a full made with
  // --for-differentials keeps its base beside the incrementals'.
  snaps = ListSnapshots(state_.state_dir());
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_EQ(snaps[0].props.backup_type, vss::BackupType::kIncremental);
}

TEST_F(ProviderSeamTest, ABaseWhoseRecordIsGoneMeansAFullReadThatSaysWhy) {
  const BackupRecord full = Backup("full");
  // The base is gone from the provider's point of view: its log no longer
  // starts there.
  for (auto& e : ListSnapshots(state_.state_dir()))
    ASSERT_TRUE(DeleteRecorded(state_.state_dir(), e.props, {provider_}).ok());
  provider_->Write(5 * kChunk, test::RandomBytes(100, 4));
  const BackupRecord inc = Backup("incremental");
  const VolumeRecord& v = inc.volumes[0];
  EXPECT_EQ(v.tracking, kTrackingFullRead);
  EXPECT_NE(v.tracking_reason.find("is gone"), std::string::npos) << v.tracking_reason;
  EXPECT_EQ(provider_->asked, 0);  // the volume writer already said no
  EXPECT_EQ(v.stats.changed_chunks, 1u);
  ExpectRestores(inc.id, test::ReadFile(vol_));
}

// Writes in one chunk, the later one at a lower offset: a log in write
// order must not lose the first (found by review: the planner merged
// ranges assuming ascending order).
TEST_F(ProviderSeamTest, RangesInWriteOrderLoseNothing) {
  Backup("full");
  provider_->Write(5 * kChunk + 8192, test::RandomBytes(4096, 5));
  provider_->Write(5 * kChunk, test::RandomBytes(4096, 6));
  const BackupRecord inc = Backup("incremental");
  EXPECT_EQ(inc.volumes[0].tracking, "range-log") << inc.volumes[0].tracking_reason;
  EXPECT_EQ(inc.volumes[0].stats.changed_chunks, 1u);
  EXPECT_EQ(inc.volumes[0].stats.patched_chunks, 1u);
  ExpectRestores(inc.id, test::ReadFile(vol_));
}

TEST_F(ProviderSeamTest, AProviderThatCannotSayWhatChangedMeansAFullReadThatSaysWhy) {
  Backup("full");
  provider_->Write(5 * kChunk, test::RandomBytes(100, 4));
  provider_->refuse = true;
  const BackupRecord inc = Backup("incremental");
  const VolumeRecord& v = inc.volumes[0];
  EXPECT_EQ(provider_->asked, 1);
  EXPECT_EQ(v.tracking, kTrackingFullRead);
  EXPECT_NE(v.tracking_reason.find("the range log overflowed"), std::string::npos)
      << v.tracking_reason;
  EXPECT_EQ(v.stats.changed_chunks, 1u);
  ExpectRestores(inc.id, test::ReadFile(vol_));
}

// The registry is not the authority on which file is the base: a record
// that names another file than the stamp (stored in the repository) does,
// even one made to look untouched, is not trusted (found by review: a
// differential then read nothing and restored the wrong bytes).
TEST_F(ProviderSeamTest, ARegistryRecordNamingAnotherFileIsNotTrusted) {
  Backup("full");
  provider_->Write(7 * kChunk, test::RandomBytes(kChunk, 8));
  auto snaps = ListSnapshots(state_.state_dir());
  ASSERT_EQ(snaps.size(), 1u);
  vss::SnapshotProperties forged = snaps[0].props;
  forged.device = dir_ / "decoy.img";
  ASSERT_TRUE(fs::copy_file(vol_, forged.device));  // today's bytes: "nothing changed"
  forged.file_id = vss::FileGeneration(forged.device);
  ASSERT_TRUE(vss::SnapshotRegistry(state_.state_dir() + "/snapshots").Put(forged).ok());
  const BackupRecord inc = Backup("incremental");
  const VolumeRecord& v = inc.volumes[0];
  EXPECT_EQ(v.tracking, kTrackingFullRead);
  EXPECT_NE(v.tracking_reason.find("names another file"), std::string::npos) << v.tracking_reason;
  EXPECT_EQ(v.stats.changed_chunks, 1u);
  ExpectRestores(inc.id, test::ReadFile(vol_));
}

}  // namespace
}  // namespace gnomon
