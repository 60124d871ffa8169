// Unit tests of the on-disk format: every structure round-trips, and every
// kind of damage is detected and named.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "base/system.h"
#include "format/chunk_index.h"
#include "format/coding.h"
#include "format/framed_file.h"
#include "format/pack.h"
#include "format/repository.h"
#include "tests/fault_env.h"
#include "tests/test_util.h"

namespace gnomon {
namespace {

using test::TempDir;

std::string S(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }

TEST(Digest, MatchesKnownXxh3Value) {
  // XXH3-128 of the empty input, canonical order (from xxHash's test vectors:
  // 99aa06d3014798d86001c324468d497f).
  EXPECT_EQ(Digest::Of({}).Hex(), "99aa06d3014798d86001c324468d497f");
  Digest d;
  ASSERT_TRUE(Digest::FromHex(Digest::Of({}).Hex(), &d));
  EXPECT_EQ(d, Digest::Of({}));
  EXPECT_FALSE(Digest::FromHex("zz", &d));
}

TEST(Digest, ZeroDetection) {
  std::vector<uint8_t> v(1 << 20, 0);
  EXPECT_TRUE(IsAllZero(v));
  for (size_t pos : {size_t{0}, size_t{7}, size_t{63}, size_t{64}, v.size() - 1}) {
    v[pos] = 1;
    EXPECT_FALSE(IsAllZero(v)) << pos;
    if (pos > 0) {
      EXPECT_FALSE(IsAllZero({v.data() + 1, v.size() - 1})) << "unaligned, " << pos;
    }
    v[pos] = 0;
  }
  EXPECT_TRUE(IsAllZero({}));
}

TEST(FramedFile, RoundTripAndEveryDamageIsNamed) {
  std::string f = EncodeFrame(kBackupFrame, 1, "hello body");
  std::string body;
  uint32_t ver;
  ASSERT_TRUE(DecodeFrame(kBackupFrame, "x", f, &body, &ver).ok());
  EXPECT_EQ(body, "hello body");
  EXPECT_EQ(ver, 1u);

  // Wrong kind of file.
  Status s = DecodeFrame(kConfigFrame, "/r/config", f, &body, &ver);
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_NE(s.message().find("/r/config"), std::string::npos);
  EXPECT_NE(s.message().find("bad magic"), std::string::npos);
  // Any flipped byte.
  for (size_t i = 0; i < f.size(); ++i) {
    std::string g = f;
    g[i] ^= 1;
    EXPECT_FALSE(DecodeFrame(kBackupFrame, "x", g, &body, &ver).ok()) << "byte " << i;
  }
  // Truncated anywhere.
  for (size_t n = 0; n < f.size(); ++n)
    EXPECT_FALSE(DecodeFrame(kBackupFrame, "x", f.substr(0, n), &body, &ver).ok()) << n;
  // A future version is Unsupported, not Corruption.
  std::string future = EncodeFrame(kBackupFrame, 9, "b");
  s = DecodeFrame(kBackupFrame, "x", future, &body, &ver);
  EXPECT_EQ(s.code(), Status::Code::kUnsupported);
  EXPECT_NE(s.message().find("version 9"), std::string::npos);
}

TEST(Pack, WriteReadAndDetectDamage) {
  TempDir dir;
  Env* env = Env::Default();
  auto backend = NewLocalBackend(env, dir.path());
  ASSERT_TRUE(env->CreateDir(dir / "tmp").ok());
  std::unique_ptr<Upload> up;
  ASSERT_TRUE(backend->NewUpload("pack", &up).ok());
  PackWriter w("00", std::move(up));
  ChunkCompressor comp(3);
  std::vector<std::vector<uint8_t>> chunks = {
      test::TextLikeBytes(70000, 1), test::RandomBytes(5000, 2), test::TextLikeBytes(1, 3)};
  for (const auto& c : chunks) {
    std::vector<uint8_t> stored;
    Codec codec = comp.Compress(c, &stored);
    ASSERT_TRUE(w.Add(Digest::Of(c), codec, stored, static_cast<uint32_t>(c.size())).ok());
  }
  EXPECT_EQ(w.entries()[0].codec, Codec::kZstd);  // text compresses
  EXPECT_EQ(w.entries()[1].codec, Codec::kRaw);   // random does not
  ASSERT_TRUE(w.Finish().ok());
  EXPECT_FALSE(env->FileExists(dir / "tmp/pack.pack"));

  std::unique_ptr<RandomAccessFile> r;
  ASSERT_TRUE(env->NewRandomAccessFile(dir / "pack", &r).ok());
  std::vector<PackEntry> entries;
  ASSERT_TRUE(ReadPackHeader(*r, &entries).ok());
  ASSERT_EQ(entries.size(), 3u);
  ChunkDecompressor dec;
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(entries[i].digest, Digest::Of(chunks[i]));
    std::vector<uint8_t> stored(entries[i].stored_len), raw(entries[i].raw_len);
    ASSERT_TRUE(r->ReadAt(entries[i].offset, stored.size(), stored.data()).ok());
    ASSERT_TRUE(dec.Decompress(entries[i].codec, stored, raw.data(), raw.size(), "t").ok());
    EXPECT_EQ(raw, chunks[i]);
  }
  r.reset();

  // A flipped byte in the header, or a truncated pack: named errors.
  uint64_t size = std::filesystem::file_size(dir / "pack");
  test::FlipByte(dir / "pack", size - kPackTailSize - 5);
  ASSERT_TRUE(env->NewRandomAccessFile(dir / "pack", &r).ok());
  Status s = ReadPackHeader(*r, &entries);
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_NE(s.message().find(dir / "pack"), std::string::npos) << s.message();
  test::TruncateFile(dir / "pack", size - 3);
  ASSERT_TRUE(env->NewRandomAccessFile(dir / "pack", &r).ok());
  EXPECT_TRUE(ReadPackHeader(*r, &entries).IsCorruption());
}

TEST(Codec, DamagedCompressedChunkIsCorruption) {
  ChunkCompressor comp(3);
  auto raw = test::TextLikeBytes(100000, 9);
  std::vector<uint8_t> stored;
  ASSERT_EQ(comp.Compress(raw, &stored), Codec::kZstd);
  stored[stored.size() / 2] ^= 0xff;
  std::vector<uint8_t> out(raw.size());
  ChunkDecompressor dec;
  Status s = dec.Decompress(Codec::kZstd, stored, out.data(), out.size(), "here");
  // zstd may or may not notice (no content checksum); the digest check after
  // it always does. Either way, never the original bytes silently.
  if (s.ok()) {
    EXPECT_NE(Digest::Of(out), Digest::Of(raw));
  }
}

TEST(IndexFile, RoundTripAndMalformed) {
  std::vector<PackSummary> packs(2);
  packs[0].id = std::string(32, 'a');
  packs[1].id = std::string(31, '0') + "1";
  for (int i = 0; i < 3; ++i) {
    PackEntry e;
    e.digest = Digest::Of(test::RandomBytes(10, i));
    e.offset = 100 * i;
    e.stored_len = 100;
    e.raw_len = 200;
    e.codec = Codec::kZstd;
    packs[i % 2].entries.push_back(e);
  }
  std::string body = EncodeIndexFile(packs);
  std::vector<PackSummary> back;
  ASSERT_TRUE(DecodeIndexFile("i", body, &back).ok());
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].id, packs[0].id);
  EXPECT_EQ(back[1].entries[0].digest, packs[1].entries[0].digest);
  EXPECT_EQ(back[0].entries[1].offset, 200u);
  for (size_t n = 0; n < body.size(); ++n)
    EXPECT_FALSE(DecodeIndexFile("i", body.substr(0, n), &back).ok()) << n;
  EXPECT_FALSE(DecodeIndexFile("i", body + "x", &back).ok());

  ChunkIndex idx;
  idx.AddPack(packs[0]);
  idx.AddPack(packs[1]);
  EXPECT_EQ(idx.size(), 3u);
  EXPECT_EQ(idx.pack_id(idx.Find(packs[1].entries[0].digest)->pack), packs[1].id);
}

// A hostile pack names lengths no writer writes: rejected when its header
// is read, before anything is allocated for them (index files have the
// same check, against the config's chunk size: DefectsTest).
TEST(Pack, BlobLengthsNoWriterWritesAreCorruption) {
  TempDir dir;
  auto backend = NewLocalBackend(Env::Default(), dir.path());
  ASSERT_TRUE(Env::Default()->CreateDir(dir / "tmp").ok());
  std::unique_ptr<Upload> up;
  ASSERT_TRUE(backend->NewUpload("pack", &up).ok());
  PackWriter w("00", std::move(up));
  const std::vector<uint8_t> stored = test::RandomBytes(100, 2);
  ASSERT_TRUE(w.Add(Digest::Of(stored), Codec::kZstd, stored, 0xffffffffu).ok());
  ASSERT_TRUE(w.Finish().ok());
  std::unique_ptr<RandomAccessFile> r;
  ASSERT_TRUE(Env::Default()->NewRandomAccessFile(dir / "pack", &r).ok());
  std::vector<PackEntry> entries;
  Status s = ReadPackHeader(*r, &entries);
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_NE(s.message().find("lengths no gnomon writes"), std::string::npos) << s.message();
}

TEST(VolumeIndex, RoundTripAndSlotMath) {
  VolumeIndex vi;
  vi.volume_size = 10 * 4096 + 17;
  vi.chunk_size = 4096;
  vi.slots.resize(VolumeIndex::SlotCount(vi.volume_size, vi.chunk_size));
  ASSERT_EQ(vi.slots.size(), 11u);
  EXPECT_EQ(vi.SlotLength(10), 17u);
  EXPECT_EQ(vi.SlotLength(0), 4096u);
  vi.slots[3] = Digest::Of(test::RandomBytes(5, 5));
  VolumeIndex back;
  ASSERT_TRUE(VolumeIndex::Decode("v", vi.Encode(), &back).ok());
  EXPECT_EQ(back.slots, vi.slots);
  EXPECT_EQ(back.volume_size, vi.volume_size);
  std::string bad = vi.Encode();
  bad.pop_back();
  EXPECT_TRUE(VolumeIndex::Decode("v", bad, &back).IsCorruption());
  EXPECT_EQ(VolumeIndex::SlotCount(0, 4096), 0u);
}

TEST(Repository, InitRefusesExistingAndOpenChecksVersion) {
  TempDir dir;
  Env* env = Env::Default();
  std::string r = dir / "repo";
  ASSERT_TRUE(Repository::Init(env, r, RepoConfig{}).ok());
  Status s = Repository::Init(env, r, RepoConfig{});
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("already exists"), std::string::npos);
  test::WriteFile(dir / "busy", {1});
  EXPECT_FALSE(Repository::Init(env, dir.path(), RepoConfig{}).ok());  // non-empty dir

  std::unique_ptr<Repository> repo;
  ASSERT_TRUE(Repository::Open(env, r, LockMode::kShared, "t", &repo).ok());
  EXPECT_EQ(repo->config().chunk_size, 4u << 20);
  repo.reset();

  // A config from a future gnomon.
  RepoConfig c;
  c.version = kRepoFormatVersion + 1;
  c.id = "x";
  // The config is write-once: replacing it takes removing it first.
  EXPECT_TRUE(WriteFrameFile(env, kConfigFrame, 1, r + "/config", c.Encode()).IsExists());
  ASSERT_EQ(::unlink((r + "/config").c_str()), 0);
  ASSERT_TRUE(WriteFrameFile(env, kConfigFrame, 1, r + "/config", c.Encode()).ok());
  s = Repository::Open(env, r, LockMode::kShared, "t", &repo);
  EXPECT_EQ(s.code(), Status::Code::kUnsupported);
  EXPECT_NE(s.message().find(r + "/config"), std::string::npos);

  EXPECT_TRUE(Repository::Open(env, dir / "nope", LockMode::kNone, "t", &repo).IsNotFound());
  EXPECT_TRUE(Repository::Open(env, dir.path(), LockMode::kNone, "t", &repo).IsNotFound());
}

TEST(Repository, RejectsBadConfigValues) {
  TempDir dir;
  RepoConfig c;
  c.chunk_size = 3000;
  EXPECT_FALSE(Repository::Init(Env::Default(), dir / "r", c).ok());
  c = RepoConfig{};
  c.compression_level = 40;
  EXPECT_FALSE(Repository::Init(Env::Default(), dir / "r", c).ok());
}

TEST(Lock, ExclusiveNamesHolderAndStaleLockIsBroken) {
  TempDir dir;
  Env* env = Env::Default();
  std::string r = dir / "repo";
  ASSERT_TRUE(Repository::Init(env, r, RepoConfig{}).ok());
  std::unique_ptr<Repository> a, b;
  ASSERT_TRUE(Repository::Open(env, r, LockMode::kExclusive, "backup", &a).ok());
  Status s = Repository::Open(env, r, LockMode::kExclusive, "backup", &b);
  EXPECT_EQ(s.code(), Status::Code::kLocked);
  EXPECT_NE(s.message().find("pid " + std::to_string(getpid())), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("gnomon backup"), std::string::npos);
  EXPECT_EQ(Repository::Open(env, r, LockMode::kShared, "list", &b).code(), Status::Code::kLocked);
  a.reset();
  ASSERT_TRUE(Repository::Open(env, r, LockMode::kShared, "list", &a).ok());
  EXPECT_EQ(Repository::Open(env, r, LockMode::kExclusive, "backup", &b).code(),
            Status::Code::kLocked);
  ASSERT_TRUE(Repository::Open(env, r, LockMode::kShared, "list", &b).ok());  // shared + shared
  a.reset();
  b.reset();

  // A holder killed with SIGKILL leaves its text behind; the next exclusive
  // open takes the lock and reports the stale holder.
  pid_t pid = fork();
  if (pid == 0) {
    std::unique_ptr<Repository> c;
    if (!Repository::Open(env, r, LockMode::kExclusive, "backup", &c).ok()) _exit(1);
    ::kill(getpid(), SIGKILL);
  }
  int st;
  waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFSIGNALED(st));
  ASSERT_TRUE(Repository::Open(env, r, LockMode::kExclusive, "backup", &a).ok());
  EXPECT_NE(a->broken_stale_lock().find("pid " + std::to_string(pid)), std::string::npos);
}

TEST(Repository, AtomicWriteFailureKeepsOldFile) {
  TempDir dir;
  test::FaultEnv env(Env::Default());
  std::string p = dir / "f";
  std::string v1 = "version one";
  ASSERT_TRUE(
      env.WriteFileAtomic(p, {reinterpret_cast<const uint8_t*>(v1.data()), v1.size()}).ok());
  std::string v2 = "version two";
  for (auto* knob : {&env.fail_append_after, &env.fail_sync_after, &env.fail_rename_after}) {
    *knob = 0;
    EXPECT_FALSE(
        env.WriteFileAtomic(p, {reinterpret_cast<const uint8_t*>(v2.data()), v2.size()}).ok());
    *knob = -1;
    EXPECT_EQ(S(test::ReadFile(p)), v1);
    std::vector<std::string> names;
    ASSERT_TRUE(env.ListDir(dir.path(), &names).ok());
    EXPECT_EQ(names.size(), 1u) << "temporary file left behind";
  }
}

// Names read from files reach the terminal only through EscapeForTerminal.
TEST(EscapeForTerminal, EscapesC0AndC1ControlsAndLeavesOtherUtf8Intact) {
  EXPECT_EQ(EscapeForTerminal("plain name-1.img"), "plain name-1.img");
  EXPECT_EQ(EscapeForTerminal("a\x1b]0;t\x07z\x7f"), "a\\x1b]0;t\\x07z\\x7f");
  EXPECT_EQ(EscapeForTerminal(std::string("nul\0", 4)), "nul\\x00");
  // C1 controls in UTF-8: CSI (U+009B), OSC (U+009D), the first and last.
  EXPECT_EQ(EscapeForTerminal("x\xc2\x9b"
                              "2J"),
            "x\\u009b2J");
  EXPECT_EQ(EscapeForTerminal("\xc2\x9d"
                              "0;t\xc2\x9c"),
            "\\u009d0;t\\u009c");
  EXPECT_EQ(EscapeForTerminal("\xc2\x80\xc2\x9f"), "\\u0080\\u009f");
  // The characters either side of them, and longer sequences, stay.
  for (const char* kept : {"\xc2\xa0", "\xc3\xa9t\xc3\xa9", "\xe2\x82\xac", "\xe6\x97\xa5",
                           "\xf0\x9f\x92\xbe", "\xf4\x8f\xbf\xbf"})
    EXPECT_EQ(EscapeForTerminal(kept), kept);
  // Bytes that are not UTF-8 (a lone 0x9b is CSI to an 8-bit terminal; a
  // cut-off sequence; an overlong NUL; a surrogate) are escaped byte by byte.
  EXPECT_EQ(EscapeForTerminal("\x9b"
                              "2J"),
            "\\x9b2J");
  EXPECT_EQ(EscapeForTerminal("end\xc2"), "end\\xc2");
  EXPECT_EQ(EscapeForTerminal("\xc0\x80"), "\\xc0\\x80");
  EXPECT_EQ(EscapeForTerminal("\xed\xa0\x80"), "\\xed\\xa0\\x80");
  EXPECT_EQ(EscapeForTerminal("\xe2\x82"), "\\xe2\\x82");
  EXPECT_EQ(EscapeForTerminal("\xc2\x7f"), "\\xc2\\x7f");
}

TEST(BackupRecordTest, CompressionLevelsRoundTripAndBadOnesAreUnknownNotFatal) {
  BackupRecord r;
  r.id = "0123456789abcdef";
  r.type = "full";
  r.totals.new_chunks = 9;
  r.totals.levels = {{0, 2}, {2, 4}, {6, 3}};
  BackupRecord out;
  ASSERT_TRUE(BackupRecord::Decode("r", r.Encode(), &out).ok());
  EXPECT_EQ(out.totals.levels, r.totals.levels);
  // A record without the key (format version 15) has no counts.
  nlohmann::json j = nlohmann::json::parse(r.Encode());
  j["totals"].erase("compression_levels");
  ASSERT_TRUE(BackupRecord::Decode("r", j.dump(), &out).ok());
  EXPECT_TRUE(out.totals.levels.empty());
  // Nor does a record with no new chunks.
  BackupRecord none = r;
  none.totals.levels.clear();
  EXPECT_FALSE(nlohmann::json::parse(none.Encode())["totals"].contains("compression_levels"));
  // Informational: a malformed object leaves the counts unknown, and the
  // record still reads.
  for (const char* bad :
       {R"([1, 2])", R"({"23": 1})", R"({"-1": 1})", R"({"": 1})", R"({"x": 1})", R"({"07": 1})",
        R"({"2": 4, "007": 1})", R"({"2": "many"})", R"({"2": -3})"}) {
    j["totals"]["compression_levels"] = nlohmann::json::parse(bad);
    Status s = BackupRecord::Decode("r", j.dump(), &out);
    ASSERT_TRUE(s.ok()) << bad << ": " << s.message();
    EXPECT_TRUE(out.totals.levels.empty()) << bad;
  }
}

}  // namespace
}  // namespace gnomon
