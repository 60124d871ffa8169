// The incremental planner's arithmetic (engine/backup_plan), without root,
// loop devices or reflinks: parent choice, stored stamps, the changed blocks
// of a slot, and the blocks in which two chunks differ.
#include "engine/backup_plan.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace gnomon
