// Used-block imaging: ext2/3/4 volumes are read through their block bitmaps
// (free blocks stored and restored as zeros), and every volume the map
// cannot vouch for is imaged whole, with the reason in the record. Runs
// without root: mke2fs -d builds populated filesystems in plain files and
// debugfs reads them back.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "engine/block_map.h"
#include "tests/test_util.h"

namespace gnomon {
namespace {

using nlohmann::json;
using test::Gnomon;
using test::TempDir;
namespace fs = std::filesystem;

// Fills every block of a fresh image, so any free block the backup stored
// would carry it into the restored image.
constexpr char kStale[] = "GNOMON-STALE-FREE-BLOCK\n";

// The free block ranges, in bytes, as dumpe2fs (an independent reader)
// lists them per group.
std::vector<std::pair<uint64_t, uint64_t>> FreeRanges(const std::string& image, uint64_t block) {
  auto r = test::Sh("dumpe2fs '" + image + "' 2>/dev/null");
  std::vector<std::pair<uint64_t, uint64_t>> out;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("  Free blocks: ", 0) != 0) continue;
    std::istringstream list(line.substr(15));
    for (std::string item; std::getline(list, item, ',');) {
      uint64_t a = std::stoull(item), b = a;
      if (auto dash = item.find('-'); dash != std::string::npos)
        b = std::stoull(item.substr(dash + 1));
      out.push_back({a * block, (b + 1 - a) * block});
    }
  }
  return out;
}

// True if every byte of `ranges` in `path` is zero.
bool AllZero(const std::string& path, const std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
  auto data = test::ReadFile(path);
  for (auto [off, len] : ranges)
    for (uint64_t i = off; i < off + len; ++i)
      if (data.at(i)) return false;
  return true;
}

// "Free blocks:" times "Block size:" from dumpe2fs -h.
uint64_t FreeBytes(const std::string& image) {
  auto r = test::Sh("dumpe2fs -h '" + image + "' 2>/dev/null");
  uint64_t free_blocks = 0, block = 0;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Free blocks:", 0) == 0) free_blocks = std::stoull(line.substr(12));
    if (line.rfind("Block size:", 0) == 0) block = std::stoull(line.substr(11));
  }
  return free_blocks * block;
}

class BlockMapTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    GNOMON_SKIP_IF(
        test::Sh("command -v mke2fs && command -v debugfs && command -v dumpe2fs").exit_code
            ? "e2fsprogs (mke2fs, debugfs, dumpe2fs) not installed"
            : "");
    repo_ = dir_ / "repo";
    ASSERT_EQ(Gnomon({"init", "--repo", repo_, "--chunk-size", "64"}).exit_code, 0);
    // Files of every kind a filesystem holds: compressible, random, a
    // directory tree, an empty file, one larger than a chunk.
    fs::create_directories(dir_ / "src/a/b");
    test::WriteFile(dir_ / "src/text", test::TextLikeBytes(900u << 10, 1));
    test::WriteFile(dir_ / "src/a/random", test::RandomBytes(300u << 10, 2));
    test::WriteFile(dir_ / "src/a/b/small", test::TextLikeBytes(5000, 3));
    test::WriteFile(dir_ / "src/a/empty", {});
    image_ = dir_ / "vol.img";
    std::string stale;
    for (size_t i = 0; i < (24u << 20) / (sizeof kStale - 1); ++i) stale += kStale;
    std::ofstream(image_, std::ios::binary) << stale;
  }
  // mke2fs without discard, so free blocks keep the stale pattern.
  void MakeExt4(const std::string& extra = "") {
    auto r = test::Sh("mke2fs -q -F -t ext4 -E nodiscard -b " + std::to_string(GetParam()) + " " +
                      extra + " -d '" + (dir_ / "src") + "' '" + image_ + "'");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  json Backup(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--repo", repo_, "backup", "--json", image_};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = Gnomon(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out).at("volumes").at(0) : json::object();
  }
  std::string Restore() {
    std::string out = dir_ / "restored.img";
    fs::remove(out);
    auto r = Gnomon({"--repo", repo_, "restore", "latest", out});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return out;
  }
  // A volume the map cannot vouch for is imaged whole: byte-identical.
  void ExpectWholeVolumeFallback(const std::string& reason) {
    json v = Backup();
    EXPECT_EQ(v.value("block_map", ""), "all");
    EXPECT_NE(v.value("block_map_reason", "").find(reason), std::string::npos)
        << v.value("block_map_reason", "");
    EXPECT_EQ(v.at("stats").at("unused_bytes").get<uint64_t>(), 0u);
    EXPECT_TRUE(test::FilesEqual(image_, Restore()));
  }
  test::IsolatedState state_;
  TempDir dir_;
  std::string repo_, image_;
};

TEST_P(BlockMapTest, Ext4IsImagedByItsBitmapsAndRestoresCleanWithEveryFile) {
  MakeExt4();
  json v = Backup();
  EXPECT_EQ(v.value("block_map", ""), "ext4");
  EXPECT_EQ(v.value("block_map_reason", "x"), "");
  // Exactly the blocks dumpe2fs calls free were left out.
  EXPECT_EQ(v.at("stats").at("unused_bytes").get<uint64_t>(), FreeBytes(image_));
  EXPECT_LT(v.at("stats").at("bytes_read").get<uint64_t>(), fs::file_size(image_) / 2);

  std::string out = Restore();
  EXPECT_EQ(fs::file_size(out), fs::file_size(image_));
  auto fsck = test::Sh("e2fsck -fn '" + out + "' 2>&1");
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out;
  // No free block reached the repository: the stale pattern is gone.
  auto free = FreeRanges(image_, GetParam());
  ASSERT_FALSE(free.empty());
  EXPECT_FALSE(AllZero(image_, free));
  EXPECT_TRUE(AllZero(out, free));
  // Every file, read back by debugfs from the restored image (its -R takes
  // no shell quoting; the scratch path has no spaces).
  fs::create_directory(dir_ / "dump");
  auto dump = test::Sh("debugfs -R \"rdump / " + (dir_ / "dump") + "\" '" + out + "' 2>&1");
  ASSERT_EQ(dump.exit_code, 0) << dump.out;
  for (const char* f : {"text", "a/random", "a/b/small", "a/empty"})
    EXPECT_TRUE(
        test::FilesEqual(dir_ / ("src/" + std::string(f)), dir_ / ("dump/" + std::string(f))))
        << f;
  auto verify = Gnomon({"--repo", repo_, "verify", "--read-data"});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
}

TEST_P(BlockMapTest, AllBlocksImagesEveryByte) {
  MakeExt4();
  json v = Backup({"--all-blocks"});
  EXPECT_EQ(v.value("block_map", ""), "all");
  EXPECT_EQ(v.value("block_map_reason", "x"), "");
  EXPECT_TRUE(test::FilesEqual(image_, Restore()));
}

TEST_P(BlockMapTest, DamagedSuperblockFallsBackToTheWholeVolume) {
  MakeExt4("-O metadata_csum");
  // s_volume_name: a byte the kernel never checks but the checksum covers.
  test::FlipByte(image_, 1024 + 0x78);
  ExpectWholeVolumeFallback("superblock unusable");
}

TEST_P(BlockMapTest, JournalToReplayFallsBackToTheWholeVolume) {
  MakeExt4();
  auto r = test::Sh("debugfs -w -R 'feature needs_recovery' '" + image_ + "' 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  ExpectWholeVolumeFallback("journal needs recovery");
}

TEST_P(BlockMapTest, FilesystemWithErrorsFallsBackToTheWholeVolume) {
  MakeExt4();
  auto r = test::Sh("debugfs -w -R 'ssv state 2' '" + image_ + "' 2>&1");  // EXT2_ERROR_FS
  ASSERT_EQ(r.exit_code, 0) << r.out;
  ExpectWholeVolumeFallback("having errors");
}

// Geometry libext2fs would read past its buffers with (fuzz_block_map): a
// first data block that is not what mke2fs writes, or descriptors that put
// a bitmap outside its group, are not trusted.
TEST_P(BlockMapTest, GeometryMke2fsNeverWritesFallsBackToTheWholeVolume) {
  MakeExt4();
  auto r = test::Sh("debugfs -w -R 'ssv first_data_block 5' '" + image_ + "' 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  ExpectWholeVolumeFallback("not what mke2fs writes (first data block 5)");
  MakeExt4();
  r = test::Sh("debugfs -w -R 'set_bg 0 block_bitmap 999999' '" + image_ + "' 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  ExpectWholeVolumeFallback("not what mke2fs writes (group descriptors");
}

INSTANTIATE_TEST_SUITE_P(BlockSizes, BlockMapTest, ::testing::Values(1024, 4096),
                         [](const auto& info) { return "block" + std::to_string(info.param); });

TEST(BlockMapFallbackTest, NotExtIsImagedWhole) {
  test::IsolatedState state;
  TempDir dir;
  ASSERT_EQ(Gnomon({"init", "--repo", dir / "repo", "--chunk-size", "64"}).exit_code, 0);
  test::WriteFile(dir / "vol", test::TextLikeBytes(3u << 20, 9));
  auto r = Gnomon({"--repo", dir / "repo", "backup", "--json", dir / "vol"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json v = json::parse(r.out).at("volumes").at(0);
  EXPECT_EQ(v.value("block_map", ""), "all");
  EXPECT_NE(v.value("block_map_reason", "").find("not an ext2/3/4"), std::string::npos);
  ASSERT_EQ(Gnomon({"--repo", dir / "repo", "restore", "latest", dir / "out"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(dir / "vol", dir / "out"));
}

TEST(BlockMapFallbackTest, VolumeAtAnOffsetAndLargerThanItsFilesystem) {
  TempDir dir;
  // A 1 MiB prefix, an 8 MiB ext4, then 1 MiB past the filesystem's end.
  std::string img = dir / "fs.img";
  test::WriteFile(img, test::RandomBytes(8u << 20, 4));
  ASSERT_EQ(test::Sh("mke2fs -q -F -t ext4 -E nodiscard -b 4096 '" + img + "'").exit_code, 0);
  std::string disk = dir / "disk";
  auto prefix = test::RandomBytes(1u << 20, 5);
  auto fsb = test::ReadFile(img);
  prefix.insert(prefix.end(), fsb.begin(), fsb.end());
  prefix.resize(prefix.size() + (1u << 20), 0xab);
  test::WriteFile(disk, prefix);

  BlockMap m = ReadBlockMap(disk, 1u << 20, 9u << 20);
  ASSERT_EQ(m.kind, "ext4") << m.reason;
  ASSERT_FALSE(m.used.empty());
  EXPECT_EQ(m.used.front().offset, 0u);  // the superblock's block is used
  // The tail past the filesystem counts as used; the free blocks do not.
  EXPECT_EQ(m.used.back().offset + m.used.back().length, 9u << 20);
  EXPECT_GE(m.used.back().length, 1u << 20);
  EXPECT_EQ((9u << 20) - m.used_bytes, FreeBytes(img));
  // Read at the wrong offset, it is not a filesystem at all.
  EXPECT_EQ(ReadBlockMap(disk, 0, 9u << 20).kind, "all");
  // A filesystem bigger than the volume is damaged or truncated.
  BlockMap small = ReadBlockMap(disk, 1u << 20, 4u << 20);
  EXPECT_EQ(small.kind, "all");
  EXPECT_NE(small.reason.find("larger than the volume"), std::string::npos) << small.reason;
  EXPECT_EQ(small.used_bytes, 4u << 20);
}

}  // namespace
}  // namespace gnomon
