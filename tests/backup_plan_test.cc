// The incremental planner's arithmetic (engine/backup_plan), without root,
// loop devices or reflinks: parent choice, stored stamps, the changed blocks
// of a slot, and the blocks in which two chunks differ; and the other pure
// parts of a backup's request: which stamps go back to which writer, and the
// backup options (engine/writer_options, vss/backup_options).
#include "engine/backup_plan.h"

#include <gtest/gtest.h>

#include "engine/writer_options.h"
#include "vss/backup_options.h"

namespace gnomon {
namespace {

using nlohmann::json;

BackupRecord Rec(const std::string& id, const std::string& type,
                 const std::vector<std::string>& keys) {
  BackupRecord r;
  r.id = id;
  r.type = type;
  for (const auto& k : keys) {
    VolumeRecord v;
    v.key = k;
    v.source = "/src/" + k;
    r.volumes.push_back(v);
  }
  return r;
}

TEST(BackupPlan, TheParentIsTheNewestFullOrIncrementalHoldingTheVolume) {
  std::vector<BackupRecord> h = {Rec("a", "full", {"k1", "k2"}), Rec("b", "incremental", {"k1"}),
                                 Rec("c", "differential", {"k1"}), Rec("d", "copy", {"k1", "k2"}),
                                 Rec("e", "full", {"k3"})};
  ParentChoice p = ChooseParent(h, "k1", false);
  ASSERT_TRUE(p.record);
  EXPECT_EQ(p.record->id, "b");  // differentials and copies are never parents
  EXPECT_EQ(p.volume->key, "k1");
  EXPECT_EQ(ChooseParent(h, "k1", /*full_only=*/true).record->id, "a");
  EXPECT_EQ(ChooseParent(h, "k2", false).record->id, "a");
  EXPECT_EQ(ChooseParent(h, "k2", false).volume, &h[0].volumes[1]);
  EXPECT_EQ(ChooseParent(h, "nope", false).record, nullptr);
  EXPECT_EQ(ChooseParent({}, "k1", false).record, nullptr);
}

TEST(BackupPlan, StoredStampsAreFoundByWriterClassAndNameAndMalformedOnesAreNone) {
  BackupRecord r = Rec("a", "full", {"k"});
  r.extra["vss"]["bcd"]["components"] =
      json::array({{{"class_id", "other"}, {"name", "/v"}, {"backup_stamp", "x"}},
                   {{"class_id", "cls"}, {"name", "/w"}, {"backup_stamp", "y"}},
                   {{"class_id", "cls"}, {"name", "/v"}, {"backup_stamp", "stamp"}}});
  EXPECT_EQ(StoredStamp(r, "cls", "/v"), "stamp");
  EXPECT_EQ(StoredStamp(r, "cls", "/none"), "");
  for (json bad :
       {json(5), json::object({{"bcd", 7}}), json::object({{"bcd", {{"components", {5, "x"}}}}}),
        json::object(
            {{"bcd",
              {{"components", {{{"class_id", "cls"}, {"name", "/v"}, {"backup_stamp", 9}}}}}}})}) {
    r.extra["vss"] = bad;
    EXPECT_EQ(StoredStamp(r, "cls", "/v"), "") << bad.dump();
  }
}

TEST(BackupPlan, ChangedRangesBecomeWholeBlocksClippedToEachSlot) {
  // A 64 KiB chunk size; slot 1 covers [65536, 131072).
  const std::vector<vss::ByteRange> changed = {
      {100, 10},            // slot 0 only
      {65536 + 5000, 100},  // slot 1, block 1
      {65536 + 8190, 10},   // slot 1, straddles blocks 1 and 2: merged with the above
      {65536 + 40000, 1},   // slot 1, block 9
      {131072 - 10, 20},    // the end of slot 1 and the start of slot 2
  };
  size_t next = 0;
  std::vector<PatchRange> out;
  EXPECT_EQ(SlotChangedBlocks(changed, 0, 65536, &next, &out), 4096u);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].offset, 0u);
  EXPECT_EQ(out[0].length, 4096u);

  uint64_t total = SlotChangedBlocks(changed, 65536, 65536, &next, &out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].offset, 4096u);
  EXPECT_EQ(out[0].length, 8192u);  // blocks 1 and 2
  EXPECT_EQ(out[1].offset, 36864u);
  EXPECT_EQ(out[1].length, 4096u);  // block 9
  EXPECT_EQ(out[2].offset, 61440u);
  EXPECT_EQ(out[2].length, 4096u);  // the last block, clipped at the slot's end
  EXPECT_EQ(total, 16384u);

  EXPECT_EQ(SlotChangedBlocks(changed, 131072, 65536, &next, &out), 4096u);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].offset, 0u);
  // A short last slot [196608, 201608) clips its last block at its end.
  size_t cursor = 0;
  EXPECT_EQ(SlotChangedBlocks({{201000, 5}}, 196608, 5000, &cursor, &out), 904u);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].offset, 4096u);
  EXPECT_EQ(out[0].length, 904u);
  // Nothing changed in a slot: no ranges.
  next = 0;
  EXPECT_EQ(SlotChangedBlocks(changed, 4 * 65536, 65536, &next, &out), 0u);
  EXPECT_TRUE(out.empty());
}

TEST(BackupPlan, DifferingBlocksAreMergedAndTheLastMayBeShort) {
  std::vector<uint8_t> old(5 * 4096 + 100, 1), now = old;
  std::vector<PatchRange> out;
  EXPECT_EQ(DifferingBlocks(old, now, &out), 0u);
  EXPECT_TRUE(out.empty());
  now[1 * 4096 + 7] = 2;
  now[2 * 4096] = 2;
  now[5 * 4096 + 99] = 2;
  EXPECT_EQ(DifferingBlocks(old, now, &out), 2 * 4096u + 100);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].offset, 4096u);
  EXPECT_EQ(out[0].length, 8192u);
  EXPECT_EQ(out[1].offset, 5 * 4096u);
  EXPECT_EQ(out[1].length, 100u);
}

TEST(BackupPlan, ProviderRangesAreSortedMergedAndClippedToTheVolume) {
  using R = std::vector<vss::ByteRange>;
  auto eq = [](const R& a, const R& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (a[i].offset != b[i].offset || a[i].length != b[i].length) return false;
    return true;
  };
  // Write order, not offset order: the later, lower range must survive.
  EXPECT_TRUE(
      eq(NormalizeRanges({{8192, 4096}, {0, 4096}}, 0, 1 << 20), R{{0, 4096}, {8192, 4096}}));
  // Overlapping and touching ranges merge.
  EXPECT_TRUE(eq(NormalizeRanges({{100, 50}, {120, 100}, {220, 10}}, 0, 1000), R{{100, 130}}));
  // Clipped to a volume that starts inside its file; empty ones dropped.
  EXPECT_TRUE(eq(NormalizeRanges({{0, 600}, {5000, 100}, {700, 0}}, 512, 4096), R{{512, 88}}));
  // A length that would wrap reaches the end of the volume.
  EXPECT_TRUE(eq(NormalizeRanges({{4000, UINT64_MAX}}, 0, 8192), R{{4000, 4192}}));
  EXPECT_TRUE(NormalizeRanges({}, 0, 8192).empty());
}

json Comp(const std::string& cls, const std::string& path, const std::string& name,
          const std::string& stamp) {
  return {{"class_id", cls}, {"logical_path", path}, {"name", name}, {"backup_stamp", stamp}};
}

TEST(BackupPlan, EveryStoredStampIsFoundAndMalformedComponentsAreSkipped) {
  BackupRecord r = Rec("a", "full", {"k"});
  r.extra["vss"]["bcd"]["components"] =
      json::array({Comp("c1", "sqlite", "/db", "s1"), Comp("c2", "", "x", ""),      // no stamp
                   json{{"class_id", "c3"}, {"name", "y"}, {"backup_stamp", "s"}},  // no path
                   5, Comp("c4", "pg", "/data", "s4")});
  auto all = StoredStamps(r);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].class_id, "c1");
  EXPECT_EQ(all[0].logical_path, "sqlite");
  EXPECT_EQ(all[0].name, "/db");
  EXPECT_EQ(all[0].stamp, "s1");
  EXPECT_EQ(all[0].backup_id, "a");
  EXPECT_EQ(all[1].stamp, "s4");
  r.extra["vss"] = json::object({{"bcd", 7}});
  EXPECT_TRUE(StoredStamps(r).empty());
}

TEST(BackupPlan, AStampOfAWriterThatFailedIsNotKept) {
  BackupRecord r = Rec("a", "full", {"k"});
  json ok = Comp("c1", "", "/db", "s1"), bad = Comp("c2", "", "/db2", "s2");
  ok["instance_id"] = "00000000-0000-4000-8000-000000000001";
  bad["instance_id"] = "00000000-0000-4000-8000-000000000002";
  r.extra["vss"]["bcd"]["components"] = json::array({ok, bad});
  auto status = [](const char* instance, unsigned state) {  // as read back from a file
    return json{{"name", "w"},
                {"class_id", "00000000-0000-4000-8000-0000000000aa"},
                {"instance_id", instance},
                {"state", state},
                {"failure", 0u},
                {"message", ""}};
  };
  r.extra["vss"]["writer_status"] =
      json::array({status("00000000-0000-4000-8000-000000000001", 1),     // VSS_WS_STABLE
                   status("00000000-0000-4000-8000-000000000002", 11)});  // FAILED_AT_POST_SNAPSHOT
  auto kept = StoredStamps(r);
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(kept[0].stamp, "s1");
}

TEST(BackupPlan, EachComponentGetsTheStampOfTheNewestParentHoldingIt) {
  // Two volumes built on two parents: the newer one's stamp of a component
  // both hold wins, a component only the older holds keeps the older's,
  // and the volume writer's class is left to the per-volume path.
  BackupRecord old_full = Rec("f", "full", {"k1"}), newer = Rec("i", "incremental", {"k2"});
  old_full.time = "2026-01-01T00:00:00.000000Z";
  newer.time = "2026-01-02T00:00:00.000000Z";
  old_full.extra["vss"]["bcd"]["components"] =
      json::array({Comp("db", "sqlite", "/a.db", "old a"), Comp("db", "sqlite", "/b.db", "old b"),
                   Comp("vol", "volumes", "/dev/loop1", "volume stamp")});
  newer.extra["vss"]["bcd"]["components"] =
      json::array({Comp("db", "sqlite", "/a.db", "new a"), Comp("db", "other", "/b.db", "path")});
  for (auto parents : {std::vector<const BackupRecord*>{&old_full, &newer},
                       std::vector<const BackupRecord*>{&newer, &old_full, &newer}}) {
    auto got = ParentStamps(parents, "vol");
    std::map<std::string, std::string> by_key;
    for (const auto& s : got) by_key[s.class_id + "|" + s.logical_path + "|" + s.name] = s.stamp;
    EXPECT_EQ(by_key.size(), 3u);
    EXPECT_EQ(by_key["db|sqlite|/a.db"], "new a");
    EXPECT_EQ(by_key["db|sqlite|/b.db"], "old b");
    EXPECT_EQ(by_key["db|other|/b.db"], "path");  // matched by path too
  }
  EXPECT_TRUE(ParentStamps({}, "vol").empty());
}

TEST(WriterOptions, ParsedFromTheCommandLineAndMalformedOnesRefused) {
  WriterOption o;
  ASSERT_TRUE(ParseWriterOption("sqlite:checkpoint=full", &o).ok());
  EXPECT_EQ(o.writer, "sqlite");
  EXPECT_EQ(o.key, "checkpoint");
  EXPECT_EQ(o.value, "full");
  // The first ':' ends the writer, the first '=' after it the key.
  ASSERT_TRUE(ParseWriterOption("{5b1f4a52-6c3e-4d8a-9e57-7a1e0c9d2f10}:k=a:b=c", &o).ok());
  EXPECT_EQ(o.writer, "{5b1f4a52-6c3e-4d8a-9e57-7a1e0c9d2f10}");
  EXPECT_EQ(o.key, "k");
  EXPECT_EQ(o.value, "a:b=c");
  ASSERT_TRUE(ParseWriterOption("w:empty=", &o).ok());
  EXPECT_EQ(o.value, "");
  for (const char* bad :
       {"", "sqlite", "sqlite:checkpoint", ":k=v", "w:=v", "w:bad key=v", "w:k=line\nbreak"})
    EXPECT_EQ(ParseWriterOption(bad, &o).code(), Status::Code::kInvalidArgument) << bad;
}

TEST(WriterOptions, NamesAndClassIdsPickTheWriterAndUnknownOnesNameThoseThereAre) {
  vss::Guid sqlite_id, pg_id;
  ASSERT_TRUE(vss::Guid::Parse("5b1f4a52-6c3e-4d8a-9e57-7a1e0c9d2f10", &sqlite_id));
  ASSERT_TRUE(vss::Guid::Parse("a3d6f1c8-2b47-4e91-8c0d-5e2f7b9a4c61", &pg_id));
  vss::Guid sqlite_a, sqlite_b, pg_i;
  ASSERT_TRUE(vss::Guid::Parse("00000000-0000-4000-8000-00000000000a", &sqlite_a));
  ASSERT_TRUE(vss::Guid::Parse("00000000-0000-4000-8000-00000000000b", &sqlite_b));
  ASSERT_TRUE(vss::Guid::Parse("00000000-0000-4000-8000-00000000000c", &pg_i));
  const std::vector<WriterIdentity> writers = {{"sqlite", sqlite_id, sqlite_a},
                                               {"postgresql", pg_id, pg_i},
                                               {"sqlite-2", sqlite_id, sqlite_b}};
  EXPECT_TRUE(NamesWriter("sqlite", writers[0]));
  EXPECT_FALSE(NamesWriter("SQLite", writers[0]));  // names are exact
  EXPECT_TRUE(NamesWriter("{5B1F4A52-6C3E-4D8A-9E57-7A1E0C9D2F10}", writers[0]));
  EXPECT_TRUE(NamesWriter("5b1f4a52-6c3e-4d8a-9e57-7a1e0c9d2f10", writers[0]));
  EXPECT_FALSE(NamesWriter("5b1f4a526c3e4d8a9e577a1e0c9d2f10", writers[0]));
  EXPECT_FALSE(NamesWriter("{5b1f4a52-6c3e-4d8a-9e57-7a1e0c9d2f10}", writers[1]));

  std::map<vss::Guid, std::string> by_class;
  ASSERT_TRUE(ResolveWriterOptions({{"sqlite", "checkpoint", "full"},
                                    {"a3d6f1c8-2b47-4e91-8c0d-5e2f7b9a4c61", "checkpoint", "fast"},
                                    {"sqlite", "x", "1"}},
                                   writers, &by_class)
                  .ok());
  EXPECT_EQ(by_class[sqlite_a], "checkpoint=full\nx=1\n");
  EXPECT_EQ(by_class[pg_i], "checkpoint=fast\n");
  EXPECT_FALSE(by_class.count(sqlite_b)) << "an option for one instance reached another";
  // A class id names every instance of the class.
  ASSERT_TRUE(ResolveWriterOptions({{"5b1f4a52-6c3e-4d8a-9e57-7a1e0c9d2f10", "checkpoint", "full"}},
                                   writers, &by_class)
                  .ok());
  EXPECT_EQ(by_class[sqlite_a], "checkpoint=full\n");
  EXPECT_EQ(by_class[sqlite_b], "checkpoint=full\n");
  ASSERT_TRUE(ResolveWriterOptions({}, writers, &by_class).ok());
  EXPECT_TRUE(by_class.empty());

  Status s = ResolveWriterOptions({{"mysql", "k", "v"}}, writers, &by_class);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("no writer is named 'mysql'"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("'sqlite' {5b1f4a52-6c3e-4d8a-9e57-7a1e0c9d2f10}"), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("'postgresql'"), std::string::npos) << s.message();
  s = ResolveWriterOptions({{"sqlite", "k", "1"}, {"sqlite", "k", "2"}}, writers, &by_class);
  EXPECT_NE(s.message().find("'k' is given twice"), std::string::npos) << s.message();
}

TEST(BackupOptionsText, RoundTripsAndRefusesWhatIsNotKeyValueLines) {
  std::string text;
  ASSERT_TRUE(vss::FormatBackupOptions({{"checkpoint", "full"}, {"label", "a = b"}}, &text).ok());
  EXPECT_EQ(text, "checkpoint=full\nlabel=a = b\n");
  vss::BackupOptionList back;
  ASSERT_TRUE(vss::ParseBackupOptions(text, &back).ok());
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[1].second, "a = b");
  ASSERT_TRUE(vss::ParseBackupOptions("", &back).ok());
  EXPECT_TRUE(back.empty());
  for (const char* bad : {"k=v", "novalue\n", "=v\n", "k=1\nk=2\n", "bad key=v\n"})
    EXPECT_FALSE(vss::ParseBackupOptions(bad, &back).ok()) << bad;
  EXPECT_FALSE(vss::FormatBackupOptions({{"k", "a\nb"}}, &text).ok());
  EXPECT_FALSE(vss::FormatBackupOptions({{"k", "1"}, {"k", "2"}}, &text).ok());
}

TEST(BackupOptionsText, AWriterGetsItsDefaultsAndRefusesWhatItDoesNotUnderstand) {
  const std::vector<vss::BackupOptionSpec> spec = {{"checkpoint", {"fast", "spread"}, "fast"},
                                                   {"label", {}, "gnomon"}};
  EXPECT_EQ(vss::DescribeBackupOptions(spec), "checkpoint=fast|spread, label=TEXT");
  std::map<std::string, std::string> opts;
  ASSERT_TRUE(vss::ReadBackupOptions("", spec, &opts).ok());
  EXPECT_EQ(opts["checkpoint"], "fast");
  EXPECT_EQ(opts["label"], "gnomon");
  ASSERT_TRUE(vss::ReadBackupOptions("checkpoint=spread\nlabel=x\n", spec, &opts).ok());
  EXPECT_EQ(opts["checkpoint"], "spread");
  EXPECT_EQ(opts["label"], "x");
  Status s = vss::ReadBackupOptions("compress=yes\n", spec, &opts);
  EXPECT_NE(s.message().find("unknown backup option 'compress'"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("checkpoint=fast|spread"), std::string::npos) << s.message();
  s = vss::ReadBackupOptions("checkpoint=slow\n", spec, &opts);
  EXPECT_NE(s.message().find("checkpoint='slow' is not an allowed value"), std::string::npos)
      << s.message();
}

}  // namespace
}  // namespace gnomon
