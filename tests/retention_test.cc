// Retention policies (engine/retention): which backups `forget --keep-...`
// keeps, and why. Pure: no repository, no root.
#include "engine/retention.h"

#include <gtest/gtest.h>

#include <map>

namespace gnomon {
namespace {

BackupRecord Rec(const std::string& id, const std::string& time, const std::string& type = "full",
                 const std::string& host = "h", const std::string& volume = "file:/v.img") {
  BackupRecord r;
  r.id = id;
  r.time = time;
  r.type = type;
  r.host = host;
  VolumeRecord v;
  v.key = volume;
  r.volumes.push_back(v);
  return r;
}

// id -> reasons joined, for the kept ones; removed ones map to "-".
std::map<std::string, std::string> Decide(const std::vector<BackupRecord>& recs,
                                          const RetentionPolicy& p) {
  std::map<std::string, std::string> out;
  for (const auto& g : ApplyRetention(recs, p))
    for (const auto& d : g.backups) {
      std::string why;
      for (const auto& r : d.reasons) why += (why.empty() ? "" : ",") + r;
      out[d.record->id] = d.keep ? why : "-";
    }
  return out;
}

// Copy backups are never parents, so the "needed by" rules leave them to
// the policy alone: the tests of the policy's own rules use them.
TEST(Retention, DailyKeepsTheNewestOfEachOfTheLastNDays) {
  std::vector<BackupRecord> recs = {
      Rec("a1", "2026-11-28T01:00:00Z", "copy"), Rec("a2", "2026-11-28T23:00:00Z", "copy"),
      Rec("b1", "2026-11-29T10:00:00Z", "copy"), Rec("c1", "2026-11-30T02:00:00Z", "copy"),
      Rec("c2", "2026-11-30T03:00:00.500000Z", "copy")};
  RetentionPolicy p;
  p.daily = 2;
  auto d = Decide(recs, p);
  EXPECT_EQ(d["c2"], "daily");
  EXPECT_EQ(d["c1"], "-");  // same day as c2, older
  EXPECT_EQ(d["b1"], "daily");
  EXPECT_EQ(d["a2"], "-");  // a third day
  EXPECT_EQ(d["a1"], "-");
}

TEST(Retention, RulesAddUpAndEveryRuleThatKeptABackupIsNamed) {
  std::vector<BackupRecord> recs = {
      Rec("y1", "2025-06-01T00:00:00Z", "copy"), Rec("m1", "2026-10-15T00:00:00Z", "copy"),
      Rec("w1", "2026-11-23T00:00:00Z", "copy"),   // Monday, ISO week 48
      Rec("w0", "2026-11-22T00:00:00Z", "copy"),   // Sunday, ISO week 47
      Rec("n1", "2026-11-30T00:00:00Z", "copy")};  // Monday, ISO week 49
  RetentionPolicy p;
  p.last = 1;
  p.weekly = 2;
  p.monthly = 2;
  p.yearly = 3;
  auto d = Decide(recs, p);
  EXPECT_EQ(d["n1"], "last,weekly,monthly,yearly");
  EXPECT_EQ(d["w1"], "weekly");
  EXPECT_EQ(d["w0"], "-");  // a third week; November is n1's
  EXPECT_EQ(d["m1"], "monthly");
  EXPECT_EQ(d["y1"], "yearly");
}

TEST(Retention, WithinCountsBackFromTheNewestBackupAndTagsKeep) {
  std::vector<BackupRecord> recs = {Rec("old", "2026-01-01T00:00:00Z", "copy"),
                                    Rec("mid", "2026-11-20T00:00:00Z", "copy"),
                                    Rec("new", "2026-11-25T00:00:00Z", "copy")};
  recs[0].tags = {"keep-forever"};
  RetentionPolicy p;
  ASSERT_TRUE(ParseDuration("7d", &p.within_seconds).ok());
  p.tags = {"keep-forever"};
  auto d = Decide(recs, p);
  EXPECT_EQ(d["new"], "within");
  EXPECT_EQ(d["mid"], "within");  // 5 days before the newest, whatever today is
  EXPECT_EQ(d["old"], "tag keep-forever");
}

TEST(Retention, GroupsAreHostAndVolumeUnlessToldOtherwise) {
  std::vector<BackupRecord> recs = {
      Rec("h1a", "2026-11-29T00:00:00Z", "copy", "h1"),
      Rec("h1b", "2026-11-30T00:00:00Z", "copy", "h1"),
      Rec("h2a", "2026-11-28T00:00:00Z", "copy", "h2"),
      Rec("h1x", "2026-11-27T00:00:00Z", "copy", "h1", "dev:/dev/sdb")};
  RetentionPolicy p;
  p.last = 1;
  auto d = Decide(recs, p);
  EXPECT_EQ(d["h1b"], "last");
  EXPECT_EQ(d["h1a"], "-");
  EXPECT_EQ(d["h2a"], "last");  // its own group
  EXPECT_EQ(d["h1x"], "last");  // another volume
  ASSERT_TRUE(ParseGroupBy("", &p).ok());
  d = Decide(recs, p);
  EXPECT_EQ(d["h1b"], "last");
  EXPECT_EQ(d["h2a"], "-");
  EXPECT_EQ(d["h1x"], "-");
  EXPECT_FALSE(ParseGroupBy("hostname", &p).ok());
}

TEST(Retention, WhatTheKeptAndTheNextBackupsBuildOnIsKept) {
  std::vector<BackupRecord> recs = {Rec("f1", "2026-11-01T00:00:00Z", "full"),
                                    Rec("d1", "2026-11-02T00:00:00Z", "differential"),
                                    Rec("f2", "2026-11-08T00:00:00Z", "full"),
                                    Rec("i1", "2026-11-09T00:00:00Z", "incremental"),
                                    Rec("d2", "2026-11-10T00:00:00Z", "differential"),
                                    Rec("c1", "2026-11-11T00:00:00Z", "copy")};
  recs[1].parent = "f1";
  recs[3].parent = "f2";
  recs[4].parent = "f2";
  RetentionPolicy p;
  p.last = 1;  // keeps c1 only, by policy
  p.tags = {"x"};
  recs[1].tags = {"x"};  // keeps d1
  auto d = Decide(recs, p);
  EXPECT_EQ(d["c1"], "last");
  EXPECT_EQ(d["d1"], "tag x");
  EXPECT_EQ(d["f1"], "needed by differential d1");
  EXPECT_EQ(d["i1"], "needed by the next incremental (its parent)");
  EXPECT_EQ(d["f2"], "needed by the next differential (its parent)");
  EXPECT_EQ(d["d2"], "-");  // nothing builds on a differential
}

TEST(Retention, DurationsAreResticsForm) {
  int64_t s = 0;
  ASSERT_TRUE(ParseDuration("1y6m2w3d4h", &s).ok());
  EXPECT_EQ(s, ((365 + 6 * 30 + 14 + 3) * 24 + 4) * 3600);
  for (const char* bad : {"", "7", "d", "7x", "-1d", "0d", "1d2"})
    EXPECT_FALSE(ParseDuration(bad, &s).ok()) << bad;
}

TEST(Retention, AnEmptyPolicyIsEmpty) {
  RetentionPolicy p;
  EXPECT_TRUE(p.empty());
  p.hourly = 1;
  EXPECT_FALSE(p.empty());
}

}  // namespace
}  // namespace gnomon
