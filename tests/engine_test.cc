// The imaging pipeline through the library: every kind of volume restores
// byte-identical, dedup stores each chunk once, and a backup that fails at
// any point leaves the repository exactly as it was.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "engine/backup_job.h"
#include "engine/level_governor.h"
#include "engine/prune_job.h"
#include "engine/restore_job.h"
#include "engine/verify_job.h"
#include "tests/fault_env.h"
#include "tests/flaky_backend.h"
#include "tests/test_util.h"

namespace gnomon {
namespace {

using test::TempDir;

class EngineTest : public ::testing::Test {
 protected:
  // Tests state their sizes in 1 MiB chunks, independent of the default.
  static RepoConfig Config1M() {
    RepoConfig c;
    c.chunk_size = 1u << 20;
    return c;
  }
  void SetUp() override { InitRepo(Config1M()); }
  void InitRepo(RepoConfig c) {
    repo_.reset();
    std::filesystem::remove_all(dir_ / "repo");
    ASSERT_TRUE(Repository::Init(Env::Default(), dir_ / "repo", c).ok());
    Reopen();
  }
  void Reopen(Env* env = Env::Default()) {
    repo_.reset();
    Status s = Repository::Open(env, dir_ / "repo", LockMode::kExclusive, "test", &repo_);
    ASSERT_TRUE(s.ok()) << s.message();
  }
  // Opens the repository through a FlakyBackend that setup arms.
  void ReopenFlaky(const std::function<void(test::FlakyBackend&)>& setup,
                   LockMode mode = LockMode::kExclusive) {
    repo_.reset();
    auto b = std::make_unique<test::FlakyBackend>(NewLocalBackend(Env::Default(), dir_ / "repo"));
    setup(*b);
    Status s = Repository::Open(std::move(b), mode, "test", &repo_);
    ASSERT_TRUE(s.ok()) << s.message();
  }
  void Prune() {
    repo_.reset();
    ASSERT_TRUE(
        Repository::Open(Env::Default(), dir_ / "repo", LockMode::kNone, "test", &repo_).ok());
    PruneResult r;
    Status s = RunPrune(repo_.get(), PruneOptions(), &r);
    ASSERT_TRUE(s.ok()) << s.message();
    Reopen();
  }
  // Each test has its own snapshot-set lock and state, so tests run in
  // parallel without meeting each other's snapshot sets.
  BackupOptions Opts(const std::vector<std::string>& sources) {
    BackupOptions o;
    o.sources = sources;
    o.snapshot.runtime_dir = dir_ / "run";
    o.snapshot.state_dir = dir_ / "state";
    return o;
  }
  BackupRecord Backup(const std::vector<std::string>& sources) {
    BackupOptions o = Opts(sources);
    BackupResult r;
    Status s = RunBackup(repo_.get(), o, &r);
    EXPECT_TRUE(s.ok()) << s.message();
    return r.record;
  }
  void ExpectRestoresIdentical(const std::string& id, const std::string& source,
                               const std::string& volume = "") {
    RestoreOptions o;
    o.backup = id;
    o.volume = volume;
    o.target = dir_ / "restored";
    o.overwrite = true;
    RestoreResult r;
    Status s = RunRestore(repo_.get(), o, &r);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_TRUE(test::FilesEqual(source, o.target)) << source << " differs after restore";
  }
  VerifyResult Verify(bool read_data) {
    VerifyOptions o;
    o.read_data = read_data;
    VerifyResult r;
    EXPECT_TRUE(RunVerify(repo_.get(), o, &r).ok());
    return r;
  }
  // A repository of 256 KiB packs of 64 KiB chunks holding a backup of v1,
  // and v2 (2 MiB, so several packs) to back up next.
  void OneBackupInSmallPacks() {
    RepoConfig c;
    c.chunk_size = 64 << 10;
    c.pack_size = 256 << 10;
    InitRepo(c);
    test::WriteFile(dir_ / "v1", test::RandomBytes(1u << 20, 1));
    Backup({dir_ / "v1"});
    test::WriteFile(dir_ / "v2", test::RandomBytes(2u << 20, 2));
  }
  // Every file in the repository with its size: "nothing changed" means equal.
  std::map<std::string, uintmax_t> Snapshot() {
    std::map<std::string, uintmax_t> m;
    for (auto& e : std::filesystem::recursive_directory_iterator(dir_ / "repo"))
      if (e.is_regular_file() && e.path().filename() != "lock") m[e.path()] = e.file_size();
    return m;
  }
  // Every record, all readable.
  std::vector<BackupRecord> Backups() {
    std::vector<BackupRecord> all;
    std::vector<Status> errors;
    EXPECT_TRUE(repo_->ListBackups(&all, &errors).ok());
    EXPECT_TRUE(errors.empty());
    return all;
  }
  uint64_t PackBytes() {
    uint64_t n = 0;
    for (auto& e : std::filesystem::recursive_directory_iterator(dir_ / "repo/packs"))
      if (e.is_regular_file()) n += e.file_size();
    return n;
  }

  TempDir dir_;
  std::unique_ptr<Repository> repo_;
};

TEST_F(EngineTest, EveryKindOfVolumeRestoresByteIdentical) {
  const uint32_t chunk = 1u << 20;
  struct Case {
    const char* name;
    std::vector<uint8_t> data;
  };
  std::vector<uint8_t> dups;
  auto block = test::TextLikeBytes(chunk, 42);
  for (int i = 0; i < 6; ++i) dups.insert(dups.end(), block.begin(), block.end());
  auto mixed = test::RandomBytes(3 * chunk, 7);
  std::fill(mixed.begin() + chunk, mixed.begin() + 2 * chunk, 0);  // a zero chunk inside
  std::vector<Case> cases = {
      {"zeros", std::vector<uint8_t>(5 * chunk, 0)},
      {"random", test::RandomBytes(4 * chunk, 1)},
      {"text", test::TextLikeBytes(4 * chunk, 2)},
      {"duplicates", dups},
      {"odd-size", test::RandomBytes(3 * chunk + 12345, 3)},
      {"tiny", test::TextLikeBytes(100, 4)},
      {"empty", {}},
      {"mixed", mixed},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::string src = dir_ / c.name;
    test::WriteFile(src, c.data);
    BackupRecord r = Backup({src});
    ASSERT_EQ(r.volumes.size(), 1u);
    EXPECT_EQ(r.volumes[0].size, c.data.size());
    ExpectRestoresIdentical(r.id, src);
  }
  VerifyResult v = Verify(true);
  EXPECT_TRUE(v.ok()) << (v.errors.empty() ? "" : v.errors[0]);
}

using std::chrono::milliseconds;

TEST(LevelGovernorTest, ABusyReaderRaisesTheLevelToTheCeilingAndAnIdleOneLowersItToTheFloor) {
  LevelGovernor g(2, 6);
  EXPECT_EQ(g.level(), 2);
  for (int want : {3, 4, 5, 6, 6}) {
    g.Observe(milliseconds(95), milliseconds(100));  // the compressors wait for reads
    EXPECT_EQ(g.level(), want);
  }
  g.Observe(milliseconds(75), milliseconds(100));  // balanced: stays
  EXPECT_EQ(g.level(), 6);
  for (int want : {5, 4, 3, 2, 2}) {
    g.Observe(milliseconds(30), milliseconds(100));  // reads wait for the compressors
    EXPECT_EQ(g.level(), want);
  }
}

TEST(LevelGovernorTest, ACeilingAtOrBelowTheFloorFixesTheLevel) {
  for (int ceiling : {1, 3}) {
    LevelGovernor g(3, ceiling);
    for (int i = 0; i < 5; ++i) g.Observe(milliseconds(100), milliseconds(100));
    EXPECT_EQ(g.level(), 3) << "ceiling " << ceiling;
  }
}

TEST(LevelGovernorTest, TheReadStageDecidesOncePerPeriod) {
  LevelGovernor g(1, 9);
  LevelGovernor::Clock::time_point t{};
  t += std::chrono::hours(1);
  // Reads that take the whole time, 10 ms each: one step per 100 ms period.
  for (int i = 0; i < 25; ++i) {
    g.ReadStarted(t);
    t += milliseconds(10);
    g.ReadDone(t);
  }
  EXPECT_EQ(g.level(), 3) << "two whole periods of 100 ms";
  // Reads of 1 ms every 10 ms: the reader waits; down again (the first
  // period still holds half of the busy one before).
  for (int i = 0; i < 40; ++i) {
    g.ReadStarted(t);
    t += milliseconds(1);
    g.ReadDone(t);
    t += milliseconds(9);
  }
  EXPECT_EQ(g.level(), 1);
}

TEST(LevelGovernorTest, OnlyChunksThatCompressAreCompressedAgainHigher) {
  ChunkCompressor c(2);
  ChunkDecompressor d;
  LevelGovernor g(2, 7);
  for (int i = 0; i < 5; ++i) g.Observe(milliseconds(100), milliseconds(100));
  ASSERT_EQ(g.level(), 7);
  std::vector<uint8_t> out, scratch, back;
  int level = -1;
  // Text: level 7 beats level 2, and what is stored decodes to the chunk.
  const auto text = test::TextLikeBytes(1u << 20, 21);
  std::vector<uint8_t> at2;
  ASSERT_EQ(c.Compress(text, 2, &at2), Codec::kZstd);
  ASSERT_EQ(CompressAdaptive(&c, g, text, &out, &scratch, &level), Codec::kZstd);
  EXPECT_EQ(level, 7);
  EXPECT_LT(out.size(), at2.size());
  back.resize(text.size());
  ASSERT_TRUE(d.Decompress(Codec::kZstd, out, back.data(), back.size(), "t").ok());
  EXPECT_EQ(back, text);
  // Random bytes: compressed at the floor only, and so stored raw.
  const auto noise = test::RandomBytes(1u << 20, 22);
  EXPECT_EQ(CompressAdaptive(&c, g, noise, &out, &scratch, &level), Codec::kRaw);
  EXPECT_EQ(level, 0);
  EXPECT_EQ(out, noise);
  // Half noise, half text: the sample shrinks by more than a tenth.
  std::vector<uint8_t> mixed(noise.begin(), noise.begin() + (1 << 19));
  mixed.insert(mixed.end(), text.begin(), text.begin() + (1 << 19));
  ASSERT_EQ(CompressAdaptive(&c, g, mixed, &out, &scratch, &level), Codec::kZstd);
  EXPECT_EQ(level, 7);
  // Noise with zeros at its end, which no slice of the sample meets: at the
  // floor, which still finds the zeros.
  std::vector<uint8_t> mostly(noise.begin(), noise.begin() + (1 << 20) - (40 << 10));
  mostly.insert(mostly.end(), 40 << 10, 0);
  ASSERT_EQ(CompressAdaptive(&c, g, mostly, &out, &scratch, &level), Codec::kZstd);
  EXPECT_EQ(level, 2);
  EXPECT_LT(out.size(), mostly.size() - (30 << 10));
  // A fixed level (the governor at its floor) compresses at it.
  LevelGovernor fixed(2, 2);
  ASSERT_EQ(CompressAdaptive(&c, fixed, text, &out, &scratch, &level), Codec::kZstd);
  EXPECT_EQ(level, 2);
  EXPECT_EQ(out, at2);
}

TEST_F(EngineTest, TheRecordCountsNewChunksByTheLevelTheyWereStoredAt) {
  std::vector<uint8_t> vol = test::TextLikeBytes(6u << 20, 31);
  const auto noise = test::RandomBytes(2u << 20, 32);
  vol.insert(vol.end(), noise.begin(), noise.end());
  test::WriteFile(dir_ / "v", vol);
  BackupRecord r = Backup({dir_ / "v"});
  ASSERT_EQ(r.totals.new_chunks, 8u);
  uint64_t counted = 0;
  for (const auto& [level, n] : r.totals.levels) {
    counted += n;
    EXPECT_TRUE(level == 0 || (level >= 2 && level <= kDefaultMaxLevel)) << level;
  }
  EXPECT_EQ(counted, 8u);
  EXPECT_EQ(r.totals.levels[0], 2u) << "the two random chunks are stored raw";
  // The record keeps the counts.
  BackupRecord read;
  ASSERT_TRUE(repo_->FindBackup(r.id, &read).ok());
  EXPECT_EQ(read.totals.levels, r.totals.levels);
  EXPECT_EQ(read.volumes.at(0).stats.levels, r.totals.levels);
  ExpectRestoresIdentical(r.id, dir_ / "v");
}

TEST_F(EngineTest, DuplicateChunksAreStoredOnce) {
  // One random (incompressible) chunk repeated 16 times: stored once.
  auto block = test::RandomBytes(1u << 20, 5);
  std::vector<uint8_t> vol;
  for (int i = 0; i < 16; ++i) vol.insert(vol.end(), block.begin(), block.end());
  test::WriteFile(dir_ / "v", vol);
  BackupRecord r = Backup({dir_ / "v"});
  EXPECT_EQ(r.totals.new_chunks, 1u);
  EXPECT_EQ(r.totals.dup_chunks, 15u);
  EXPECT_LT(PackBytes(), 2u * block.size());
  ExpectRestoresIdentical(r.id, dir_ / "v");
}

TEST_F(EngineTest, SecondBackupOfUnchangedVolumeAddsNoChunkData) {
  test::WriteFile(dir_ / "v", test::TextLikeBytes(5u << 20, 9));
  BackupRecord a = Backup({dir_ / "v"});
  uint64_t before = PackBytes();
  BackupRecord b = Backup({dir_ / "v"});
  EXPECT_EQ(b.totals.new_chunks, 0u);
  EXPECT_EQ(b.totals.new_stored_bytes, 0u);
  EXPECT_EQ(PackBytes(), before);
  EXPECT_TRUE(b.index_file.empty());  // nothing new to index
  ExpectRestoresIdentical(b.id, dir_ / "v");
  ExpectRestoresIdentical(a.id, dir_ / "v");
}

TEST_F(EngineTest, SeveralVolumesInOneBackupAndByPosition) {
  test::WriteFile(dir_ / "a", test::TextLikeBytes(2u << 20, 1));
  std::filesystem::create_directory(dir_ / "sub");
  test::WriteFile(dir_ / "sub/a", test::RandomBytes(1u << 20, 2));  // same base name
  BackupRecord r = Backup({dir_ / "a", dir_ / "sub/a"});
  ASSERT_EQ(r.volumes.size(), 2u);
  EXPECT_EQ(r.volumes[0].name, "a");
  EXPECT_EQ(r.volumes[1].name, "a.2");
  ExpectRestoresIdentical(r.id, dir_ / "a", "a");
  ExpectRestoresIdentical(r.id.substr(0, 6), dir_ / "sub/a", "a.2");
  ExpectRestoresIdentical("latest", dir_ / "sub/a", "1");
  RestoreOptions o;
  o.backup = r.id;
  o.target = dir_ / "x";
  RestoreResult res;
  Status s = RunRestore(repo_.get(), o, &res);  // which volume?
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("a.2"), std::string::npos) << s.message();
}

TEST_F(EngineTest, SparseFourGiBVolumeReadsOnlyItsData) {
  std::string src = dir_ / "sparse";
  int fd = ::open(src.c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 4ll << 30), 0);
  auto data = test::TextLikeBytes(3u << 20, 11);
  ASSERT_EQ(::pwrite(fd, data.data(), data.size(), 1ll << 30), static_cast<ssize_t>(data.size()));
  ASSERT_EQ(::pwrite(fd, data.data(), 100, (4ll << 30) - 100), 100);
  ::close(fd);
  BackupRecord r = Backup({src});
  EXPECT_EQ(r.totals.bytes, 4ull << 30);
  EXPECT_LE(r.totals.bytes_read, 8ull << 20);  // holes are never read
  EXPECT_EQ(r.totals.zero_chunks, 4096u - 4u);
  ExpectRestoresIdentical(r.id, src);
  // The restored file is sparse too.
  struct stat st;
  ASSERT_EQ(::stat((dir_ / "restored").c_str(), &st), 0);
  EXPECT_LT(st.st_blocks * 512, 64ll << 20);
}

TEST_F(EngineTest, SmallChunkSizeIsHonoured) {
  RepoConfig c = Config1M();
  c.chunk_size = 64 << 10;
  c.pack_size = 1 << 20;  // several packs
  InitRepo(c);
  test::WriteFile(dir_ / "v", test::RandomBytes(5u << 20, 3));
  BackupRecord r = Backup({dir_ / "v"});
  EXPECT_EQ(r.volumes[0].stats.chunks, 80u);
  std::vector<std::string> packs;
  ASSERT_TRUE(repo_->ListPacks(&packs).ok());
  EXPECT_GE(packs.size(), 4u);
  ExpectRestoresIdentical(r.id, dir_ / "v");
  EXPECT_TRUE(Verify(true).ok());
}

TEST_F(EngineTest, FailureAtAnyWriteLeavesRepositoryAsItWas) {
  RepoConfig c;
  c.chunk_size = 64 << 10;
  c.pack_size = 256 << 10;
  InitRepo(c);
  test::WriteFile(dir_ / "v1", test::RandomBytes(1u << 20, 1));
  BackupRecord first = Backup({dir_ / "v1"});
  test::WriteFile(dir_ / "v2", test::RandomBytes(2u << 20, 2));
  auto before = Snapshot();

  test::FaultEnv env(Env::Default());
  // Each knob, at each position from the first operation until one past the
  // last the backup performs (so the run that succeeds proves the range).
  for (auto knob : {&test::FaultEnv::fail_append_after, &test::FaultEnv::fail_sync_after,
                    &test::FaultEnv::fail_rename_after}) {
    for (int n = 0;; ++n) {
      Reopen(&env);
      (env.*knob) = n;
      BackupOptions o = Opts({dir_ / "v2"});
      BackupResult r;
      Status s = RunBackup(repo_.get(), o, &r);
      bool tripped = (env.*knob).load() < 0;
      (env.*knob) = -1;
      if (s.ok()) {
        ASSERT_FALSE(tripped);
        break;  // past the last operation: the backup went through
      }
      SCOPED_TRACE("fault after " + std::to_string(n) + ": " + s.message());
      EXPECT_NE(s.message().find("injected fault"), std::string::npos);
      Reopen();
      EXPECT_EQ(Snapshot(), before);
      ASSERT_LT(n, 200);
    }
    // Undo the successful run for the next knob.
    std::filesystem::remove_all(dir_ / "repo");
    InitRepo(c);
    first = Backup({dir_ / "v1"});
    before = Snapshot();
  }
}

TEST_F(EngineTest, PacksAFailedBackupCouldNotRemoveAreRemovedByTheNextRun) {
  OneBackupInSmallPacks();
  const auto before = Snapshot();
  test::FaultEnv env(Env::Default());
  env.fail_removing = "/packs/";
  // Every rename of the run fails in turn, with packs written before most.
  int with_packs = 0;
  for (int n = 0;; ++n) {
    Reopen(&env);
    env.fail_rename_after = n;
    BackupResult r;
    Status s = RunBackup(repo_.get(), Opts({dir_ / "v2"}), &r);
    env.fail_rename_after = -1;
    if (s.ok()) break;
    SCOPED_TRACE("rename " + std::to_string(n) + " failed: " + s.message());
    const bool left = Snapshot() != before;
    with_packs += left;
    // Opening the repository again cannot remove them either: the journal
    // that names them stays.
    Reopen(&env);
    if (left) {
      EXPECT_NE(Snapshot(), before);
    }
    // Once packs can be removed, the next run leaves the repository as it was.
    Reopen();
    EXPECT_EQ(Snapshot(), before);
    ASSERT_LT(n, 200);
  }
  EXPECT_GT(with_packs, 0) << "no failure came after a pack was written";
}

TEST_F(EngineTest, AFailureAtAnyCallLeavesNothingTheNextRunDoesNotRemove) {
  OneBackupInSmallPacks();
  const auto before = Snapshot();
  repo_.reset();
  std::filesystem::copy(dir_ / "repo", dir_ / "pristine", std::filesystem::copy_options::recursive);
  // Every call that changes the repository fails in turn, a pack's
  // directory sync after its rename among them (the pack then exists).
  int failed = 0;
  for (int n = 0;; ++n) {
    test::FaultEnv env(Env::Default());
    Reopen(&env);
    env.calls = 0;  // counted from the backup's first call
    env.fail_call = n;
    BackupResult r;
    Status s = RunBackup(repo_.get(), Opts({dir_ / "v2"}), &r);
    if (!env.tripped) break;
    SCOPED_TRACE("call " + std::to_string(n) + " (" + env.tripped_what +
                 ") failed: " + s.message());
    if (s.ok()) {
      // A fault the backup could shrug off (a temporary's removal): start
      // the next run from the repository as it was.
      repo_.reset();
      std::filesystem::remove_all(dir_ / "repo");
      std::filesystem::copy(dir_ / "pristine", dir_ / "repo",
                            std::filesystem::copy_options::recursive);
    }
    Reopen();
    if (!s.ok()) {
      ++failed;
      EXPECT_EQ(Snapshot(), before);
    }
    ASSERT_LT(n, 400);
  }
  EXPECT_GT(failed, 10) << "the faults never reached the backup";
}

// Names of the files under dir (not temporaries).
static std::vector<std::string> Files(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  if (std::filesystem::exists(dir))
    for (auto& e : std::filesystem::recursive_directory_iterator(dir))
      if (e.is_regular_file() && e.path().filename().string().find(".tmp-") == std::string::npos)
        names.push_back(e.path().filename());
  return names;
}

TEST_F(EngineTest, ARecordStoredDespiteAFailedWriteKeepsWhatItNames) {
  test::WriteFile(dir_ / "v", test::RandomBytes(3u << 20, 5));
  for (bool says_exists : {false, true}) {
    // The record is stored and its answer lost (on a local disk: renamed,
    // then neither its directory synced nor the record taken back); or a
    // retry meets it and cannot tell it is its own.
    SCOPED_TRACE(says_exists ? "stored, then Exists" : "stored, answer lost");
    InitRepo(Config1M());
    ReopenFlaky([&](test::FlakyBackend& b) {
      (says_exists ? b.stored_says_exists : b.lose_answer) = "backups/";
    });
    BackupResult r;
    Status s = RunBackup(repo_.get(), Opts({dir_ / "v"}), &r);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("is published, but may not survive a crash"), std::string::npos)
        << s.message();
    Reopen();  // and the clean-up of what failed runs left
    const std::vector<BackupRecord> all = Backups();
    ASSERT_EQ(all.size(), 1u);
    ExpectRestoresIdentical(all[0].id, dir_ / "v");
    VerifyResult v = Verify(true);
    EXPECT_TRUE(v.ok()) << (v.errors.empty() ? "" : v.errors[0]);
    EXPECT_TRUE(Files(dir_ / "repo/tmp").empty());
  }
}

TEST_F(EngineTest, ARecordThatMayExistKeepsEverythingUntilTheNextRunCanTell) {
  test::WriteFile(dir_ / "v", test::RandomBytes(3u << 20, 5));
  for (bool stored : {true, false}) {
    SCOPED_TRACE(stored ? "the record was stored" : "the record was not stored");
    InitRepo(Config1M());
    ReopenFlaky([&](test::FlakyBackend& b) {
      (stored ? b.lose_answer : b.fail_put) = "backups/";
      b.fail_head = "backups/";  // and no answer when asked whether it is there
    });
    BackupResult r;
    Status s = RunBackup(repo_.get(), Opts({dir_ / "v"}), &r);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("could not tell whether backup"), std::string::npos) << s.message();
    EXPECT_FALSE(Files(dir_ / "repo/volumes").empty());
    EXPECT_FALSE(Files(dir_ / "repo/tmp").empty());  // the journal
    Reopen();                                        // the clean-up can tell now
    const std::vector<BackupRecord> all = Backups();
    EXPECT_TRUE(Files(dir_ / "repo/tmp").empty());
    if (stored) {
      ASSERT_EQ(all.size(), 1u);
      ExpectRestoresIdentical(all[0].id, dir_ / "v");
    } else {
      EXPECT_TRUE(all.empty());
      EXPECT_TRUE(Files(dir_ / "repo/volumes").empty());  // no record names them
    }
    VerifyResult v = Verify(true);
    EXPECT_TRUE(v.ok()) << (v.errors.empty() ? "" : v.errors[0]);
  }
}

TEST_F(EngineTest, BesideOtherWritersAFailedBackupLeavesItsIndexedPacksToPrune) {
  test::WriteFile(dir_ / "v", test::RandomBytes(3u << 20, 5));
  for (bool concurrent : {false, true}) {
    SCOPED_TRACE(concurrent ? "on an object store" : "in a local directory");
    InitRepo(Config1M());
    ReopenFlaky([&](test::FlakyBackend& b) {
      b.concurrent = concurrent;
      b.fail_put = "backups/";  // fails after its index file was written
    });
    BackupResult r;
    ASSERT_FALSE(RunBackup(repo_.get(), Opts({dir_ / "v"}), &r).ok());
    Reopen();
    EXPECT_TRUE(Files(dir_ / "repo/volumes").empty());
    EXPECT_TRUE(Files(dir_ / "repo/tmp").empty());
    // Another backup may have loaded the index file and stored references
    // to its packs: on an object store they stay, for prune to judge.
    EXPECT_EQ(Files(dir_ / "repo/index").size(), concurrent ? 1u : 0u);
    EXPECT_EQ(PackBytes() > (1u << 20), concurrent);
    // What such a backup stored restores.
    BackupRecord b = Backup({dir_ / "v"});
    EXPECT_EQ(b.totals.new_chunks == 0, concurrent);
    ExpectRestoresIdentical(b.id, dir_ / "v");
    // Once no backup uses them, prune removes them.
    ASSERT_TRUE(repo_->ForgetBackup(b).ok());
    Prune();
    EXPECT_EQ(PackBytes(), 0u);
    EXPECT_TRUE(Files(dir_ / "repo/index").empty());
  }
}

TEST_F(EngineTest, BesideOtherWritersTheCleanUpLeavesWhatALiveRunPublishes) {
  // Two copies of backup X into one object store (a copy keeps its
  // source's id): a dead one left X's volume index, a live one runs.
  const std::string x = "0123456789abcdef";
  const auto text = [](const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); };
  const std::string dead = "repo/tmp/dead-1-aaaaaaaaaaaaaaaa.journal";
  const std::string live = "repo/tmp/live-2-bbbbbbbbbbbbbbbb.journal";
  const std::string index = "repo/volumes/" + x + ".0";
  const auto leave = [&] {
    test::WriteFile(dir_ / dead, text("backup " + x + "\n"));
    test::WriteFile(dir_ / index, text("a volume index"));
  };
  repo_.reset();
  test::WriteFile(dir_ / live, text("backup " + x + "\n"));
  auto other = NewLocalBackend(Env::Default(), dir_ / "repo");
  std::unique_ptr<FileLock> running, publishing;  // the live copy's locks
  ASSERT_TRUE(other->TryLock("gc/run-live-2-bbbbbbbbbbbbbbbb", true, &running).ok());
  const auto clean_up = [&] {  // as a backup beside them does when it starts
    ReopenFlaky([](test::FlakyBackend& b) { b.concurrent = true; }, LockMode::kAppend);
    repo_.reset();
  };
  // Still copying packs: the volume index is the dead copy's, and goes.
  leave();
  clean_up();
  EXPECT_FALSE(std::filesystem::exists(dir_ / index));
  EXPECT_FALSE(std::filesystem::exists(dir_ / dead));
  EXPECT_TRUE(std::filesystem::exists(dir_ / live));
  // Publishing X (it holds X's publish lock): the volume index may be its
  // own, and stays; so does the dead journal, for a later clean-up.
  leave();
  ASSERT_TRUE(other->TryLock("gc/backup-" + x, true, &publishing).ok());
  clean_up();
  EXPECT_TRUE(std::filesystem::exists(dir_ / index));
  EXPECT_TRUE(std::filesystem::exists(dir_ / dead));
  EXPECT_TRUE(std::filesystem::exists(dir_ / live));
  // Both gone without a record: everything goes.
  publishing.reset();
  running.reset();
  clean_up();
  EXPECT_FALSE(std::filesystem::exists(dir_ / index));
  EXPECT_TRUE(Files(dir_ / "repo/tmp").empty());
}

TEST_F(EngineTest, FullDiskFailsCleanly) {
  test::WriteFile(dir_ / "v", test::RandomBytes(4u << 20, 8));
  const auto before = Snapshot();
  test::FaultEnv env(Env::Default());
  env.space_left = 1 << 20;
  Reopen(&env);
  BackupOptions o = Opts({dir_ / "v"});
  BackupResult r;
  Status s = RunBackup(repo_.get(), o, &r);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("No space left"), std::string::npos) << s.message();
  Reopen();
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(EngineTest, CancelledBackupCommitsNothing) {
  test::WriteFile(dir_ / "v", test::RandomBytes(8u << 20, 8));
  const auto before = Snapshot();
  CancelFlag cancel{false};
  BackupOptions o = Opts({dir_ / "v"});
  o.cancel = &cancel;
  o.progress = [&](const Progress& p) {
    if (p.done >= (2u << 20)) cancel = true;
  };
  BackupResult r;
  EXPECT_EQ(RunBackup(repo_.get(), o, &r).code(), Status::Code::kAborted);
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(EngineTest, MissingSourceIsNamedBeforeAnythingIsWritten) {
  test::WriteFile(dir_ / "ok", test::RandomBytes(1000, 1));
  const auto before = Snapshot();
  BackupOptions o = Opts({dir_ / "ok", dir_ / "missing"});
  BackupResult r;
  Status s = RunBackup(repo_.get(), o, &r);
  EXPECT_TRUE(s.IsNotFound());
  EXPECT_NE(s.message().find(dir_ / "missing"), std::string::npos);
  EXPECT_EQ(Snapshot(), before);
}

}  // namespace
}  // namespace gnomon
