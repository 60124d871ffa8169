// Regression tests for the defects found by using gnomon as a hostile local
// user and a careless administrator would (issue 11): each failed before its
// fix. Most drive the real gnomon binary; the id-collision test drives the
// engine, whose id source a test can replace.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "base/random.h"
#include "base/system.h"
#include "engine/backup_job.h"
#include "engine/restore_job.h"
#include "engine/restore_target.h"
#include "format/framed_file.h"
#include "format/repository.h"
#include "tests/fault_env.h"
#include "tests/test_util.h"
#include "vss/provider.h"

namespace gnomon {
namespace {

using nlohmann::json;
using test::Gnomon;
using test::TempDir;
namespace fs = std::filesystem;

class DefectsTest : public test::RepoTest {
 protected:
  // A script writer that, at PostSnapshot (after the snapshot, before the
  // image is read), writes 4 bytes into `file` with dd `args`: a write the
  // offline provider must notice. Returns the hook's path.
  std::string WriteAtPostSnapshot(const std::string& file, const std::string& args) {
    fs::create_directories(state_.hooks_dir());
    const std::string hook = state_.hooks_dir() + "/writer";
    const std::string text = "#!/bin/sh\n[ \"$1\" = PostSnapshot ] && printf XXXX | dd of=" + file +
                             " " + args + " 2>/dev/null\nexit 0\n";
    fs::remove(hook);
    test::WriteFile(hook, std::vector<uint8_t>(text.begin(), text.end()));
    ::chmod(hook.c_str(), 0755);
    return hook;
  }
  // Rewrites a backup record's JSON (as a hostile user with write access to
  // one file would), keeping its frame valid.
  void EditRecord(const std::string& id, const std::function<void(json&)>& edit) {
    const std::string path = repo_ + "/backups/" + id;
    std::string body;
    ASSERT_TRUE(ReadFrameFile(Env::Default(), kBackupFrame, path, &body).ok());
    json j = json::parse(body);
    edit(j);
    WriteRecordBody(id, j.dump());
  }
  void WriteRecordBody(const std::string& id, const std::string& body) {
    const std::string path = repo_ + "/backups/" + id;
    fs::remove(path);
    ASSERT_TRUE(WriteFrameFile(Env::Default(), kBackupFrame, 3, path, body).ok());
  }
  // Rewrites a whole framed file's body through `edit` (index files, volume indexes).
  static void EditFrame(const FrameKind& kind, const std::string& path,
                        const std::function<void(std::string&)>& edit) {
    std::string body;
    uint32_t version = 0;
    ASSERT_TRUE(ReadFrameFile(Env::Default(), kind, path, &body, &version).ok());
    edit(body);
    fs::remove(path);
    ASSERT_TRUE(WriteFrameFile(Env::Default(), kind, version, path, body).ok());
  }
};

// 1. A damaged chunk must not poison later backups: verify quarantines it,
// the next backup stores the data again, and the old backup is repaired.
TEST_F(DefectsTest, DamagedChunkIsStoredAgainAndOldBackupsAreRepaired) {
  const std::string vol = dir_ / "vol";
  test::WriteFile(vol, test::TextLikeBytes(640u << 10, 1));  // 10 chunks
  const std::string first = BackupId(vol);
  auto packs = Files("packs");
  ASSERT_FALSE(packs.empty());
  test::DamageFirstChunk(packs[0]);

  json v = VerifyJson(true, 3);
  EXPECT_GE(v["quarantined"].get<int>(), 1) << v.dump();
  EXPECT_EQ(v["damaged_backups"], json::array({first})) << v.dump();
  ASSERT_FALSE(Files("quarantine").empty());

  // The next backup of the intact source stores the damaged chunk again.
  auto b = G({"backup", "--json", vol});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_GE(json::parse(b.out)["totals"]["new_chunks"].get<int>(), 1) << b.out;
  EXPECT_EQ(G({"restore", "latest", dir_ / "new"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(vol, dir_ / "new"));

  // The old backup names the same digests: it now reads the intact copies.
  auto r = G({"restore", first, dir_ / "old"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(test::FilesEqual(vol, dir_ / "old"));
  v = VerifyJson(true, 0);
  EXPECT_EQ(v["repaired_backups"], json::array({first})) << v.dump();
  EXPECT_TRUE(v["damaged_backups"].empty()) << v.dump();
}

TEST_F(DefectsTest, MissingPackIsNoticedByTheNextBackupWithoutVerify) {
  const std::string vol = dir_ / "vol";
  test::WriteFile(vol, test::RandomBytes(2u << 20, 2));  // incompressible: 1 MiB packs fill
  const std::string first = BackupId(vol);
  auto packs = Files("packs");
  ASSERT_GE(packs.size(), 2u);
  fs::remove(packs[0]);
  auto b = G({"backup", "--json", vol});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_NE(b.err.find("is missing"), std::string::npos) << b.err;
  EXPECT_EQ(G({"restore", "latest", dir_ / "new"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(vol, dir_ / "new"));
  EXPECT_EQ(G({"restore", first, dir_ / "old"}).exit_code, 0) << "repaired by the new copies";
}

// 2. Restore's temporary file cannot be redirected by a planted symlink.
TEST_F(DefectsTest, RestoreIgnoresPlantedSymlinks) {
  const std::string vol = dir_ / "vol";
  test::WriteFile(vol, test::TextLikeBytes(256u << 10, 3));
  const std::string id = BackupId(vol);
  const std::string victim = dir_ / "victim";
  test::WriteFile(victim, {'k', 'e', 'e', 'p'});
  ::chmod(victim.c_str(), 0600);
  fs::create_directories(dir_ / "out");
  // The old name was TARGET.gnomon-restore-<pid>: plant links for the pids
  // the next processes will get.
  const int base = ::getpid();
  for (int pid = base; pid < base + 3000; ++pid)
    fs::create_symlink(victim, dir_ / ("out/t.gnomon-restore-" + std::to_string(pid)));
  auto r = G({"restore", id, dir_ / "out/t"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(test::FilesEqual(vol, dir_ / "out/t"));
  EXPECT_EQ(test::ReadFile(victim), (std::vector<uint8_t>{'k', 'e', 'e', 'p'}));
  struct stat st;
  ASSERT_EQ(::stat(victim.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

// 3. The reflink probe in the source's directory cannot be redirected either.
TEST_F(DefectsTest, ReflinkProbeIgnoresPlantedSymlinks) {
  GNOMON_SKIP_IF(test::RootSkipReason());
  GNOMON_SKIP_IF(test::ReflinkFs::SkipReason("xfs"));
  test::ReflinkFs xfs(dir_, "300M", "xfs");
  ASSERT_TRUE(xfs.ok());
  const std::string vol = xfs.path() + "/vol";
  test::WriteFile(vol, test::TextLikeBytes(256u << 10, 24));
  const std::string victim = dir_ / "victim";
  test::WriteFile(victim, {'k', 'e', 'e', 'p'});
  const int base = ::getpid();
  for (int pid = base; pid < base + 3000; ++pid)
    fs::create_symlink(victim, xfs.path() + "/.gnomon-reflink-probe-" + std::to_string(pid));
  auto b = G({"backup", "--json", vol});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(json::parse(b.out)["volumes"][0]["tracking"], "full-read");
  EXPECT_EQ(test::ReadFile(victim), (std::vector<uint8_t>{'k', 'e', 'e', 'p'}));
  auto s = G({"show", "--json", "latest"});
  EXPECT_EQ(json::parse(s.out)["vss"]["sources"][0]["provider"], "reflink") << s.out;
}

// 7. Permissions: the repository is the owner's alone whatever the umask;
// restore keeps an existing target's mode and creates new ones 0600.
TEST_F(DefectsTest, RepositoryAndRestoredFilesArePrivate) {
  const mode_t old = ::umask(022);
  const std::string repo2 = dir_ / "repo2";
  ASSERT_EQ(Gnomon({"init", "--repo", repo2}).exit_code, 0);
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(128u << 10, 4));
  auto b = Gnomon({"--repo", repo2, "backup", dir_ / "vol"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  for (auto& e : fs::recursive_directory_iterator(repo2)) {
    struct stat st;
    ASSERT_EQ(::lstat(e.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 077, 0u) << e.path() << " is readable by others";
  }
  struct stat st;
  ASSERT_EQ(::stat(repo2.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  fs::create_directories(dir_ / "open");  // an empty directory anyone may write
  ::chmod((dir_ / "open").c_str(), 0777);
  ASSERT_EQ(Gnomon({"init", "--repo", dir_ / "open"}).exit_code, 0);
  ASSERT_EQ(::stat((dir_ / "open").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(Gnomon({"--repo", repo2, "restore", "latest", dir_ / "new"}).exit_code, 0);
  ASSERT_EQ(::stat((dir_ / "new").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ::chmod((dir_ / "new").c_str(), 0640);
  ASSERT_EQ(Gnomon({"--repo", repo2, "restore", "--overwrite", "latest", dir_ / "new"}).exit_code,
            0);
  ASSERT_EQ(::stat((dir_ / "new").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u) << "an existing target keeps its mode";
  if (test::IsRoot()) {
    // Another user's set-id file: the restored image is root's, so it
    // keeps the permission bits and never the set-id bits.
    ASSERT_EQ(::chown((dir_ / "new").c_str(), 12345, 12345), 0);
    ASSERT_EQ(::chmod((dir_ / "new").c_str(), 06755), 0);
    ASSERT_EQ(Gnomon({"--repo", repo2, "restore", "--overwrite", "latest", dir_ / "new"}).exit_code,
              0);
    ASSERT_EQ(::stat((dir_ / "new").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0755u);
    EXPECT_EQ(st.st_uid, 0u);
  }
  // 4 (review). Init refuses a directory another user owns.
  if (test::IsRoot()) {
    fs::create_directories(dir_ / "theirs");
    ASSERT_EQ(::chown((dir_ / "theirs").c_str(), 12345, 12345), 0);
    auto r = Gnomon({"init", "--repo", dir_ / "theirs"});
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("belongs to uid 12345"), std::string::npos) << r.err;
  }
  ::umask(old);
}

// 4. Names read from a record never lead outside the repository.
TEST_F(DefectsTest, ForgetNeverDeletesOutsideTheRepository) {
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(128u << 10, 5));
  const std::string id = BackupId(dir_ / "vol");
  test::WriteFile(dir_ / "victim.txt", {'v'});
  EditRecord(id, [](json& j) { j["volumes"][0]["index"] = "../../victim.txt"; });
  auto f = G({"forget", id});
  EXPECT_EQ(f.exit_code, 3) << f.err;
  EXPECT_NE(f.err.find("forget --force"), std::string::npos) << f.err;
  EXPECT_TRUE(fs::exists(dir_ / "victim.txt"));
  auto v = VerifyJson(false, 3);
  // 17. A record that cannot be read is removed with --force, named first.
  f = G({"forget", "--force", id});
  ASSERT_EQ(f.exit_code, 0) << f.err;
  EXPECT_NE(f.err.find("backups/" + id), std::string::npos) << f.err;
  EXPECT_TRUE(fs::exists(dir_ / "victim.txt"));
  EXPECT_FALSE(fs::exists(repo_ + "/backups/" + id));
  EXPECT_FALSE(fs::exists(repo_ + "/volumes/" + id + ".0"));
}

// 5. A colliding id never replaces an earlier backup.
TEST_F(DefectsTest, ACollidingBackupIdNeverOverwritesAnEarlierBackup) {
  std::unique_ptr<Repository> repo;
  ASSERT_TRUE(Repository::Open(Env::Default(), repo_, LockMode::kExclusive, "t", &repo).ok());
  test::WriteFile(dir_ / "a", test::TextLikeBytes(256u << 10, 6));
  test::WriteFile(dir_ / "b", test::TextLikeBytes(256u << 10, 7));
  BackupOptions o;
  o.snapshot.runtime_dir = dir_ / "run";
  o.snapshot.state_dir = dir_ / "state";
  o.sources = {dir_ / "a"};
  BackupResult first;
  ASSERT_TRUE(RunBackup(repo.get(), o, &first).ok());
  const std::string id = first.record.id;
  const auto record_before = test::ReadFile(repo_ + "/backups/" + id);
  const auto index_before = test::ReadFile(repo_ + "/volumes/" + id + ".0");
  // Every backup id the generator gives is the existing one, twice, then random.
  int forced = 0;
  SetIdSourceForTesting([&](size_t bytes) {
    if (bytes == 8 && forced < 2) {
      ++forced;
      return id;
    }
    SetIdSourceForTesting(nullptr);
    return RandomHexId(bytes);
  });
  o.sources = {dir_ / "b"};
  BackupResult second;
  Status s = RunBackup(repo.get(), o, &second);
  SetIdSourceForTesting(nullptr);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(forced, 2);
  EXPECT_NE(second.record.id, id);
  EXPECT_EQ(test::ReadFile(repo_ + "/backups/" + id), record_before);
  EXPECT_EQ(test::ReadFile(repo_ + "/volumes/" + id + ".0"), index_before);
  // A write-once name that is taken is refused, never replaced.
  EXPECT_TRUE(repo->WriteBackupRecord(second.record).IsExists());
  repo.reset();
  EXPECT_EQ(G({"restore", id, dir_ / "ra"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(dir_ / "a", dir_ / "ra"));
  EXPECT_EQ(G({"restore", second.record.id, dir_ / "rb"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(dir_ / "b", dir_ / "rb"));
}

// 6. The offline provider's "snapshot" is the live file: a write while it is
// imaged fails the backup with exit 4 instead of storing a torn image. The
// write comes from a script writer at PostSnapshot, after the snapshot and
// before the image is read, so the test needs no timing.
TEST_F(DefectsTest, OfflineProviderRefusesAFileWrittenWhileImaged) {
  const std::string vol = dir_ / "vol";
  test::WriteFile(vol, test::TextLikeBytes(1u << 20, 8));
  const std::string hook = WriteAtPostSnapshot(vol, "bs=1 seek=4800000 conv=notrunc");
  auto b = G({"backup", vol});
  EXPECT_EQ(b.exit_code, 4) << b.err;
  EXPECT_NE(b.err.find("while it was being read"), std::string::npos) << b.err;
  EXPECT_TRUE(Files("backups").empty());
  fs::remove(hook);
  EXPECT_EQ(G({"backup", vol}).exit_code, 0) << "without the writer it backs up";
}

TEST_F(DefectsTest, OfflineProviderRefusesADeviceWrittenWhileImaged) {
  GNOMON_SKIP_IF(test::RootSkipReason());
  test::WriteFile(dir_ / "img", test::TextLikeBytes(1u << 20, 9));
  test::LoopDevice loop(dir_ / "img");
  ASSERT_FALSE(loop.device().empty());
  WriteAtPostSnapshot(loop.device(), "bs=4096 seek=3 conv=notrunc");  // buffered
  auto b = G({"backup", loop.device()});
  EXPECT_EQ(b.exit_code, 4) << b.err;
  EXPECT_TRUE(Files("backups").empty());
}

// 1 (review). A pack that is away for a while (moved, unmounted) is not
// damaged: verify does not quarantine it, and once it is back the backup
// restores; even a copy quarantined by mistake still serves a restore.
TEST_F(DefectsTest, APackThatWasAwayIsNotDamagedForever) {
  const std::string vol = dir_ / "vol";
  test::WriteFile(vol, test::RandomBytes(2u << 20, 30));
  const std::string id = BackupId(vol);
  auto packs = Files("packs");
  fs::rename(packs[0], dir_ / "away");
  json v = VerifyJson(true, 3);
  EXPECT_EQ(v["quarantined"], 0) << v.dump();
  EXPECT_EQ(v["damaged_backups"], json::array({id})) << v.dump();
  fs::rename(dir_ / "away", packs[0]);
  VerifyJson(true, 0);
  EXPECT_EQ(G({"restore", id, dir_ / "out"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(vol, dir_ / "out"));

  // A pack cut short (an unfinished copy-back) is damage and is
  // quarantined; once the whole pack is back, its copies check out again,
  // verify --read-data is clean and restore uses them.
  fs::copy_file(packs[0], dir_ / "whole");
  test::TruncateFile(packs[0], fs::file_size(packs[0]) / 2);
  v = VerifyJson(true, 3);
  EXPECT_GE(v["quarantined"].get<int>(), 1) << v.dump();
  fs::remove(packs[0]);
  fs::copy_file(dir_ / "whole", packs[0]);
  v = VerifyJson(true, 0);
  EXPECT_NE(v["warnings"].dump().find("reads intact now"), std::string::npos) << v.dump();
  EXPECT_EQ(G({"restore", "--overwrite", id, dir_ / "out"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(vol, dir_ / "out"));
}

// ... and a loop device whose backing file is written past the device.
TEST_F(DefectsTest, OfflineProviderRefusesALoopDeviceWhoseBackingFileIsWritten) {
  GNOMON_SKIP_IF(test::RootSkipReason());
  test::WriteFile(dir_ / "img", test::TextLikeBytes(1u << 20, 34));
  test::LoopDevice loop(dir_ / "img");
  ASSERT_FALSE(loop.device().empty());
  WriteAtPostSnapshot(dir_ / "img", "bs=4096 seek=5 conv=notrunc,fsync");
  auto b = G({"backup", loop.device()});
  EXPECT_EQ(b.exit_code, 4) << b.err;
  EXPECT_TRUE(Files("backups").empty());
}

// 8. Script writers run only what root (or the invoking user) alone controls.
TEST_F(DefectsTest, UntrustedScriptWritersAreRefusedAndNamed) {
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(64u << 10, 10));
  const std::string hooks = state_.hooks_dir();
  fs::create_directories(hooks);
  ::chmod(hooks.c_str(), 0755);
  auto script = [&](const std::string& name, mode_t mode) {
    std::string text = "#!/bin/sh\ntouch " + (dir_ / ("ran-" + name)) + "\n";
    test::WriteFile(hooks + "/" + name, std::vector<uint8_t>(text.begin(), text.end()));
    ::chmod((hooks + "/" + name).c_str(), mode);
  };
  script("ok", 0755);
  script("world", 0777);
  script("group", 0775);
  auto b = G({"backup", dir_ / "vol"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_TRUE(fs::exists(dir_ / "ran-ok"));
  EXPECT_FALSE(fs::exists(dir_ / "ran-world"));
  EXPECT_FALSE(fs::exists(dir_ / "ran-group"));
  EXPECT_NE(b.err.find(hooks + "/world is writable by everyone"), std::string::npos) << b.err;
  auto w = Gnomon({"writers"});
  EXPECT_NE(w.err.find(hooks + "/group is writable by its group"), std::string::npos) << w.err;
  if (test::IsRoot()) {  // another owner (root can give files away)
    script("other", 0755);
    ASSERT_EQ(::chown((hooks + "/other").c_str(), 65534, 65534), 0);
    b = G({"backup", dir_ / "vol"});
    EXPECT_FALSE(fs::exists(dir_ / "ran-other"));
    EXPECT_NE(b.err.find("is owned by uid 65534"), std::string::npos) << b.err;
  }
  // A link to a script in a directory another user may write: that user
  // could swap the script between events.
  if (test::IsRoot()) {
    fs::create_directories(dir_ / "alice");
    ASSERT_EQ(::chown((dir_ / "alice").c_str(), 65534, 65534), 0);
    script("ok", 0755);
    fs::rename(hooks + "/ok", dir_ / "alice/s.sh");
    fs::create_symlink(dir_ / "alice/s.sh", hooks + "/ok");
    fs::remove(dir_ / "ran-ok");
    b = G({"backup", dir_ / "vol"});
    EXPECT_FALSE(fs::exists(dir_ / "ran-ok"));
    EXPECT_NE(b.err.find("a directory above it: " + (dir_ / "alice") + " is owned by uid 65534"),
              std::string::npos)
        << b.err;
    fs::remove(hooks + "/ok");
    script("ok", 0755);
  }
  // A trusted script reached through a link that another user's directory
  // holds: it is run by its resolved path, so retargeting the link between
  // events (the script itself does it here, at its first event) changes
  // nothing.
  if (test::IsRoot()) {
    fs::create_directories(dir_ / "sys");
    fs::create_directories(dir_ / "evil");
    fs::create_directories(dir_ / "user");
    const std::string log = dir_ / "log";
    auto put = [&](const std::string& path, const std::string& text) {
      test::WriteFile(path, std::vector<uint8_t>(text.begin(), text.end()));
      ::chmod(path.c_str(), 0755);
    };
    put(dir_ / "sys/s.sh", "#!/bin/sh\necho \"legit $1\" >> " + log + "\nln -sfn " +
                               (dir_ / "evil") + " " + (dir_ / "user/link") + "\n");
    put(dir_ / "evil/s.sh", "#!/bin/sh\necho \"EVIL $1\" >> " + log + "\n");
    fs::create_directory_symlink(dir_ / "sys", dir_ / "user/link");
    ASSERT_EQ(::lchown((dir_ / "user/link").c_str(), 65534, 65534), 0);
    ASSERT_EQ(::chown((dir_ / "user").c_str(), 65534, 65534), 0);
    for (auto& e : fs::directory_iterator(hooks)) fs::remove(e.path());
    fs::create_symlink(dir_ / "user/link/s.sh", hooks + "/linked");
    b = G({"backup", dir_ / "vol"});
    ASSERT_EQ(b.exit_code, 0) << b.err;
    auto text = test::ReadFile(log);
    const std::string ran(text.begin(), text.end());
    EXPECT_NE(ran.find("legit Freeze"), std::string::npos) << ran;
    EXPECT_EQ(ran.find("EVIL"), std::string::npos) << ran;
    for (auto& e : fs::directory_iterator(hooks)) fs::remove(e.path());
    script("ok", 0755);
  }
  // A directory anyone can write to: nothing in it runs.
  fs::remove(dir_ / "ran-ok");
  ::chmod(hooks.c_str(), 0777);
  b = G({"backup", dir_ / "vol"});
  EXPECT_FALSE(fs::exists(dir_ / "ran-ok"));
  EXPECT_NE(b.err.find("no script in it is run"), std::string::npos) << b.err;
}

// 9. A block device another process holds open is refused, naming it.
TEST_F(DefectsTest, RestoreRefusesADeviceAnotherProcessHoldsOpen) {
  GNOMON_SKIP_IF(test::RootSkipReason());
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(64u << 10, 11));
  const std::string id = BackupId(dir_ / "vol");
  test::WriteFile(dir_ / "disk", std::vector<uint8_t>(1u << 20, 0));
  test::LoopDevice loop(dir_ / "disk");
  pid_t holder = ::fork();
  if (holder == 0) {
    int fd = ::open(loop.device().c_str(), O_RDONLY);
    (void)fd;
    ::pause();
    ::_exit(0);
  }
  // Wait (with a deadline) until the child has the device open.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  bool open = false;
  while (!open && std::chrono::steady_clock::now() < deadline) {
    std::error_code ec;
    for (auto& fd : fs::directory_iterator("/proc/" + std::to_string(holder) + "/fd", ec))
      if (fs::read_symlink(fd.path(), ec) == loop.device()) open = true;
  }
  ASSERT_TRUE(open);
  auto r = G({"restore", id, loop.device()});
  ::kill(holder, SIGKILL);
  ::waitpid(holder, nullptr, 0);
  EXPECT_EQ(r.exit_code, 2) << r.err;  // the target cannot take it: nothing written
  EXPECT_NE(r.err.find("pid " + std::to_string(holder)), std::string::npos) << r.err;
  EXPECT_EQ(test::ReadFile(dir_ / "disk"), std::vector<uint8_t>(1u << 20, 0));
}

// 10. Checksum-valid records whose VSS documents have the wrong shape.
TEST_F(DefectsTest, MalformedVssDocumentsAreReportedNotFatal) {
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(64u << 10, 12));
  const std::string id = BackupId(dir_ / "vol");
  for (const char* bad : {"5", R"({"bcd":7})", R"({"bcd":{},"writers":3})",
                          R"({"writer_status":[{"name":"w","failure":"x"}]})"}) {
    EditRecord(id, [&](json& j) { j["extra"]["vss"] = json::parse(bad); });
    auto s = G({"show", id});
    EXPECT_EQ(s.exit_code, 3) << bad << ": " << s.err;
    EXPECT_NE(s.err.find("extra.vss"), std::string::npos) << s.err;
    VerifyJson(false, 3);
  }
  EditRecord(id, [&](json& j) { j["extra"]["vss"] = json::object(); });
  EXPECT_EQ(G({"show", id}).exit_code, 0);
  // A malformed writer-status file is ignored by `gnomon writers`.
  fs::create_directories(state_.state_dir());
  for (const char* bad : {"[]", R"({"writers":5})", R"({"writers":[{"class_id":1,"state":"x"}]})",
                          "{", R"({"writers":[7]})"}) {
    test::WriteFile(state_.state_dir() + "/writers.json",
                    std::vector<uint8_t>(bad, bad + std::strlen(bad)));
    auto w = Gnomon({"writers"});
    EXPECT_EQ(w.exit_code, 0) << bad << ": " << w.err;
  }
}

// 11. Deep nesting is refused before it reaches the parser.
TEST_F(DefectsTest, DeeplyNestedRecordIsDamagedNotACrash) {
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(64u << 10, 13));
  const std::string good = BackupId(dir_ / "vol");
  test::WriteFile(dir_ / "vol2", test::TextLikeBytes(64u << 10, 14));
  const std::string bad = BackupId(dir_ / "vol2");
  std::string body;
  ASSERT_TRUE(ReadFrameFile(Env::Default(), kBackupFrame, repo_ + "/backups/" + bad, &body).ok());
  json j = json::parse(body);
  j["extra"] = "NEST";
  std::string text = j.dump();
  text.replace(text.find("\"NEST\""), 6, std::string(200000, '[') + std::string(200000, ']'));
  WriteRecordBody(bad, text);
  EXPECT_EQ(G({"list"}).exit_code, 3);
  EXPECT_EQ(G({"show", bad}).exit_code, 3);
  EXPECT_EQ(G({"verify"}).exit_code, 3);
  EXPECT_EQ(G({"restore", good, dir_ / "out"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(dir_ / "vol", dir_ / "out"));
  EXPECT_EQ(G({"backup", "--type", "incremental", dir_ / "vol"}).exit_code, 0);
  EXPECT_EQ(G({"forget", "--force", bad}).exit_code, 0);
  EXPECT_EQ(G({"verify"}).exit_code, 0);
}

// 12. Lengths read from files are checked before anything is allocated.
TEST_F(DefectsTest, ImpossibleLengthsAreDamagedNotAllocated) {
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(256u << 10, 15));
  const std::string id = BackupId(dir_ / "vol");
  // A volume index claiming 4 GiB chunks, with the record's checksum and
  // chunk size made to agree.
  const std::string vpath = repo_ + "/volumes/" + id + ".0";
  EditFrame(kVolumeIndexFrame, vpath, [](std::string& b) {
    uint32_t big = 0xFFFFFFFFu;
    std::memcpy(b.data() + 8, &big, 4);
    uint64_t one = 1;
    std::memcpy(b.data() + 16, &one, 8);
    b.resize(24 + 16);
  });
  auto file = test::ReadFile(vpath);
  EditRecord(id, [&](json& j) { j["volumes"][0]["index_checksum"] = Checksum64(file); });
  auto r = G({"restore", id, dir_ / "out"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "out"));
  for (auto& e : fs::directory_iterator(dir_.path()))
    EXPECT_EQ(e.path().filename().string().find("gnomon-restore"), std::string::npos) << e.path();

  // A chunk-index entry claiming a 4 GiB chunk: that index file is damaged.
  test::WriteFile(dir_ / "vol3", test::TextLikeBytes(128u << 10, 16));
  const std::string id3 = BackupId(dir_ / "vol3");
  auto idx = Files("index");
  std::string named;
  for (const auto& p : idx) named = p;  // any one: damage them all
  for (const auto& p : idx)
    EditFrame(kIndexFrame, p, [](std::string& b) {
      uint32_t huge = 0xFFFFFFF0u;
      std::memcpy(b.data() + 4 + 20 + 24, &huge, 4);  // first entry's raw length
    });
  r = G({"restore", id3, dir_ / "out3"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("impossible with chunk size"), std::string::npos) << r.err;
}

// 13. init refuses chunk sizes it cannot honour.
TEST_F(DefectsTest, InitRejectsOutOfRangeSettings) {
  for (const char* bad : {"4194308", "4194304", "0", "3", "100"}) {
    auto r = Gnomon({"init", "--repo", dir_ / ("r" + std::string(bad)), "--chunk-size", bad});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_NE(r.err.find("power of two from 4 to 65536"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir_ / ("r" + std::string(bad))));
  }
  EXPECT_EQ(Gnomon({"init", "--repo", dir_ / "rz", "--compression", "0"}).exit_code, 2);
  EXPECT_EQ(Gnomon({"init", "--repo", dir_ / "rz", "--pack-size", "0"}).exit_code, 2);
}

// 4 (review). A file planted at the target while a restore runs is never
// replaced nor handed the image; a target replaced meanwhile neither.
TEST_F(DefectsTest, RestoreNeverReplacesAFilePlantedMeanwhile) {
  const std::string target = dir_ / "img";
  RestoreTarget t;
  ASSERT_TRUE(t.Open(target, 4096, false, repo_, nullptr).ok());
  std::vector<uint8_t> data(4096, 'x');
  ASSERT_TRUE(t.WriteAt(0, data.data(), data.size()).ok());
  test::WriteFile(target, {'p', 'l', 'a', 'n', 't'});
  ::chmod(target.c_str(), 0666);
  Status s = t.Commit();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("appeared"), std::string::npos) << s.message();
  EXPECT_EQ(test::ReadFile(target), (std::vector<uint8_t>{'p', 'l', 'a', 'n', 't'}));

  RestoreTarget t2;  // --overwrite of the file seen at Open only
  ASSERT_TRUE(t2.Open(target, 4096, true, repo_, nullptr).ok());
  fs::remove(target);
  test::WriteFile(target, {'n', 'e', 'w'});
  EXPECT_FALSE(t2.Commit().ok());
  EXPECT_EQ(test::ReadFile(target), (std::vector<uint8_t>{'n', 'e', 'w'}));
}

// 5 (review). A record moved away by hand must find its volume indexes when
// it comes back: only a dead run's journaled volume indexes are removed.
TEST_F(DefectsTest, VolumeIndexesOfAMovedRecordAreKept) {
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(128u << 10, 31));
  const std::string id = BackupId(dir_ / "vol");
  fs::rename(repo_ + "/backups", dir_ / "stolen");
  fs::create_directories(repo_ + "/backups");
  ASSERT_EQ(G({"backup", dir_ / "vol"}).exit_code, 0);
  auto v = G({"verify"});
  EXPECT_NE(v.out.find("no backup record names"), std::string::npos) << v.out;
  fs::rename(dir_ / ("stolen/" + id), repo_ + "/backups/" + id);
  EXPECT_EQ(G({"restore", id, dir_ / "out"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(dir_ / "vol", dir_ / "out"));
}

TEST_F(DefectsTest, RestoreIntoABindMountOfTheRepositoryIsRefused) {
  GNOMON_SKIP_IF(test::RootSkipReason());
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(64u << 10, 32));
  const std::string id = BackupId(dir_ / "vol");
  fs::create_directories(dir_ / "mnt");
  ASSERT_EQ(test::Sh("mount --bind " + repo_ + " " + (dir_ / "mnt")).exit_code, 0);
  auto r = G({"restore", id, dir_ / "mnt/index/x"});
  test::Sh("umount " + (dir_ / "mnt"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("inside the repository"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(repo_ + "/index/x"));
}

// 3 (review). A repository on a read-only mount can still be read.
TEST_F(DefectsTest, ARepositoryOnAReadOnlyMountIsReadable) {
  GNOMON_SKIP_IF(test::RootSkipReason());
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(64u << 10, 33));
  const std::string id = BackupId(dir_ / "vol");
  fs::remove(repo_ + "/lock");  // and without its lock file
  fs::create_directories(dir_ / "ro");
  ASSERT_EQ(test::Sh("mount --bind " + repo_ + " " + (dir_ / "ro") +
                     " && mount -o remount,ro,bind " + (dir_ / "ro"))
                .exit_code,
            0);
  auto l = Gnomon({"--repo", dir_ / "ro", "list"});
  auto v = Gnomon({"--repo", dir_ / "ro", "verify"});
  auto r = Gnomon({"--repo", dir_ / "ro", "restore", id, dir_ / "out"});
  test::Sh("umount " + (dir_ / "ro"));
  EXPECT_EQ(l.exit_code, 0) << l.err;
  EXPECT_EQ(v.exit_code, 0) << v.err;
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(test::FilesEqual(dir_ / "vol", dir_ / "out"));
}

// 14. Restore into the repository is refused.
TEST_F(DefectsTest, RestoreIntoTheRepositoryIsRefused) {
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(64u << 10, 17));
  const std::string id = BackupId(dir_ / "vol");
  const auto before = Files("");
  auto r = G({"restore", id, repo_ + "/index/" + std::string(32, 'a')});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("inside the repository"), std::string::npos) << r.err;
  r = G({"restore", "--overwrite", id, repo_ + "/config"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(Files(""), before);
  EXPECT_EQ(G({"verify"}).exit_code, 0);
}

// 15. A damaged index file only affects the backups whose chunks it alone held.
TEST_F(DefectsTest, DamagedIndexFileSparesBackupsThatDoNotNeedIt) {
  test::WriteFile(dir_ / "a", test::RandomBytes(256u << 10, 18));
  const std::string a = BackupId(dir_ / "a");
  auto idx_a = Files("index");
  ASSERT_EQ(idx_a.size(), 1u);
  test::WriteFile(dir_ / "b", test::RandomBytes(256u << 10, 19));
  const std::string b = BackupId(dir_ / "b");
  test::FlipByte(idx_a[0], 40);
  auto r = G({"restore", b, dir_ / "rb"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(test::FilesEqual(dir_ / "b", dir_ / "rb"));
  r = G({"restore", a, dir_ / "ra"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find(fs::path(idx_a[0]).filename().string()), std::string::npos) << r.err;
  // 20. verify says why a pack is unreferenced: the damaged index may name it.
  auto v = G({"verify"});
  EXPECT_NE(v.out.find("a damaged index file may name it"), std::string::npos) << v.out;
  EXPECT_EQ(v.out.find("interrupted backup"), std::string::npos) << v.out;
  // ...and the next backup keeps that pack.
  const auto packs = Files("packs");
  EXPECT_EQ(G({"backup", dir_ / "b"}).exit_code, 0);
  for (const auto& p : packs) EXPECT_TRUE(fs::exists(p)) << p;
}

// 16. Durations must be finite and in range, everywhere.
TEST_F(DefectsTest, NonFiniteAndNegativeDurationsAreRefused) {
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(64u << 10, 20));
  for (const char* opt : {"--freeze-timeout", "--hold-timeout", "--snapshot-wait"})
    for (const char* bad : {"nan", "inf", "-1", "-inf"}) {
      auto r = G({"backup", opt, bad, dir_ / "vol"});
      EXPECT_EQ(r.exit_code, 2) << opt << " " << bad << ": " << r.err;
    }
  EXPECT_TRUE(Files("backups").empty());
  auto w = test::Run({SQLITE_WRITER_BIN, "--freeze-timeout", "nan", dir_ / "db"});
  EXPECT_NE(w.exit_code, 0);
  EXPECT_NE(w.err.find("'nan' is not a number of seconds"), std::string::npos) << w.err;
}

// 18. Deleting the lock file does not let a second writer in.
TEST_F(DefectsTest, DeletingTheLockFileDoesNotUnlockTheRepository) {
  std::unique_ptr<Repository> holder;
  ASSERT_TRUE(
      Repository::Open(Env::Default(), repo_, LockMode::kExclusive, "backup", &holder).ok());
  fs::remove(repo_ + "/lock");
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(64u << 10, 21));
  auto r = G({"backup", dir_ / "vol"});
  EXPECT_EQ(r.exit_code, 11) << r.err;
  holder.reset();
  EXPECT_EQ(G({"backup", dir_ / "vol"}).exit_code, 0);
}

// 19. Leftovers of killed runs are cleaned by the next run of the same kind.
TEST_F(DefectsTest, HalfBuiltRepositoryAndPartialRestoresAreCleanedUp) {
  // An init that died: only empty layout directories.
  const std::string half = dir_ / "half";
  fs::create_directories(half + "/packs/00");
  fs::create_directories(half + "/index");
  auto r = Gnomon({"init", "--repo", half});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // A directory with anything else in it is still refused.
  fs::create_directories(dir_ / "busy/packs");
  test::WriteFile(dir_ / "busy/packs/x", {1});
  EXPECT_NE(Gnomon({"init", "--repo", dir_ / "busy"}).exit_code, 0);

  // A restore killed before it renamed its temporary file.
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(64u << 10, 22));
  const std::string id = BackupId(dir_ / "vol");
  pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  const std::string partial =
      dir_ / (".out.gnomon-restore-" + HostName() + "-" + std::to_string(dead) + "-0123abcd");
  test::WriteFile(partial, std::vector<uint8_t>(1u << 20, 7));
  r = G({"restore", id, dir_ / "out"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(partial));
  EXPECT_NE(r.err.find("partial restore left by pid " + std::to_string(dead)), std::string::npos)
      << r.err;
}

// 19. An init that fails (a full disk) leaves nothing the next init refuses.
TEST_F(DefectsTest, AFailedInitLeavesNothingBehind) {
  test::FaultEnv env(Env::Default());
  env.space_left = 10;  // the config does not fit
  const std::string path = dir_ / "full";
  EXPECT_FALSE(Repository::Init(&env, path, RepoConfig{}).ok());
  EXPECT_TRUE(!fs::exists(path) || fs::is_empty(path));
  env.space_left = -1;
  Status s = Repository::Init(&env, path, RepoConfig{});
  EXPECT_TRUE(s.ok()) << s.message();
}

// 20. Sizes below 1 MiB are shown exactly; names cannot drive the terminal.
TEST_F(DefectsTest, ListShowsExactSmallSizesAndEscapesControlCharacters) {
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(4097, 23));
  const std::string id = BackupId(dir_ / "vol");
  EditRecord(id, [](json& j) { j["host"] = "evil\x1b]0;pwned\x07"; });
  auto l = G({"list"});
  ASSERT_EQ(l.exit_code, 0) << l.err;
  EXPECT_NE(l.out.find("4097 B"), std::string::npos) << l.out;
  EXPECT_EQ(l.out.find('\x1b'), std::string::npos) << "raw escape printed";
  EXPECT_NE(l.out.find("evil\\x1b"), std::string::npos) << l.out;
  auto s = G({"show", id});
  EXPECT_EQ(s.out.find('\x1b'), std::string::npos);
}

// 20. Names a file held reach the terminal escaped everywhere: the journal
// an interrupted run left in tmp/, a restored volume's name, an error
// message, and what `gnomon snapshots` lists from the registry.
TEST_F(DefectsTest, LeftoverNamesRestoredVolumesErrorsAndSnapshotsAreEscaped) {
  const std::string evil =
      "evil\x1b]0;pwned\x07\xc2\x9b"
      "2J";
  const std::string shown = "evil\\x1b]0;pwned\\x07\\u009b2J";
  auto raw = [](const std::string& text) {
    return text.find('\x1b') != std::string::npos || text.find("\xc2\x9b") != std::string::npos;
  };
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(4097, 24));
  const std::string id = BackupId(dir_ / "vol");
  ASSERT_FALSE(id.empty());

  // A journal of an interrupted backup naming a pack no index file names:
  // the next backup removes the pack and says which run left it.
  const std::string pack = "0123456789abcdef0123456789abcdef";
  fs::create_directories(repo_ + "/packs/01");
  test::WriteFile(repo_ + "/packs/01/" + pack, {1, 2, 3});
  const std::string journal = pack + "\n";
  test::WriteFile(repo_ + "/tmp/" + evil + ".journal",
                  std::vector<uint8_t>(journal.begin(), journal.end()));
  auto b = G({"backup", dir_ / "vol"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_FALSE(fs::exists(repo_ + "/packs/01/" + pack));
  EXPECT_NE(b.err.find(shown + ".journal"), std::string::npos) << b.err;
  EXPECT_FALSE(raw(b.err)) << "raw escape printed";

  // A restore prints the volume's name from the record.
  EditRecord(id, [&](json& j) { j["volumes"][0]["name"] = evil; });
  auto r = G({"restore", id, dir_ / "out"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(":" + shown + " to "), std::string::npos) << r.out;
  EXPECT_FALSE(raw(r.out)) << "raw escape printed";

  // An error message naming what it was given.
  auto e = G({"restore", id + ":no-" + evil, dir_ / "out2"});
  EXPECT_NE(e.exit_code, 0);
  EXPECT_NE(e.err.find("no-" + shown), std::string::npos) << e.err;
  EXPECT_FALSE(raw(e.err)) << "raw escape printed";

  // A registry record's fields in `gnomon snapshots`.
  vss::SnapshotProperties p;
  p.snapshot_id = vss::Guid::Random();
  p.volume = evil;
  p.provider = "offline";
  p.device = "/dev/" + evil;
  p.created = evil;
  p.state = vss::SnapshotState::kBase;
  p.backup_id = evil;
  p.pid = -1;
  ASSERT_TRUE(vss::SnapshotRegistry(state_.state_dir() + "/snapshots").Put(p).ok());
  auto l = Gnomon({"snapshots"});
  ASSERT_EQ(l.exit_code, 0) << l.err;
  EXPECT_NE(l.out.find(p.snapshot_id.ToString()), std::string::npos) << l.out;
  EXPECT_NE(l.out.find(shown + " -> /dev/" + shown), std::string::npos) << l.out;
  EXPECT_FALSE(raw(l.out)) << "raw escape printed";
}

}  // namespace
}  // namespace gnomon
