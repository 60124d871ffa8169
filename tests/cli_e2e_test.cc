// End-to-end tests of the real gnomon binary: exit codes, JSON output,
// damaged repositories, a backup killed mid-run, the lock, loop devices.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/test_util.h"

namespace gnomon {
namespace {

using nlohmann::json;
using test::Gnomon;
using test::TempDir;
namespace fs = std::filesystem;

using CliTest = test::RepoTest;

TEST_F(CliTest, BackupListRestoreVerifyWithJsonAndEnvRepo) {
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(3u << 20, 1));
  std::string id = BackupId(dir_ / "vol");
  ASSERT_EQ(id.size(), 16u);

  // GNOMON_REPO stands in for --repo.
  auto list = test::Run({test::GnomonBinary(), "list", "--json"}, {"GNOMON_REPO=" + repo_});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  json l = json::parse(list.out);
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0]["id"], id);
  EXPECT_EQ(l[0]["volumes"][0]["size"], 3u << 20);

  auto q = G({"-q", "backup", dir_ / "vol"});
  EXPECT_EQ(q.out, q.out.substr(0, 16) + "\n");  // -q prints just the id

  auto r = G({"restore", "--json", id.substr(0, 5), dir_ / "out"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["bytes"], 3u << 20);
  EXPECT_TRUE(test::FilesEqual(dir_ / "vol", dir_ / "out"));

  // An existing target is not replaced without --overwrite.
  r = G({"restore", "latest", dir_ / "out"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--overwrite"), std::string::npos) << r.err;
  EXPECT_EQ(G({"restore", "--overwrite", "latest", dir_ / "out"}).exit_code, 0);

  auto v = G({"verify", "--read-data", "--json"});
  ASSERT_EQ(v.exit_code, 0) << v.out;
  json vj = json::parse(v.out);
  EXPECT_TRUE(vj["ok"].get<bool>());
  EXPECT_EQ(vj["backups"], 2);
}

// gnomon copy between local repositories: a whole chunk travels in the
// stored form the source gave it (not compressed again, whatever the
// target's level), into an encrypted target and back out; a damaged chunk in
// the source stops the copy (exit 3, naming its pack) and the target
// publishes nothing.
TEST_F(CliTest, CopyBetweenLocalRepositoriesKeepsStoredChunks) {
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(4u << 20, 3));
  const std::string id = BackupId(dir_ / "vol");
  ASSERT_EQ(id.size(), 16u);
  auto run = [](const std::string& repo, std::vector<std::string> args,
                std::vector<std::string> env = {}) {
    args.insert(args.begin(), {test::GnomonBinary(), "--repo", repo});
    return test::Run(args, env);
  };
  auto stored = [&](const std::string& repo, std::vector<std::string> env = {}) {
    auto r = run(repo, {"stats", "--json"}, env);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out)["stored_bytes"].get<uint64_t>() : 0;
  };
  const std::string enc = dir_ / "enc", back = dir_ / "back";
  const std::vector<std::string> pw = {"GNOMON_PASSWORD=pw"};
  ASSERT_EQ(run(enc, {"init", "--chunk-size", "64", "--compression", "19"}, pw).exit_code, 0);
  auto c = run(repo_, {"copy", "--from", repo_, "--to", enc}, {"GNOMON_TO_PASSWORD=pw"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_EQ(stored(enc, pw), stored(repo_));  // level 19 would have made them smaller

  ASSERT_EQ(run(back, {"init", "--encryption=none", "--chunk-size", "64"}).exit_code, 0);
  c = run(enc, {"copy", "--from", enc, "--to", back}, {"GNOMON_FROM_PASSWORD=pw"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  auto r = run(back, {"restore", id, dir_ / "out"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(test::FilesEqual(dir_ / "vol", dir_ / "out"));
  EXPECT_EQ(run(back, {"verify", "--read-data"}).exit_code, 0);

  const auto packs = Files("packs");
  ASSERT_FALSE(packs.empty());
  test::DamageFirstChunk(packs[0]);
  const std::string fresh = dir_ / "fresh";
  ASSERT_EQ(run(fresh, {"init", "--encryption=none", "--chunk-size", "64"}).exit_code, 0);
  c = run(repo_, {"copy", "--from", repo_, "--to", fresh});
  EXPECT_EQ(c.exit_code, 3) << c.err;
  EXPECT_NE(c.err.find(fs::path(packs[0]).filename().string()), std::string::npos) << c.err;
  auto l = run(fresh, {"list", "--json"});
  ASSERT_EQ(l.exit_code, 0) << l.err;
  EXPECT_TRUE(json::parse(l.out).empty());
}

TEST_F(CliTest, ShowWritersAndCopyBackups) {
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(1u << 20, 11));
  auto b = G({"backup", "--type", "copy", "--json", dir_ / "vol"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(json::parse(b.out)["type"], "copy");
  auto s = G({"show", "--json", "latest"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  json v = json::parse(s.out)["vss"];
  EXPECT_EQ(v["bcd"]["backup_type"], "copy");
  EXPECT_EQ(v["bcd"]["schema"], "gnomon.vss.bcd/1");
  EXPECT_EQ(v["writers"].size(), 2u);
  EXPECT_EQ(v["sources"][0]["provider"], "offline");
  auto human = G({"show", "latest"});
  EXPECT_NE(human.out.find("Backup Components Document"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("Volume Image Writer"), std::string::npos);
  auto w = Gnomon({"writers", "--json"});
  ASSERT_EQ(w.exit_code, 0) << w.err;
  json ws = json::parse(w.out);
  ASSERT_EQ(ws.size(), 2u);
  for (const auto& x : ws) {
    EXPECT_EQ(x["state_text"], "[1] Stable") << x.dump();
    EXPECT_FALSE(x["last_backup"].is_null()) << "the backup above saved writer status";
  }
  auto wh = Gnomon({"writers"});
  EXPECT_NE(wh.out.find("Writer name: 'Filesystem Freeze Writer'"), std::string::npos) << wh.out;
  EXPECT_NE(wh.out.find("Last error: No error"), std::string::npos);
}

TEST_F(CliTest, IncrementalsWithoutChangeTrackingStorePatchesOfWhatDiffers) {
  // A file on a filesystem without reflinks: the offline provider, so no
  // change tracking. Each incremental reads everything and compares it with
  // its parent, chunk by chunk, then block by block.
  const std::string vol = dir_ / "vol";
  test::WriteFile(vol, test::TextLikeBytes(12u << 20, 21));
  ASSERT_EQ(G({"backup", vol}).exit_code, 0);
  auto poke = [&](uint64_t off, uint64_t seed) {
    auto data = test::RandomBytes(4096, seed);
    int fd = ::open(vol.c_str(), O_WRONLY);
    ASSERT_EQ(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(off)), 4096);
    ::close(fd);
  };
  auto incremental = [&] {
    auto b = G({"backup", "--type", "incremental", "--json", vol});
    EXPECT_EQ(b.exit_code, 0) << b.err;
    return json::parse(b.out);
  };
  poke(100 << 10, 1);
  poke((5u << 20) + 8192, 2);
  poke(9u << 20, 3);
  json i1 = incremental();
  const json& v = i1["volumes"][0];
  EXPECT_EQ(v["tracking"], "full-read");
  EXPECT_EQ(v["stats"]["changed_chunks"], 3);
  EXPECT_EQ(v["stats"]["patched_chunks"], 3) << v.dump();
  EXPECT_LT(v["stats"]["new_raw_bytes"].get<uint64_t>(), 3u * (4096 + 200));
  const std::string at_i1 = dir_ / "at-i1";
  fs::copy_file(vol, at_i1);
  // The same chunk again: a patch on the patch. Every backup restores.
  poke(200 << 10, 4);
  json i2 = incremental();
  EXPECT_EQ(i2["volumes"][0]["stats"]["patched_chunks"], 1);
  for (const auto& [id, expect] : {std::pair{i1["id"].get<std::string>(), at_i1},
                                   std::pair{i2["id"].get<std::string>(), vol}}) {
    auto r = G({"restore", "--overwrite", id, dir_ / "out"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(test::FilesEqual(expect, dir_ / "out")) << id;
  }
}

TEST_F(CliTest, ForgetRemovesABackupAndTheOthersStillRestore) {
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(2u << 20, 12));
  std::string a = BackupId(dir_ / "vol");
  test::WriteFile(dir_ / "vol2", test::TextLikeBytes(2u << 20, 13));
  std::string b = BackupId(dir_ / "vol2");
  auto f = G({"forget", a.substr(0, 6)});
  ASSERT_EQ(f.exit_code, 0) << f.err;
  EXPECT_NE(f.out.find("removed backup " + a), std::string::npos);
  EXPECT_EQ(G({"restore", a, dir_ / "x"}).exit_code, 1);  // gone
  ASSERT_EQ(G({"restore", b, dir_ / "out"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(dir_ / "vol2", dir_ / "out"));
  EXPECT_EQ(G({"verify", "--read-data"}).exit_code, 0);
  EXPECT_EQ(G({"forget", "ffffffffffffffff"}).exit_code, 1);
}

// Retention through the real binary: what a dry run says, what the policy
// removes, that every kept backup restores, and that forget without ids or
// a policy refuses.
TEST_F(CliTest, ForgetWithAPolicyKeepsWhatItSaysAndTheRestStillRestores) {
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(2u << 20, 14));
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    test::WriteFile(dir_ / "vol", test::TextLikeBytes(2u << 20, 20 + i));
    ids.push_back(BackupId(dir_ / "vol"));
    ASSERT_EQ(ids.back().size(), 16u);
  }
  test::WriteFile(dir_ / "other", test::TextLikeBytes(1u << 20, 30));
  const std::string other = BackupId(dir_ / "other");  // a group of its own

  auto none = G({"forget"});
  EXPECT_EQ(none.exit_code, 2) << none.err;
  EXPECT_NE(none.err.find("--keep-last"), std::string::npos) << none.err;
  EXPECT_EQ(G({"forget", "--keep-last", "1", ids[0]}).exit_code, 2);
  EXPECT_EQ(G({"forget", "--keep-within", "7x"}).exit_code, 2);
  EXPECT_EQ(G({"forget", "--keep-last", "1", "--group-by", "hostname"}).exit_code, 2);
  // Found by review: an empty tag (an unset variable) matched untagged
  // backups, and --keep-tag swallowed a following id.
  EXPECT_EQ(G({"forget", "--keep-tag", ""}).exit_code, 2);
  EXPECT_EQ(G({"forget", "--keep-within", ""}).exit_code, 2);
  EXPECT_EQ(G({"forget", "--keep-tag", "t1", ids[0]}).exit_code, 2);  // ids and a policy

  auto dry = G({"--json", "forget", "--keep-last", "1", "--dry-run"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  json j = json::parse(dry.out);
  EXPECT_EQ(j["would_remove"], json({ids[1], ids[0]}));
  EXPECT_FALSE(j.contains("removed"));
  ASSERT_EQ(j["groups"].size(), 2u);
  EXPECT_EQ(G({"--json", "list"}).out.find(ids[0]) != std::string::npos, true);

  auto f = G({"forget", "--keep-last", "1"});
  ASSERT_EQ(f.exit_code, 0) << f.err;
  EXPECT_NE(f.out.find("  keep          " + ids[2]), std::string::npos) << f.out;
  EXPECT_NE(f.out.find("  remove        " + ids[0]), std::string::npos) << f.out;
  EXPECT_NE(f.out.find("last, needed by the next incremental"), std::string::npos) << f.out;
  EXPECT_NE(f.out.find("removed 2 backups"), std::string::npos) << f.out;
  EXPECT_EQ(G({"restore", ids[0], dir_ / "x"}).exit_code, 1);  // gone
  ASSERT_EQ(G({"restore", ids[2], dir_ / "out"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(dir_ / "vol", dir_ / "out"));
  ASSERT_EQ(G({"restore", other, dir_ / "out2"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(dir_ / "other", dir_ / "out2"));
  EXPECT_EQ(G({"verify", "--read-data"}).exit_code, 0);
}

// stats marks what live backups use, through patches to their bases: the
// chunk a forgotten full shares with a kept incremental's patch stays live;
// once nothing names a pack, it is reclaimable whole.
TEST_F(CliTest, StatsCountsWhatLiveBackupsUseThroughPatchBases) {
  test::WriteFile(dir_ / "vol", test::RandomBytes(4u << 20, 40));
  const std::string full = BackupId(dir_ / "vol");
  auto bytes = test::ReadFile(dir_ / "vol");
  bytes[100000] ^= 0xff;
  test::WriteFile(dir_ / "vol", bytes);
  auto inc = G({"--json", "backup", "--type", "incremental", dir_ / "vol"});
  ASSERT_EQ(inc.exit_code, 0) << inc.err;
  const std::string inc_id = json::parse(inc.out)["id"];
  auto stats = [&] {
    auto r = G({"--json", "stats"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(r.out);
  };
  json s = stats();
  EXPECT_EQ(s["backups"], 2);
  EXPECT_EQ(s["reclaimable_bytes"], 0);
  EXPECT_EQ(s["complete"], true);
  ASSERT_EQ(G({"forget", full}).exit_code, 0);
  s = stats();
  EXPECT_EQ(s["backups"], 1);
  EXPECT_EQ(s["patches_followed"], 1) << s.dump();
  EXPECT_EQ(s["reclaimable_bytes"], 0) << "the full's chunk is the incremental's patch base";
  EXPECT_EQ(s["dead_packs"], 0);
  ASSERT_EQ(G({"forget", inc_id}).exit_code, 0);
  s = stats();
  EXPECT_EQ(s["live_bytes"], 0);
  EXPECT_EQ(s["reclaimable_bytes"], s["stored_bytes"]);
  EXPECT_EQ(s["dead_packs"], s["packs"]);
  EXPECT_EQ(s["dead_pack_bytes"], s["pack_bytes"]);
}

// Found by review: a live patch whose pack is missing, or a volume index
// whose record was moved away, left the figures "complete" while a base
// they name counted as reclaimable (a prune on them would lose data).
TEST_F(CliTest, StatsIsIncompleteWhenWhatALiveBackupNamesCannotBeRead) {
  test::WriteFile(dir_ / "vol", test::RandomBytes(1u << 20, 41));
  const std::string full = BackupId(dir_ / "vol");
  auto bytes = test::ReadFile(dir_ / "vol");
  bytes[70000] ^= 0xff;
  test::WriteFile(dir_ / "vol", bytes);
  const auto packs_before = Files("packs");
  auto inc = G({"--json", "backup", "--type", "incremental", dir_ / "vol"});
  ASSERT_EQ(inc.exit_code, 0) << inc.err;
  const std::string inc_id = json::parse(inc.out)["id"];
  ASSERT_EQ(G({"forget", full}).exit_code, 0);
  std::string inc_pack;
  for (const auto& p : Files("packs"))
    if (std::find(packs_before.begin(), packs_before.end(), p) == packs_before.end()) inc_pack = p;
  ASSERT_FALSE(inc_pack.empty());

  fs::rename(inc_pack, dir_ / "away");  // Files() gives whole paths
  auto r = G({"--json", "stats"});
  EXPECT_EQ(r.exit_code, 3) << r.out;
  EXPECT_EQ(json::parse(r.out)["complete"], false) << r.out;
  fs::rename(dir_ / "away", inc_pack);
  EXPECT_EQ(G({"stats"}).exit_code, 0);

  fs::rename(repo_ + "/backups/" + inc_id, dir_ / "record");
  r = G({"--json", "stats"});
  EXPECT_EQ(r.exit_code, 3) << r.out;
  EXPECT_NE(r.out.find("has no backup record"), std::string::npos) << r.out;
}

TEST_F(CliTest, UsageErrorsAndMissingRepository) {
  EXPECT_EQ(Gnomon({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(Gnomon({"backup"}).exit_code, 2);
  auto r = test::Run({test::GnomonBinary(), "list"}, {"GNOMON_REPO="});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("GNOMON_REPO"), std::string::npos);
  r = Gnomon({"list", "--repo", dir_ / "nowhere"});
  EXPECT_EQ(r.exit_code, 10);
  EXPECT_NE(r.err.find(dir_ / "nowhere"), std::string::npos);
  auto h = Gnomon({"backup", "--help"});
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_NE(h.out.find("SOURCE"), std::string::npos);
  r = Gnomon({"init", "--repo", repo_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("already exists"), std::string::npos);
}

TEST_F(CliTest, BadSourcesAreNamed) {
  auto r = G({"backup", dir_ / "does-not-exist"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find(dir_ / "does-not-exist"), std::string::npos) << r.err;
  r = G({"backup", dir_.path()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("not a block device or regular file"), std::string::npos) << r.err;
  // Unreadable: root reads through permission bits, so as root run gnomon
  // as nobody, with a repository of nobody's own (a repository must be its
  // owner's alone: nobody may not use root's).
  test::WriteFile(dir_ / "secret", {1, 2, 3});
  ::chmod((dir_ / "secret").c_str(), 0);
  if (test::IsRoot()) {
    ::chmod(dir_.path().c_str(), 0777);
    const std::vector<std::string> nobody = {
        "setpriv", "--reuid=nobody",    "--regid=nogroup", "--clear-groups", test::GnomonBinary(),
        "--repo",  dir_ / "nobody-repo"};
    auto with = [&](std::vector<std::string> args) {
      args.insert(args.begin(), nobody.begin(), nobody.end());
      return test::Run(args);
    };
    auto init = with({"init"});
    ASSERT_EQ(init.exit_code, 0) << init.out << init.err;
    r = with({"backup", dir_ / "secret"});
  } else {
    r = G({"backup", dir_ / "secret"});
  }
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("Permission denied"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(dir_ / "secret"), std::string::npos) << r.err;
  EXPECT_TRUE(Files("backups").empty());
}

TEST_F(CliTest, FlippedByteInPackIsFoundByVerifyAndRestore) {
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(2u << 20, 2));
  std::string id = BackupId(dir_ / "vol");
  auto packs = Files("packs");
  ASSERT_FALSE(packs.empty());
  test::FlipByte(packs[0], 100);  // inside the first chunk's data
  auto v = G({"verify"});         // structure alone does not read chunk data
  EXPECT_EQ(v.exit_code, 0) << v.out;
  v = G({"verify", "--read-data"});
  EXPECT_EQ(v.exit_code, 3);
  EXPECT_NE(v.out.find(packs[0]), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("DAMAGED"), std::string::npos);
  auto r = G({"restore", id, dir_ / "out"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find(packs[0]), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "out")) << "a failed restore must not leave a target behind";
}

TEST_F(CliTest, TruncatedPackIsFound) {
  test::WriteFile(dir_ / "vol", test::RandomBytes(2u << 20, 3));
  BackupId(dir_ / "vol");
  auto packs = Files("packs");
  test::TruncateFile(packs.back(), fs::file_size(packs.back()) / 2);
  auto v = G({"verify", "--json"});
  EXPECT_EQ(v.exit_code, 3);
  json j = json::parse(v.out);
  EXPECT_FALSE(j["ok"].get<bool>());
  EXPECT_NE(j["errors"].dump().find(packs.back()), std::string::npos) << v.out;
}

TEST_F(CliTest, MissingIndexFileIsFound) {
  test::WriteFile(dir_ / "vol", test::RandomBytes(1u << 20, 4));
  std::string id = BackupId(dir_ / "vol");
  auto idx = Files("index");
  ASSERT_EQ(idx.size(), 1u);
  fs::remove(idx[0]);
  // A record's index_file is informational (garbage collection replaces
  // index files): what verify reports is the backup's chunks in no index.
  auto v = G({"verify"});
  EXPECT_EQ(v.exit_code, 3);
  EXPECT_NE(v.out.find("backup " + id + ": "), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("chunks are in no index"), std::string::npos) << v.out;
  EXPECT_EQ(v.out.find("index/" + fs::path(idx[0]).filename().string()), std::string::npos)
      << v.out;
  auto r = G({"restore", id, dir_ / "out"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("is in no readable chunk index"), std::string::npos) << r.err;
}

TEST_F(CliTest, CorruptBackupRecordIsNamedAndOthersStillWork) {
  test::WriteFile(dir_ / "vol", test::RandomBytes(1u << 20, 5));
  std::string bad = BackupId(dir_ / "vol");
  std::string good = BackupId(dir_ / "vol");
  test::FlipByte(repo_ + "/backups/" + bad, 40);
  auto l = G({"list"});
  EXPECT_EQ(l.exit_code, 3);
  EXPECT_NE(l.err.find("backups/" + bad), std::string::npos) << l.err;
  EXPECT_NE(l.out.find(good), std::string::npos);
  auto r = G({"restore", bad, dir_ / "out"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("backups/" + bad), std::string::npos) << r.err;
  EXPECT_EQ(G({"restore", good, dir_ / "out"}).exit_code, 0);
  EXPECT_EQ(G({"verify"}).exit_code, 3);
}

TEST_F(CliTest, DamagedVolumeIndexIsNamed) {
  test::WriteFile(dir_ / "vol", test::RandomBytes(1u << 20, 6));
  std::string id = BackupId(dir_ / "vol");
  auto vols = Files("volumes");
  ASSERT_EQ(vols.size(), 1u);
  test::FlipByte(vols[0], 30);
  auto r = G({"restore", id, dir_ / "out"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find(vols[0]), std::string::npos) << r.err;
}

TEST_F(CliTest, FutureFormatVersionIsRefused) {
  std::string cfg = repo_ + "/config";
  // The frame's own version field says which format a file is in; a newer
  // gnomon's config carries a higher one there, checked before the body.
  test::FlipByte(cfg, 8);  // version 1 -> 1^0x5a
  auto l = G({"list"});
  EXPECT_EQ(l.exit_code, 12);
  EXPECT_NE(l.err.find(cfg), std::string::npos);
  EXPECT_NE(l.err.find("version"), std::string::npos) << l.err;
}

// Starts a slow backup (level 19, one thread) and returns its pid once it
// holds the lock and has finished at least one pack.
pid_t StartSlowBackup(const std::string& repo, const std::string& src, bool wait_for_pack) {
  pid_t pid = fork();
  if (pid == 0) {
    int nul = ::open("/dev/null", O_RDWR);
    ::dup2(nul, 1);
    ::dup2(nul, 2);
    std::string bin = test::GnomonBinary();
    execl(bin.c_str(), bin.c_str(), "--repo", repo.c_str(), "--threads", "1", "backup", src.c_str(),
          nullptr);
    _exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    bool locked = fs::exists(repo + "/lock") && fs::file_size(repo + "/lock") > 0;
    bool packed = false;
    for (auto& e : fs::recursive_directory_iterator(repo + "/packs"))
      if (e.is_regular_file()) packed = true;
    if (locked && (packed || !wait_for_pack)) return pid;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pid;
}

class SlowBackupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = dir_ / "repo";
    ASSERT_EQ(Gnomon({"init", "--repo", repo_, "--chunk-size", "64", "--pack-size", "1",
                      "--compression", "19"})
                  .exit_code,
              0);
    test::WriteFile(dir_ / "vol", test::TextLikeBytes(48u << 20, 7));
  }
  test::IsolatedState state_;
  TempDir dir_;
  std::string repo_;
};

TEST_F(SlowBackupTest, KilledBackupLeavesVerifiableRepositoryAndNextBackupWorks) {
  pid_t pid = StartSlowBackup(repo_, dir_ / "vol", true);
  ::kill(pid, SIGKILL);
  int st;
  ::waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFSIGNALED(st)) << "backup finished before it could be killed";
  auto v = Gnomon({"--repo", repo_, "verify", "--read-data", "--json"});
  ASSERT_EQ(v.exit_code, 0) << v.out;
  json j = json::parse(v.out);
  EXPECT_EQ(j["backups"], 0);
  EXPECT_NE(j["warnings"].dump().find("left by an interrupted backup"), std::string::npos)
      << "the killed run's packs should be reported as its leftovers: " << v.out;
  const auto killed_packs = [&] {
    std::vector<std::string> v;
    for (auto& e : fs::recursive_directory_iterator(repo_ + "/packs"))
      if (e.is_regular_file()) v.push_back(e.path());
    return v;
  }();
  ASSERT_FALSE(killed_packs.empty());
  // The next backup takes the stale lock and succeeds.
  test::WriteFile(dir_ / "small", test::TextLikeBytes(1u << 20, 8));
  auto b = Gnomon({"--repo", repo_, "backup", dir_ / "small"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_NE(b.err.find("stale lock"), std::string::npos) << b.err;
  EXPECT_EQ(Gnomon({"--repo", repo_, "restore", "latest", dir_ / "out"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(dir_ / "small", dir_ / "out"));
  EXPECT_TRUE(fs::is_empty(repo_ + "/tmp"));
  // The killed run's packs are gone, removed by the next backup.
  EXPECT_NE(b.err.find("pack(s) of an interrupted backup"), std::string::npos) << b.err;
  for (const auto& p : killed_packs) EXPECT_FALSE(fs::exists(p)) << p;
  v = Gnomon({"--repo", repo_, "verify", "--read-data", "--json"});
  EXPECT_EQ(v.exit_code, 0) << v.out;
  EXPECT_TRUE(json::parse(v.out)["warnings"].empty()) << v.out;
}

TEST_F(SlowBackupTest, SecondConcurrentBackupIsRefusedByTheLock) {
  pid_t pid = StartSlowBackup(repo_, dir_ / "vol", false);
  auto r = Gnomon({"--repo", repo_, "backup", dir_ / "vol"});
  ::kill(pid, SIGINT);  // the first one stops cleanly on Ctrl-C
  int st;
  ::waitpid(pid, &st, 0);
  EXPECT_EQ(r.exit_code, 11) << r.err;
  EXPECT_NE(r.err.find("locked by pid " + std::to_string(pid)), std::string::npos) << r.err;
  EXPECT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 130);
  // Interrupted: nothing of it remains, and the repository verifies.
  auto v = Gnomon({"--repo", repo_, "verify", "--json"});
  EXPECT_EQ(v.exit_code, 0) << v.out;
  EXPECT_TRUE(json::parse(v.out)["warnings"].empty()) << v.out;
}

TEST(LoopDeviceTest, BackupAndRestoreARealBlockDevice) {
  GNOMON_SKIP_IF(test::RootSkipReason());
  test::IsolatedState state;
  TempDir dir;
  std::string repo = dir / "repo";
  ASSERT_EQ(Gnomon({"init", "--repo", repo, "--chunk-size", "1024"}).exit_code, 0);
  auto data = test::TextLikeBytes(24u << 20, 9);
  data.resize(32u << 20, 0);  // a zero tail
  test::WriteFile(dir / "disk.img", data);
  test::LoopDevice loop(dir / "disk.img");
  ASSERT_FALSE(loop.device().empty());
  auto b = Gnomon({"--repo", repo, "backup", "--json", loop.device()});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  json j = json::parse(b.out);
  EXPECT_EQ(j["volumes"][0]["size"], 32u << 20);
  EXPECT_EQ(j["volumes"][0]["stats"]["zero_chunks"], 8);
  // To a file.
  ASSERT_EQ(Gnomon({"--repo", repo, "restore", "latest", dir / "out.img"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(dir / "disk.img", dir / "out.img"));
  // To another block device that holds other data: zero slots overwritten too.
  test::WriteFile(dir / "target.img", test::RandomBytes(32u << 20, 10));
  test::LoopDevice target(dir / "target.img");
  auto r = Gnomon({"--repo", repo, "restore", "latest", target.device()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(test::FilesEqual(dir / "disk.img", target.device()));
}

// A blkio cgroup (v1) that throttles reads of one block device, removed on
// destruction; empty path() if this kernel has none.
class ReadThrottle {
 public:
  ReadThrottle(const std::string& device, uint64_t bytes_per_second) {
    const fs::path root = "/sys/fs/cgroup/blkio";
    if (!fs::exists(root / "blkio.throttle.read_bps_device")) return;
    path_ = root / ("gnomon-test-" + std::to_string(::getpid()));
    auto majmin = test::Sh("lsblk -dno MAJ:MIN " + device + " | tr -d ' \\n'");
    std::error_code ec;
    if (majmin.exit_code != 0 || !fs::create_directory(path_, ec)) {
      path_.clear();
      return;
    }
    std::ofstream f(path_ / "blkio.throttle.read_bps_device");
    f << majmin.out << " " << bytes_per_second << "\n";
    f.close();
    if (!f) {
      ::rmdir(path_.c_str());
      path_.clear();
    }
  }
  ~ReadThrottle() {
    if (!path_.empty()) ::rmdir(path_.c_str());
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

TEST(LoopDeviceTest, ASourceSlowerThanCompressionGetsAHigherLevel) {
  GNOMON_SKIP_IF(test::RootSkipReason());
  test::IsolatedState state;
  TempDir dir;
  std::string repo = dir / "repo";
  ASSERT_EQ(Gnomon({"init", "--repo", repo}).exit_code, 0);
  const auto data = test::TextLikeBytes(48u << 20, 11);
  test::WriteFile(dir / "disk.img", data);
  test::LoopDevice loop(dir / "disk.img");
  ASSERT_FALSE(loop.device().empty());
  // 16 MB/s: three seconds of reading that compression at level 2 would
  // finish in a tenth of that. The offline provider reads the device itself
  // (a reflink provider, were the file on XFS, would read a clone of it).
  ReadThrottle throttle(loop.device(), 16 << 20);
  GNOMON_SKIP_IF(throttle.path().empty() ? "no blkio cgroup (v1) to throttle reads here" : "");
  // A backup of the device, cold, by a process in the throttled cgroup.
  auto backup = [&](const std::string& repo, std::vector<std::string> extra) {
    EXPECT_EQ(test::Sh("blockdev --flushbufs " + loop.device()).exit_code, 0);
    std::vector<std::string> argv{"sh",
                                  "-c",
                                  "echo $$ > \"$0/cgroup.procs\" && exec \"$@\"",
                                  throttle.path(),
                                  test::GnomonBinary(),
                                  "--repo",
                                  repo,
                                  "--json",
                                  "backup",
                                  "--provider",
                                  "offline"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(loop.device());
    return test::Run(argv);
  };
  auto b = backup(repo, {});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  json levels = json::parse(b.out)["totals"]["compression_levels"];
  uint64_t higher = 0, all = 0;
  for (const auto& [level, n] : levels.items()) {
    EXPECT_TRUE(level == "2" || level == "3" || level == "4" || level == "5" || level == "6")
        << levels.dump();
    all += n.get<uint64_t>();
    if (level != "2") higher += n.get<uint64_t>();
  }
  EXPECT_EQ(all, 12u);
  EXPECT_GT(higher, 0u) << "reading was the limit, yet nothing went above level 2: "
                        << levels.dump();
  ASSERT_EQ(Gnomon({"--repo", repo, "restore", "latest", dir / "out.img"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(dir / "disk.img", dir / "out.img"));
  // --compression-max at the repository's level: no adaptation.
  std::string repo2 = dir / "repo2";
  ASSERT_EQ(Gnomon({"init", "--repo", repo2}).exit_code, 0);
  b = backup(repo2, {"--compression-max", "2"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(json::parse(b.out)["totals"]["compression_levels"], json({{"2", 12}}));
  EXPECT_EQ(Gnomon({"--repo", repo2, "backup", "--compression-max", "20", loop.device()}).exit_code,
            2);
}

TEST(LoopDeviceTest, MountedDeviceIsRefusedAsSourceAndTarget) {
  GNOMON_SKIP_IF(test::RootSkipReason());
  test::IsolatedState state;
  TempDir dir;
  std::string repo = dir / "repo";
  ASSERT_EQ(Gnomon({"init", "--repo", repo}).exit_code, 0);
  ASSERT_EQ(test::Sh("truncate -s 64M " + dir / "fs.img" + " && mkfs.ext4 -q " + dir / "fs.img")
                .exit_code,
            0);
  test::LoopDevice loop(dir / "fs.img");
  fs::create_directory(dir / "mnt");
  ASSERT_EQ(test::Sh("mount " + loop.device() + " " + dir / "mnt").exit_code, 0);
  auto b = Gnomon({"--repo", repo, "backup", loop.device()});
  auto r = Gnomon({"--repo", repo, "restore", "latest", loop.device()});
  test::Sh("umount " + dir / "mnt");
  // No provider can snapshot it here: the message gives each one's reason.
  EXPECT_EQ(b.exit_code, 1);
  EXPECT_NE(b.err.find("VSS_E_VOLUME_NOT_SUPPORTED"), std::string::npos) << b.err;
  EXPECT_NE(b.err.find("offline provider: " + loop.device() + " is in use (mounted on"),
            std::string::npos)
      << b.err;
  EXPECT_NE(b.err.find("reflink provider:"), std::string::npos) << b.err;
  // Unmounted, the same device backs up.
  EXPECT_EQ(Gnomon({"--repo", repo, "backup", loop.device()}).exit_code, 0);
}

// Checks a `gnomon bench --json` document against the fields README.md
// documents, and its numbers against what was asked.
void ExpectBenchJson(const json& j, uint64_t source_bytes, const std::vector<int>& levels) {
  for (const char* k : {"source", "bound_by", "block_map"}) EXPECT_TRUE(j.at(k).is_string()) << k;
  for (const char* k : {"source_bytes", "sample_bytes", "threads", "pipeline_bytes_read"})
    EXPECT_TRUE(j.at(k).is_number_unsigned()) << k;
  EXPECT_EQ(j["source_bytes"].get<uint64_t>(), source_bytes);
  EXPECT_GT(j["sample_bytes"].get<uint64_t>(), 0u);
  EXPECT_LE(j["sample_bytes"].get<uint64_t>(), source_bytes);
  const int threads = j["threads"].get<int>();
  EXPECT_GE(threads, 1);
  for (const char* k : {"read", "cpu", "write"}) EXPECT_GT(j.at("limits").at(k).get<double>(), 0);
  EXPECT_TRUE(j["bound_by"] == "read" || j["bound_by"] == "cpu" || j["bound_by"] == "write");
  std::map<std::string, int> seen;
  for (const auto& s : j.at("stages")) {
    const std::string stage = s.at("stage").get<std::string>();
    ++seen[stage];
    EXPECT_TRUE(s.at("detail").is_string());
    EXPECT_GE(s.at("threads").get<int>(), 1);
    EXPECT_GT(s.at("bytes").get<uint64_t>(), 0u) << stage;
    EXPECT_GT(s.at("seconds").get<double>(), 0) << stage;
    EXPECT_GT(s.at("mb_per_s").get<double>(), 0) << stage;
    if (stage == "read" || stage == "pipeline") {
      EXPECT_EQ(s["bytes"].get<uint64_t>(), source_bytes) << stage;
    }
    if (stage == "compress" || stage == "pipeline") {
      EXPECT_GT(s.at("ratio").get<double>(), 1.0) << stage;  // the content compresses
      EXPECT_TRUE(s.at("level").is_number_integer());
    }
  }
  EXPECT_EQ(seen["read"], 1);
  EXPECT_EQ(seen["zero-test"], 1);
  EXPECT_EQ(seen["hash"], threads > 1 ? 2 : 1);
  EXPECT_EQ(seen["compress"], static_cast<int>(levels.size()) * (threads > 1 ? 2 : 1));
  EXPECT_EQ(seen["write"], 1);
  EXPECT_EQ(seen["pipeline"], 1);
}

TEST(BenchCommandTest, OnAFileWithJsonLeavesTheSourceUntouched) {
  TempDir dir;
  auto data = test::TextLikeBytes(20u << 20, 11);
  data.resize(24u << 20, 0);
  test::WriteFile(dir / "vol", data);
  auto r = Gnomon(
      {"bench", "--json", "--sample", "8", "--levels", "1,5", "--dir", dir.path(), dir / "vol"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  ExpectBenchJson(j, 24u << 20, {1, 5, 2});  // the pipeline's level 2 is measured too
  EXPECT_EQ(j["block_map"], "all");
  EXPECT_EQ(test::ReadFile(dir / "vol"), data);
  // The scratch repository and write test are gone.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
  // --size limits what is used; the human table names the bound.
  auto h = Gnomon({"bench", "--size", "8", "--sample", "4", "--threads", "1", dir / "vol"});
  ASSERT_EQ(h.exit_code, 0) << h.err;
  EXPECT_NE(h.out.find("the pipeline is bound by: "), std::string::npos) << h.out;
  EXPECT_NE(h.out.find("8.00 MiB used"), std::string::npos) << h.out;
  // A wrong path is named.
  auto bad = Gnomon({"bench", dir / "missing"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find(dir / "missing"), std::string::npos) << bad.err;
}

TEST(BenchCommandTest, GeneratedDataNeedsNoSource) {
  TempDir dir;
  auto r = Gnomon({"bench", "--json", "--sample", "8", "--dir", dir.path()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["source"], "generated data");
  ExpectBenchJson(j, 8u << 20, {1, 3, 2});
}

TEST(BenchCommandTest, OnALoopDeviceWithExt4ReadsUsedBlocks) {
  GNOMON_SKIP_IF(test::RootSkipReason());
  TempDir dir;
  ASSERT_EQ(test::Sh("truncate -s 64M " + dir / "fs.img" + " && mkfs.ext4 -q " + dir / "fs.img")
                .exit_code,
            0);
  test::LoopDevice loop(dir / "fs.img");
  ASSERT_FALSE(loop.device().empty());
  auto r = Gnomon({"bench", "--json", "--sample", "16", "--dir", dir.path(), loop.device()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  ExpectBenchJson(j, 64u << 20, {1, 3, 2});
  EXPECT_EQ(j["block_map"], "ext4");
  EXPECT_LT(j["pipeline_bytes_read"].get<uint64_t>(), 64u << 20);
}

}  // namespace
}  // namespace gnomon
