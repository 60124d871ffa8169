// Encrypted repositories (FORMAT.md §14): the sealing primitives, and the
// real gnomon binary against encrypted repositories: round trips, nothing
// stored in the clear, keys, every tamper case, verify --without-key, and
// serve.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "format/crypto.h"
#include "format/key_slot.h"
#include "format/pack.h"
#include "format/repository.h"
#include "tests/test_util.h"

namespace gnomon::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string Q(const std::string& s) { return "'" + s + "'"; }
std::span<const uint8_t> B(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// ---- The primitives -------------------------------------------------------

TEST(SealTest, AnObjectOpensOnlyUnderItsOwnNameAndKey) {
  auto key = MasterKey::Generate(), other = MasterKey::Generate();
  const std::string plain = "a backup record with host names in it";
  const std::string sealed = SealObject(*key, "backups/0123456789abcdef", plain);
  EXPECT_EQ(sealed.find("host names"), std::string::npos);
  std::string out;
  ASSERT_TRUE(OpenObject(*key, "backups/0123456789abcdef", "p", sealed, &out).ok());
  EXPECT_EQ(out, plain);
  // Moved to another name, or read with another repository's key: refused.
  Status s = OpenObject(*key, "backups/fedcba9876543210", "p", sealed, &out);
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_NE(s.message().find("does not authenticate"), std::string::npos) << s.message();
  EXPECT_FALSE(OpenObject(*other, "backups/0123456789abcdef", "p", sealed, &out).ok());
  // A flipped bit anywhere: damage, seen by the trailer without the key.
  for (size_t at : {size_t{3}, size_t{10}, size_t{30}, sealed.size() - 20, sealed.size() - 1}) {
    std::string bad = sealed;
    bad[at] ^= 0x10;
    EXPECT_FALSE(CheckSealedObject("p", B(bad)).ok()) << at;
    EXPECT_FALSE(OpenObject(*key, "backups/0123456789abcdef", "p", bad, &out).ok()) << at;
  }
  // Truncated.
  EXPECT_FALSE(CheckSealedObject("p", B(sealed.substr(0, sealed.size() - 1))).ok());
  EXPECT_FALSE(CheckSealedObject("p", B(sealed.substr(0, 10))).ok());
  // Two seals of one plaintext differ (random nonces).
  EXPECT_NE(sealed, SealObject(*key, "backups/0123456789abcdef", plain));
}

TEST(SealTest, ChunkIdsAreKeyedAndNotXxh3) {
  auto a = MasterKey::Generate(), b = MasterKey::Generate();
  const auto data = RandomBytes(100000, 7);
  const Digest plain = ChunkHasher().Of(data);
  for (IdFunction f : {IdFunction::kBlake3Keyed, IdFunction::kHmacSha256}) {
    const Digest ka = ChunkHasher(a, f).Of(data), kb = ChunkHasher(b, f).Of(data);
    EXPECT_EQ(plain, Digest::Of(data));
    EXPECT_NE(ka, plain);
    EXPECT_NE(ka, kb);
    EXPECT_EQ(ka, ChunkHasher(a, f).Of(data));  // deterministic under one key: dedup works
  }
  EXPECT_NE(ChunkHasher(a, IdFunction::kBlake3Keyed).Of(data),
            ChunkHasher(a, IdFunction::kHmacSha256).Of(data));
}

// A master key whose id key (its last 32 bytes) is BLAKE3's test-vector key.
std::shared_ptr<const MasterKey> VectorKey() {
  std::vector<uint8_t> k(kMasterKeySize, 0xee);
  const std::string id_key = "whats the Elvish word for friend";
  std::copy(id_key.begin(), id_key.end(), k.end() - 32);
  return MasterKey::FromBytes(k);
}

std::vector<uint8_t> VectorInput(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i % 251);
  return v;
}

TEST(SealTest, ChunkIdsAreTheFirst128BitsOfTheNamedKeyedFunction) {
  // BLAKE3's keyed_hash vectors (its test_vectors.json; the long ones from a
  // Python port of its reference implementation), which run through the
  // portable, SSE4.1, AVX2 and AVX-512 paths; HMAC-SHA-256 from Python's hmac.
  const auto key = VectorKey();
  const ChunkHasher b3(key, IdFunction::kBlake3Keyed), hmac(key, IdFunction::kHmacSha256);
  EXPECT_EQ(b3.Of(VectorInput(0)).Hex(), "92b2b75604ed3c761f9d6f62392c8a92");
  EXPECT_EQ(b3.Of(VectorInput(1)).Hex(), "6d7878dfff2f485635d39013278ae14f");
  EXPECT_EQ(b3.Of(VectorInput(1025)).Hex(), "357dc55de0c7e382c900fd6e320acc04");
  EXPECT_EQ(b3.Of(VectorInput(102400)).Hex(), "1c35d1a5811083fd7119f5d5d1ba027b");
  EXPECT_EQ(b3.Of(VectorInput(4u << 20)).Hex(), "182b531d06d2705f68e23dc6a5580481");
  EXPECT_EQ(hmac.Of(VectorInput(0)).Hex(), "ac5cdc92d0353395a93bf097797193a9");
  EXPECT_EQ(hmac.Of(VectorInput(102400)).Hex(), "0779382e5942bc78566362fe8f3dc3a3");
}

// A repository names its id function in its config, for life: new ones
// get keyed BLAKE3, one made with HMAC-SHA-256 ids keeps them (or its
// chunks would stop deduplicating and its ids stop matching).
TEST(SealTest, TheConfigsIdFunctionIsTheOneARepositoryUses) {
  TempDir d;
  const auto key = VectorKey();
  const auto data = VectorInput(102400);
  for (const char* hash : {"blake3-keyed-128", "hmac-sha256-128"}) {
    RepoConfig c;
    c.SetEncrypted();
    if (std::string(hash) != "blake3-keyed-128") c.hash = hash;
    EXPECT_EQ(c.hash, hash);
    c.id = std::string(32, 'c');
    const std::string path = d / hash;
    ASSERT_TRUE(
        Repository::Init(Env::Default(), path, c, {MakePasswordSlot(c.id, *key, "pw", 1)}).ok());
    std::unique_ptr<Repository> repo;
    ASSERT_TRUE(Repository::Open(Env::Default(), path, LockMode::kShared, "t", &repo).ok());
    EXPECT_EQ(repo->config().hash, hash);
    ASSERT_TRUE(repo->UnlockWithPassword("pw").ok());
    EXPECT_EQ(repo->hasher().Of(data).Hex(), std::string(hash) == "hmac-sha256-128"
                                                 ? "0779382e5942bc78566362fe8f3dc3a3"
                                                 : "1c35d1a5811083fd7119f5d5d1ba027b");
  }
  RepoConfig c;
  c.SetEncrypted();
  c.id = std::string(32, 'c');
  c.hash = "blake2b-128";
  EXPECT_EQ(c.Validate("config").code(), Status::Code::kInvalidArgument);
  c.hash = "xxh3-128";
  EXPECT_EQ(c.Validate("config").code(), Status::Code::kInvalidArgument);
}

TEST(SealTest, KeySlotsOpenOnlyWithTheirSecretAndRepository) {
  auto key = MasterKey::Generate();
  KeySlot pw = MakePasswordSlot("repo-a", *key, "correct horse", 1);
  std::shared_ptr<const MasterKey> got;
  ASSERT_TRUE(OpenPasswordSlot("repo-a", pw, "correct horse", &got).ok());
  EXPECT_TRUE(std::equal(got->bytes().begin(), got->bytes().end(), key->bytes().begin()));
  EXPECT_TRUE(OpenPasswordSlot("repo-a", pw, "wrong", &got).IsWrongKey());
  EXPECT_TRUE(OpenPasswordSlot("repo-b", pw, "correct horse", &got).IsWrongKey());
  // A slot's text round-trips, and hostile KDF parameters are refused.
  KeySlot back;
  ASSERT_TRUE(KeySlot::Decode("k", pw.Encode(), &back).ok());
  EXPECT_TRUE(OpenPasswordSlot("repo-a", back, "correct horse", &got).ok());
  json j = json::parse(pw.Encode());
  j["memory"] = 1ull << 40;
  EXPECT_TRUE(KeySlot::Decode("k", j.dump(), &back).IsCorruption());
  const std::string file_key(32, '\x42');
  KeySlot kf = MakeKeyFileSlot("repo-a", *key, B(file_key));
  EXPECT_TRUE(OpenKeyFileSlot("repo-a", kf, B(file_key), &got).ok());
  EXPECT_TRUE(OpenKeyFileSlot("repo-a", kf, B(std::string(32, 'x')), &got).IsWrongKey());
}

// A pack file in memory, for the sealed pack reader.
class StringFile : public RandomAccessFile {
 public:
  explicit StringFile(std::string b) : b_(std::move(b)) {}
  Status ReadAt(uint64_t off, size_t n, uint8_t* dst) const override {
    if (off + n > b_.size()) return Status::Corruption("short read");
    std::memcpy(dst, b_.data() + off, n);
    return Status::OK();
  }
  uint64_t Size() const override { return b_.size(); }
  const std::string& path() const override { return path_; }

 private:
  std::string b_, path_ = "pack";
};

TEST(SealTest, ASealedPackReadsBackAndItsHeaderIsBoundToItsName) {
  TempDir d;
  auto key = MasterKey::Generate();
  const std::string id(32, 'a');
  auto backend = NewLocalBackend(Env::Default(), d.path());
  ASSERT_TRUE(Env::Default()->CreateDir(d / "tmp").ok());
  std::unique_ptr<Upload> up;
  ASSERT_TRUE(backend->NewUpload("pack", &up).ok());
  PackWriter w(id, std::move(up), key);
  const auto c1 = RandomBytes(5000, 1), c2 = RandomBytes(7000, 2);
  ASSERT_TRUE(w.Add(ChunkHasher(key, IdFunction::kBlake3Keyed).Of(c1), Codec::kRaw, c1, 5000).ok());
  ASSERT_TRUE(w.Add(ChunkHasher(key, IdFunction::kBlake3Keyed).Of(c2), Codec::kRaw, c2, 7000).ok());
  ASSERT_TRUE(w.Finish().ok());
  const auto bytes = ReadFile(d / "pack");
  const std::string file(bytes.begin(), bytes.end());
  std::vector<PackEntry> entries;
  ASSERT_TRUE(ReadPackHeader(StringFile(file), &entries, key.get(), id).ok());
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[1].offset, 5000 + kSealedBlobOverhead);
  uint64_t n = 0;
  EXPECT_TRUE(ScrubSealedPack(StringFile(file), &n).ok());
  // Under another pack's name, without the key, or in a plain repository: refused.
  EXPECT_TRUE(
      ReadPackHeader(StringFile(file), &entries, key.get(), std::string(32, 'b')).IsCorruption());
  EXPECT_FALSE(ReadPackHeader(StringFile(file), &entries).ok());
  std::string bad = file;
  bad[6000] ^= 1;
  EXPECT_TRUE(ScrubSealedPack(StringFile(bad), &n).IsCorruption());
}

TEST(SealTest, ABlobWrittenDamagedIsCaughtByItsSealedCheck) {
  TempDir d;
  RepoConfig c;
  c.SetEncrypted();
  c.id = std::string(32, 'c');
  c.chunk_size = 64 << 10;
  auto key = MasterKey::Generate();
  ASSERT_TRUE(
      Repository::Init(Env::Default(), d / "r", c, {MakePasswordSlot(c.id, *key, "pw", 1)}).ok());
  std::unique_ptr<Repository> repo;
  ASSERT_TRUE(Repository::Open(Env::Default(), d / "r", LockMode::kExclusive, "t", &repo).ok());
  ASSERT_TRUE(repo->UnlockWithPassword("pw").ok());
  // One blob sealed with its true check, one with the check of other bytes
  // (as if the buffer changed between hashing and sealing).
  const auto good = RandomBytes(4000, 1), bad = RandomBytes(4000, 2);
  std::unique_ptr<PackWriter> w;
  ASSERT_TRUE(repo->NewPackWriter(&w).ok());
  const Digest dg = repo->hasher().Of(good), db = repo->hasher().Of(bad);
  ASSERT_TRUE(w->Add(dg, Codec::kRaw, good, 4000, 0, Checksum64(good)).ok());
  ASSERT_TRUE(w->Add(db, Codec::kRaw, bad, 4000, 0, Checksum64(good)).ok());
  ASSERT_TRUE(w->Finish().ok());
  std::shared_ptr<RandomAccessFile> f;
  ASSERT_TRUE(repo->OpenPack(w->id(), &f).ok());
  std::vector<PackEntry> entries;
  ASSERT_TRUE(repo->ReadPackHeader(w->id(), *f, &entries).ok());
  ASSERT_EQ(entries.size(), 2u);
  ChunkDecompressor dec;
  std::vector<uint8_t> stored, raw(4000);
  EXPECT_TRUE(repo->ReadBlob(w->id(), *f, entries[0], &stored, raw.data(), &dec, true).ok());
  EXPECT_EQ(raw, good);
  Status s = repo->ReadBlob(w->id(), *f, entries[1], &stored, raw.data(), &dec);
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_NE(s.message().find("written damaged"), std::string::npos) << s.message();
  // Under another blob's id (the AD), it does not even open.
  PackEntry swapped = entries[0];
  swapped.digest = db;
  EXPECT_NE(repo->ReadBlob(w->id(), *f, swapped, &stored, raw.data(), &dec)
                .message()
                .find("does not authenticate"),
            std::string::npos);
}

// ---- The binary ---------------------------------------------------------

class EncryptedRepoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::setenv("GNOMON_PASSWORD", "first passphrase", 1);
    ::unsetenv("GNOMON_KEY_FILE");
    ::unsetenv("GNOMON_PASSWORD_FILE");
    repo_ = dir_ / "repo";
    auto r = G({"init", "--encryption", "--chunk-size", "64", "--pack-size", "1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    img_ = dir_ / "secret-volume-name.img";
    MakeVolume(img_, 1);
  }
  CommandResult G(std::vector<std::string> args) {
    args.insert(args.begin(), {"--repo", repo_});
    return Gnomon(args);
  }
  // Text-like data with a marker that must never be seen in the repository.
  static void MakeVolume(const std::string& path, uint64_t seed) {
    auto data = TextLikeBytes(6 << 20, seed);
    const std::string marker = "PLAINTEXT-MARKER-4711";
    for (size_t at = 0; at + marker.size() < data.size(); at += 65536 + 17)
      std::memcpy(data.data() + at, marker.data(), marker.size());
    WriteFile(path, data);
  }
  std::string Backup(const std::string& src) {
    auto r = G({"backup", "--json", src});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out)["id"].get<std::string>() : "";
  }
  std::vector<std::string> Files(const std::string& sub) {
    std::vector<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(repo_ + "/" + sub))
      if (e.is_regular_file()) out.push_back(e.path().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  CommandResult WithoutKey(std::vector<std::string> args) {
    args.insert(args.begin(), {"--repo", repo_});
    args.insert(args.begin(), {"env", "-u", "GNOMON_PASSWORD", GnomonBinary()});
    return test::Run(args);
  }
  TempDir dir_;
  std::string repo_, img_;
};

TEST_F(EncryptedRepoTest, BackupIncrementalRestoreVerifyAndPruneRoundTrip) {
  const std::string a = Backup(img_);
  ASSERT_FALSE(a.empty());
  // Change a tenth of it, back up again: only new chunks are stored.
  Sh("dd if=/dev/urandom of=" + Q(img_) + " bs=64k count=10 seek=20 conv=notrunc status=none");
  const std::string b = Backup(img_);
  ASSERT_FALSE(b.empty());
  auto r = G({"restore", b, dir_ / "b.img"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(FilesEqual(dir_ / "b.img", img_));
  r = G({"verify", "--read-data", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  r = G({"forget", a, "--prune"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = G({"restore", b, dir_ / "b2.img"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(FilesEqual(dir_ / "b2.img", img_));
  r = G({"verify", "--read-data"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

TEST_F(EncryptedRepoTest, NothingIsStoredInTheClear) {
  ASSERT_FALSE(Backup(img_).empty());
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  // Neither the data, nor the volume's name, nor the host name.
  std::vector<std::string> needles = {"PLAINTEXT-MARKER-4711", "secret-volume-name"};
  if (std::strlen(host) >= 6) needles.push_back(host);  // shorter ones occur by chance
  for (const auto& needle : needles) {
    auto r = Sh("grep -rlaF " + Q(needle) + " " + Q(repo_));
    EXPECT_NE(r.exit_code, 0) << needle << " found in " << r.out;
  }
  // Every object but the config and the key slots is sealed.
  for (const char* sub : {"packs", "index", "volumes", "backups"})
    for (const auto& f : Files(sub)) {
      const auto b = ReadFile(f);
      const bool sealed_pack =
          b.size() > 8 && std::memcmp(b.data() + b.size() - 8, kSealedPackMagic, 8) == 0;
      EXPECT_TRUE(sealed_pack || (b.size() > 8 && std::memcmp(b.data(), kSealedMagic, 8) == 0))
          << f;
    }
}

TEST_F(EncryptedRepoTest, AWrongOrMissingKeyIsExitCode13AndNamesTheRepository) {
  ASSERT_FALSE(Backup(img_).empty());
  auto r = test::Run({"env", "GNOMON_PASSWORD=not it", GnomonBinary(), "--repo", repo_, "list"});
  EXPECT_EQ(r.exit_code, 13) << r.err;
  EXPECT_NE(r.err.find("wrong passphrase"), std::string::npos) << r.err;
  r = WithoutKey({"restore", "latest", dir_ / "x.img"});
  EXPECT_EQ(r.exit_code, 13) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "x.img"));
  // A password file works as well as the environment.
  Sh("printf 'first passphrase\\n' > " + Q(dir_ / "pw"));
  r = WithoutKey({"--password-file", dir_ / "pw", "list"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(EncryptedRepoTest, ADamagedKeySlotIsNamedAndIsDamageNotAWrongKey) {
  auto slots = Files("keys");
  ASSERT_EQ(slots.size(), 1u);
  FlipByte(slots[0], 40);
  auto r = G({"list"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find(fs::path(slots[0]).filename().string()), std::string::npos) << r.err;
}

TEST_F(EncryptedRepoTest, KeysCanBeAddedListedChangedAndRemovedButNotTheLast) {
  // No new passphrase and no terminal: said so, not blamed on the current one.
  auto r = G({"key", "add"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("a new passphrase is needed"), std::string::npos) << r.err;
  r = test::Run({"env", "GNOMON_NEW_PASSWORD=second", GnomonBinary(), "--repo", repo_, "key", "add",
                 "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string second = json::parse(r.out)["added"];
  r = test::Run(
      {"env", "GNOMON_PASSWORD=second", GnomonBinary(), "--repo", repo_, "key", "list", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto keys = json::parse(r.out)["keys"];
  ASSERT_EQ(keys.size(), 2u);
  std::string first;
  for (const auto& k : keys)
    if (k["id"] != second) first = k["id"];
  // The slot in use cannot be removed; another can; the last cannot.
  r = test::Run(
      {"env", "GNOMON_PASSWORD=second", GnomonBinary(), "--repo", repo_, "key", "remove", second});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = test::Run(
      {"env", "GNOMON_PASSWORD=second", GnomonBinary(), "--repo", repo_, "key", "remove", first});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(G({"list"}).exit_code, 13);  // the first passphrase no longer opens it
  // A key file: made by key add, then opens the repository alone.
  const std::string kf = dir_ / "repo.key";
  r = test::Run({"env", "GNOMON_PASSWORD=second", GnomonBinary(), "--repo", repo_, "key", "add",
                 "--new-key-file", kf});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(fs::status(kf).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  r = WithoutKey({"--key-file", kf, "list"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = WithoutKey({"--key-file", kf, "key", "add", "--new-key-file", kf});  // once is enough
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("already opens"), std::string::npos) << r.err;
  // passwd: a new passphrase replaces the one used.
  r = test::Run({"env", "GNOMON_PASSWORD=second", "GNOMON_NEW_PASSWORD=third", GnomonBinary(),
                 "--repo", repo_, "key", "passwd"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::Run({"env", "GNOMON_PASSWORD=second", GnomonBinary(), "--repo", repo_, "list"})
                .exit_code,
            13);
  EXPECT_EQ(test::Run({"env", "GNOMON_PASSWORD=third", GnomonBinary(), "--repo", repo_, "list"})
                .exit_code,
            0);
  // Down to the key file alone: it is the last slot and stays.
  r = test::Run(
      {"env", "GNOMON_PASSWORD=third", GnomonBinary(), "--repo", repo_, "key", "list", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string pw_slot;
  const json listed = json::parse(r.out);
  for (const auto& k : listed["keys"])
    if (k["kind"] == "password") pw_slot = k["id"];
  ASSERT_FALSE(pw_slot.empty()) << r.out;
  r = WithoutKey({"--key-file", kf, "key", "remove", pw_slot});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = WithoutKey({"--key-file", kf, "key", "list", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string last = json::parse(r.out)["keys"][0]["id"];
  // The last slot stays.
  r = test::Run({"env", "-u", "GNOMON_PASSWORD", "GNOMON_KEY_FILE=" + kf, GnomonBinary(), "--repo",
                 repo_, "key", "remove", last});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(fs::exists(repo_ + "/keys/" + last));
}

TEST_F(EncryptedRepoTest, InitWithAKeyFileMakesItAndNeedsNoPassphrase) {
  TempDir d;
  const std::string kf = d / "k";
  auto r = test::Run({"env", "-u", "GNOMON_PASSWORD", GnomonBinary(), "--repo", d / "r",
                      "--key-file", kf, "init"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(fs::exists(kf));
  r = test::Run({"env", "-u", "GNOMON_PASSWORD", GnomonBinary(), "--repo", d / "r", "--key-file",
                 kf, "backup", img_});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // A key file that is not ours is refused clearly.
  Sh("echo nonsense > " + Q(d / "bad"));
  r = test::Run({"env", "-u", "GNOMON_PASSWORD", GnomonBinary(), "--repo", d / "r", "--key-file",
                 d / "bad", "list"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("key file"), std::string::npos) << r.err;
}

// Tampering: every case gives a clear error naming the object, never a
// crash, never wrong bytes.
TEST_F(EncryptedRepoTest, AFlippedBitInAPackIsCaughtByRestoreVerifyAndTheKeylessScrub) {
  ASSERT_FALSE(Backup(img_).empty());
  const auto packs = Files("packs");
  ASSERT_FALSE(packs.empty());
  FlipByte(packs[0], 200);
  const std::string pack_id = fs::path(packs[0]).filename();
  auto r = G({"restore", "latest", dir_ / "x.img"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find(pack_id), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("does not authenticate"), std::string::npos) << r.err;
  r = G({"verify", "--read-data"});
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  r = WithoutKey({"verify", "--without-key", "--json"});
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_NE(r.out.find(pack_id), std::string::npos) << r.out;
}

TEST_F(EncryptedRepoTest, SwappedTruncatedOrReplayedMetadataIsRefusedByName) {
  const std::string a = Backup(img_);
  MakeVolume(img_, 2);
  const std::string b = Backup(img_);
  ASSERT_FALSE(a.empty() || b.empty());
  // The keyless scrub passes: the objects are intact, only misplaced.
  // Backup a's record replayed under b's name.
  Sh("cp " + Q(repo_ + "/backups/" + a) + " " + Q(repo_ + "/backups/" + b));
  EXPECT_EQ(WithoutKey({"verify", "--without-key"}).exit_code, 0);
  auto r = G({"restore", b, dir_ / "x.img"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("backups/" + b), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "x.img"));
  r = G({"list"});
  EXPECT_NE(r.err.find("backups/" + b), std::string::npos) << r.err;
  // Backup a's record, moved to a fresh name, opens as nothing either.
  Sh("mv " + Q(repo_ + "/backups/" + b) + " " + Q(repo_ + "/backups/00000000deadbeef"));
  r = G({"restore", "00000000deadbeef", dir_ / "x.img"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  // Volume indexes swapped between backups.
  Sh("cp " + Q(repo_ + "/volumes/" + a + ".0") + " " + Q(dir_ / "va"));
  Sh("cp " + Q(repo_ + "/volumes/" + b + ".0") + " " + Q(repo_ + "/volumes/" + a + ".0"));
  r = G({"restore", a, dir_ / "y.img"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("volumes/" + a + ".0"), std::string::npos) << r.err;
  Sh("cp " + Q(dir_ / "va") + " " + Q(repo_ + "/volumes/" + a + ".0"));
  EXPECT_EQ(G({"restore", a, dir_ / "y.img"}).exit_code, 0);
  // An index file cut short: named, by the scrub without the key too.
  const auto idx = Files("index");
  ASSERT_FALSE(idx.empty());
  TruncateFile(idx[0], fs::file_size(idx[0]) - 5);
  r = WithoutKey({"verify", "--without-key"});
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_NE(r.out.find(fs::path(idx[0]).filename().string()), std::string::npos) << r.out;
  r = G({"verify"});
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
}

TEST_F(EncryptedRepoTest, AConfigReplacedByAPlainOneIsRefusedWithOrWithoutAKey) {
  TempDir d;
  auto r = test::Run({"env", "-u", "GNOMON_PASSWORD", GnomonBinary(), "--repo", d / "plain", "init",
                      "--chunk-size", "64"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // A truly plain repository given a key: refused, a wrong-key error.
  r = test::Run({GnomonBinary(), "--repo", d / "plain", "list"});
  EXPECT_EQ(r.exit_code, 13) << r.err;
  EXPECT_NE(r.err.find("not encrypted"), std::string::npos) << r.err;
  // Its config over the encrypted one's: the key slots still say encrypted.
  Sh("cp " + Q(d / "plain/config") + " " + Q(repo_ + "/config"));
  for (const auto& res : {G({"backup", img_}), WithoutKey({"backup", img_})}) {
    EXPECT_EQ(res.exit_code, 3) << res.err;
    EXPECT_NE(res.err.find("holds key slots"), std::string::npos) << res.err;
  }
  EXPECT_TRUE(Files("backups").empty());
}

TEST_F(EncryptedRepoTest, APlainRepositoryIsVerifiedWholeByWithoutKey) {
  TempDir d;
  auto r = test::Run({"env", "-u", "GNOMON_PASSWORD", GnomonBinary(), "--repo", d / "plain", "init",
                      "--chunk-size", "64"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::Run(
      {"env", "-u", "GNOMON_PASSWORD", GnomonBinary(), "--repo", d / "plain", "backup", img_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::Run({"env", "-u", "GNOMON_PASSWORD", GnomonBinary(), "--repo", d / "plain", "verify",
                 "--without-key", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(json::parse(r.out)["read_data"].get<bool>()) << r.out;
}

TEST_F(EncryptedRepoTest, AnEncryptedBackupIsServedOverNbd) {
  GNOMON_SKIP_IF(Sh("command -v nbdkit && command -v nbdcopy").exit_code == 0
                     ? ""
                     : "nbdkit or nbdcopy is not installed (tools/install-deps.sh)");
  ASSERT_FALSE(Backup(img_).empty());
  const std::string sock = dir_ / "nbd.sock";
  const pid_t pid =
      Spawn({GnomonBinary(), "--repo", repo_, "serve", "latest", "--socket", sock}, dir_ / "log");
  ASSERT_GT(pid, 0);
  const std::string uri = "nbd+unix:///?socket=" + sock;
  bool up = false;
  for (int i = 0; i < 600 && !up; ++i) {
    up = Sh("nbdinfo --size " + Q(uri)).exit_code == 0;
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(up) << Sh("cat " + Q(dir_ / "log")).out;
  auto r = Sh("nbdcopy " + Q(uri) + " " + Q(dir_ / "copy.img"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(FilesEqual(dir_ / "copy.img", img_));
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

TEST_F(EncryptedRepoTest, AnEncryptedBackupIsMountedAndReadsAsTheVolume) {
  GNOMON_SKIP_IF(Sh("command -v fusermount3").exit_code == 0
                     ? ""
                     : "fusermount3 is not installed (tools/install-deps.sh)");
  ASSERT_FALSE(Backup(img_).empty());
  const std::string mnt = dir_ / "mnt";
  fs::create_directories(mnt);
  const pid_t pid = Spawn({GnomonBinary(), "--repo", repo_, "mount", mnt}, dir_ / "log");
  ASSERT_GT(pid, 0);
  const std::string file = mnt + "/latest/secret-volume-name.img";
  bool up = false;
  for (int i = 0; i < 600 && !up; ++i) {
    up = fs::exists(file);
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(up) << Sh("cat " + Q(dir_ / "log")).out;
  if (up) {
    EXPECT_TRUE(FilesEqual(file, img_));
  }
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << Sh("cat " + Q(dir_ / "log")).out;
  Sh("fusermount3 -u " + Q(mnt) + " 2>/dev/null");
}

}  // namespace
}  // namespace gnomon::test
