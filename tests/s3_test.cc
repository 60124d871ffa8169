// S3 repositories: the SigV4 signer against AWS's published examples, the
// location parser, and the real gnomon binary against a real Ceph RADOS
// Gateway (tools/test.sh starts one with tools/rgw.sh and exports
// GNOMON_TEST_S3_ENDPOINT and the credentials; without it these skip).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/clock.h"
#include "base/random.h"
#include "format/backend_s3.h"
#include "format/s3_client.h"
#include "format/sigv4.h"
#include "tests/test_util.h"

namespace gnomon {
namespace {

using nlohmann::json;

const std::string kEmptySha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

std::string SignatureOf(const std::string& auth) { return auth.substr(auth.rfind('=') + 1); }

// AWS's signature test suite (get-vanilla and get-vanilla-query-order-key-case).
TEST(SigV4, AwsTestSuiteVectors) {
  S3Credentials c{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1", ""};
  SigV4Request r;
  r.method = "GET";
  r.encoded_path = "/";
  r.service = "service";
  r.headers = {{"host", "example.amazonaws.com"}, {"x-amz-date", "20150830T123600Z"}};
  r.payload_hash = kEmptySha;
  EXPECT_EQ(SignV4(r, c, "20150830T123600Z"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=host;x-amz-date, "
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
  r.query = {{"Param2", "value2"}, {"Param1", "value1"}};  // sorted when signed
  EXPECT_EQ(SignatureOf(SignV4(r, c, "20150830T123600Z")),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
}

// The S3 examples of AWS's "Signature Calculations for the Authorization
// Header" page: GET with a range, PUT with a body hash, a bucket listing.
TEST(SigV4, S3DocumentationExamples) {
  S3Credentials c{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1",
                  ""};
  const std::string date = "20130524T000000Z", host = "examplebucket.s3.amazonaws.com";
  SigV4Request get;
  get.method = "GET";
  get.encoded_path = "/test.txt";
  get.headers = {{"host", host},
                 {"range", "bytes=0-9"},
                 {"x-amz-content-sha256", kEmptySha},
                 {"x-amz-date", date}};
  get.payload_hash = kEmptySha;
  EXPECT_EQ(CanonicalRequest(get),
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
            "x-amz-content-sha256:" +
                kEmptySha + "\nx-amz-date:20130524T000000Z\n\n" +
                "host;range;x-amz-content-sha256;x-amz-date\n" + kEmptySha);
  EXPECT_EQ(SignatureOf(SignV4(get, c, date)),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");

  SigV4Request put;
  put.method = "PUT";
  put.encoded_path = "/" + UriEncode("test$file.text", false);
  put.payload_hash = Sha256Hex("Welcome to Amazon S3.");
  EXPECT_EQ(put.payload_hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  put.headers = {{"date", "Fri, 24 May 2013 00:00:00 GMT"},
                 {"host", host},
                 {"x-amz-content-sha256", put.payload_hash},
                 {"x-amz-date", date},
                 {"x-amz-storage-class", "REDUCED_REDUNDANCY"}};
  EXPECT_EQ(SignatureOf(SignV4(put, c, date)),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");

  SigV4Request list;
  list.method = "GET";
  list.encoded_path = "/";
  list.query = {{"max-keys", "2"}, {"prefix", "J"}};
  list.headers = {{"host", host}, {"x-amz-content-sha256", kEmptySha}, {"x-amz-date", date}};
  list.payload_hash = kEmptySha;
  EXPECT_EQ(SignatureOf(SignV4(list, c, date)),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

TEST(SigV4, EncodingAndDates) {
  EXPECT_EQ(UriEncode("a b+c/d~e", false), "a%20b%2Bc/d~e");
  EXPECT_EQ(UriEncode("a/b", true), "a%2Fb");
  EXPECT_EQ(CanonicalQuery({{"prefix", "x/"}, {"list-type", "2"}}), "list-type=2&prefix=x%2F");
  EXPECT_EQ(AmzDate(1369353600), "20130524T000000Z");
}

TEST(S3Location, ParsesAndRefuses) {
  S3Location l;
  ASSERT_TRUE(ParseS3Location("s3:http://127.0.0.1:7480/bucket/some/prefix/", &l).ok());
  EXPECT_EQ(l.endpoint, "http://127.0.0.1:7480");
  EXPECT_EQ(l.host, "127.0.0.1:7480");
  EXPECT_EQ(l.bucket, "bucket");
  EXPECT_EQ(l.prefix, "some/prefix");
  EXPECT_EQ(l.Url(), "s3:http://127.0.0.1:7480/bucket/some/prefix");
  ASSERT_TRUE(ParseS3Location("s3:https://h/b", &l).ok());
  EXPECT_EQ(l.prefix, "");
  for (const char* bad :
       {"s3:ftp://h/b", "s3:http://h", "s3:http://h/", "s3:http://h/b/../x", "s3:http://h/b//x",
        "s3:h/b", "s3:http://h/b%x", "s3:http://h/b/./x", "s3:http://h/b/x/."})
    EXPECT_TRUE(ParseS3Location(bad, &l).code() == Status::Code::kInvalidArgument) << bad;
}

TEST(S3Retry, TransientAnswersAreRetried) {
  EXPECT_TRUE(Retryable(500));
  EXPECT_TRUE(Retryable(503));
  EXPECT_TRUE(Retryable(429));
  EXPECT_FALSE(Retryable(404));
  EXPECT_FALSE(Retryable(412));
  EXPECT_FALSE(Retryable(403));
  // Nothing listens on port 9 of loopback: refused at once, retried until
  // the budget runs out, then a clean error saying how often it tried.
  S3Location l;
  ASSERT_TRUE(ParseS3Location("s3:http://127.0.0.1:9/b", &l).ok());
  RetryPolicy p;
  p.budget_seconds = 1;
  p.first_backoff_seconds = 0.05;
  S3Client c(l, {"a", "s", "us-east-1", ""}, p);
  S3Response r;
  int attempts = 0;
  const auto start = std::chrono::steady_clock::now();
  Status s = c.Send({"GET", "x", {}, {}, {}}, &r, &attempts);
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(s.code(), Status::Code::kIOError) << s.message();
  EXPECT_NE(s.message().find("giving up"), std::string::npos) << s.message();
  EXPECT_GE(attempts, 3);
  EXPECT_LT(took, 5);
}

// A real gateway, shared by the tests of this binary (they hold the
// "rgw" resource lock in CTest), each test in a bucket of its own.
class S3Test : public test::RepoTest {
 protected:
  void SetUp() override {
    test::RepoTest::SetUp();
    endpoint_ = Env("GNOMON_TEST_S3_ENDPOINT");
    endpoint2_ = Env("GNOMON_TEST_S3_ENDPOINT2");
    if (endpoint_.empty()) return;
    bucket_ = "gnomon-test-" + RandomHexId(6);
    s3repo_ = "s3:" + endpoint_ + "/" + bucket_ + "/repo";
  }
  static std::string Env(const char* n) {
    const char* v = std::getenv(n);
    return v ? v : "";
  }
  std::string Skip() const {
    return endpoint_.empty() ? "no S3 gateway: GNOMON_TEST_S3_ENDPOINT is unset (tools/test.sh "
                               "starts one with tools/rgw.sh)"
                             : "";
  }
  test::CommandResult S3(const std::string& repo, std::vector<std::string> args,
                         std::vector<std::string> env = {}) {
    args.insert(args.begin(), {test::GnomonBinary(), "--repo", repo});
    env.push_back("GNOMON_CACHE_DIR=" + dir_ / "cache");  // each test a cache of its own
    return test::Run(args, env);
  }
  std::string Backup(const std::string& repo, const std::string& src) {
    auto r = S3(repo, {"backup", "--json", src});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out)["id"].get<std::string>() : "";
  }
  std::unique_ptr<Backend> Open(const std::string& location) {
    std::unique_ptr<Backend> b;
    EXPECT_TRUE(OpenS3Backend(location, &b).ok());
    return b;
  }

  // Waits (up to 15 s) until a running backup has stored its first pack.
  static bool WaitForAPack(Backend* be) {
    std::vector<std::string> packs;
    for (int i = 0; i < 300 && packs.empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (!be->List("packs", &packs).ok()) return false;
    }
    return !packs.empty();
  }

  // Tests that kill gateway 1 (tools/rgw.sh kill-gateway) use a repository
  // through it, in the test's bucket.
  std::string SecondGatewaySkip() const {
    return endpoint2_.empty() || Env("GNOMON_TEST_RGW_DIR").empty()
               ? "GNOMON_TEST_S3_ENDPOINT2 / GNOMON_TEST_RGW_DIR are unset"
               : "";
  }
  std::string Repo2() const { return "s3:" + endpoint2_ + "/" + bucket_ + "/repo"; }

  std::string endpoint_, endpoint2_, bucket_, s3repo_;
};

TEST_F(S3Test, BackupIncrementalRestoreVerify) {
  GNOMON_SKIP_IF(Skip());
  ASSERT_EQ(S3(s3repo_, {"init", "--encryption=none", "--chunk-size", "64"}).exit_code, 0);
  // A second init is refused: the location holds a repository.
  auto again = S3(s3repo_, {"init", "--encryption=none"});
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.err.find("already exists"), std::string::npos) << again.err;

  auto data = test::TextLikeBytes(6u << 20, 7);
  test::WriteFile(dir_ / "vol", data);
  const std::string full = Backup(s3repo_, dir_ / "vol");
  ASSERT_EQ(full.size(), 16u);
  for (size_t i = 0; i < 4096; ++i) data[(3u << 20) + i] ^= 0x5a;  // one changed chunk
  test::WriteFile(dir_ / "vol", data);
  const std::string second = Backup(s3repo_, dir_ / "vol");
  ASSERT_EQ(second.size(), 16u);

  auto list = S3(s3repo_, {"list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_EQ(json::parse(list.out).size(), 2u);
  auto r = S3(s3repo_, {"restore", full, dir_ / "out1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = S3(s3repo_, {"restore", "latest", dir_ / "out2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(test::FilesEqual(dir_ / "vol", dir_ / "out2"));
  EXPECT_EQ(test::ReadFile(dir_ / "out1").size(), data.size());
  auto v = S3(s3repo_, {"verify", "--read-data", "--json"});
  ASSERT_EQ(v.exit_code, 0) << v.out << v.err;
  EXPECT_TRUE(json::parse(v.out)["ok"].get<bool>());

  // The objects are where FORMAT.md says, under the prefix.
  auto b = Open(s3repo_);
  std::vector<std::string> names;
  ASSERT_TRUE(b->List("backups", &names).ok());
  EXPECT_EQ(names.size(), 2u);
  ASSERT_TRUE(b->List("packs", &names).ok());
  EXPECT_FALSE(names.empty());
  ASSERT_TRUE(b->List("tmp", &names).ok());
  EXPECT_TRUE(names.empty());  // journals go when a run ends
  ASSERT_TRUE(b->List("locks", &names).ok());
  EXPECT_TRUE(names.empty());  // and lock objects
}

TEST_F(S3Test, EncryptedRepositoryAndScrubWithoutKey) {
  GNOMON_SKIP_IF(Skip());
  const std::vector<std::string> pw = {"GNOMON_PASSWORD=correct horse"};
  ASSERT_EQ(S3(s3repo_, {"init"}, pw).exit_code, 0);
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(3u << 20, 9));
  auto b = S3(s3repo_, {"backup", dir_ / "vol"}, pw);
  ASSERT_EQ(b.exit_code, 0) << b.err;
  auto wrong = S3(s3repo_, {"list"}, {"GNOMON_PASSWORD=wrong"});
  EXPECT_EQ(wrong.exit_code, 13) << wrong.err;
  auto r = S3(s3repo_, {"restore", "latest", dir_ / "out"}, pw);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(test::FilesEqual(dir_ / "vol", dir_ / "out"));
  auto v = S3(s3repo_, {"verify", "--without-key", "--json"});
  ASSERT_EQ(v.exit_code, 0) << v.out << v.err;

  // A flipped byte in a stored pack is found by the scrub without the key.
  auto be = Open(s3repo_);
  std::vector<std::string> packs;
  ASSERT_TRUE(be->List("packs", &packs).ok());
  ASSERT_FALSE(packs.empty());
  std::string body;
  ASSERT_TRUE(be->Get("packs/" + packs[0], &body).ok());
  body[body.size() / 2] ^= 1;
  ASSERT_TRUE(be->PutReplace("packs/" + packs[0],
                             {reinterpret_cast<const uint8_t*>(body.data()), body.size()})
                  .ok());
  v = S3(s3repo_, {"verify", "--without-key"});
  EXPECT_EQ(v.exit_code, 3) << v.out << v.err;
  EXPECT_NE((v.out + v.err).find(packs[0].substr(3)), std::string::npos) << v.out << v.err;
}

// The metadata cache: records, volume indexes and index files are kept
// locally by name; a damaged cached copy is fetched again; a forgotten
// record leaves the cache; verify reads the store, not the cache.
TEST_F(S3Test, MetadataCache) {
  GNOMON_SKIP_IF(Skip());
  ASSERT_EQ(S3(s3repo_, {"init", "--encryption=none"}).exit_code, 0);
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(2u << 20, 4));
  const std::string a = Backup(s3repo_, dir_ / "vol"), b = Backup(s3repo_, dir_ / "vol");
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  auto be = Open(s3repo_);
  std::string config;
  ASSERT_TRUE(be->Get("config", &config).ok());
  auto list = S3(s3repo_, {"list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  std::string cache;
  for (const auto& e : std::filesystem::directory_iterator(dir_ / "cache")) cache = e.path();
  ASSERT_FALSE(cache.empty());
  EXPECT_TRUE(std::filesystem::exists(cache + "/backups/" + a));
  EXPECT_TRUE(std::filesystem::exists(cache + "/volumes/" + a + ".0"));
  EXPECT_FALSE(std::filesystem::is_empty(cache + "/index"));

  // A damaged cached record is fetched again.
  test::FlipByte(cache + "/backups/" + a, 10);
  list = S3(s3repo_, {"list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_EQ(json::parse(list.out).size(), 2u);

  // Damage in the store is found by verify although the cache is intact.
  std::string rec;
  ASSERT_TRUE(be->Get("backups/" + b, &rec).ok());
  std::string bad = rec;
  bad[bad.size() / 2] ^= 1;
  ASSERT_TRUE(
      be->PutReplace("backups/" + b, {reinterpret_cast<const uint8_t*>(bad.data()), bad.size()})
          .ok());
  auto v = S3(s3repo_, {"verify"});
  EXPECT_EQ(v.exit_code, 3) << v.out << v.err;
  ASSERT_TRUE(
      be->PutReplace("backups/" + b, {reinterpret_cast<const uint8_t*>(rec.data()), rec.size()})
          .ok());

  // Forgetting a backup takes its record out of the cache too.
  ASSERT_EQ(S3(s3repo_, {"forget", a}).exit_code, 0);
  ASSERT_EQ(S3(s3repo_, {"list"}).exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists(cache + "/backups/" + a));
  EXPECT_TRUE(std::filesystem::exists(cache + "/backups/" + b));
}

// gnomon copy, local to S3 (encrypted there) and back: only what the
// target lacks is sent, backups keep their ids, and every copy restores
// byte for byte and verifies.
TEST_F(S3Test, CopyBothWays) {
  GNOMON_SKIP_IF(Skip());
  const std::string local = dir_ / "local", back = dir_ / "back";
  ASSERT_EQ(S3(local, {"init", "--encryption=none", "--chunk-size", "256"}).exit_code, 0);
  ASSERT_EQ(S3(s3repo_, {"init", "--chunk-size", "256"}, {"GNOMON_PASSWORD=pw"}).exit_code, 0);
  auto data = test::RandomBytes(8u << 20, 31);
  test::WriteFile(dir_ / "vol", data);
  const std::string first = Backup(local, dir_ / "vol");
  // The S3 side is encrypted: its key, and only its key, is given.
  auto copy = [&](const std::string& from, const std::string& to,
                  std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"copy", "--json", "--from", from, "--to", to};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = S3(from, args, {to == s3repo_ ? "GNOMON_TO_PASSWORD=pw" : "GNOMON_FROM_PASSWORD=pw"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out) : json();
  };
  json c = copy(local, s3repo_);
  EXPECT_EQ(c["copied"], json::array({first}));
  EXPECT_EQ(c["chunks_sent"], 32);
  // A second backup changes one chunk: the next copy sends that one only.
  for (size_t i = 0; i < 100; ++i) data[(5u << 20) + i] ^= 1;
  test::WriteFile(dir_ / "vol", data);
  const std::string second = Backup(local, dir_ / "vol");
  c = copy(local, s3repo_);
  EXPECT_EQ(c["copied"], json::array({second}));
  EXPECT_EQ(c["already_there"], json::array({first}));
  EXPECT_EQ(c["chunks_sent"], 1);
  EXPECT_EQ(c["chunks_present"], 31);

  ASSERT_EQ(S3(back, {"init", "--encryption=none", "--chunk-size", "256"}).exit_code, 0);
  c = copy(s3repo_, back, {second});
  EXPECT_EQ(c["copied"], json::array({second}));
  auto r = S3(back, {"restore", second, dir_ / "out"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(test::FilesEqual(dir_ / "vol", dir_ / "out"));
  auto v = S3(s3repo_, {"verify", "--read-data"}, {"GNOMON_PASSWORD=pw"});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  v = S3(back, {"verify", "--read-data"});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;

  // A target with another chunk size is refused, saying what would fit.
  ASSERT_EQ(S3(dir_ / "other", {"init", "--encryption=none", "--chunk-size", "64"}).exit_code, 0);
  r = S3(local, {"copy", "--from", local, "--to", dir_ / "other"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--chunk-size 256"), std::string::npos) << r.err;
}

// Create-once names hold across gateways: of two writers of one name,
// exactly one wins and the stored body is the winner's.
TEST_F(S3Test, CreateOnceAcrossTwoGateways) {
  GNOMON_SKIP_IF(Skip());
  GNOMON_SKIP_IF(endpoint2_.empty() ? "GNOMON_TEST_S3_ENDPOINT2 is unset" : "");
  ASSERT_EQ(S3(s3repo_, {"init", "--encryption=none"}).exit_code, 0);
  auto a = Open(s3repo_);
  auto b = Open("s3:" + endpoint2_ + "/" + bucket_ + "/repo");
  for (int i = 0; i < 10; ++i) {
    const std::string name = "index/" + RandomHexId(16);
    const std::string one = "first " + std::to_string(i), two = "second " + std::to_string(i);
    Status sa, sb;
    std::thread t([&] {
      sb = b->Put(name, {reinterpret_cast<const uint8_t*>(two.data()), two.size()});
    });
    sa = a->Put(name, {reinterpret_cast<const uint8_t*>(one.data()), one.size()});
    t.join();
    ASSERT_NE(sa.ok(), sb.ok()) << sa.message() << " / " << sb.message();
    EXPECT_TRUE(sa.ok() ? sb.IsExists() : sa.IsExists());
    std::string got;
    ASSERT_TRUE(a->Get(name, &got).ok());
    EXPECT_EQ(got, sa.ok() ? one : two);
  }
}

// Two hosts (two processes through two gateways) back up into one
// repository at the same time, the same data and different data: every
// backup commits, and every one restores byte for byte.
TEST_F(S3Test, TwoHostsBackUpAtOnce) {
  GNOMON_SKIP_IF(Skip());
  GNOMON_SKIP_IF(endpoint2_.empty() ? "GNOMON_TEST_S3_ENDPOINT2 is unset" : "");
  ASSERT_EQ(S3(s3repo_, {"init", "--encryption=none", "--chunk-size", "256", "--pack-size", "2"})
                .exit_code,
            0);
  const std::string repo2 = "s3:" + endpoint2_ + "/" + bucket_ + "/repo";
  test::WriteFile(dir_ / "same", test::TextLikeBytes(12u << 20, 21));
  test::WriteFile(dir_ / "other", test::RandomBytes(8u << 20, 22));
  for (int round = 0; round < 2; ++round) {
    const std::string second = round == 0 ? "same" : "other";
    const std::string log = dir_ / ("b" + std::to_string(round) + ".log");
    pid_t pid = test::Spawn({test::GnomonBinary(), "--repo", repo2, "backup", dir_ / second}, log);
    ASSERT_GT(pid, 0);
    auto mine = S3(s3repo_, {"backup", dir_ / "same"});
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_EQ(mine.exit_code, 0) << mine.err;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << test::Sh("cat " + log).out;
  }
  auto list = S3(s3repo_, {"list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  const json all = json::parse(list.out);
  ASSERT_EQ(all.size(), 4u);
  for (const auto& b : all) {
    const std::string id = b["id"], src = b["volumes"][0]["name"];
    auto r = S3(s3repo_, {"restore", id, dir_ / ("out-" + id)});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(test::FilesEqual(dir_ / src, dir_ / ("out-" + id))) << id << " " << src;
  }
  auto v = S3(s3repo_, {"verify", "--read-data", "--json"});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
}

// Garbage collection against the bucket, beside backups from another
// "host" (another process through the other gateway) that keep storing new
// data and data of backups forgotten earlier: prune deletes what no backup
// uses, and every backup stays whole.
TEST_F(S3Test, PruneBesideBackupsFromAnotherHost) {
  GNOMON_SKIP_IF(Skip());
  GNOMON_SKIP_IF(endpoint2_.empty() ? "GNOMON_TEST_S3_ENDPOINT2 is unset" : "");
  ASSERT_EQ(S3(s3repo_, {"init", "--encryption=none", "--chunk-size", "64", "--pack-size", "1"})
                .exit_code,
            0);
  const std::string repo2 = "s3:" + endpoint2_ + "/" + bucket_ + "/repo";
  std::atomic<bool> stop{false};
  std::atomic<int> prunes{0}, deleted{0};
  std::vector<std::string> errors;
  std::thread pruner([&] {
    while (!stop) {
      auto r = S3(s3repo_, {"prune", "--json", "--max-unused", "0", "--wait", "120"});
      if (r.exit_code != 0) {
        errors.push_back(r.err);
        continue;
      }
      ++prunes;
      deleted += json::parse(r.out)["packs_deleted"].get<int>();
    }
  });
  std::map<std::string, std::vector<uint8_t>> made;
  std::vector<std::string> order;
  for (int i = 0; i < 6; ++i) {
    auto data = test::RandomBytes(2u << 20, 100 + i);  // new
    if (i >= 2) {
      auto old = test::RandomBytes(2u << 20, 100 + i - 2);  // of a backup forgotten below
      data.insert(data.end(), old.begin(), old.end());
    }
    test::WriteFile(dir_ / "vol", data);
    const std::string id = Backup(repo2, dir_ / "vol");
    ASSERT_FALSE(id.empty());
    made[id] = data;
    order.push_back(id);
    if (order.size() > 2) {  // keep the last two
      ASSERT_EQ(S3(repo2, {"forget", order[order.size() - 3]}).exit_code, 0);
      made.erase(order[order.size() - 3]);
    }
  }
  while (prunes.load() < 2 && errors.empty()) std::this_thread::sleep_for(std::chrono::seconds(1));
  stop = true;
  pruner.join();
  EXPECT_TRUE(errors.empty()) << errors.front();
  EXPECT_GT(deleted.load(), 0);
  for (const auto& [id, data] : made) {
    const std::string out = dir_ / ("out-" + id);
    auto r = S3(s3repo_, {"restore", id, out});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(test::ReadFile(out) == data) << "backup " << id << " restores other bytes";
  }
  auto v = S3(s3repo_, {"verify", "--read-data"});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
}

// Lock objects: a live exclusive holder on another host keeps a backup
// out (exit 11, naming it); one whose process on this host is gone is
// stale and broken, and the backup says so.
TEST_F(S3Test, LiveLockRefusesStaleLockIsBroken) {
  GNOMON_SKIP_IF(Skip());
  ASSERT_EQ(S3(s3repo_, {"init", "--encryption=none"}).exit_code, 0);
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(1u << 20, 3));
  auto be = Open(s3repo_);
  auto put_lock = [&](const std::string& host, int64_t pid) {
    const std::string name = "locks/" + RandomHexId(16);
    const int64_t now = NowMicros() / 1000;
    const std::string text = json{
        {"host", host},
        {"pid", pid},
        {"kind", "exclusive"},
        {"name", "repository"},
        {"purpose", "pid " + std::to_string(pid) + " (gnomon backup)"},
        {"created", now},
        {"refreshed", now}}.dump();
    EXPECT_TRUE(be->Put(name, {reinterpret_cast<const uint8_t*>(text.data()), text.size()}).ok());
    return name;
  };
  const std::string live = put_lock("another-host", 4242);
  auto r = S3(s3repo_, {"backup", dir_ / "vol"});
  EXPECT_EQ(r.exit_code, 11) << r.err;
  EXPECT_NE(r.err.find("pid 4242"), std::string::npos) << r.err;
  ASSERT_TRUE(be->Delete(live).ok());

  // A process of this host that is gone: spawn one and reap it.
  pid_t dead = fork();
  if (dead == 0) _exit(0);
  waitpid(dead, nullptr, 0);
  // The lock's host id is this host's (the backend hashes the host name).
  std::unique_ptr<FileLock> probe;
  ASSERT_TRUE(be->TryLock("gc/probe", false, &probe).ok());
  std::vector<std::string> names;
  ASSERT_TRUE(be->List("locks", &names).ok());
  ASSERT_EQ(names.size(), 1u);
  std::string mine;
  ASSERT_TRUE(be->Get("locks/" + names[0], &mine).ok());
  probe.reset();
  put_lock(json::parse(mine)["host"].get<std::string>(), dead);
  r = S3(s3repo_, {"backup", dir_ / "vol"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("stale lock"), std::string::npos) << r.err;
  ASSERT_TRUE(be->List("locks", &names).ok());
  EXPECT_TRUE(names.empty());
}

// A repository nested under another one's prefix is not the outer one's
// to clean up, and init refuses to make one there; init never deletes key
// slots it did not write; hostile lock objects are errors, never crashes.
TEST_F(S3Test, NestedRepositoriesAndHostileLockObjects) {
  GNOMON_SKIP_IF(Skip());
  const std::string outer = s3repo_, inner = s3repo_ + "/tmp";
  ASSERT_EQ(S3(outer, {"init", "--encryption=none"}).exit_code, 0);
  auto r = S3(inner, {"init", "--encryption=none"});
  EXPECT_NE(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("inside the repository"), std::string::npos) << r.err;
  // Objects below the layout's depth (planted, or another repository's
  // made before this one) are left alone by the clean-up.
  auto be = Open(outer);
  const std::string junk = "not ours";
  ASSERT_TRUE(
      be->Put("tmp/x/config", {reinterpret_cast<const uint8_t*>(junk.data()), junk.size()}).ok());
  ASSERT_TRUE(
      be->Put("keys/id_ed25519", {reinterpret_cast<const uint8_t*>(junk.data()), junk.size()})
          .ok());
  test::WriteFile(dir_ / "vol", test::TextLikeBytes(1u << 20, 8));
  ASSERT_FALSE(Backup(outer, dir_ / "vol").empty());
  std::string got;
  EXPECT_TRUE(be->Get("tmp/x/config", &got).ok());
  EXPECT_TRUE(be->Get("keys/id_ed25519", &got).ok());

  for (const std::string bad : {R"({"name":"repository","kind":5})", R"({"name":5})",
                                R"({"name":"users","refreshed":"now","pid":"abc"})"}) {
    const std::string name = "locks/" + RandomHexId(16);
    ASSERT_TRUE(be->Put(name, {reinterpret_cast<const uint8_t*>(bad.data()), bad.size()}).ok());
    r = S3(outer, {"list"});
    EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 11) << bad << ": " << r.err;
    ASSERT_TRUE(be->Delete(name).ok());
  }
  const std::string unreadable = "[1,2]", name = "locks/" + RandomHexId(16);
  ASSERT_TRUE(
      be->Put(name, {reinterpret_cast<const uint8_t*>(unreadable.data()), unreadable.size()}).ok());
  const auto start = std::chrono::steady_clock::now();
  r = S3(outer, {"list"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("unreadable lock object"), std::string::npos) << r.err;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  ASSERT_TRUE(be->Delete(name).ok());
}

// A backup whose locks go stale (here: stopped past the stale time, and
// another command removes them) stops before its next write: it fails and
// publishes nothing, and the repository stays whole.
TEST_F(S3Test, ABackupThatLostItsLockStopsWriting) {
  GNOMON_SKIP_IF(Skip());
  ASSERT_EQ(S3(s3repo_, {"init", "--encryption=none", "--pack-size", "4"}).exit_code, 0);
  const std::vector<std::string> timers = {"GNOMON_S3_LOCK_STALE_SECONDS=4",
                                           "GNOMON_S3_LOCK_REFRESH_SECONDS=1"};
  test::WriteFile(dir_ / "vol", test::RandomBytes(96u << 20, 6));
  const std::string log = dir_ / "backup.log";
  pid_t pid = test::Spawn({"env", timers[0], timers[1], "GNOMON_CACHE_DIR=" + dir_ / "cache",
                           test::GnomonBinary(), "--repo", s3repo_, "backup", dir_ / "vol"},
                          log);
  ASSERT_GT(pid, 0);
  auto be = Open(s3repo_);
  ASSERT_TRUE(WaitForAPack(be.get())) << "no pack appeared";
  ASSERT_EQ(kill(pid, SIGSTOP), 0);
  std::this_thread::sleep_for(std::chrono::seconds(6));
  // Another command finds the stopped run's lock objects stale: it removes
  // them (and its clean-up the run's journal and packs).
  auto other = S3(s3repo_, {"backup", "--json", dir_ / "vol"}, timers);
  EXPECT_EQ(other.exit_code, 0) << other.err;
  ASSERT_EQ(kill(pid, SIGCONT), 0);
  int status = 0;
  waitpid(pid, &status, 0);
  const std::string out = test::Sh("cat " + log).out;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << out;
  EXPECT_NE(out.find("stopping before writing"), std::string::npos) << out;
  auto list = S3(s3repo_, {"list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_EQ(json::parse(list.out).size(), 1u);  // only the other one
  auto v = S3(s3repo_, {"verify", "--read-data"});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
}

// A restore from a store fetches the chunks that lie back to back in a pack
// in one request per GNOMON_S3_READ_MIB, yet checks each chunk: a damaged
// one fails the restore (exit 3), naming the pack, and leaves no target.
TEST_F(S3Test, RestoreFetchesRunsAndChecksEachChunk) {
  GNOMON_SKIP_IF(Skip());
  const std::string rgw_dir = Env("GNOMON_TEST_RGW_DIR");
  GNOMON_SKIP_IF(rgw_dir.empty() ? "GNOMON_TEST_RGW_DIR is unset (the gateway's request log)" : "");
  ASSERT_EQ(S3(s3repo_, {"init", "--encryption=none", "--chunk-size", "64"}).exit_code, 0);
  auto data = test::TextLikeBytes(6u << 20, 11);
  std::fill(data.begin() + (2u << 20), data.begin() + (2u << 20) + (256u << 10), 0);  // a gap
  test::WriteFile(dir_ / "vol", data);
  ASSERT_EQ(Backup(s3repo_, dir_ / "vol").size(), 16u);
  // Requests for packs, from the gateway's log (written within a moment).
  const std::string pattern = "\"GET /" + bucket_ + "/repo/packs/";
  auto pack_gets = [&] {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    return std::stoul(
        test::Sh("grep -cF '" + pattern + "' " + rgw_dir + "/log/client.rgw.gw0.log").out);
  };
  const size_t chunks = (data.size() - (256u << 10)) / (64u << 10);
  size_t before = pack_gets();
  for (const char* mib : {"1", "8"}) {
    const std::string out = dir_ / ("out-" + std::string(mib));
    auto r = S3(s3repo_, {"restore", "latest", out}, {std::string("GNOMON_S3_READ_MIB=") + mib});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(test::FilesEqual(dir_ / "vol", out)) << mib << " MiB per request";
    const size_t after = pack_gets(), gets = after - before;
    before = after;
    EXPECT_GE(gets, 2u) << "the zeros split the chunks into two runs at least";
    EXPECT_LE(gets, chunks / 8) << gets << " requests for " << chunks << " chunks";
  }

  auto be = Open(s3repo_);
  std::vector<std::string> packs;
  ASSERT_TRUE(be->List("packs", &packs).ok());
  ASSERT_EQ(packs.size(), 1u);
  std::string body;
  ASSERT_TRUE(be->Get("packs/" + packs[0], &body).ok());
  body[body.size() / 3] ^= 1;  // inside some chunk of some run
  ASSERT_TRUE(be->PutReplace("packs/" + packs[0],
                             {reinterpret_cast<const uint8_t*>(body.data()), body.size()})
                  .ok());
  auto r = S3(s3repo_, {"restore", "latest", dir_ / "bad"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find(packs[0].substr(3)), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "bad"));
}

// Ctrl-C during an outage: requests stop being retried at once, so the
// restore ends with exit 130 in moments (not after a retry budget per
// request in flight, then another for its lock) and leaves no target.
TEST_F(S3Test, InterruptDuringAnOutageEndsAtOnce) {
  GNOMON_SKIP_IF(Skip());
  GNOMON_SKIP_IF(SecondGatewaySkip());
  const std::string repo2 = Repo2(), rgw_dir = Env("GNOMON_TEST_RGW_DIR");
  ASSERT_EQ(S3(repo2, {"init", "--encryption=none", "--pack-size", "4"}).exit_code, 0);
  test::WriteFile(dir_ / "vol", test::RandomBytes(192u << 20, 6));
  ASSERT_EQ(Backup(repo2, dir_ / "vol").size(), 16u);
  const std::string log = dir_ / "restore.log";
  pid_t pid = test::Spawn(
      {"env", "GNOMON_S3_READ_MIB=1", "GNOMON_CACHE_DIR=" + dir_ / "cache", test::GnomonBinary(),
       "--threads", "1", "--repo", repo2, "restore", "latest", dir_ / "out"},
      log);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(test::Sh("bash " RGW_SH " kill-gateway " + rgw_dir + " 1").exit_code, 0);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const auto t0 = std::chrono::steady_clock::now();
  ::kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string out = test::Sh("cat " + log).out;
  ASSERT_EQ(test::Sh("bash " RGW_SH " start-gateway " + rgw_dir + " 1 >&2").exit_code, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 130) << status << " " << out;
  EXPECT_LT(took, 15) << "a retry budget is 60 s; " << out;
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out"));
}

// The gateway dies mid-backup: the backup fails cleanly (an error, no
// record), and once the gateway is back the next backup succeeds and the
// repository verifies.
TEST_F(S3Test, GatewayKilledMidBackup) {
  GNOMON_SKIP_IF(Skip());
  GNOMON_SKIP_IF(SecondGatewaySkip());
  const std::string repo2 = Repo2(), rgw_dir = Env("GNOMON_TEST_RGW_DIR");
  ASSERT_EQ(S3(repo2, {"init", "--encryption=none", "--pack-size", "4"}).exit_code, 0);
  test::WriteFile(dir_ / "vol", test::RandomBytes(96u << 20, 5));  // incompressible: slow enough
  const std::string log = dir_ / "backup.log";
  pid_t pid = test::Spawn({"env", "GNOMON_S3_RETRY_SECONDS=2", test::GnomonBinary(), "--repo",
                           repo2, "backup", dir_ / "vol"},
                          log);
  ASSERT_GT(pid, 0);
  // Kill the gateway once the first pack is stored.
  auto be = Open(s3repo_);
  ASSERT_TRUE(WaitForAPack(be.get())) << "no pack appeared";
  ASSERT_EQ(test::Sh("bash " RGW_SH " kill-gateway " + rgw_dir + " 1").exit_code, 0);
  int status = 0;
  waitpid(pid, &status, 0);
  const std::string out = test::Sh("cat " + log).out;
  ASSERT_EQ(test::Sh("bash " RGW_SH " start-gateway " + rgw_dir + " 1 >&2").exit_code, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << out;
  EXPECT_NE(out.find("giving up"), std::string::npos) << out;
  std::vector<std::string> names;
  ASSERT_TRUE(be->List("backups", &names).ok());
  EXPECT_TRUE(names.empty());  // nothing published

  auto r = S3(repo2, {"backup", dir_ / "vol"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto v = S3(repo2, {"verify", "--read-data", "--json"});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  r = S3(repo2, {"restore", "latest", dir_ / "out"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(test::FilesEqual(dir_ / "vol", dir_ / "out"));
}

}  // namespace
}  // namespace gnomon
