// verify --read-data-subset (issue 14, FORMAT.md §5b): check files, which
// packs N% and K/T read, coverage over repeated runs, and damage found by a
// subset being quarantined and healed like damage found by --read-data.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "engine/verify_job.h"
#include "format/check_file.h"
#include "format/framed_file.h"
#include "format/repository.h"
#include "tests/test_util.h"

namespace gnomon {
namespace {

using nlohmann::json;
using test::TempDir;
namespace fs = std::filesystem;

const std::string kA(32, 'a'), kB = "0123456789abcdef0123456789abcdef", kC(32, 'f');

// --- The check file body (FORMAT.md §5b) ---

TEST(CheckFileTest, EncodesAndDecodesEveryResult) {
  const std::vector<PackCheck> in = {{kA, kPackIntact}, {kB, kPackDamaged}, {kC, kPackUnreadable}};
  const std::string body = EncodeChecks(1789012345678901, in);
  EXPECT_EQ(body.size(), 12u + 3 * 20);
  uint64_t t = 0;
  std::vector<PackCheck> out;
  ASSERT_TRUE(DecodeChecks("checks/x", body, &t, &out).ok());
  EXPECT_EQ(t, 1789012345678901u);
  EXPECT_EQ(out, in);
  ASSERT_TRUE(DecodeChecks("checks/x", EncodeChecks(7, {}), &t, &out).ok());
  EXPECT_EQ(t, 7u);
  EXPECT_TRUE(out.empty());
}

TEST(CheckFileTest, HostileBodiesAreDamagedAndNamed) {
  const std::string good = EncodeChecks(5, {{kA, kPackIntact}, {kB, kPackDamaged}});
  auto decode = [](std::string body) {
    uint64_t t = 0;
    std::vector<PackCheck> out;
    Status s = DecodeChecks("/repo/checks/0f", body, &t, &out);
    if (!s.ok()) {
      EXPECT_TRUE(out.empty()) << "nothing is returned from a damaged file";
    }
    return s;
  };
  std::vector<std::pair<std::string, std::string>> bad = {
      {"cut short", good.substr(0, 11)},
      {"empty", ""},
      {"one byte short", good.substr(0, good.size() - 1)},
      {"one byte long", good + "x"},
      {"an entry too many", good + good.substr(12, 20)},
  };
  // A count far beyond the body: must be refused before anything is
  // allocated from it (4 G entries of 20 bytes would not fit in memory).
  std::string hostile = good.substr(0, 12);
  hostile[8] = hostile[9] = hostile[10] = hostile[11] = '\xff';
  bad.push_back({"count 2^32-1 with no entries", hostile});
  std::string hostile2 = good;
  hostile2[8] = '\x03';  // says 3, holds 2
  bad.push_back({"count larger than the entries", hostile2});
  std::string unknown = good;
  unknown[12 + 20 + 16] = '\x03';  // the second entry's result: 3
  bad.push_back({"unknown result", unknown});
  for (const auto& [what, body] : bad) {
    SCOPED_TRACE(what);
    Status s = decode(body);
    EXPECT_TRUE(s.IsCorruption()) << s.message();
    EXPECT_NE(s.message().find("/repo/checks/0f"), std::string::npos) << s.message();
  }
  EXPECT_NE(decode(unknown).message().find("unknown result 3"), std::string::npos);
  EXPECT_TRUE(decode(good).ok());
}

TEST(CheckFileTest, TheRepositoryKeepsEachPacksNewestCheck) {
  TempDir dir;
  const std::string path = dir / "repo";
  ASSERT_TRUE(Repository::Init(Env::Default(), path, RepoConfig()).ok());
  std::unique_ptr<Repository> repo;
  ASSERT_TRUE(Repository::Open(Env::Default(), path, LockMode::kShared, "test", &repo).ok());
  std::map<std::string, uint64_t> last;
  std::vector<Status> errors;
  // A repository without checks/ (version 7, or never verified) has none.
  ASSERT_FALSE(fs::exists(path + "/checks"));
  ASSERT_TRUE(repo->ReadLastChecks(&last, &errors).ok());
  EXPECT_TRUE(last.empty());
  EXPECT_TRUE(errors.empty());

  std::vector<std::string> names;
  auto written = [&]() {  // the name of the file the last write added
    std::vector<std::string> now;
    EXPECT_TRUE(repo->ListCheckFiles(&now).ok());
    std::string added;
    for (const auto& n : now)
      if (std::find(names.begin(), names.end(), n) == names.end()) added = n;
    names = now;
    return added;
  };
  ASSERT_TRUE(repo->WriteCheckFile(100, {{kA, kPackIntact}, {kB, kPackDamaged}}).ok());
  written();
  ASSERT_TRUE(repo->WriteCheckFile(300, {{kA, kPackUnreadable}}).ok());
  written();
  ASSERT_TRUE(repo->WriteCheckFile(50, {{kB, kPackIntact}, {kC, kPackIntact}}).ok());
  const std::string oldest = written();
  ASSERT_EQ(names.size(), 3u);
  ASSERT_TRUE(repo->ReadLastChecks(&last, &errors).ok());
  EXPECT_EQ(last, (std::map<std::string, uint64_t>{{kA, 300}, {kB, 100}, {kC, 50}}));
  EXPECT_TRUE(errors.empty());
  uint64_t t = 0;
  std::vector<PackCheck> checks;
  ASSERT_TRUE(repo->ReadCheckFile(oldest, &t, &checks).ok());
  EXPECT_EQ(t, 50u);

  // A damaged file is named and skipped; the others still count.
  test::FlipByte(path + "/checks/" + oldest, 30);
  last.clear();
  ASSERT_TRUE(repo->ReadLastChecks(&last, &errors).ok());
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].message().find("checks/" + oldest), std::string::npos) << errors[0].message();
  EXPECT_EQ(last, (std::map<std::string, uint64_t>{{kA, 300}, {kB, 100}}));

  EXPECT_FALSE(repo->WriteCheckFile(1, {{"../../etc", kPackIntact}}).ok());
  // A write in progress in checks/ is a leftover, not a check file.
  test::WriteFile(path + "/checks/" + kA + ".tmp-1234", {1, 2, 3});
  ASSERT_TRUE(repo->ListCheckFiles(&names).ok());
  EXPECT_EQ(names.size(), 3u);
  Leftovers l;
  ASSERT_TRUE(repo->FindLeftovers(&l).ok());
  EXPECT_NE(std::find(l.temporaries.begin(), l.temporaries.end(), "checks/" + kA + ".tmp-1234"),
            l.temporaries.end());
}

// --- What a subset spells and picks ---

TEST(VerifySubsetSpecTest, PercentagesAndSlicesAreParsed) {
  VerifySubset s;
  ASSERT_TRUE(ParseVerifySubset("10%", &s).ok());
  EXPECT_EQ(s.kind, VerifySubset::Kind::kPercent);
  EXPECT_EQ(s.percent, 10);
  EXPECT_EQ(s.Spec(), "10%");
  ASSERT_TRUE(ParseVerifySubset("2.5%", &s).ok());
  EXPECT_EQ(s.percent, 2.5);
  EXPECT_EQ(s.Spec(), "2.5%");
  ASSERT_TRUE(ParseVerifySubset("100%", &s).ok());
  ASSERT_TRUE(ParseVerifySubset("3/7", &s).ok());
  EXPECT_EQ(s.kind, VerifySubset::Kind::kSlice);
  EXPECT_EQ(s.k, 3u);
  EXPECT_EQ(s.t, 7u);
  EXPECT_EQ(s.Spec(), "3/7");
  EXPECT_TRUE(ParseVerifySubset("1/1", &s).ok());
  EXPECT_TRUE(ParseVerifySubset("7/7", &s).ok());
  for (const char* bad :
       {"0%",  "0.0%", "100.5%", "101%", "0/7",  "8/7",  "0/0",  "1/0",          "abc",
        "",    "%",    "10",     "-5%",  "+5%",  "1e1%", "nan%", "inf%",         ".5%",
        "5.%", "3/",   "/7",     " 3/7", "3/7 ", "3/7x", "-1/7", "1/4294967296", "10%%"}) {
    SCOPED_TRACE(bad);
    Status st = ParseVerifySubset(bad, &s);
    EXPECT_TRUE(st.code() == Status::Code::kInvalidArgument) << st.message();
    EXPECT_NE(st.message().find(std::string("'") + bad + "'"), std::string::npos) << st.message();
  }
}

TEST(VerifySubsetSpecTest, APercentageRoundsUp) {
  EXPECT_EQ(PercentOfPacks(10, 30), 3u);  // exactly 3, not 3.0000000000000004 rounded up
  EXPECT_EQ(PercentOfPacks(10, 31), 4u);
  EXPECT_EQ(PercentOfPacks(25, 10), 3u);
  EXPECT_EQ(PercentOfPacks(0.1, 1000), 1u);
  EXPECT_EQ(PercentOfPacks(0.1, 1001), 2u);
  EXPECT_EQ(PercentOfPacks(0.0001, 3), 1u);  // a positive share of a pack is a pack
  EXPECT_EQ(PercentOfPacks(100, 5), 5u);
  EXPECT_EQ(PercentOfPacks(33.3, 3), 1u);
  EXPECT_EQ(PercentOfPacks(50, 0), 0u);
}

// --- verify --read-data-subset on a repository of many small packs ---

class VerifySubsetTest : public test::RepoTest {
 protected:
  std::vector<std::string> PackIds() {
    std::vector<std::string> ids;
    for (const auto& p : Files("packs")) ids.push_back(fs::path(p).filename());
    return ids;
  }
  std::set<std::string> CheckFileNames() {
    std::set<std::string> names;
    if (!fs::exists(repo_ + "/checks")) return names;
    for (const auto& e : fs::directory_iterator(repo_ + "/checks"))
      if (e.path().filename().string().find(".tmp-") == std::string::npos)
        names.insert(e.path().filename());
    return names;
  }
  std::vector<PackCheck> ReadCheck(const std::string& name, uint64_t* time = nullptr) {
    const std::string path = repo_ + "/checks/" + name;
    std::string body;
    uint64_t t = 0;
    std::vector<PackCheck> checks;
    Status s = ReadFrameFile(Env::Default(), kCheckFrame, path, &body);
    if (s.ok()) s = DecodeChecks(path, body, &t, &checks);
    EXPECT_TRUE(s.ok()) << s.message();
    if (time) *time = t;
    return checks;
  }
  // Runs verify --read-data-subset spec; returns what the check file it
  // wrote lists (nothing if it read no pack), and its report in *report.
  std::vector<PackCheck> Subset(const std::string& spec, int want_exit, json* report) {
    const auto before = CheckFileNames();
    *report = VerifyWith({"--read-data-subset", spec}, want_exit);
    std::vector<std::string> added;
    for (const auto& n : CheckFileNames())
      if (!before.count(n)) added.push_back(n);
    EXPECT_LE(added.size(), 1u) << "one check file per run";
    std::vector<PackCheck> read = added.empty() ? std::vector<PackCheck>() : ReadCheck(added[0]);
    EXPECT_EQ((*report)["packs_read"].get<size_t>(), read.size()) << report->dump();
    EXPECT_EQ((*report)["subset"], spec) << report->dump();
    return read;
  }
  // Each pack's newest check, from every check file.
  std::map<std::string, uint64_t> LastChecks() {
    std::map<std::string, uint64_t> last;
    for (const auto& n : CheckFileNames()) {
      uint64_t t = 0;
      for (const auto& c : ReadCheck(n, &t)) last[c.pack] = std::max(last[c.pack], t);
    }
    return last;
  }
  static uint32_t Prefix(const std::string& id) {
    return static_cast<uint32_t>(std::stoul(id.substr(0, 8), nullptr, 16));
  }
  // The slice K/T that reads `pack`, or (reading=false) one that does not,
  // for the smallest T >= 2 that leaves some other pack out of `pack`'s slice.
  std::string SliceFor(const std::string& pack, bool reading) {
    const auto ids = PackIds();
    for (uint32_t t = 2; t < 1000; ++t) {
      const uint32_t in = Prefix(pack) % t;
      for (const auto& id : ids)
        if (Prefix(id) % t != in)
          return std::to_string((reading ? in : Prefix(id) % t) + 1) + "/" + std::to_string(t);
    }
    ADD_FAILURE() << "no slice separates the packs";
    return "1/1";
  }
  // A backup of incompressible data: with 64 KiB chunks and 1 MiB packs,
  // about one pack per MiB.
  std::string BackupRandom(size_t mib, uint64_t seed) {
    test::WriteFile(dir_ / "vol", test::RandomBytes(mib << 20, seed));
    return BackupId(dir_ / "vol");
  }
};

TEST_F(VerifySubsetTest, SlicesOneToTReadEveryPackExactlyOnce) {
  BackupRandom(8, 41);
  const auto packs = PackIds();
  ASSERT_GE(packs.size(), 6u);
  const uint32_t t = 3;
  std::map<std::string, int> reads;
  json v;
  for (uint32_t k = 1; k <= t; ++k) {
    SCOPED_TRACE(k);
    const std::string spec = std::to_string(k) + "/" + std::to_string(t);
    for (const auto& c : Subset(spec, 0, &v)) {
      EXPECT_EQ(Prefix(c.pack) % t, k - 1) << c.pack << " is not in slice " << spec;
      EXPECT_EQ(c.result, kPackIntact);
      ++reads[c.pack];
    }
    EXPECT_EQ(v["claimed_packs"].get<size_t>(), packs.size());
    EXPECT_TRUE(v["read_data"].get<bool>());
  }
  for (const auto& id : packs) EXPECT_EQ(reads[id], 1) << id;
  EXPECT_EQ(reads.size(), packs.size());
  EXPECT_EQ(v["never_checked"], 0) << v.dump();
  EXPECT_TRUE(v["oldest_check"].is_string()) << v.dump();
}

TEST_F(VerifySubsetTest, PercentReadsNeverCheckedFirstAndCoversAllInCeil100OverNRuns) {
  BackupRandom(8, 42);
  const auto packs = PackIds();
  const size_t p = packs.size();
  ASSERT_GE(p, 6u);
  const size_t per_run = (p + 3) / 4;  // ceil(25% of the packs)
  json v = VerifyJson(false, 0);
  EXPECT_EQ(v["never_checked"].get<size_t>(), p) << v.dump();
  EXPECT_TRUE(v["oldest_check"].is_null()) << v.dump();
  EXPECT_TRUE(v["subset"].is_null()) << v.dump();
  std::set<std::string> seen;
  for (int run = 1; run <= 4; ++run) {  // ceil(100 / 25)
    SCOPED_TRACE(run);
    const auto read = Subset("25%", 0, &v);
    EXPECT_EQ(read.size(), per_run);
    size_t fresh = 0;
    for (const auto& c : read) fresh += seen.insert(c.pack).second;
    // Every pack never checked before is read before any checked one.
    EXPECT_EQ(fresh, std::min(per_run, p - (seen.size() - fresh)));
    EXPECT_EQ(v["never_checked"].get<size_t>(), p - seen.size()) << v.dump();
  }
  EXPECT_EQ(seen.size(), p) << "25% four times reads every pack";

  // From then on, the least recently checked go first.
  const auto last = LastChecks();
  ASSERT_EQ(last.size(), p);
  const auto read = Subset("25%", 0, &v);
  ASSERT_EQ(read.size(), per_run);
  std::set<std::string> now;
  for (const auto& c : read) now.insert(c.pack);
  for (const auto& a : now)
    for (const auto& [b, when] : last)
      if (!now.count(b)) {
        EXPECT_LE(last.at(a), when) << a << " was read before " << b;
      }
}

// Damage a subset reads is quarantined and recorded (result 1), and heals
// exactly as damage --read-data finds does (defects_test.cc:
// DamagedChunkIsStoredAgainAndOldBackupsAreRepaired).
TEST_F(VerifySubsetTest, DamageFoundByASubsetIsQuarantinedRecordedAndHealed) {
  const std::string first = BackupRandom(4, 43);
  const auto paths = Files("packs");
  ASSERT_GE(paths.size(), 2u);
  const std::string damaged = fs::path(paths[0]).filename();
  test::DamageFirstChunk(paths[0]);
  const std::string spec = SliceFor(damaged, true);

  json v;
  const auto read = Subset(spec, 3, &v);
  EXPECT_LT(read.size(), paths.size()) << "a subset, not every pack";
  EXPECT_GE(v["quarantined"].get<int>(), 1) << v.dump();
  EXPECT_EQ(v["damaged_backups"], json::array({first})) << v.dump();
  ASSERT_FALSE(Files("quarantine").empty());
  bool listed = false;
  for (const auto& c : read) {
    EXPECT_EQ(c.result, c.pack == damaged ? kPackDamaged : kPackIntact) << c.pack;
    listed |= c.pack == damaged;
  }
  EXPECT_TRUE(listed) << "the check file names the damaged pack";

  // The next backup of the intact source stores the damaged chunk again.
  auto b = G({"backup", "--json", dir_ / "vol"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_GE(json::parse(b.out)["totals"]["new_chunks"].get<int>(), 1) << b.out;
  auto r = G({"restore", first, dir_ / "old"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(test::FilesEqual(dir_ / "vol", dir_ / "old"));

  // Every following verify reports the old backup repaired: one that reads
  // the damaged pack again (known damage, not news), one that does not
  // (its quarantined copy counts as damaged, the new copy serves), and one
  // that reads no data.
  for (const auto& again : {spec, SliceFor(damaged, false)}) {
    SCOPED_TRACE(again);
    Subset(again, 0, &v);
    EXPECT_EQ(v["repaired_backups"], json::array({first})) << v.dump();
    EXPECT_TRUE(v["damaged_backups"].empty()) << v.dump();
    EXPECT_EQ(v["quarantined"], 0) << v.dump();
  }
  v = VerifyJson(false, 0);
  EXPECT_EQ(v["repaired_backups"], json::array({first})) << v.dump();
}

TEST_F(VerifySubsetTest, APackTheSubsetDoesNotPickIsNotRead) {
  const std::string id = BackupRandom(4, 44);
  const auto paths = Files("packs");
  ASSERT_GE(paths.size(), 2u);
  const std::string damaged = fs::path(paths[0]).filename();
  test::DamageFirstChunk(paths[0]);

  json v;
  for (const auto& c : Subset(SliceFor(damaged, false), 0, &v)) EXPECT_NE(c.pack, damaged);
  EXPECT_EQ(v["quarantined"], 0) << v.dump();
  EXPECT_TRUE(v["damaged_backups"].empty()) << v.dump();
  EXPECT_TRUE(Files("quarantine").empty());

  // The slice that covers it finds it.
  Subset(SliceFor(damaged, true), 3, &v);
  EXPECT_EQ(v["damaged_backups"], json::array({id})) << v.dump();
  EXPECT_GE(v["quarantined"].get<int>(), 1) << v.dump();
}

TEST_F(VerifySubsetTest, TheStructureIsCheckedInFullWhateverTheSubset) {
  const std::string id = BackupRandom(4, 45);
  const auto paths = Files("packs");
  ASSERT_GE(paths.size(), 2u);
  const std::string away = fs::path(paths[0]).filename();
  fs::rename(paths[0], dir_ / "away");
  json v;
  for (const auto& c : Subset(SliceFor(away, false), 3, &v)) EXPECT_NE(c.pack, away);
  EXPECT_NE(v["errors"].dump().find(away), std::string::npos) << v.dump();
  EXPECT_EQ(v["damaged_backups"], json::array({id})) << v.dump();
  EXPECT_EQ(v["quarantined"], 0) << v.dump();
  // Read by its slice, a missing pack is recorded as unreadable.
  bool listed = false;
  for (const auto& c : Subset(SliceFor(away, true), 3, &v))
    if (c.pack == away) {
      listed = true;
      EXPECT_EQ(c.result, kPackUnreadable);
    }
  EXPECT_TRUE(listed);
  EXPECT_EQ(v["quarantined"], 0) << v.dump();
}

TEST_F(VerifySubsetTest, BadSubsetsAreUsageErrors) {
  for (const char* bad : {"0%", "101%", "0/7", "8/7", "junk", "7", "1/0"}) {
    SCOPED_TRACE(bad);
    auto r = G({"verify", "--read-data-subset", bad});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_NE(r.err.find("--read-data-subset"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(std::string("'") + bad + "'"), std::string::npos) << r.err;
  }
  auto r = G({"verify", "--read-data", "--read-data-subset", "10%"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  // A repository with no packs: nothing to read, nothing recorded.
  r = G({"verify", "--read-data-subset", "10%"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("read 0 of 0 packs (10%, least recently checked first)"), std::string::npos)
      << r.out;
}

TEST_F(VerifySubsetTest, TextOutputShowsCoverage) {
  BackupRandom(4, 46);
  const size_t p = PackIds().size();
  auto r = G({"verify", "--read-data-subset", "1%"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(
      r.out.find("read 1 of " + std::to_string(p) + " packs (1%, least recently checked first); " +
                 std::to_string(p - 1) + " packs never checked; oldest check 20"),
      std::string::npos)
      << r.out;
  r = G({"verify", "--read-data"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("(all chunk data read and checked)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("read " + std::to_string(p) + " of " + std::to_string(p) +
                       " packs (all); every pack has been checked"),
            std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace gnomon
