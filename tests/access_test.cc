// Using a backup without restoring it: `gnomon mount` (FUSE) and `gnomon
// serve` (NBD through nbdkit), driven as a user would, against the real
// binary, libfuse, nbdkit, qemu-img and qemu-io.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "engine/overlay.h"
#include "engine/volume_reader.h"
#include "format/codec.h"
#include "tests/test_util.h"

namespace gnomon::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string Q(const std::string& s) { return "'" + s + "'"; }

bool WaitFor(const std::function<bool()>& ready, int seconds = 30) {
  for (int i = 0; i < seconds * 20; ++i) {
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// By the mount table, not by stat: root may not stat another user's FUSE
// mount.
bool IsMountpoint(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    std::string id, parent, dev, root, point;
    f >> id >> parent >> dev >> root >> point;
    if (point == path) return true;
  }
  return false;
}

// Reads [off, off + len) of path with pread; returns errno (0 if read whole).
int PreadErrno(const std::string& path, uint64_t off, size_t len, std::vector<uint8_t>* out) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return errno;
  out->assign(len, 0);
  size_t got = 0;
  int err = 0;
  while (got < len) {
    ssize_t n = ::pread(fd, out->data() + got, len - got, static_cast<off_t>(off + got));
    if (n < 0) {
      err = errno;
      break;
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  if (!err) out->resize(got);
  return err;
}

// A source tree with what an ext4 volume holds: nested directories, files
// of many sizes (one large, one sparse, one empty), symlinks, a hard link,
// owners, modes, times to the nanosecond, extended attributes.
void MakeTree(const std::string& root) {
  fs::create_directories(root + "/etc/deep/er/still");
  fs::create_directories(root + "/home/user/docs");
  std::mt19937_64 rng(7);
  for (int i = 0; i < 300; ++i) {
    const size_t n = (rng() % 5 == 0) ? rng() % (300 << 10) : rng() % 3000;
    const std::string dir = i % 3 == 0 ? "/etc" : i % 3 == 1 ? "/home/user/docs" : "/etc/deep/er";
    WriteFile(root + dir + "/f" + std::to_string(i), TextLikeBytes(n, 100 + i));
  }
  WriteFile(root + "/home/user/big.bin", RandomBytes(24 << 20, 3));
  WriteFile(root + "/empty", {});
  {
    std::ofstream sparse(root + "/sparse", std::ios::binary);
    sparse.seekp(5 << 20);
    sparse << "end of a sparse file";
  }
  fs::create_symlink("../etc/f0", root + "/home/link-rel");
  fs::create_symlink(std::string(200, 'x') + "/long/target", root + "/home/link-long");
  fs::create_hard_link(root + "/etc/f3", root + "/etc/f3-hard");
  EXPECT_EQ(::chown((root + "/home/user").c_str(), 1234, 5678), 0);
  EXPECT_EQ(::chown((root + "/home/user/docs/f1").c_str(), 1000, 100), 0);
  EXPECT_EQ(::chmod((root + "/etc/f0").c_str(), 04751), 0);
  EXPECT_EQ(::chmod((root + "/etc/deep/er/still").c_str(), 0700), 0);
  const struct timespec times[2] = {{1234567890, 123456789}, {1600000000, 987654321}};
  EXPECT_EQ(::utimensat(AT_FDCWD, (root + "/etc/f6").c_str(), times, 0), 0);
  EXPECT_EQ(::setxattr((root + "/etc/f9").c_str(), "user.gnomon", "kept as stored", 14, 0), 0);
  EXPECT_EQ(
      ::setxattr((root + "/etc/f9").c_str(), "trusted.big", std::string(300, 'b').data(), 300, 0),
      0);
}

// Every entry under root: path, type, mode, owner, size (not of
// directories, which mke2fs lays out anew), mtime (ns), link count, symlink
// target; sorted.
std::string Listing(const std::string& root) {
  auto r = Sh("cd " + Q(root) +
              " && (find . -mindepth 1 ! -type d -printf '%P %y %m %U %G %s %T@ %n %l\\n'; " +
              "find . -mindepth 1 -type d -printf '%P %y %m %U %G %T@ %n\\n') | sort");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

class AccessTest : public RepoTest {
 protected:
  void SetUp() override {
    GNOMON_SKIP_IF(RootSkipReason());
    GNOMON_SKIP_IF(fs::exists("/dev/fuse") ? "" : "no /dev/fuse");
    GNOMON_SKIP_IF(Sh("command -v fusermount3").exit_code == 0
                       ? ""
                       : "fusermount3 is not installed (tools/install-deps.sh)");
    RepoTest::SetUp();
    mnt_ = dir_ / "mnt";
    fs::create_directories(mnt_);
  }
  void TearDown() override { Unmount(); }

  // An ext4 volume holding a copy of a tree (by the kernel, through a loop
  // mount, so times keep their nanoseconds), backed up.
  std::string MakeVolume() {
    MakeTree(dir_ / "src");
    img_ = dir_ / "vol.img";
    const std::string m = dir_ / "fill";
    fs::create_directories(m);
    auto r = Sh("mkfs.ext4 -q -F -b 4096 -I 256 -O inline_data " + Q(img_) +
                " 96M && mount -o loop " + Q(img_) + " " + Q(m) + " && cp -a " + Q(dir_ / "src") +
                "/. " + Q(m) + "/ ; rc=$?; umount " + Q(m) + " && exit $rc");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const std::string id = BackupId(img_);
    EXPECT_FALSE(id.empty());
    return id;
  }

  // gnomon mount in the background, as it would run in a terminal.
  void Mount(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {GnomonBinary(), "--repo", repo_, "mount", mnt_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    log_ = dir_ / "mount.log";
    pid_ = Spawn(argv, log_);
    ASSERT_GT(pid_, 0);
    ASSERT_TRUE(WaitFor([&] { return IsMountpoint(mnt_); })) << Log();
  }
  // SIGTERM, as systemd or Ctrl-C would; returns the exit status (-1 if
  // it did not end within 20 s: then it is killed).
  int Unmount() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    const int status = Reap(pid_);
    pid_ = -1;
    if (IsMountpoint(mnt_)) Sh("fusermount3 -u " + Q(mnt_) + " || umount -l " + Q(mnt_));
    return status;
  }
  static int Reap(pid_t pid) {
    int status = 0;
    if (WaitFor([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 20)) return status;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return -1;
  }
  std::string Log() { return Sh("cat " + Q(log_)).out; }

  std::string mnt_, img_, log_;
  pid_t pid_ = -1;
};

TEST_F(AccessTest, MountShowsEveryFileAndTheRawImageByteForByte) {
  const std::string id = MakeVolume();
  Mount();
  const std::string vol = mnt_ + "/ids/" + id + "/vol";  // and vol.img
  // The tree a restic user knows.
  EXPECT_EQ(fs::read_symlink(mnt_ + "/latest"), "ids/" + id);
  auto hosts = Sh("ls " + Q(mnt_ + "/hosts"));
  ASSERT_EQ(hosts.exit_code, 0);
  const std::string host = hosts.out.substr(0, hosts.out.find('\n'));
  EXPECT_EQ(fs::read_symlink(mnt_ + "/hosts/" + host + "/" + id), "../../ids/" + id);

  // Tags are directories, a name no path can carry spelled with %XX.
  const std::string tagged = dir_ / "tagged.img";
  fs::copy_file(img_, tagged);
  auto t = G({"backup", "--json", "--tag", "a/b", tagged});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  const std::string tid = json::parse(t.out)["id"];
  Unmount();  // the backups shown are those there when mounted
  Mount();
  EXPECT_EQ(fs::read_symlink(mnt_ + "/tags/a%2Fb/" + tid), "../../ids/" + tid);
  EXPECT_EQ(fs::read_symlink(mnt_ + "/latest"), "ids/" + tid);
  EXPECT_TRUE(FilesEqual(mnt_ + "/latest/tagged.img", img_));

  // The raw image is the volume, and sparse: free blocks are holes.
  EXPECT_TRUE(FilesEqual(vol + ".img", img_));
  struct stat st {};
  ASSERT_EQ(::stat((vol + ".img").c_str(), &st), 0)
      << strerror(errno) << " " << vol << ": " << Sh("ls -la " + Q(mnt_ + "/ids/*")).out << Log();
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 96ull << 20);
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 60ull << 20);
  int fd = ::open((vol + ".img").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  const off_t hole = ::lseek(fd, 0, SEEK_HOLE);
  const off_t data = hole >= 0 ? ::lseek(fd, hole, SEEK_DATA) : -1;
  ::close(fd);
  EXPECT_GT(hole, 0);
  EXPECT_LT(hole, st.st_size);
  EXPECT_GT(data, hole);
  EXPECT_EQ(Sh("cp --sparse=always " + Q(vol + ".img") + " " + Q(dir_ / "copy.img") + " && cmp " +
               Q(dir_ / "copy.img") + " " + Q(img_))
                .exit_code,
            0);

  // The files, read through libext2fs: contents, types, modes, owners,
  // sizes, times to the nanosecond, link counts, symlink targets.
  auto diff = Sh("diff -r --no-dereference -x lost+found " + Q(dir_ / "src") + " " + Q(vol));
  EXPECT_EQ(diff.exit_code, 0) << diff.out << diff.err;
  std::string want = Listing(dir_ / "src"), have = Listing(vol);
  // mke2fs -d makes lost+found; the source has none.
  std::string kept;
  std::istringstream lines(have);
  for (std::string line; std::getline(lines, line);)
    if (!line.starts_with("lost+found ")) kept += line + "\n";
  have = kept;
  EXPECT_EQ(have, want);
  // The names of one inode are one file (cp -a and rsync -H keep the link).
  struct stat a {
  }, b{};
  ASSERT_EQ(::stat((vol + "/etc/f3").c_str(), &a), 0);
  ASSERT_EQ(::stat((vol + "/etc/f3-hard").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  ASSERT_EQ(::stat((vol + "/etc/f6").c_str(), &b), 0);
  EXPECT_NE(a.st_ino, b.st_ino);
  char buf[512] = {};
  ssize_t n = ::getxattr((vol + "/etc/f9").c_str(), "user.gnomon", buf, sizeof buf);
  EXPECT_EQ(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0), "kept as stored");
  n = ::getxattr((vol + "/etc/f9").c_str(), "trusted.big", buf, sizeof buf);
  EXPECT_EQ(n, 300);
  EXPECT_EQ(Unmount(), 0) << Log();
  EXPECT_FALSE(IsMountpoint(mnt_));
}

TEST_F(AccessTest, ConcurrentReadersGetTheSameBytesThroughASmallCache) {
  MakeVolume();
  Mount({"--cache", "1M"});  // far below what the readers touch: chunks are evicted and read again
  const std::string vol = mnt_ + "/latest/vol.img";
  const auto want = ReadFile(img_);
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 6; ++t)
    readers.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      for (int i = 0; i < 150; ++i) {
        const uint64_t off = rng() % want.size();
        const size_t len = std::min<uint64_t>(1 + rng() % (300 << 10), want.size() - off);
        std::vector<uint8_t> got;
        const int err = PreadErrno(vol, off, len, &got);
        if (err != 0 || got.size() != len ||
            !std::equal(got.begin(), got.end(), want.begin() + static_cast<long>(off))) {
          if (++bad == 1)
            ADD_FAILURE() << "reading " << len << " bytes at " << off << ": " << strerror(err)
                          << ", got " << got.size();
        }
      }
    });
  // Files at the same time, through the other path.
  readers.emplace_back([&] {
    if (Sh("diff -r --no-dereference -x lost+found " + Q(dir_ / "src") + " " +
           Q(mnt_ + "/latest/vol"))
            .exit_code != 0)
      ++bad;
  });
  for (auto& r : readers) r.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST_F(AccessTest, ADamagedChunkReadsAsEioNeverAsWrongBytes) {
  MakeVolume();
  // Damage one pack's first chunk.
  auto packs = Files("packs");
  ASSERT_FALSE(packs.empty());
  DamageFirstChunk(packs[packs.size() / 2]);
  Mount();
  const std::string vol = mnt_ + "/latest/vol.img";
  const auto want = ReadFile(img_);
  int eio = 0, good = 0;
  for (uint64_t off = 0; off < want.size(); off += 64 << 10) {
    std::vector<uint8_t> got;
    const int err = PreadErrno(vol, off, 64 << 10, &got);
    if (err == EIO) {
      ++eio;
      continue;
    }
    ASSERT_EQ(err, 0);
    ASSERT_TRUE(std::equal(got.begin(), got.end(), want.begin() + static_cast<long>(off)))
        << "wrong bytes at " << off;
    ++good;
  }
  EXPECT_GE(eio, 1);
  EXPECT_GT(good, 100);
  EXPECT_NE(Log().find("chunk"), std::string::npos) << Log();
}

TEST_F(AccessTest, AnOrdinaryUserMountsARepositoryTheyMayOnlyRead) {
  MakeVolume();
  // The repository readable by all, writable by root only.
  ASSERT_EQ(Sh("chmod -R a+rX " + Q(dir_.path()) + " && chmod 755 " + Q(dir_.path())).exit_code, 0);
  ASSERT_EQ(::chown(mnt_.c_str(), 65534, 65534), 0);
  const std::string as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups ";
  log_ = dir_ / "mount.log";
  pid_ = Spawn({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", GnomonBinary(),
                "--repo", repo_, "mount", mnt_},
               log_);
  ASSERT_TRUE(WaitFor([&] { return IsMountpoint(mnt_); })) << Log();
  auto r = Sh(as_nobody + "cmp " + Q(mnt_ + "/latest/vol/home/user/big.bin") + " " +
              Q(dir_ / "src/home/user/big.bin"));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err << Log();
  EXPECT_NE(Log().find("without a lock"), std::string::npos) << Log();
  // The user unmounts it as a user would.
  EXPECT_EQ(Sh(as_nobody + "fusermount3 -u " + Q(mnt_)).exit_code, 0);
  const int status = Reap(pid_);
  pid_ = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << Log();
}

TEST_F(AccessTest, ADiskBackupShowsTheWholeDiskAndEachPartition) {
  MakeTree(dir_ / "src");
  const std::string disk = dir_ / "disk.img";
  auto r =
      Sh("truncate -s 200M " + Q(disk) + " && printf 'label: gpt\\n,80M,L\\n,,L\\n' | sfdisk -q " +
         Q(disk) + " && mkfs.ext4 -q -F -E offset=1048576 -d " + Q(dir_ / "src") + " " + Q(disk) +
         " 80M && mkfs.ext4 -q -F -E offset=" + std::to_string(81 << 20) + " " + Q(disk) + " 100M");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string id = BackupId(disk);
  ASSERT_FALSE(id.empty());
  Mount();
  const std::string b = mnt_ + "/ids/" + id;
  auto ls = Sh("ls " + Q(b));
  EXPECT_EQ(ls.out, "disk.img\np1\np1.img\np2\np2.img\n");
  EXPECT_TRUE(FilesEqual(b + "/disk.img", disk));
  auto diff = Sh("diff -r --no-dereference -x lost+found " + Q(dir_ / "src") + " " + Q(b + "/p1"));
  EXPECT_EQ(diff.exit_code, 0) << diff.out << diff.err;
  EXPECT_TRUE(fs::is_directory(b + "/p2/lost+found"));
}

TEST_F(AccessTest, APruneWaitsForTheMountAndDeletesNothingUnderIt) {
  const std::string first = MakeVolume();
  ASSERT_FALSE(BackupId(dir_ / "src/home/user/big.bin").empty());
  ASSERT_EQ(G({"forget", first}).exit_code, 0);
  Mount();
  const auto packs = Files("packs");
  auto r = G({"prune", "--max-unused", "0", "--wait", "1"});
  EXPECT_EQ(r.exit_code, 11) << r.out << r.err;
  EXPECT_EQ(Files("packs"), packs);
  EXPECT_TRUE(FilesEqual(mnt_ + "/latest/big.bin.img", dir_ / "src/home/user/big.bin"));
  EXPECT_EQ(Unmount(), 0);
  r = G({"prune", "--max-unused", "0", "--wait", "10"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_LT(Files("packs").size(), packs.size());
}

// ---- The parts, in-process ----

// A block device in memory.
class MemView : public BlockView {
 public:
  explicit MemView(std::vector<uint8_t> bytes) : bytes_(std::move(bytes)) {}
  uint64_t size() const override { return bytes_.size(); }
  Status Read(uint64_t off, size_t len, uint8_t* out) const override {
    std::memcpy(out, bytes_.data() + off, len);
    return Status::OK();
  }
  void Extent(uint64_t off, bool* zero, uint64_t* end) const override {
    *zero = false;
    *end = size();
    (void)off;
  }

 private:
  std::vector<uint8_t> bytes_;
};

// Many threads, few chunks, room for two: every read is the chunk's bytes
// while chunks are loaded, shared, evicted and loaded again.
TEST_F(AccessTest, TheChunkCacheGivesEveryReaderTheRightBytesWhileItEvicts) {
  MakeVolume();
  std::unique_ptr<Repository> repo;
  ASSERT_TRUE(Repository::Open(Env::Default(), repo_, LockMode::kShared, "test", &repo).ok());
  ChunkIndex index;
  IndexHealth health;
  ASSERT_TRUE(repo->LoadChunkIndex(&index, &health, IndexUse::kRead).ok());
  std::vector<BackupRecord> recs;
  std::vector<Status> errors;
  ASSERT_TRUE(repo->ListBackups(&recs, &errors).ok());
  VolumeIndex vi;
  ASSERT_TRUE(repo->ReadVolumeIndex(recs.at(0).volumes.at(0), &vi).ok());
  std::vector<std::pair<Digest, uint32_t>> keys;
  for (uint64_t i = 0; i < vi.slots.size() && keys.size() < 12; ++i)
    if (!vi.slots[i].IsZero()) keys.emplace_back(vi.slots[i], vi.SlotLength(i));
  ASSERT_EQ(keys.size(), 12u);
  std::vector<std::vector<uint8_t>> want;
  ChunkDecompressor dec;
  for (const auto& [d, len] : keys) {
    want.emplace_back(len);
    ASSERT_TRUE(repo->ReadSlot(index, d, want.back().data(), len, &dec).ok());
  }
  ChunkCache cache(repo.get(), &index, 2 * vi.chunk_size);
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 3000; ++i) {
        const size_t k = rng() % 3 == 0 ? rng() % keys.size() : rng() % 3;  // some hot keys
        ChunkCache::Block b;
        if (!cache.Get(keys[k].first, keys[k].second, &b).ok() || *b != want[k]) ++bad;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_LE(cache.bytes(), 3u * vi.chunk_size);
}

// The overlay against a model, on a size that is no multiple of its block:
// partial blocks at both ends, the short last block, a reopen, extents.
TEST_F(AccessTest, TheOverlayKeepsExactlyWhatWasWrittenOverTheBackup) {
  const size_t size = 3 * Overlay::kBlock * 64 + 5000;  // a short last block
  std::vector<uint8_t> base = RandomBytes(size, 9);
  std::fill(base.begin() + 200000, base.begin() + 400000, 0);
  MemView view(base);
  std::vector<uint8_t> model = base;
  const std::string path = dir_ / "ov";
  std::mt19937_64 rng(5);
  for (int round = 0; round < 2; ++round) {
    std::unique_ptr<Overlay> ov;
    ASSERT_TRUE(Overlay::Open(path, &view, "0123456789abcdef", "vol", &ov).ok());
    for (int i = 0; i < 200; ++i) {
      const uint64_t off = rng() % size;
      const size_t len = std::min<uint64_t>(1 + rng() % 20000, size - off);
      auto data = RandomBytes(len, rng());
      ASSERT_TRUE(ov->Write(off, len, data.data()).ok());
      std::copy(data.begin(), data.end(), model.begin() + static_cast<long>(off));
      const uint64_t roff = rng() % size;
      const size_t rlen = std::min<uint64_t>(1 + rng() % 30000, size - roff);
      std::vector<uint8_t> got(rlen);
      ASSERT_TRUE(ov->Read(roff, rlen, got.data()).ok());
      ASSERT_TRUE(std::equal(got.begin(), got.end(), model.begin() + static_cast<long>(roff)))
          << "round " << round << " read " << rlen << " at " << roff;
    }
    ASSERT_TRUE(ov->Flush().ok());
    std::vector<uint8_t> all(size);
    ASSERT_TRUE(ov->Read(0, size, all.data()).ok());
    EXPECT_EQ(all, model);
    for (uint64_t off = 0; off < size;) {  // extents tile the export
      bool zero = true;
      uint64_t end = 0;
      ov->Extent(off, &zero, &end);
      ASSERT_GT(end, off);
      off = end;
    }
  }
  // Another backup's, another size's, or a cut-short overlay is refused.
  std::unique_ptr<Overlay> ov;
  EXPECT_FALSE(Overlay::Open(path, &view, "fedcba9876543210", "vol", &ov).ok());
  MemView smaller(std::vector<uint8_t>(size - 1));
  EXPECT_FALSE(Overlay::Open(path, &smaller, "0123456789abcdef", "vol", &ov).ok());
  TruncateFile(path, 8192 + 4096);
  ASSERT_TRUE(Overlay::Open(path, &view, "0123456789abcdef", "vol", &ov).ok());
  std::vector<uint8_t> got(size);
  Status st = ov->Read(0, size, got.data());
  EXPECT_TRUE(st.IsCorruption()) << st.message();
  ov.reset();
  // Someone else's file (here: readable by others) is never taken.
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  st = Overlay::Open(path, &view, "0123456789abcdef", "vol", &ov);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("0600"), std::string::npos) << st.message();
}

// ---- NBD ----

class ServeTest : public AccessTest {
 protected:
  void SetUp() override {
    for (const char* tool : {"nbdkit", "qemu-img", "qemu-io", "nbdinfo"})
      GNOMON_SKIP_IF(Sh(std::string("command -v ") + tool).exit_code == 0
                         ? ""
                         : std::string(tool) + " is not installed (tools/install-deps.sh)");
    AccessTest::SetUp();
  }
  void TearDown() override {
    StopServe();
    AccessTest::TearDown();
  }
  std::string Serve(const std::vector<std::string>& args) {
    const std::string sock = dir_ / ("nbd" + std::to_string(++serves_) + ".sock");
    std::vector<std::string> argv = {GnomonBinary(), "--repo", repo_, "serve"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--socket", sock});
    serve_log_ = dir_ / "serve.log";
    serve_pid_ = Spawn(argv, serve_log_);
    EXPECT_GT(serve_pid_, 0);
    EXPECT_TRUE(WaitFor([&] {
      return Sh("nbdinfo --size " + Q("nbd+unix:///?socket=" + sock)).exit_code == 0;
    })) << Sh("cat " + Q(serve_log_)).out;
    return "nbd+unix:///?socket=" + sock;
  }
  int StopServe() {
    if (serve_pid_ <= 0) return -1;
    ::kill(serve_pid_, SIGTERM);
    const int status = Reap(serve_pid_);
    serve_pid_ = -1;
    return status;
  }
  pid_t serve_pid_ = -1;
  int serves_ = 0;
  std::string serve_log_;
};

TEST_F(ServeTest, AnExportReadsAsTheVolumeAndReportsItsHoles) {
  MakeVolume();
  const std::string uri = Serve({"latest"});
  auto r = Sh("qemu-img compare -f raw -F raw " + Q(uri) + " " + Q(img_));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  // Block status: zero ranges are holes (type 3 = hole|zero), data is 0.
  r = Sh("nbdinfo --map=base:allocation " + Q(uri));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  uint64_t holes = 0, data = 0;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    uint64_t off = 0, len = 0;
    int type = -1;
    if (std::sscanf(line.c_str(), "%lu %lu %d", &off, &len, &type) != 3) continue;
    (type == 3 ? holes : data) += len;
  }
  EXPECT_EQ(holes + data, 96ull << 20) << r.out;
  EXPECT_GT(holes, 30ull << 20) << r.out;
  // nbdcopy skips the holes and writes the same bytes.
  r = Sh("nbdcopy " + Q(uri) + " " + Q(dir_ / "copy.img") + " && cmp " + Q(dir_ / "copy.img") +
         " " + Q(img_));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  // Read-only: a writer cannot even open it.
  r = Sh("qemu-io -f raw -c 'write -P 0xab 0 4k' " + Q(uri));
  EXPECT_NE(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.err.find("Permission denied"), std::string::npos) << r.out << r.err;
  EXPECT_EQ(StopServe(), 0) << Sh("cat " + Q(serve_log_)).out;
}

TEST_F(ServeTest, WritesGoToTheOverlayAndSurviveARestartWhileTheRepositoryStaysAsItWas) {
  const std::string id = MakeVolume();
  const std::string overlay = dir_ / "vm.overlay";
  std::string uri = Serve({"latest", "--overlay", overlay});
  auto r = Sh("qemu-io -f raw -c 'write -P 0xab 1000 70000' -c 'write -P 0xcd 50M 4096' -c flush " +
              Q(uri));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(StopServe(), 0);
  // Again, from the overlay the first run left.
  uri = Serve({"latest", "--overlay", overlay});
  r = Sh("qemu-io -f raw -c 'read -P 0xab 1000 70000' -c 'read -P 0xcd 50M 4096' " + Q(uri));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out.find("Pattern verification failed"), std::string::npos) << r.out;
  // Bytes around the writes are the backup's.
  r = Sh("qemu-img convert -f raw -O raw " + Q(uri) + " " + Q(dir_ / "now.img"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto now = ReadFile(dir_ / "now.img"), was = ReadFile(img_);
  ASSERT_EQ(now.size(), was.size());
  for (size_t i = 0; i < now.size(); ++i) {
    const bool w1 = i >= 1000 && i < 71000, w2 = i >= (50u << 20) && i < (50u << 20) + 4096;
    if (w1 || w2) continue;
    ASSERT_EQ(now[i], was[i]) << "byte " << i;
  }
  EXPECT_EQ(StopServe(), 0);
  // The repository never saw a write: the backup restores as it was.
  VerifyJson(true, 0);
  ASSERT_EQ(G({"restore", id, dir_ / "back.img"}).exit_code, 0);
  EXPECT_TRUE(FilesEqual(dir_ / "back.img", img_));
  // An overlay is for its backup only, and never inside the repository.
  ASSERT_FALSE(BackupId(dir_ / "src/home/user/big.bin").empty());
  // (Under timeout: a refusal that regressed would serve forever.)
  auto bad = test::Run({"timeout", "60", GnomonBinary(), "--repo", repo_, "serve", "latest",
                        "--overlay", overlay, "--socket", dir_ / "x.sock"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("not made for backup"), std::string::npos) << bad.err;
  bad = test::Run({"timeout", "60", GnomonBinary(), "--repo", repo_, "serve", id, "--overlay",
                   repo_ + "/in.overlay", "--socket", dir_ / "y.sock"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("inside the repository"), std::string::npos) << bad.err;
  EXPECT_FALSE(fs::exists(repo_ + "/in.overlay"));
}

TEST_F(ServeTest, ADamagedChunkFailsTheReadNeverReturningWrongBytes) {
  MakeVolume();
  auto packs = Files("packs");
  ASSERT_FALSE(packs.empty());
  DamageFirstChunk(packs[packs.size() / 2]);
  const std::string uri = Serve({"latest"});
  auto r = Sh("qemu-img convert -f raw -O raw " + Q(uri) + " " + Q(dir_ / "out.img"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(Sh("cat " + Q(serve_log_)).out.find("chunk"), std::string::npos)
      << Sh("cat " + Q(serve_log_)).out;
}

}  // namespace
}  // namespace gnomon::test
