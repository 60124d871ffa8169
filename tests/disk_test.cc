// Disk backups (FORMAT.md §7b): the layout's checks and the restore plan
// as pure functions, then the real gnomon binary on disk images with GPT
// and MBR tables made by sfdisk, mkfs.vfat and mke2fs: byte-for-byte
// restores, a table laid out for a larger disk, --grow, --plan, refusals,
// one partition alone, incrementals, and a partition mounted through a loop
// device with an offset while a program writes to it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "engine/disk_restore.h"
#include "format/backup_record.h"
#include "format/disk_layout.h"
#include "format/names.h"
#include "tests/test_util.h"

namespace gnomon {
namespace {

using nlohmann::json;
using test::Sh;
namespace fs = std::filesystem;
constexpr uint64_t kMiB = 1 << 20;

DiskLayout GptLayout() {
  DiskLayout d;
  d.label = "gpt";
  d.size = 96 * kMiB;
  d.disk_id = "AAAFADE4-9C50-F741-AD7E-4A0B807A8870";
  d.table_length = 128;
  d.first_lba = 2048;
  d.gaps_volume = 3;
  auto part = [](uint32_t n, uint64_t start, uint64_t size, const char* type, int vol) {
    DiskPartition p;
    p.number = n;
    p.start = start;
    p.size = size;
    p.type = type;
    p.uuid = "11111111-2222-3333-4444-00000000000" + std::to_string(n);
    p.volume = vol;
    return p;
  };
  d.partitions = {part(1, 1 * kMiB, 1 * kMiB, "21686148-6449-6E6F-744E-656564454649", 0),
                  part(2, 2 * kMiB, 16 * kMiB, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", 1),
                  part(3, 18 * kMiB, 77 * kMiB, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", 2)};
  d.partitions[1].fs_type = "vfat";
  d.partitions[2].fs_type = "ext4";
  d.partitions[2].name = "root";
  return d;
}

TEST(DiskLayoutTest, AWellFormedLayoutPassesAndEveryMalformedFieldIsRefused) {
  ASSERT_TRUE(GptLayout().Validate(4).ok());
  std::vector<std::pair<std::string, std::function<void(DiskLayout&)>>> bad = {
      {"label", [](DiskLayout& d) { d.label = "bsd"; }},
      {"sector size", [](DiskLayout& d) { d.sector_size = 1000; }},
      {"disk size", [](DiskLayout& d) { d.size = 96 * kMiB + 1; }},
      {"disk id", [](DiskLayout& d) { d.disk_id = "0x12345678"; }},
      {"table length", [](DiskLayout& d) { d.table_length = 0; }},
      {"first lba", [](DiskLayout& d) { d.first_lba = 4096; }},
      {"gaps volume", [](DiskLayout& d) { d.gaps_volume = 4; }},
      {"outside", [](DiskLayout& d) { d.partitions[2].size = 79 * kMiB; }},
      {"unaligned", [](DiskLayout& d) { d.partitions[2].start += 100; }},
      {"overlap", [](DiskLayout& d) { d.partitions[1].size = 17 * kMiB; }},
      {"number twice", [](DiskLayout& d) { d.partitions[1].number = 1; }},
      {"type", [](DiskLayout& d) { d.partitions[0].type = "83"; }},
      {"guid", [](DiskLayout& d) { d.partitions[0].uuid = "not-a-guid"; }},
      {"quote in name", [](DiskLayout& d) { d.partitions[2].name = "a\", type=L"; }},
      {"newline in name", [](DiskLayout& d) { d.partitions[2].name = "a\nb"; }},
      {"attrs", [](DiskLayout& d) { d.partitions[2].attrs = "x=\"y\""; }},
      {"volume", [](DiskLayout& d) { d.partitions[2].volume = 7; }},
      {"volume twice", [](DiskLayout& d) { d.partitions[2].volume = 1; }},
      {"gaps volume is a partition's", [](DiskLayout& d) { d.gaps_volume = 0; }},
  };
  for (auto& [what, spoil] : bad) {
    DiskLayout d = GptLayout();
    spoil(d);
    EXPECT_FALSE(d.Validate(4).ok()) << what;
  }
  // DOS: logical partitions lie inside the one extended partition.
  DiskLayout m;
  m.label = "dos";
  m.size = 64 * kMiB;
  m.disk_id = "0xdeadbeef";
  m.gaps_volume = 2;
  m.partitions = {{1, 1 * kMiB, 8 * kMiB, "primary", "83", "", "", "", true, "", "", "", 0},
                  {2, 9 * kMiB, 50 * kMiB, "extended", "5", "", "", "", false, "", "", "", -1},
                  {5, 10 * kMiB, 20 * kMiB, "logical", "83", "", "", "", false, "", "", "", 1}};
  ASSERT_TRUE(m.Validate(3).ok());
  DiskLayout outside = m;
  outside.partitions[2].start = 60 * kMiB;
  outside.partitions[2].size = 2 * kMiB;
  EXPECT_FALSE(outside.Validate(3).ok());
  DiskLayout primary_inside = m;
  primary_inside.partitions[2].kind = "primary";
  primary_inside.partitions[2].number = 3;
  EXPECT_FALSE(primary_inside.Validate(3).ok());
  // The gaps are everything outside the partitions that hold data; the
  // extended partition's EBRs are in them.
  auto gaps = m.Gaps();
  ASSERT_EQ(gaps.size(), 3u);
  EXPECT_EQ(gaps[0].offset, 0u);
  EXPECT_EQ(gaps[0].length, 1 * kMiB);
  EXPECT_EQ(gaps[1].offset, 9 * kMiB);
  EXPECT_EQ(gaps[1].length, 1 * kMiB);
  EXPECT_EQ(gaps[2].offset, 30 * kMiB);
  EXPECT_EQ(gaps[2].length, 34 * kMiB);
}

// A record says where restore writes: a partition's volume of another size
// than the partition would write into its neighbour, so it is refused.
TEST(DiskLayoutTest, ARecordRoundTripsAndOneWhoseVolumesMisfitIsRefused) {
  BackupRecord r;
  r.id = "0123456789abcdef";
  r.time = "2026-11-30T00:00:00.000000Z";
  r.disk = GptLayout();
  const uint64_t sizes[] = {1 * kMiB, 16 * kMiB, 77 * kMiB, 96 * kMiB};
  for (size_t i = 0; i < 4; ++i) {
    VolumeRecord v;
    v.name = i == 3 ? "disk-gaps" : "p" + std::to_string(i + 1);
    v.size = sizes[i];
    v.chunk_size = 65536;
    v.index = VolumeIndexName(r.id, i);
    r.volumes.push_back(v);
  }
  EXPECT_EQ(r.Version(), 4u);
  BackupRecord out;
  ASSERT_TRUE(BackupRecord::Decode("r", r.Encode(), &out).ok());
  EXPECT_EQ(out.disk.ToJson(), r.disk.ToJson());
  BackupRecord bad = r;
  bad.volumes[2].size += 65536;
  Status s = BackupRecord::Decode("r", bad.Encode(), &out);
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_NE(s.message().find("partition 3's volume is not its size"), std::string::npos)
      << s.message();
  bad = r;
  bad.volumes[3].size -= 65536;
  EXPECT_TRUE(BackupRecord::Decode("r", bad.Encode(), &out).IsCorruption());
  bad = r;
  bad.disk.partitions[1].name = "x\", type=L";  // what a script would take as a field
  EXPECT_TRUE(BackupRecord::Decode("r", bad.Encode(), &out).IsCorruption());
  // A volume backup's record stays version 3, for older readers.
  r.disk = DiskLayout();
  EXPECT_EQ(r.Version(), 3u);
}

TEST(DiskPlanTest, TheSameSizeCopiesTheTableAndALargerGptDiskGetsItLaidOutAnew) {
  const DiskLayout d = GptLayout();
  DiskPlan same;
  ASSERT_TRUE(PlanDisk(d, d.size, {}, &same).ok());
  EXPECT_FALSE(same.rewrite_table);
  ASSERT_EQ(same.gaps.size(), 2u);  // head and tail, as they were
  EXPECT_EQ(same.gaps[1].offset, 95 * kMiB);
  EXPECT_EQ(same.min_size, 95 * kMiB + 33 * 512);

  DiskPlan larger;
  ASSERT_TRUE(PlanDisk(d, 2 * d.size, {}, &larger).ok());
  EXPECT_TRUE(larger.rewrite_table);
  // Neither the old table (until the new one is written the target has
  // none) nor the old backup header is copied: boot code, then the rest of
  // the first MiB after the GPT entries.
  ASSERT_EQ(larger.gaps.size(), 2u);
  EXPECT_EQ(larger.gaps[0].offset, 0u);
  EXPECT_EQ(larger.gaps[0].length, 440u);
  EXPECT_EQ(larger.gaps[1].offset, 34u * 512);
  EXPECT_EQ(larger.gaps[1].offset + larger.gaps[1].length, 1 * kMiB);
  EXPECT_EQ(larger.layout.partitions[2].size, 77 * kMiB);
  const std::string script = PartitionScript(larger.layout);
  EXPECT_NE(script.find("label-id: AAAFADE4-9C50-F741-AD7E-4A0B807A8870"), std::string::npos);
  EXPECT_NE(script.find("p3 : start=36864, size=157696, type=0FC63DAF"), std::string::npos)
      << script;
  EXPECT_EQ(script.find("last-lba"), std::string::npos) << "libfdisk must place the backup";

  DiskPlan grown;
  ASSERT_TRUE(PlanDisk(d, 2 * d.size, {.grow = true}, &grown).ok());
  EXPECT_EQ(grown.grown, 2);
  EXPECT_EQ(grown.grown_from, 77 * kMiB);
  // To the last whole MiB before the backup GPT.
  EXPECT_EQ(grown.layout.partitions[2].start + grown.layout.partitions[2].size, 191 * kMiB);

  // --grow where there is nothing to gain changes nothing (it never shrinks).
  DiskPlan same_grown;
  ASSERT_TRUE(PlanDisk(d, d.size, {.grow = true}, &same_grown).ok());
  EXPECT_EQ(same_grown.grown, -1);
  EXPECT_FALSE(same_grown.rewrite_table);
  EXPECT_EQ(same_grown.layout.partitions[2].size, 77 * kMiB);
}

TEST(DiskPlanTest, ASmallerTargetOrAGrowThatCannotApplyIsRefusedSayingWhy) {
  const DiskLayout d = GptLayout();
  DiskPlan p;
  Status s = PlanDisk(d, 64 * kMiB, {}, &p);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("67108864 bytes (64 MiB)"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("100663296 bytes (96 MiB)"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("at least 99631616 bytes"), std::string::npos) << s.message();
  // Even with --shrink: smaller than the GPT's own tail, or than what the
  // root uses (no unsigned wrap-around to a huge partition).
  EXPECT_FALSE(PlanDisk(d, 8 * 512, {.shrink = true, .last_used = kMiB}, &p).ok());
  EXPECT_FALSE(PlanDisk(d, 30 * kMiB, {.shrink = true, .last_used = 20 * kMiB}, &p).ok());
  ASSERT_TRUE(PlanDisk(d, 48 * kMiB, {.shrink = true, .last_used = 20 * kMiB}, &p).ok());
  EXPECT_TRUE(p.shrunk);
  EXPECT_EQ(p.layout.partitions[2].size, 29 * kMiB);
  DiskLayout fat = d;
  fat.partitions[2].fs_type = "vfat";
  s = PlanDisk(fat, 2 * d.size, {.grow = true}, &p);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("'vfat'"), std::string::npos) << s.message();
}

// ---- The real binary on disk images ----

class DiskTest : public test::RepoTest {
 protected:
  void SetUp() override {
    for (const char* tool : {"sfdisk", "mkfs.vfat", "mcopy", "mke2fs", "debugfs", "e2fsck"})
      GNOMON_SKIP_IF(Sh(std::string("command -v ") + tool).exit_code == 0
                         ? ""
                         : std::string(tool) + " is not installed (tools/install-deps.sh)");
    test::RepoTest::SetUp();
    root_ = dir_ / "rootfs";
    ASSERT_EQ(Sh("mkdir -p " + root_ + "/lib " + root_ +
                 "/copy && cd /usr/lib/x86_64-linux-gnu && "
                 "find . -maxdepth 1 -name '*.so*' -type f -size -1000k | sort | head -40 | xargs "
                 "-I{} cp {} " +
                 root_ +
                 "/lib/; "
                 "cp -r " +
                 root_ + "/lib/. " + root_ + "/copy/; echo hello > " + root_ + "/marker")
                  .exit_code,
              0);
  }
  // GPT: a 1 MiB BIOS boot partition of random bytes, a 16 MiB EFI system
  // partition (FAT) with a file, an ext4 root filled from root_, and random
  // boot code in LBA 0.
  void MakeGptDisk(const std::string& img) {
    ASSERT_EQ(Sh("truncate -s 96M " + img +
                 " && printf 'label: gpt\\n"
                 "size=1M, type=21686148-6449-6E6F-744E-656564454649, name=\"bios boot\"\\n"
                 "size=16M, type=U\\ntype=L, name=root\\n' | sfdisk -q " +
                 img)
                  .exit_code,
              0);
    test::WriteFile(dir_ / "bios", test::RandomBytes(kMiB, 7));
    auto made = Sh("dd if=" + dir_ / "bios" + " of=" + img +
                   " bs=1M seek=1 conv=notrunc status=none && head -c 440 " + dir_ / "bios" +
                   " | dd of=" + img + " conv=notrunc status=none && mkfs.vfat --offset 4096 " +
                   img + " 16384 >/dev/null 2>&1 && mcopy -i " + img + "@@2M " + root_ +
                   "/marker ::/ && "
                   "mke2fs -q -F -t ext4 -L root -d " +
                   root_ + " -E offset=" + std::to_string(18 * kMiB) + " " + img + " 77M");
    ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
    ASSERT_LT(std::stoi(Sh("du -sm " + root_).out), 30) << "the root filesystem's files fit";
  }
  std::string Partition(const std::string& img, uint64_t offset, uint64_t size,
                        const std::string& name) {
    const std::string out = dir_ / name;
    EXPECT_EQ(Sh("dd if=" + img + " of=" + out + " bs=1M skip=" + std::to_string(offset / kMiB) +
                 " count=" + std::to_string(size / kMiB) + " status=none")
                  .exit_code,
              0);
    return out;
  }
  std::string root_;
};

TEST_F(DiskTest, AGptDiskIsBackedUpAsPartitionsAndRestoresByteForByte) {
  const std::string disk = dir_ / "disk.img";
  MakeGptDisk(disk);
  auto b = G({"backup", "--json", disk});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  json j = json::parse(b.out);
  ASSERT_EQ(j["volumes"].size(), 4u);
  EXPECT_EQ(j["volumes"][0]["name"], "p1");
  EXPECT_EQ(j["volumes"][2]["block_map"], "ext4");
  EXPECT_EQ(j["volumes"][3]["name"], "disk-gaps");
  const json& d = j["disk"];
  EXPECT_EQ(d["label"], "gpt");
  EXPECT_EQ(d["size"], 96 * kMiB);
  ASSERT_EQ(d["partitions"].size(), 3u);
  EXPECT_EQ(d["partitions"][0]["name"], "bios boot");
  EXPECT_EQ(d["partitions"][1]["fs_type"], "vfat");
  EXPECT_EQ(d["partitions"][2]["fs_type"], "ext4");
  EXPECT_EQ(d["partitions"][2]["fs_label"], "root");
  auto show = G({"show", "latest"});
  ASSERT_EQ(show.exit_code, 0) << show.err;
  EXPECT_NE(show.out.find("GPT partition table"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("BIOS boot"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("used blocks (ext4) as p3"), std::string::npos) << show.out;

  // --plan writes nothing; then the restore is the disk, byte for byte.
  auto plan = G({"restore", "--plan", "--json", "latest", dir_ / "out.img"});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  EXPECT_EQ(json::parse(plan.out)["table"], "copied as it was");
  EXPECT_FALSE(fs::exists(dir_ / "out.img"));
  auto r = G({"restore", "latest", dir_ / "out.img"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(test::FilesEqual(disk, dir_ / "out.img"));
  ASSERT_EQ(G({"verify", "--read-data"}).exit_code, 0);

  // One partition alone, as a volume.
  ASSERT_EQ(G({"restore", "latest:p2", dir_ / "esp.img"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(Partition(disk, 2 * kMiB, 16 * kMiB, "esp.src"), dir_ / "esp.img"));
}

TEST_F(DiskTest, ALargerTargetGetsTheTableAtItsEndAndGrowExtendsTheRootFilesystem) {
  const std::string disk = dir_ / "disk.img";
  MakeGptDisk(disk);
  ASSERT_EQ(G({"backup", disk}).exit_code, 0);
  const std::string dump =
      Sh("sfdisk -d " + disk + " | grep -v '^device:\\|^last-lba:' | sed 's/^[^ ]*img//'").out;

  // Larger, not grown: same partitions and ids, the backup GPT at the new end.
  ASSERT_EQ(Sh("truncate -s 192M " + dir_ / "big.img").exit_code, 0);
  auto r = G({"restore", "--overwrite", "latest", dir_ / "big.img"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(fs::file_size(dir_ / "big.img"), 192 * kMiB);
  auto verify = Sh("sfdisk -V " + dir_ / "big.img" + " 2>&1");
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  EXPECT_EQ(verify.out.find("not on the end"), std::string::npos) << verify.out;
  EXPECT_EQ(Sh("sfdisk -d " + dir_ / "big.img" +
               " | grep -v '^device:\\|^last-lba:' | sed 's/^[^ ]*img//'")
                .out,
            dump);
  // Past LBA 33 (the primary GPT, whose header names the new backup LBA)
  // every byte up to the old backup GPT is the disk's, boot code too.
  EXPECT_EQ(Sh("cmp -i 16896 -n " + std::to_string(95 * kMiB - 16896) + " " + disk + " " +
               dir_ / "big.img")
                .exit_code,
            0);
  EXPECT_EQ(Sh("cmp -n 440 " + disk + " " + dir_ / "big.img").exit_code, 0) << "boot code";

  // Grown: the last partition reaches the end, its ext4 with it, and checks clean.
  ASSERT_EQ(Sh("rm -f " + dir_ / "big.img" + " && truncate -s 192M " + dir_ / "big.img").exit_code,
            0);
  r = G({"restore", "--overwrite", "--grow", "latest", dir_ / "big.img"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(fs::file_size(dir_ / "big.img"), 192 * kMiB);
  verify = Sh("sfdisk -V " + dir_ / "big.img" + " 2>&1");
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  EXPECT_NE(Sh("sfdisk -d " + dir_ / "big.img").out.find("start=       36864, size=      354304"),
            std::string::npos);
  const std::string root = dir_ / "big.img" + "?offset=" + std::to_string(18 * kMiB);
  auto fsck = Sh("e2fsck -fn '" + root + "' 2>&1");
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out;
  // The filesystem fills the grown partition: 191 - 18 MiB.
  const std::string sb = Sh("dumpe2fs -h '" + root + "' 2>/dev/null").out;
  auto field = [&](const std::string& name) {
    const size_t at = sb.find(name + ":");
    return at == std::string::npos ? 0 : std::stoull(sb.substr(at + name.size() + 1));
  };
  EXPECT_EQ(field("Block count") * field("Block size"), 173 * kMiB) << sb;
  EXPECT_EQ(Sh("debugfs -R 'cat /marker' '" + root + "' 2>/dev/null").out, "hello\n");
  EXPECT_EQ(Sh("cmp -i 16896 -n " + std::to_string(18 * kMiB - 16896) + " " + disk + " " +
               dir_ / "big.img")
                .exit_code,
            0)
      << "everything before the root partition is the disk's";
}

TEST_F(DiskTest, ShrinkFitsASmallerDiskAndNewIdsMakeAClone) {
  const std::string disk = dir_ / "disk.img";
  MakeGptDisk(disk);
  ASSERT_EQ(G({"backup", disk}).exit_code, 0);
  const std::string root_off = "?offset=" + std::to_string(18 * kMiB);
  // 60 MiB: too small for the layout, room enough for the root's used blocks.
  ASSERT_EQ(Sh("truncate -s 60M " + dir_ / "small.img").exit_code, 0);
  auto r = G({"restore", "--overwrite", "latest", dir_ / "small.img"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("with --shrink about"), std::string::npos) << r.err;
  r = G({"restore", "--overwrite", "--shrink", "latest", dir_ / "small.img"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(fs::file_size(dir_ / "small.img"), 60 * kMiB);
  auto verify = Sh("sfdisk -V " + dir_ / "small.img" + " 2>&1");
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  const std::string small_root = dir_ / "small.img" + root_off;
  auto fsck = Sh("e2fsck -fn '" + small_root + "' 2>&1");
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out;
  EXPECT_EQ(Sh("debugfs -R 'cat /marker' '" + small_root + "' 2>/dev/null").out, "hello\n");
  const std::string lib = Sh("ls " + root_ + "/lib | head -1 | tr -d '\\n'").out;
  EXPECT_EQ(Sh("debugfs -R 'cat /lib/" + lib + "' '" + small_root + "' 2>/dev/null | md5sum").out,
            Sh("md5sum < " + root_ + "/lib/" + lib).out);
  // Too small even for the used blocks: refused, nothing written.
  ASSERT_EQ(Sh("truncate -s 24M " + dir_ / "tiny.img").exit_code, 0);
  r = G({"restore", "--overwrite", "--shrink", "latest", dir_ / "tiny.img"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("too little"), std::string::npos) << r.err;
  EXPECT_EQ(Sh("cmp " + dir_ / "tiny.img" + " /dev/zero 2>&1").out.find("differ"),
            std::string::npos);

  // --new-ids: every id differs from the original's, and the clone checks clean.
  r = G({"restore", "--new-ids", "latest", dir_ / "clone.img"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("/etc/fstab"), std::string::npos) << r.out;
  auto ids = [&](const std::string& img) {
    return Sh("sfdisk -d " + img +
              " | grep -o 'label-id: .*\\|uuid=[^,]*'; blkid -p -o value -s UUID -O " +
              std::to_string(2 * kMiB) + " " + img + "; blkid -p -o value -s UUID -O " +
              std::to_string(18 * kMiB) + " " + img)
        .out;
  };
  std::istringstream a(ids(disk)), b(ids(dir_ / "clone.img"));
  int lines = 0;
  for (std::string x, y; std::getline(a, x) && std::getline(b, y); ++lines) EXPECT_NE(x, y);
  EXPECT_EQ(lines, 6);  // disk, 3 partitions, vfat, ext4
  fsck = Sh("e2fsck -fn '" + dir_ / "clone.img" + root_off + "' 2>&1");
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out;
}

TEST_F(DiskTest, AnMbrDiskKeepsBootCodePostMbrGapAndLogicalPartitions) {
  const std::string disk = dir_ / "mbr.img";
  ASSERT_EQ(
      Sh("truncate -s 64M " + disk +
         " && printf 'label: dos\\nlabel-id: 0x1234abcd\\n"
         "size=8M, type=83, bootable\\ntype=5\\nsize=20M, type=83\\ntype=82\\n' | sfdisk -q " +
         disk)
          .exit_code,
      0);
  // GRUB's place on an MBR disk: boot code in LBA 0, core.img in the gap.
  test::WriteFile(dir_ / "boot", test::RandomBytes(kMiB - 512, 9));
  ASSERT_EQ(Sh("head -c 440 " + dir_ / "boot" + " | dd of=" + disk +
               " conv=notrunc status=none && dd if=" + dir_ / "boot" + " of=" + disk +
               " bs=512 seek=1 conv=notrunc status=none && mke2fs -q -F -t ext4 " +
               " -E offset=" + std::to_string(kMiB) + " " + disk + " 8M")
                .exit_code,
            0);
  auto b = G({"backup", "--json", disk});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  json d = json::parse(b.out)["disk"];
  EXPECT_EQ(d["label"], "dos");
  EXPECT_EQ(d["disk_id"], "0x1234abcd");
  ASSERT_EQ(d["partitions"].size(), 4u);
  EXPECT_EQ(d["partitions"][0]["bootable"], true);
  EXPECT_EQ(d["partitions"][1]["kind"], "extended");
  EXPECT_EQ(d["partitions"][2]["kind"], "logical");
  EXPECT_EQ(d["partitions"][2]["number"], 5);

  ASSERT_EQ(G({"restore", "latest", dir_ / "out.img"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(disk, dir_ / "out.img"));
  // A larger disk keeps an MBR as it is; its last partition is logical,
  // which --grow does not extend (nothing is written).
  ASSERT_EQ(Sh("truncate -s 128M " + dir_ / "big.img").exit_code, 0);
  auto g = G({"restore", "--overwrite", "--grow", "latest", dir_ / "big.img"});
  EXPECT_EQ(g.exit_code, 2);
  EXPECT_NE(g.err.find("is logical"), std::string::npos) << g.err;
  EXPECT_EQ(Sh("cmp " + dir_ / "big.img" + " /dev/zero 2>&1").out.find("differ"),
            std::string::npos);
  ASSERT_EQ(G({"restore", "--overwrite", "latest", dir_ / "big.img"}).exit_code, 0);
  EXPECT_EQ(
      Sh("cmp -n " + std::to_string(64 * kMiB) + " " + disk + " " + dir_ / "big.img").exit_code, 0);
  // --new-ids lays the table out anew, EBRs included: the same partitions,
  // another id, the same bytes in every partition and in the post-MBR gap.
  auto n = G({"restore", "--new-ids", "latest", dir_ / "clone.img"});
  ASSERT_EQ(n.exit_code, 0) << n.err;
  auto table = [&](const std::string& img) {
    return Sh("sfdisk -d " + img + " | grep -v '^device:\\|^label-id:' | sed 's/^[^ ]*img//'").out;
  };
  EXPECT_EQ(table(dir_ / "clone.img"), table(disk));
  EXPECT_EQ(Sh("sfdisk -d " + dir_ / "clone.img" + " | grep -c 'label-id: 0x1234abcd'").out, "0\n");
  for (const auto& p : d["partitions"]) {
    if (p["kind"] == "extended") continue;
    EXPECT_EQ(Sh("cmp -i " + std::to_string(p["start"].get<uint64_t>()) + " -n " +
                 std::to_string(p["size"].get<uint64_t>()) + " " + disk + " " + dir_ / "clone.img")
                  .exit_code,
              p["fs_type"] == "ext4" ? 1 : 0)  // an ext4 gets a new UUID
        << p;
  }
  EXPECT_EQ(
      Sh("cmp -i 512 -n " + std::to_string(kMiB - 512) + " " + disk + " " + dir_ / "clone.img")
          .exit_code,
      0);
  EXPECT_EQ(Sh("cmp -n 440 " + disk + " " + dir_ / "clone.img").exit_code, 0);
}

TEST_F(DiskTest, ASmallerTargetIsRefusedWithTheSizesAndLeftAlone) {
  const std::string disk = dir_ / "disk.img";
  MakeGptDisk(disk);
  ASSERT_EQ(G({"backup", disk}).exit_code, 0);
  test::WriteFile(dir_ / "small.img", test::RandomBytes(64 * kMiB, 3));
  auto r = G({"restore", "--overwrite", "latest", dir_ / "small.img"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("at least 99631616 bytes (95 MiB)"), std::string::npos) << r.err;
  EXPECT_EQ(test::ReadFile(dir_ / "small.img"), test::RandomBytes(64 * kMiB, 3));
  // --grow and --plan belong to whole disks.
  EXPECT_EQ(G({"restore", "--grow", "latest:p3", dir_ / "p3.img"}).exit_code, 2);
  // --volumes-only images the disk as one volume, as before disk backups.
  auto v = G({"backup", "--json", "--volumes-only", disk});
  ASSERT_EQ(v.exit_code, 0) << v.err;
  EXPECT_FALSE(json::parse(v.out).contains("disk"));
  ASSERT_EQ(G({"restore", "latest", dir_ / "whole.img"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(disk, dir_ / "whole.img"));
}

// A device that is mounted, or held open exclusively (as a RAID member or a
// device-mapper table holds one), is refused before anything is written
// (exit 2), also before a --shrink spends its time in a scratch file.
TEST_F(DiskTest, AMountedOrHeldDeviceIsRefusedAndLeftAlone) {
  GNOMON_SKIP_IF(test::RootSkipReason());
  const std::string disk = dir_ / "disk.img";
  MakeGptDisk(disk);
  ASSERT_EQ(G({"backup", disk}).exit_code, 0);
  const std::string img = dir_ / "dev.img";
  for (const char* how : {"", "--grow", "--shrink", "--new-ids"}) {
    SCOPED_TRACE(how);
    // Larger than the disk, but smaller for --shrink (a resize in scratch).
    const auto old = test::RandomBytes((std::string(how) == "--shrink" ? 80 : 128) * kMiB, 5);
    test::WriteFile(img, old);
    {
      test::LoopDevice loop(img);
      const int fd = ::open(loop.device().c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
      ASSERT_GE(fd, 0);
      // A --shrink onto a device resizes in TMPDIR: one that does not exist
      // fails the restore otherwise than as refused, if it gets that far.
      std::string cmd = "TMPDIR=" + dir_ / "no-such-dir" + " " + test::GnomonBinary() + " --repo " +
                        repo_ + " restore ";
      if (*how) cmd += std::string(how) + " ";
      auto r = Sh(cmd + "latest " + loop.device());
      ::close(fd);
      EXPECT_EQ(r.exit_code, 2) << r.err;
      EXPECT_NE(r.err.find("device is in use"), std::string::npos) << r.err;
    }
    EXPECT_EQ(test::ReadFile(img), old);
  }
  // Mounted, with a file on it: refused, and the filesystem is as it was.
  ASSERT_EQ(Sh("mkfs.ext4 -q -F " + img).exit_code, 0);
  test::LoopDevice loop(img);
  const std::string mnt = dir_ / "mnt";
  fs::create_directories(mnt);
  ASSERT_EQ(Sh("mount " + loop.device() + " " + mnt + " && echo kept > " + mnt + "/f").exit_code,
            0);
  auto r = G({"restore", "--shrink", "latest", loop.device()});
  const std::string kept = Sh("cat " + mnt + "/f").out;
  Sh("umount " + mnt);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("device is in use"), std::string::npos) << r.err;
  EXPECT_EQ(kept, "kept\n");
  auto fsck = Sh("e2fsck -fn " + img + " 2>&1");
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out;
}

TEST_F(DiskTest, AnIncrementalOfADiskBuildsOnEachPartition) {
  const std::string disk = dir_ / "disk.img";
  MakeGptDisk(disk);
  ASSERT_EQ(G({"backup", disk}).exit_code, 0);
  const std::string root = disk + "?offset=" + std::to_string(18 * kMiB);
  test::WriteFile(dir_ / "new", test::TextLikeBytes(300000, 5));
  ASSERT_EQ(Sh("debugfs -w -R 'write " + dir_ / "new" + " new' '" + root + "'").exit_code, 0);
  auto b = G({"backup", "--json", "--type", "incremental", disk});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  json j = json::parse(b.out);
  for (const auto& v : j["volumes"]) {
    EXPECT_FALSE(v["parent"].get<std::string>().empty()) << v["name"];
    EXPECT_EQ(v["stats"]["new_chunks"].get<uint64_t>() > 0, v["name"] == "p3") << v;
  }
  ASSERT_EQ(G({"restore", "latest", dir_ / "out.img"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(disk, dir_ / "out.img"));
}

// The root partition of a disk image on XFS is mounted through a loop
// device with an offset while a program appends numbered records to a file
// on it: the disk backup freezes it (found through the loop device's
// backing file) and the restored partition holds an unbroken prefix.
TEST_F(DiskTest, AMountedPartitionIsFrozenAndImagedAtOnePointInTime) {
  GNOMON_SKIP_IF(test::RootSkipReason());
  GNOMON_SKIP_IF(test::ReflinkFs::SkipReason("xfs"));
  test::ReflinkFs xfs(dir_, "1G");
  ASSERT_TRUE(xfs.ok());
  const std::string disk = xfs.path() + "/disk.img";
  MakeGptDisk(disk);
  auto loop = Sh("losetup -f --show -o " + std::to_string(18 * kMiB) + " --sizelimit " +
                 std::to_string(77 * kMiB) + " " + disk);
  ASSERT_EQ(loop.exit_code, 0) << loop.err;
  const std::string dev = loop.out.substr(0, loop.out.find('\n'));
  const std::string mnt = dir_ / "mnt";
  fs::create_directories(mnt);
  ASSERT_EQ(Sh("mount " + dev + " " + mnt).exit_code, 0);
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  pid_t writer = ::fork();
  if (writer == 0) {
    ::dup2(out[1], 1);
    execl(RECORD_WRITER_BIN, RECORD_WRITER_BIN, (mnt + "/records.txt").c_str(), "3000", nullptr);
    _exit(127);
  }
  ::close(out[1]);
  while (!fs::exists(mnt + "/records.txt") || fs::file_size(mnt + "/records.txt") < 10 * 2000)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto b = G({"backup", "--json", disk});
  // The same disk through a loop device over the whole image: the
  // partition's loop device (same file, an offset inside it) belongs to it.
  auto whole_loop = Sh("losetup -f --show " + disk);
  ASSERT_EQ(whole_loop.exit_code, 0) << whole_loop.err;
  const std::string disk_dev = whole_loop.out.substr(0, whole_loop.out.find('\n'));
  auto b2 = G({"backup", "--json", disk_dev});
  Sh("losetup -d " + disk_dev);
  ::kill(writer, SIGTERM);
  ::waitpid(writer, nullptr, 0);
  ::close(out[0]);
  // A repository on the disk's partition: restoring over the disk is refused.
  const std::string repo2 = mnt + "/repo";
  ASSERT_EQ(test::Gnomon({"init", "--repo", repo2}).exit_code, 0);
  ASSERT_EQ(
      test::Gnomon({"--repo", repo2, "backup", "--volumes-only", dir_ / "rootfs/marker"}).exit_code,
      0);
  auto refused = test::Gnomon({"--repo", repo2, "restore", "--overwrite", "latest", disk});
  Sh("umount " + mnt + "; losetup -d " + dev);
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_NE(refused.err.find("lives on it"), std::string::npos) << refused.err;
  // Frozen for the snapshot: ext4 clears its journal's needs-recovery flag
  // only while frozen, and a mounted ext4 cloned unfrozen has it set, which
  // would make the block map fall back to "all".
  json j = json::parse(b.out);
  EXPECT_EQ(j["volumes"][2]["block_map"], "ext4") << j["volumes"][2];
  ASSERT_EQ(b2.exit_code, 0) << b2.err;
  EXPECT_EQ(json::parse(b2.out)["volumes"][2]["block_map"], "ext4") << b2.out;

  auto r = G({"restore", j["id"].get<std::string>(), dir_ / "out.img"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string root = dir_ / "out.img" + "?offset=" + std::to_string(18 * kMiB);
  auto fsck = Sh("e2fsck -fn '" + root + "' 2>&1");
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out;
  const std::string content = Sh("debugfs -R 'cat /records.txt' '" + root + "' 2>/dev/null").out;
  ASSERT_EQ(content.size() % 10, 0u) << "a torn record at the end";
  const size_t k = content.size() / 10;
  EXPECT_GE(k, 2000u);
  for (size_t i = 0; i < k; ++i) {
    char want[32];
    std::snprintf(want, sizeof want, "%09zu\n", i + 1);
    ASSERT_EQ(content.compare(i * 10, 10, want), 0) << "record " << i + 1;
  }

  // --new-ids on a filesystem that was mounted when it was snapshotted.
  r = G({"restore", "--new-ids", "latest", dir_ / "clone.img"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  fsck =
      Sh("e2fsck -fn '" + dir_ / "clone.img" + "?offset=" + std::to_string(18 * kMiB) + "' 2>&1");
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out;

  // A disk incremental builds on the newest backup of the disk (b2),
  // partition by partition, and restores what a full backup of the disk as
  // it is now restores: the same bytes outside the root, the same files in
  // it (not the same free blocks: a chunk change tracking proved unchanged
  // keeps its parent's bytes, where a block freed since may hold data,
  // FORMAT.md §7).
  auto again = G({"backup", "--json", "--type", "incremental", disk});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  const json again_j = json::parse(again.out), b2_j = json::parse(b2.out);
  ASSERT_EQ(again_j["volumes"].size(), 4u);
  for (const auto& v : again_j["volumes"]) EXPECT_EQ(v["parent"], b2_j["id"]) << v["name"];
  ASSERT_EQ(G({"restore", "latest", dir_ / "again.img"}).exit_code, 0);
  ASSERT_EQ(G({"backup", disk}).exit_code, 0);
  ASSERT_EQ(G({"restore", "latest", dir_ / "full.img"}).exit_code, 0);
  EXPECT_EQ(
      Sh("cmp -n " + std::to_string(18 * kMiB) + " " + dir_ / "full.img" + " " + dir_ / "again.img")
          .exit_code,
      0);
  for (const char* img : {"full", "again"}) {
    const std::string fsroot =
        dir_ / (std::string(img) + ".img") + "?offset=" + std::to_string(18 * kMiB);
    EXPECT_EQ(Sh("e2fsck -fn '" + fsroot + "'").exit_code, 0) << img;
    ASSERT_EQ(Sh("mkdir -p " + dir_ / img + " && debugfs -R 'rdump / " + dir_ / img + "' '" +
                 fsroot + "' 2>/dev/null")
                  .exit_code,
              0);
  }
  auto diff = Sh("diff -r " + dir_ / "full" + " " + dir_ / "again");
  EXPECT_EQ(diff.exit_code, 0) << diff.out;
  EXPECT_GT(fs::file_size(dir_ / "again/records.txt"), 20000u);

  // The disk imaged as one volume after a disk backup of it builds on no
  // volume of that backup: with change tracking (reflink) it would keep the
  // digests of the disk-gaps volume, zeros where the partitions are.
  auto whole = G({"backup", "--json", "--type", "incremental", "--volumes-only", disk});
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  EXPECT_EQ(json::parse(whole.out)["volumes"][0]["parent"], "") << whole.out;
  ASSERT_EQ(G({"restore", "latest", dir_ / "whole.img"}).exit_code, 0);
  EXPECT_TRUE(test::FilesEqual(disk, dir_ / "whole.img"));
}

// A block device as the target (a loop device over a file here; a new
// disk on the day): whatever it held before is overwritten, including
// where the backup has zeros, the table is laid out for its size, the root
// grows in place, or shrinks in a scratch file and is copied in.
TEST_F(DiskTest, ADiskRestoresOntoABlockDeviceGrownOrShrunk) {
  GNOMON_SKIP_IF(test::RootSkipReason());
  const std::string disk = dir_ / "disk.img";
  MakeGptDisk(disk);
  ASSERT_EQ(G({"backup", disk}).exit_code, 0);
  for (const char* how : {"--grow", "--shrink", "--new-ids", ""}) {
    SCOPED_TRACE(how);
    const std::string size = std::string(how) == "--shrink" ? "60M" : "192M";
    // Old data everywhere, as on a used disk.
    ASSERT_EQ(Sh("rm -f " + dir_ / "dev.img" + " && head -c " + size + " /dev/urandom > " +
                 dir_ / "dev.img")
                  .exit_code,
              0);
    uint64_t bytes = 0;
    {
      test::LoopDevice loop(dir_ / "dev.img");
      std::vector<std::string> args = {"restore", "latest", loop.device()};
      if (*how) args.insert(args.begin() + 1, how);
      auto r = G(args);
      ASSERT_EQ(r.exit_code, 0) << r.err;
      bytes = fs::file_size(dir_ / "dev.img");
    }
    const std::string img = dir_ / "dev.img";
    auto verify = Sh("sfdisk -V " + img + " 2>&1");
    EXPECT_EQ(verify.exit_code, 0) << verify.out;
    const std::string root = img + "?offset=" + std::to_string(18 * kMiB);
    auto fsck = Sh("e2fsck -fn '" + root + "' 2>&1");
    EXPECT_EQ(fsck.exit_code, 0) << fsck.out;
    EXPECT_EQ(Sh("debugfs -R 'cat /marker' '" + root + "' 2>/dev/null").out, "hello\n");
    // The BIOS boot partition and the ESP are the disk's, byte for byte
    // (but for the FAT serial --new-ids changes).
    if (std::string(how) != "--new-ids") {
      EXPECT_EQ(Sh("cmp -n " + std::to_string(17 * kMiB) + " -i " + std::to_string(kMiB) + " " +
                   disk + " " + img)
                    .exit_code,
                0);
    }
    const std::string sb = Sh("dumpe2fs -h '" + root + "' 2>/dev/null").out;
    const size_t at = sb.find("Block count:");
    ASSERT_NE(at, std::string::npos);
    const uint64_t fs_bytes = std::stoull(sb.substr(at + 12)) * 1024;
    // Grown or shrunk to the target's last whole MiB before the backup GPT.
    const bool resized = std::string(how) == "--grow" || std::string(how) == "--shrink";
    EXPECT_EQ(fs_bytes, resized ? bytes - 19 * kMiB : 77 * kMiB);
    const bool same_uuid =
        Sh("blkid -p -o value -s UUID -O " + std::to_string(18 * kMiB) + " " + img).out ==
        Sh("blkid -p -o value -s UUID -O " + std::to_string(18 * kMiB) + " " + disk).out;
    EXPECT_EQ(same_uuid, std::string(how) != "--new-ids");
  }
}

// A shrunk partition in the first MiB of a device (an old MBR disk's at
// sector 63) is written through the held-back head, not under it.
TEST_F(DiskTest, AShrunkPartitionInTheFirstMiBOfADeviceKeepsItsSuperblock) {
  GNOMON_SKIP_IF(test::RootSkipReason());
  const std::string disk = dir_ / "old.img";
  ASSERT_EQ(
      Sh("truncate -s 64M " + disk + " && printf 'label: dos\\nstart=63, type=83\\n' | sfdisk -q " +
         disk + " && mke2fs -q -F -t ext4 -d " + root_ + " -E offset=" + std::to_string(63 * 512) +
         " " + disk + " " + std::to_string((64 * kMiB - 63 * 512) / 1024) + "k")
          .exit_code,
      0);
  ASSERT_EQ(G({"backup", disk}).exit_code, 0);
  ASSERT_EQ(Sh("head -c 40M /dev/urandom > " + dir_ / "dev.img").exit_code, 0);
  {
    test::LoopDevice loop(dir_ / "dev.img");
    auto r = G({"restore", "--shrink", "latest", loop.device()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  const std::string root = dir_ / "dev.img" + "?offset=" + std::to_string(63 * 512);
  auto fsck = Sh("e2fsck -fn '" + root + "' 2>&1");
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out;
  EXPECT_EQ(Sh("debugfs -R 'cat /marker' '" + root + "' 2>/dev/null").out, "hello\n");
}

// The rescue bundle (tools/make-rescue.sh) restores and grows a whole disk
// inside a chroot that holds nothing but the bundle, the repository and
// the target, with /proc and /dev as a rescue system has them.
TEST_F(DiskTest, ARescueBundleRestoresAWholeDiskInAnEmptyChroot) {
  GNOMON_SKIP_IF(test::RootSkipReason());
  GNOMON_SKIP_IF(Sh("command -v cc strip ldd").exit_code == 0 ? "" : "cc, strip or ldd is missing");
  const std::string disk = dir_ / "disk.img";
  MakeGptDisk(disk);
  ASSERT_EQ(G({"backup", disk}).exit_code, 0);
  const std::string root = dir_ / "chroot";
  auto made = Sh("bash " MAKE_RESCUE_SH " " + test::GnomonBinary() + " " + root + "/gnomon");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  ASSERT_EQ(Sh("mkdir -p " + root + "/proc " + root + "/dev " + root + "/repo " + root +
               "/work && " + "truncate -s 192M " + root + "/work/new-disk.img")
                .exit_code,
            0);
  // Nothing else is there: no shell, no libc, no e2fsprogs.
  EXPECT_EQ(Sh("ls " + root + " | tr '\\n' ' '").out, "dev gnomon proc repo work ");
  ASSERT_EQ(Sh("mount --bind /proc " + root + "/proc && mount --bind /dev " + root + "/dev && " +
               "mount --bind " + repo_ + " " + root + "/repo")
                .exit_code,
            0);
  auto r = Sh("chroot " + root + " /gnomon/gnomon --repo /repo restore --overwrite --grow latest " +
              "/work/new-disk.img");
  Sh("umount " + root + "/proc " + root + "/dev " + root + "/repo");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string img = root + "/work/new-disk.img";
  EXPECT_EQ(Sh("sfdisk -V " + img).exit_code, 0);
  auto fsck = Sh("e2fsck -fn '" + img + "?offset=" + std::to_string(18 * kMiB) + "' 2>&1");
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out;
  EXPECT_EQ(
      Sh("cmp -n " + std::to_string(18 * kMiB - 16896) + " -i 16896 " + disk + " " + img).exit_code,
      0);
}

// ---- Bare-metal recovery, proved by booting ----

// A bootable disk made from this machine's Debian packages by
// tests/bootable_disk.sh (GRUB for BIOS and UEFI, the Debian kernel, busybox
// as init printing its root filesystem's UUID), backed up, restored onto
// other disks and booted under QEMU (TCG) until the marker appears.
class DiskBootTest : public test::RepoTest {
 protected:
  void SetUp() override {
    for (const char* tool : {"sfdisk", "mkfs.vfat", "mcopy", "mke2fs", "grub-mkimage", "cpio",
                             "qemu-system-x86_64", "qemu-img", "busybox"})
      GNOMON_SKIP_IF(Sh(std::string("command -v ") + tool).exit_code == 0
                         ? ""
                         : std::string(tool) + " is not installed (tools/install-deps.sh)");
    for (const char* file : {"/usr/lib/grub/i386-pc/boot.img", "/usr/lib/grub/x86_64-efi/linux.mod",
                             "/usr/share/OVMF/OVMF_CODE.fd"})
      GNOMON_SKIP_IF(fs::exists(file) ? ""
                                      : std::string(file) + " is missing (tools/install-deps.sh)");
    GNOMON_SKIP_IF(
        Sh("ls /boot/vmlinuz-*").exit_code == 0 ? "" : "no kernel in /boot (linux-image-amd64)");
    test::RepoTest::SetUp();
  }
  // Makes a bootable disk; returns its root filesystem's UUID.
  std::string Make(const std::string& img, const std::string& label) {
    auto r = Sh("bash " BOOTABLE_DISK_SH " make " + img + " " + label);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out.substr(0, r.out.find('\n'));
  }
  // Boots img; returns the marker line, or "" (the console is in the failure).
  std::string Boot(const std::string& img, const std::string& firmware) {
    auto r = Sh("bash " BOOTABLE_DISK_SH " boot " + img + " " + firmware + " 300");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out.substr(0, r.out.find('\n'));
  }
};

TEST_F(DiskBootTest, AGptDiskRestoredGrownOrShrunkBootsUnderBiosAndUefi) {
  const std::string disk = dir_ / "disk.img";
  const std::string uuid = Make(disk, "gpt");
  ASSERT_EQ(uuid.size(), 36u);
  ASSERT_EQ(G({"backup", disk}).exit_code, 0);
  const std::string marker = "GNOMON-BOOTED root=" + uuid;

  // Twice the size, the root grown to the end.
  ASSERT_EQ(Sh("truncate -s 400M " + dir_ / "big.img").exit_code, 0);
  auto r = G({"restore", "--overwrite", "--grow", "latest", dir_ / "big.img"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Sh("e2fsck -fn '" + dir_ / "big.img" + "?offset=" + std::to_string(34 * kMiB) + "'")
                .exit_code,
            0);
  EXPECT_EQ(Boot(dir_ / "big.img", "bios"), marker);
  EXPECT_EQ(Boot(dir_ / "big.img", "uefi"), marker);

  // Smaller than the disk: the root shrunk to fit.
  ASSERT_EQ(Sh("truncate -s 120M " + dir_ / "small.img").exit_code, 0);
  r = G({"restore", "--overwrite", "--shrink", "latest", dir_ / "small.img"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Boot(dir_ / "small.img", "bios"), marker);
}

TEST_F(DiskBootTest, AnMbrDiskWithGrubInThePostMbrGapBootsAfterARestore) {
  const std::string disk = dir_ / "mbr.img";
  const std::string uuid = Make(disk, "dos");
  ASSERT_EQ(uuid.size(), 36u);
  ASSERT_EQ(G({"backup", disk}).exit_code, 0);
  ASSERT_EQ(Sh("truncate -s 300M " + dir_ / "big.img").exit_code, 0);
  auto r = G({"restore", "--overwrite", "--grow", "latest", dir_ / "big.img"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(Sh("sfdisk -d " + dir_ / "big.img").out.find("size=      612352, type=83, bootable"),
            std::string::npos)
      << Sh("sfdisk -d " + dir_ / "big.img").out;
  EXPECT_EQ(Boot(dir_ / "big.img", "bios"), "GNOMON-BOOTED root=" + uuid);
}

// Instant recovery: the backup boots straight from its NBD export, with
// nothing restored; a disk without boot code is reported as not booting.
TEST_F(DiskBootTest, ADiskBackupBootsStraightFromItsExport) {
  const std::string disk = dir_ / "disk.img";
  const std::string uuid = Make(disk, "gpt");
  ASSERT_EQ(uuid.size(), 36u);
  const std::string id = BackupId(disk);
  ASSERT_FALSE(id.empty());
  auto r = G({"boot-check", "--json", "--marker", "GNOMON-BOOTED", "--timeout", "300", id});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["booted"].get<bool>());
  EXPECT_EQ(j["firmware"], "bios");
  EXPECT_EQ(j["marker_line"], "GNOMON-BOOTED root=" + uuid);
  // And from its EFI system partition.
  r = G({"boot-check", "--json", "--firmware", "uefi", "--marker", "GNOMON-BOOTED", id});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["firmware"], "uefi");

  // The same disk with its MBR boot code wiped boots nowhere (and QEMU ran:
  // a QEMU that cannot start is an error, exit 1 with no JSON result).
  ASSERT_EQ(Sh("dd if=/dev/zero of=" + disk + " bs=440 count=1 conv=notrunc status=none").exit_code,
            0);
  ASSERT_FALSE(BackupId(disk).empty());
  r = G({"boot-check", "--json", "--marker", "GNOMON-BOOTED", "--timeout", "20"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_FALSE(nlohmann::json::parse(r.out)["booted"].get<bool>());
}

}  // namespace
}  // namespace gnomon
