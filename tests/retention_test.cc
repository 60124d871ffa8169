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
// "Now" for every test: 2026-12-01T00:00:00Z.
constexpr int64_t kNow = 1796083200;

std::map<std::string, std::string> Decide(const std::vector<BackupRecord>& recs,
                                          const RetentionPolicy& p, int64_t now = kNow) {
  std::map<std::string, std::string> out;
  for (const auto& g : ApplyRetention(recs, p, now))
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
  ASSERT_TRUE(ParseDuration("7d", &p.within).ok());
  p.tags = {{"keep-forever"}};
  auto d = Decide(recs, p);
  EXPECT_EQ(d["new"], "within 7d");
  EXPECT_EQ(d["mid"], "within 7d");  // 5 days before the newest, whatever today is
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
  p.tags = {{"x"}};
  recs[1].tags = {"x"};  // keeps d1
  auto d = Decide(recs, p);
  EXPECT_EQ(d["c1"], "last");
  EXPECT_EQ(d["d1"], "tag x");
  EXPECT_EQ(d["f1"], "needed by differential d1");
  EXPECT_EQ(d["i1"], "needed by the next incremental (its parent)");
  EXPECT_EQ(d["f2"], "needed by the next differential (its parent)");
  EXPECT_EQ(d["d2"], "-");  // nothing builds on a differential
}

TEST(Retention, DurationsAreResticsFormInCalendarUnits) {
  Duration d;
  ASSERT_TRUE(ParseDuration("1y6m2w3d4h", &d).ok());
  EXPECT_EQ(d.ToString(), "1y6m17d4h");
  for (const char* bad :
       {"", "7", "d", "7x", "-1d", "0d", "1d2", "99999999999999999999d", "100001d"})
    EXPECT_FALSE(ParseDuration(bad, &d).ok()) << bad;
  // A month back from August 15 noon is July 15 noon (calendar, as
  // restic's AddDate): a backup of July 15 evening is within it, though 30
  // days back (July 16 noon) would not reach it.
  std::vector<BackupRecord> recs = {Rec("jul15", "2026-07-15T18:00:00Z", "copy"),
                                    Rec("aug15", "2026-08-15T12:00:00Z", "copy")};
  RetentionPolicy p;
  ASSERT_TRUE(ParseDuration("1m", &p.within).ok());
  EXPECT_EQ(Decide(recs, p)["jul15"], "within 1m");
}

// Found by review: one record from a wrong clock must not push the others
// out of --keep-within.
TEST(Retention, ABackupFromTheFutureIsNotTheReferenceOfWithin) {
  std::vector<BackupRecord> recs = {Rec("a", "2026-11-20T00:00:00Z", "copy"),
                                    Rec("b", "2026-11-29T00:00:00Z", "copy"),
                                    Rec("future", "2036-01-01T00:00:00Z", "copy")};
  RetentionPolicy p;
  ASSERT_TRUE(ParseDuration("30d", &p.within).ok());
  auto d = Decide(recs, p);
  EXPECT_EQ(d["a"], "within 30d");
  EXPECT_EQ(d["b"], "within 30d");
  EXPECT_EQ(d["future"], "within 30d");  // after the reference: inside the window
}

// Found by review: --keep-tag "$UNSET" must not match untagged backups;
// T1,T2 means both tags; lists are ORed.
TEST(Retention, TagListsNeedEveryTagAndEmptyTagsAreRefused) {
  std::vector<std::string> list;
  EXPECT_FALSE(ParseTagList("", &list).ok());
  EXPECT_FALSE(ParseTagList("a,,b", &list).ok());
  ASSERT_TRUE(ParseTagList("a,b", &list).ok());
  std::vector<BackupRecord> recs = {
      Rec("ab", "2026-11-01T00:00:00Z", "copy"), Rec("a", "2026-11-02T00:00:00Z", "copy"),
      Rec("c", "2026-11-03T00:00:00Z", "copy"), Rec("none", "2026-11-04T00:00:00Z", "copy")};
  recs[0].tags = {"a", "b"};
  recs[1].tags = {"a"};
  recs[2].tags = {"c"};
  RetentionPolicy p;
  p.tags = {list, {"c"}};
  auto d = Decide(recs, p);
  EXPECT_EQ(d["ab"], "tag a,b");
  EXPECT_EQ(d["a"], "-");
  EXPECT_EQ(d["c"], "tag c");
  EXPECT_EQ(d["none"], "-");
}

// restic 0.17: a rule with periods to spare keeps the oldest backup too.
TEST(Retention, ARuleWithPeriodsToSpareKeepsTheOldest) {
  std::vector<BackupRecord> recs = {Rec("first", "2026-02-01T00:00:00Z", "copy"),
                                    Rec("mid", "2026-11-01T00:00:00Z", "copy"),
                                    Rec("new", "2026-11-30T00:00:00Z", "copy")};
  RetentionPolicy p;
  p.yearly = 10;
  auto d = Decide(recs, p);
  EXPECT_EQ(d["new"], "yearly");
  EXPECT_EQ(d["mid"], "-");
  EXPECT_EQ(d["first"], "oldest yearly");
}

// Found by review: a record whose time cannot be read was dropped even by
// --keep-last; now it is kept, and flagged.
TEST(Retention, ABackupWhoseTimeCannotBeReadIsKept) {
  std::vector<BackupRecord> recs = {
      Rec("odd", "2026-11-30 00:00:00", "copy"), Rec("empty", "", "copy"),
      Rec("x", "2026-11-28T00:00:00Z", "copy"), Rec("y", "2026-11-29T00:00:00.5Z", "copy")};
  RetentionPolicy p;
  p.last = 1;
  auto d = Decide(recs, p);
  EXPECT_EQ(d["y"], "last");
  EXPECT_EQ(d["x"], "-");
  EXPECT_EQ(d["odd"], "undated (its time cannot be read)");
  EXPECT_EQ(d["empty"], "undated (its time cannot be read)");
}

// Found by review: with one group for everything, another volume's only
// full went; what the engine would choose as a parent is kept whatever the
// grouping.
TEST(Retention, ParentsAreKeptPerVolumeWhateverTheGrouping) {
  std::vector<BackupRecord> recs = {
      Rec("other", "2026-11-01T00:00:00Z", "full", "h", "file:/other.img"),
      Rec("v1", "2026-11-02T00:00:00Z", "full"), Rec("v2", "2026-11-03T00:00:00Z", "full")};
  RetentionPolicy p;
  p.last = 1;
  ASSERT_TRUE(ParseGroupBy("", &p).ok());
  auto d = Decide(recs, p);
  EXPECT_EQ(d["v2"],
            "last,needed by the next incremental (its parent),needed by the next differential "
            "(its parent)");
  EXPECT_EQ(d["v1"], "-");
  EXPECT_EQ(d["other"],
            "needed by the next incremental (its parent),needed by the next differential (its "
            "parent)");
}

TEST(Retention, AnEmptyPolicyIsEmpty) {
  RetentionPolicy p;
  EXPECT_TRUE(p.empty());
  p.hourly = 1;
  EXPECT_FALSE(p.empty());
}

}  // namespace
}  // namespace gnomon
