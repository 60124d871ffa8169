// The fault matrix (issue 20): each repository operation is run once to
// count the calls it makes that change anything (create, append, sync,
// close, rename, directory sync, remove, mkdir), then once per call N with
// call N failing, once with EIO and once with ENOSPC (a short write for an
// append). After every run: a clear error naming the injected fault (or, for
// what is only a warning, success), `verify --read-data` of the repository
// passes, every backup that existed before still restores byte-identical,
// and the same operation then succeeds. Each run starts from a copy of the
// same repository, so runs do not see each other's leftovers.
//
// The sizes keep every run small (64 KiB chunks, 256 KiB packs); the matrix
// size and outcome are printed, and bench/RESULTS.md keeps the figures.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "engine/backup_job.h"
#include "engine/prune_job.h"
#include "engine/restore_job.h"
#include "engine/verify_job.h"
#include "tests/fault_env.h"
#include "tests/test_util.h"

namespace gnomon {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// One operation of the matrix, run on an open repository.
struct Operation {
  std::string name;
  LockMode lock;
  std::function<Status(Repository*)> run;
  // Backups (by id) the operation may remove: they need not restore after.
  std::vector<std::string> may_remove;
  // Whether a fault may end in success (what fails is only a warning).
  bool may_succeed = false;
  // For the read matrix: a read the operation does not need, whose failure
  // it may pass over (e.g. other backups' records, for a restore by id).
  std::function<bool(const std::string& what)> unneeded_read;
  // Fail only every Nth call (see Stride), where runs are slow and many.
  int step = 1;
};

// Calls whose failure an operation may shrug off, as long as everything
// checked afterwards holds: a removal (cleaning up what a dead run left is
// best effort; the next run tries again), creating a directory that exists
// (mkdir then fails with EEXIST, which means success), and closing a file
// (every file gnomon keeps is fsynced before it is closed, so a failing
// close(2) loses nothing; Linux releases the descriptor regardless).
bool Tolerable(const std::string& what) {
  for (const char* kind : {"removing ", "creating directory ", "closing "})
    if (what.rfind(kind, 0) == 0) return true;
  return false;
}

struct Tally {
  int runs = 0, failed_cleanly = 0, succeeded = 0;
};

// Which calls to fail: every one, or every Kth from a random start. K is
// the operation's own step (1, or more where a run is slow and calls are
// many) times GNOMON_FAULT_STRIDE (the sanitizer pass of tools/test.sh
// sets it); GNOMON_FAULT_ALL=1 fails every call whatever the step
// (bench/fault-matrix.sh). The start is printed, and GNOMON_FAULT_FIRST
// repeats it.
struct Stride {
  int first = 0, step = 1;
  explicit Stride(int own_step) {
    const char* all = std::getenv("GNOMON_FAULT_ALL");
    if (all && std::string(all) == "1") return;
    const char* k = std::getenv("GNOMON_FAULT_STRIDE");
    step = own_step * (k && std::atoi(k) > 1 ? std::atoi(k) : 1);
    if (step <= 1) return;
    const char* f = std::getenv("GNOMON_FAULT_FIRST");
    first = f ? std::atoi(f) % step : static_cast<int>(std::random_device{}() % step);
    std::printf("fault stride %d, first %d (GNOMON_FAULT_FIRST=%d repeats it)\n", step, first,
                first);
  }
};

class FaultMatrixTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RepoConfig c;
    c.chunk_size = 64 << 10;
    c.pack_size = 256 << 10;
    ASSERT_TRUE(Repository::Init(Env::Default(), base_, c).ok());
    // Three backups: two of one volume (a full, then an incremental after
    // a change) and one of another; each keeps a copy of what it saw.
    // (Random data: a chunk stores as many bytes as it holds, so which
    // packs forgetting makes dead, and how much, does not depend on zstd.)
    test::WriteFile(dir_ / "v1", test::RandomBytes(640 << 10, 1));
    Expect(Backup(base_, "full", dir_ / "v1"), dir_ / "v1");
    auto v1 = test::ReadFile(dir_ / "v1");
    // Two whole chunks anew (the full's become dead once it is forgotten),
    // and a few blocks of another (a patch on the full's chunk).
    std::copy_n(test::RandomBytes(128 << 10, 6).begin(), 128 << 10, v1.begin());
    std::copy_n(test::RandomBytes(8192, 2).begin(), 8192, v1.begin() + 330000);
    test::WriteFile(dir_ / "v1", v1);
    Expect(Backup(base_, "incremental", dir_ / "v1"), dir_ / "v1");
    test::WriteFile(dir_ / "v2", test::RandomBytes(384 << 10, 3));
    Expect(Backup(base_, "full", dir_ / "v2"), dir_ / "v2");
    // What later backups in the matrix read: a changed v1, and a new v3.
    std::copy_n(test::RandomBytes(4096, 4).begin(), 4096, v1.begin() + 300000);
    test::WriteFile(dir_ / "v1", v1);
    test::WriteFile(dir_ / "v3", test::TextLikeBytes(512 << 10, 5));
  }

  BackupOptions Opts(const std::string& type, const std::string& source) {
    BackupOptions o;
    o.type = type;
    o.sources = {source};
    o.snapshot.runtime_dir = dir_ / "run";
    o.snapshot.state_dir = dir_ / "state";
    return o;
  }
  std::string Backup(const std::string& repo, const std::string& type, const std::string& src) {
    std::unique_ptr<Repository> r;
    EXPECT_TRUE(Repository::Open(Env::Default(), repo, LockMode::kExclusive, "t", &r).ok());
    BackupResult res;
    Status s = RunBackup(r.get(), Opts(type, src), &res);
    EXPECT_TRUE(s.ok()) << s.message();
    return res.record.id;
  }
  // Remembers what backup `id` must restore to: a copy of `source` now.
  void Expect(const std::string& id, const std::string& source) {
    const std::string copy = dir_ / ("expected-" + id);
    fs::copy_file(source, copy);
    expected_[id] = copy;
  }

  // Forgets both fulls in the base repository, so prune has packs to
  // delete (the second full's) and to repack (the first's, whose two chunks
  // the incremental replaced; the chunk under its patch stays).
  void ForgetTheFulls() {
    std::unique_ptr<Repository> r;
    ASSERT_TRUE(Repository::Open(Env::Default(), base_, LockMode::kExclusive, "t", &r).ok());
    for (auto it = expected_.begin(); it != expected_.end();) {
      BackupRecord rec;
      ASSERT_TRUE(r->FindBackup(it->first, &rec).ok());
      if (rec.type != "full") {
        ++it;
        continue;
      }
      ASSERT_TRUE(r->ForgetBackup(rec).ok());
      it = expected_.erase(it);
    }
    ASSERT_EQ(expected_.size(), 1u);
  }

  // Runs op on a fresh copy of the base repository with env; returns its status.
  Status RunOnCopy(const Operation& op, Env* env) {
    fs::remove_all(work_);
    fs::copy(base_, work_, fs::copy_options::recursive);
    std::unique_ptr<Repository> r;
    Status s = Repository::Open(env, work_, op.lock, "t", &r);
    if (!s.ok()) return s;
    return op.run(r.get());
  }

  // The checks after a run with a fault: the repository verifies, every
  // backup that must still be there restores, and the operation succeeds.
  void CheckAfter(const Operation& op) {
    std::unique_ptr<Repository> r;
    ASSERT_TRUE(Repository::Open(Env::Default(), work_, LockMode::kExclusive, "t", &r).ok());
    VerifyOptions vo;
    vo.read_data = true;
    VerifyResult vr;
    Status s = RunVerify(r.get(), vo, &vr);
    ASSERT_TRUE(s.ok()) << s.message();
    for (const auto& e : vr.errors) ADD_FAILURE() << "verify: " << e;
    for (const auto& [id, copy] : expected_) {
      if (std::count(op.may_remove.begin(), op.may_remove.end(), id)) continue;
      RestoreOptions ro;
      ro.backup = id;
      ro.target = dir_ / "restored";
      ro.overwrite = true;
      RestoreResult rr;
      s = RunRestore(r.get(), ro, &rr);
      ASSERT_TRUE(s.ok()) << id << ": " << s.message();
      EXPECT_TRUE(test::FilesEqual(copy, ro.target)) << id << " restores different bytes";
    }
    r.reset();
    s = Repository::Open(Env::Default(), work_, op.lock, "t", &r);
    ASSERT_TRUE(s.ok()) << s.message();
    s = op.run(r.get());
    EXPECT_TRUE(s.ok()) << "the same operation afterwards: " << s.message();
  }

  // The whole matrix for one operation.
  Tally RunMatrix(const Operation& op) {
    Tally t;
    test::FaultEnv counter(Env::Default());
    Status s = RunOnCopy(op, &counter);
    EXPECT_TRUE(s.ok()) << op.name << " without a fault: " << s.message();
    const int calls = counter.calls.load();
    EXPECT_GT(calls, 0) << op.name << " changed nothing: the matrix would test nothing";
    const Stride stride(op.step);
    for (int n = stride.first; n < calls + 2; n += stride.step) {
      for (int err : {EIO, ENOSPC}) {
        SCOPED_TRACE(op.name + ": call " + std::to_string(n) + " fails with " + std::strerror(err));
        test::FaultEnv env(Env::Default());
        env.fail_call = n;
        env.fail_errno = err;
        s = RunOnCopy(op, &env);
        ++t.runs;
        SCOPED_TRACE("the failed call: " + env.tripped_what +
                     "; the operation said: " + s.message());
        if (!env.tripped) {
          // Past the last call (the count may differ a little from run to
          // run: the pipeline's threads race): it must simply work.
          EXPECT_TRUE(s.ok()) << s.message();
          continue;
        }
        if (s.ok()) {
          ++t.succeeded;
          EXPECT_TRUE(op.may_succeed || Tolerable(env.tripped_what))
              << "an injected fault went unreported: " << env.tripped_what;
        } else {
          ++t.failed_cleanly;
          EXPECT_NE(s.message().find("injected fault"), std::string::npos)
              << "the error does not name the failure: " << s.message();
        }
        CheckAfter(op);
        if (HasFatalFailure() || HasFailure()) return t;  // one failing run says enough
      }
    }
    std::printf("fault matrix: %-22s %3d calls, %4d runs: %4d failed cleanly, %3d succeeded\n",
                op.name.c_str(), calls, t.runs, t.failed_cleanly, t.succeeded);
    return t;
  }

  // The read matrix for one operation: each call that reads (open, read,
  // list) fails in turn with EIO. Besides CheckAfter's checks: nothing is
  // quarantined (an unreadable pack is not a damaged one) and `also`, if
  // given, holds (e.g. no restore target left behind).
  Tally RunReadMatrix(const Operation& op, const std::function<void()>& also = {}) {
    Tally t;
    test::FaultEnv counter(Env::Default());
    Status s = RunOnCopy(op, &counter);
    EXPECT_TRUE(s.ok()) << op.name << " without a fault: " << s.message();
    const int reads = counter.reads.load();
    EXPECT_GT(reads, 0) << op.name << " read nothing: the matrix would test nothing";
    const Stride stride(op.step);
    for (int n = stride.first; n < reads + 2; n += stride.step) {
      SCOPED_TRACE(op.name + ": read " + std::to_string(n) + " fails with EIO");
      if (also) also();  // before: the run starts from a clean state too
      test::FaultEnv env(Env::Default());
      env.fail_read = n;
      s = RunOnCopy(op, &env);
      ++t.runs;
      SCOPED_TRACE("the failed call: " + env.tripped_what + "; the operation said: " + s.message());
      if (!env.tripped || s.ok()) {
        EXPECT_TRUE(s.ok()) << s.message();
        EXPECT_TRUE(!env.tripped || op.may_succeed ||
                    (op.unneeded_read && op.unneeded_read(env.tripped_what)))
            << "an injected read fault went unreported: " << env.tripped_what;
        t.succeeded += env.tripped;
        continue;
      }
      ++t.failed_cleanly;
      EXPECT_NE(s.message().find("injected fault"), std::string::npos)
          << "the error does not name the failure: " << s.message();
      std::error_code ec;
      EXPECT_TRUE(fs::is_empty(work_ + "/quarantine", ec) || ec)
          << "a read error quarantined a chunk";
      if (also) also();
      CheckAfter(op);
      if (HasFatalFailure() || HasFailure()) return t;
    }
    std::printf("read fault matrix: %-22s %4d reads, %4d runs: %4d failed cleanly, %3d succeeded\n",
                op.name.c_str(), reads, t.runs, t.failed_cleanly, t.succeeded);
    return t;
  }

  TempDir dir_;
  const std::string base_ = dir_ / "base", work_ = dir_ / "work";
  std::map<std::string, std::string> expected_;  // backup id -> what it restores to
};

TEST_F(FaultMatrixTest, FullBackup) {
  RunMatrix({"backup (full)", LockMode::kExclusive, [&](Repository* r) {
               BackupResult res;
               return RunBackup(r, Opts("full", dir_ / "v3"), &res);
             }});
}

TEST_F(FaultMatrixTest, IncrementalBackup) {
  RunMatrix({"backup (incremental)", LockMode::kExclusive, [&](Repository* r) {
               BackupResult res;
               return RunBackup(r, Opts("incremental", dir_ / "v1"), &res);
             }});
}

TEST_F(FaultMatrixTest, Forget) {
  const std::string victim = expected_.begin()->first;
  RunMatrix({"forget",
             LockMode::kExclusive,
             [&](Repository* r) {
               BackupRecord rec;
               Status s = r->FindBackup(victim, &rec);
               if (s.IsNotFound()) return Status::OK();  // forgotten by the run before
               GNOMON_RETURN_IF_ERROR(s);
               return r->ForgetBackup(rec);
             },
             {victim}});
}

TEST_F(FaultMatrixTest, PruneAfterForget) {
  ForgetTheFulls();
  if (HasFatalFailure()) return;
  RunMatrix({"prune", LockMode::kNone, [&](Repository* r) {
               PruneOptions po;
               po.max_unused = 0;
               po.max_wait_ms = 1000;
               PruneResult res;
               return RunPrune(r, po, &res);
             }});
}

TEST_F(FaultMatrixTest, VerifyWithCheckFiles) {
  RunMatrix({"verify (subset 100%)",
             LockMode::kShared,
             [&](Repository* r) {
               VerifyOptions vo;
               vo.read_data = true;
               ParseVerifySubset("100%", &vo.subset);
               VerifyResult vr;
               GNOMON_RETURN_IF_ERROR(RunVerify(r, vo, &vr));
               return vr.ok() ? Status::OK() : Status::Corruption(vr.errors[0]);
             },
             {},
             /*may_succeed=*/true});  // a check file that cannot be written is a warning
}

// A predicate for the read matrix: the failed read is named in one of the
// notes the operation left for the user (warnings, cleanup it could not do).
std::function<bool(const std::string&)> SaidIn(const std::vector<std::string>* notes) {
  return [notes](const std::string& what) {
    for (const auto& n : *notes)
      if (n.find(what + ": ") != std::string::npos) return true;
    return false;
  };
}

TEST_F(FaultMatrixTest, RestoreWhenAnyReadFails) {
  const std::string id = expected_.rbegin()->first;
  const std::string target = dir_ / "target";
  RunReadMatrix(
      {"restore",
       LockMode::kShared,
       [&](Repository* r) {
         RestoreOptions ro;
         ro.backup = id;
         ro.target = target;
         RestoreResult rr;
         GNOMON_RETURN_IF_ERROR(RunRestore(r, ro, &rr));
         EXPECT_TRUE(test::FilesEqual(expected_[id], target));
         fs::remove(target);
         return Status::OK();
       },
       {},
       false,
       [&](const std::string& what) {
         // Other backups' records, and index files that list none
         // of its chunks (the restored bytes are checked equal).
         return (what.find("/backups/") != std::string::npos &&
                 what.find("/backups/" + id) == std::string::npos) ||
                what.find("/index/") != std::string::npos;
       }},
      [&] {
        // A failed restore leaves no target and no partial file.
        EXPECT_FALSE(fs::exists(target));
        for (const auto& e : fs::directory_iterator(dir_.path()))
          EXPECT_EQ(e.path().filename().string().find(".target.gnomon-restore-"), std::string::npos)
              << e.path();
      });
}

TEST_F(FaultMatrixTest, VerifyReadDataWhenAnyReadFails) {
  RunReadMatrix({"verify --read-data", LockMode::kShared, [&](Repository* r) {
                   VerifyOptions vo;
                   vo.read_data = true;
                   VerifyResult vr;
                   GNOMON_RETURN_IF_ERROR(RunVerify(r, vo, &vr));
                   return vr.ok() ? Status::OK() : Status::Corruption(vr.errors[0]);
                 }});
}

TEST_F(FaultMatrixTest, IncrementalBackupWhenAnyReadFails) {
  // Cleaning up after interrupted runs is best effort, and a record that
  // cannot be read is not a parent, but a backup that passes over either
  // must say so.
  std::vector<std::string> notes;
  RunReadMatrix({"backup (incremental)",
                 LockMode::kExclusive,
                 [&](Repository* r) {
                   BackupResult res;
                   Status s = RunBackup(r, Opts("incremental", dir_ / "v1"), &res);
                   notes = r->upkeep_warnings();
                   notes.insert(notes.end(), res.warnings.begin(), res.warnings.end());
                   for (const auto& v : res.record.volumes) notes.push_back(v.tracking_reason);
                   return s;
                 },
                 {},
                 false,
                 SaidIn(&notes)});
}

TEST_F(FaultMatrixTest, FullBackupWhenAnyReadFails) {
  std::vector<std::string> notes;
  RunReadMatrix({"backup (full)",
                 LockMode::kExclusive,
                 [&](Repository* r) {
                   BackupResult res;
                   Status s = RunBackup(r, Opts("full", dir_ / "v3"), &res);
                   notes = r->upkeep_warnings();
                   notes.insert(notes.end(), res.warnings.begin(), res.warnings.end());
                   return s;
                 },
                 {},
                 false,
                 SaidIn(&notes)});
}

TEST_F(FaultMatrixTest, ForgetWhenAnyReadFails) {
  const std::string victim = expected_.begin()->first;
  std::vector<std::string> notes;
  RunReadMatrix({"forget",
                 LockMode::kExclusive,
                 [&](Repository* r) {
                   notes = r->upkeep_warnings();
                   BackupRecord rec;
                   Status s = r->FindBackup(victim, &rec);
                   if (s.IsNotFound()) return Status::OK();  // forgotten by the run before
                   GNOMON_RETURN_IF_ERROR(s);
                   return r->ForgetBackup(rec);
                 },
                 {victim},
                 false,
                 [&](const std::string& what) {
                   // Other backups' records are not needed to forget one by id.
                   return SaidIn(&notes)(what) ||
                          (what.find("/backups/") != std::string::npos &&
                           what.find("/backups/" + victim) == std::string::npos);
                 }});
}

TEST_F(FaultMatrixTest, PruneWhenAnyReadFails) {
  ForgetTheFulls();
  if (HasFatalFailure()) return;
  std::vector<std::string> notes;
  RunReadMatrix({"prune",
                 LockMode::kNone,
                 [&](Repository* r) {
                   PruneOptions po;
                   po.max_unused = 0;
                   po.max_wait_ms = 1000;
                   PruneResult res;
                   Status s = RunPrune(r, po, &res);
                   notes = res.warnings;
                   notes.insert(notes.end(), r->upkeep_warnings().begin(),
                                r->upkeep_warnings().end());
                   // What it could not read, it names, and deletes nothing
                   // (the command exits with "damaged").
                   if (s.ok() && !res.complete()) {
                     std::string all;
                     for (const auto& p : res.problems) all += p + "; ";
                     return Status::Corruption(all);
                   }
                   return s;
                 },
                 {},
                 // A read prune cannot do only makes it delete less (a pack
                 // it cannot read back stays, an index file it cannot read
                 // keeps what it might name); the checks after each run
                 // prove nothing was lost.
                 /*may_succeed=*/true,
                 SaidIn(&notes),
                 /*step=*/5});  // 1,900 reads; bench/fault-matrix.sh runs them all
}

// The target's disk fills at different points of a restore (a tmpfs too
// small by more or less): a clear error, no target and no partial file, an
// existing target left as it was; with room, the same restore succeeds.
TEST_F(FaultMatrixTest, RestoreOntoAFullDisk) {
  GNOMON_SKIP_IF(test::RootSkipReason());
  const std::string id = expected_.begin()->first;
  const uint64_t size = fs::file_size(expected_[id]);
  const std::string mnt = dir_ / "small";
  fs::create_directories(mnt);
  const std::vector<uint8_t> old = test::RandomBytes(8192, 11);
  // Unmounted whatever fails, so the scratch directory can be removed.
  struct Unmount {
    std::string dir;
    ~Unmount() { test::Sh("umount " + dir + " 2>/dev/null"); }
  } unmount{mnt};
  int runs = 0;
  for (uint64_t room : {size / 8, size / 4, size / 2, size * 3 / 4, size - 8192}) {
    for (bool overwrite : {false, true}) {
      SCOPED_TRACE(std::to_string(room) + " bytes of room" + (overwrite ? ", over a file" : ""));
      ASSERT_EQ(
          test::Sh("mount -t tmpfs -o size=" + std::to_string(room) + " tmpfs " + mnt).exit_code,
          0);
      const std::string target = mnt + "/out.img";
      if (overwrite) test::WriteFile(target, old);
      std::unique_ptr<Repository> r;
      ASSERT_TRUE(Repository::Open(Env::Default(), base_, LockMode::kShared, "t", &r).ok());
      RestoreOptions ro;
      ro.backup = id;
      ro.target = target;
      ro.overwrite = overwrite;
      RestoreResult rr;
      Status s = RunRestore(r.get(), ro, &rr);
      ++runs;
      EXPECT_FALSE(s.ok());
      EXPECT_NE(s.message().find("No space left"), std::string::npos) << s.message();
      std::vector<std::string> left;
      for (const auto& e : fs::directory_iterator(mnt)) left.push_back(e.path().filename());
      EXPECT_EQ(left, overwrite ? std::vector<std::string>{"out.img"} : std::vector<std::string>{});
      if (overwrite) {
        EXPECT_TRUE(test::ReadFile(target) == old);
      }
      test::Sh("umount " + mnt);
    }
  }
  // With room, it works.
  ASSERT_EQ(test::Sh("mount -t tmpfs -o size=" + std::to_string(size + (1 << 20)) + " tmpfs " + mnt)
                .exit_code,
            0);
  std::unique_ptr<Repository> r;
  ASSERT_TRUE(Repository::Open(Env::Default(), base_, LockMode::kShared, "t", &r).ok());
  RestoreOptions ro;
  ro.backup = id;
  ro.target = mnt + "/out.img";
  RestoreResult rr;
  Status s = RunRestore(r.get(), ro, &rr);
  EXPECT_TRUE(s.ok()) << s.message();
  EXPECT_TRUE(test::FilesEqual(expected_[id], ro.target));
  test::Sh("umount " + mnt);
  std::printf("restore onto a full disk: %d runs, each a clean error\n", runs);
}

}  // namespace
}  // namespace gnomon
