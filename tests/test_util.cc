#include "tests/test_util.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

extern char** environ;

namespace gnomon::test {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/gnomon-test-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) std::abort();
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x = rng();
    std::memcpy(&v[i], &x, 8);
  }
  for (; i < n; ++i) v[i] = static_cast<uint8_t>(rng());
  return v;
}

std::vector<uint8_t> TextLikeBytes(size_t n, uint64_t seed) {
  static const char* words[] = {"block ", "device ", "snapshot ", "writer ", "freeze ",
                                "thaw ",  "chunk ",  "digest ",   "pack ",   "volume\n",
                                "the ",   "of ",     "and ",      "backup ", "restore "};
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v;
  v.reserve(n + 16);
  while (v.size() < n) {
    const char* w = words[rng() % 15];
    v.insert(v.end(), w, w + std::strlen(w));
    if (rng() % 7 == 0) {
      std::string num = std::to_string(rng() % 100000) + " ";
      v.insert(v.end(), num.begin(), num.end());
    }
  }
  v.resize(n);
  return v;
}

void WriteFile(const std::string& path, const std::vector<uint8_t>& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  ASSERT_TRUE(f.good()) << "writing " << path;
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

bool FilesEqual(const std::string& a, const std::string& b) {
  // Compares in 1 MiB windows, skipping ranges that are holes in both files,
  // so two 4 GiB sparse images compare in milliseconds.
  int fa = ::open(a.c_str(), O_RDONLY), fb = ::open(b.c_str(), O_RDONLY);
  struct stat sa, sb;
  bool eq = fa >= 0 && fb >= 0 && ::fstat(fa, &sa) == 0 && ::fstat(fb, &sb) == 0;
  if (eq && !(S_ISREG(sa.st_mode) && S_ISREG(sb.st_mode))) {  // a block device: no holes
    ::close(fa);
    ::close(fb);
    return Run({"cmp", "-s", a, b}).exit_code == 0;
  }
  eq = eq && sa.st_size == sb.st_size;
  const off_t size = eq ? sa.st_size : 0;
  std::vector<char> ba(1 << 20), bb(1 << 20);
  for (off_t pos = 0; eq && pos < size;) {
    off_t da = ::lseek(fa, pos, SEEK_DATA), db = ::lseek(fb, pos, SEEK_DATA);
    if (da < 0) da = size;
    if (db < 0) db = size;
    pos = std::min(da, db);
    if (pos >= size) break;
    size_t n = static_cast<size_t>(std::min<off_t>(static_cast<off_t>(ba.size()), size - pos));
    eq = ::pread(fa, ba.data(), n, pos) == static_cast<ssize_t>(n) &&
         ::pread(fb, bb.data(), n, pos) == static_cast<ssize_t>(n) &&
         std::memcmp(ba.data(), bb.data(), n) == 0;
    pos += static_cast<off_t>(n);
  }
  if (fa >= 0) ::close(fa);
  if (fb >= 0) ::close(fb);
  return eq;
}

void FlipByte(const std::string& path, uint64_t offset) {
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  uint8_t c;
  ASSERT_EQ(::pread(fd, &c, 1, static_cast<off_t>(offset)), 1);
  c ^= 0x5a;
  ASSERT_EQ(::pwrite(fd, &c, 1, static_cast<off_t>(offset)), 1);
  ::close(fd);
}

void TruncateFile(const std::string& path, uint64_t size) {
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(size)), 0) << path;
}

static std::string ReadAllFd(int fd) {
  std::string s;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) s.append(buf, static_cast<size_t>(n));
  return s;
}

CommandResult Run(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  CommandResult r;
  TempDir d;
  std::string out = d / "out", err = d / "err";
  pid_t pid = ::fork();
  if (pid == 0) {
    int in = ::open("/dev/null", O_RDONLY);
    int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(in, 0);
    ::dup2(o, 1);
    ::dup2(e, 2);
    // Nothing the test (or another of its threads) has open leaks into
    // the command: a file being written would look in use to it.
    ::close_range(3, ~0U, 0);
    for (const auto& kv : env) ::putenv(const_cast<char*>(kv.c_str()));
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  int fo = ::open(out.c_str(), O_RDONLY), fe = ::open(err.c_str(), O_RDONLY);
  r.out = ReadAllFd(fo);
  r.err = ReadAllFd(fe);
  ::close(fo);
  ::close(fe);
  return r;
}

CommandResult Sh(const std::string& cmd) { return Run({"/bin/sh", "-c", cmd}); }

std::string GnomonBinary() {
  // GNOMON_TEST_BINARY runs the end-to-end tests against another build (an
  // older one, to see a regression test fail before its fix).
  const char* other = std::getenv("GNOMON_TEST_BINARY");
  return other && *other ? other : GNOMON_BIN;
}

CommandResult Gnomon(const std::vector<std::string>& args) {
  std::vector<std::string> argv{GnomonBinary()};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv);
}

IsolatedState::IsolatedState() {
  // ctest runs every test in a process of its own: a process-wide setting
  // is per test, and so is every gnomon the test starts.
  ::setenv("GNOMON_RUNTIME_DIR", (dir_ / "run").c_str(), 1);
  ::setenv("GNOMON_STATE_DIR", (dir_ / "state").c_str(), 1);
  // Writers of this machine (scripts in /etc/gnomon/writers.d) stay out.
  ::setenv("GNOMON_HOOKS_DIR", (dir_ / "hooks").c_str(), 1);
  ::setenv("GNOMON_WRITER_DIR", (dir_ / "run/writers").c_str(), 1);
  // Tests that run gnomon as nobody need to create files here; sticky, so
  // script writers below it still count as trusted.
  ::chmod(dir_.path().c_str(), 01777);
}

ReflinkFs::ReflinkFs(const TempDir& dir, const std::string& size, const std::string& kind)
    : path_(dir / kind) {
  std::filesystem::create_directories(path_);
  std::string img = dir / (kind + ".img");
  std::string mkfs = kind == "btrfs" ? "mkfs.btrfs -q " : "mkfs.xfs -q -m reflink=1 ";
  CommandResult r = Sh("truncate -s " + size + " " + img + " && " + mkfs + img +
                       " && mount -o loop " + img + " " + path_);
  mounted_ = r.exit_code == 0;
  EXPECT_TRUE(mounted_) << "making a reflink " << kind << ": " << r.err;
}

ReflinkFs::~ReflinkFs() {
  if (mounted_) Sh("umount " + path_);
}

std::string ReflinkFs::SkipReason(const std::string& kind) {
  std::string mkfs = kind == "btrfs" ? "mkfs.btrfs" : "mkfs.xfs";
  if (Sh("command -v " + mkfs).exit_code != 0)
    return mkfs + " is not installed (tools/install-deps.sh installs it)";
  return "";
}

bool RequireAll() {
  const char* v = std::getenv("GNOMON_TEST_REQUIRE_ALL");
  return v && std::string(v) == "1";
}

bool IsRoot() { return ::geteuid() == 0; }

std::string RootSkipReason() {
  if (!IsRoot()) return "needs root (loop devices, mount); CI runs as root";
  if (::access("/dev/loop-control", F_OK) != 0) return "no /dev/loop-control on this machine";
  return "";
}

LoopDevice::LoopDevice(const std::string& backing_file) {
  CommandResult r = Sh("losetup -f --show " + backing_file);
  if (r.exit_code == 0) dev_ = r.out.substr(0, r.out.find('\n'));
  EXPECT_EQ(r.exit_code, 0) << "losetup failed: " << r.err;
}

LoopDevice::~LoopDevice() {
  if (!dev_.empty()) Sh("losetup -d " + dev_);
}

BackgroundProcess::BackgroundProcess(const std::vector<std::string>& argv,
                                     const std::string& ready_path) {
  pid_ = ::fork();
  if (pid_ == 0) {
    int in = ::open("/dev/null", O_RDONLY);
    ::dup2(in, 0);
    ::close_range(3, ~0U, 0);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  for (int i = 0; i < 1000 && !std::filesystem::exists(ready_path); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

BackgroundProcess::~BackgroundProcess() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  ::waitpid(pid_, nullptr, 0);
}

void RepoTest::SetUp() {
  repo_ = dir_ / "repo";
  auto r = Gnomon({"init", "--repo", repo_, "--chunk-size", "64", "--pack-size", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

CommandResult RepoTest::G(std::vector<std::string> args) {
  args.insert(args.begin(), {"--repo", repo_});
  return Gnomon(args);
}

std::string RepoTest::BackupId(const std::string& src) {
  auto r = G({"backup", "--json", src});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0 ? nlohmann::json::parse(r.out).at("id").get<std::string>() : "";
}

std::vector<std::string> RepoTest::Files(const std::string& sub) {
  std::vector<std::string> v;
  for (auto& e : std::filesystem::recursive_directory_iterator(repo_ + "/" + sub))
    if (e.is_regular_file()) v.push_back(e.path());
  std::sort(v.begin(), v.end());
  return v;
}

nlohmann::json RepoTest::VerifyWith(std::vector<std::string> args, int want_exit) {
  args.insert(args.begin(), {"verify", "--json"});
  auto v = G(args);
  EXPECT_EQ(v.exit_code, want_exit) << v.out << v.err;
  return nlohmann::json::parse(v.out);
}

nlohmann::json RepoTest::VerifyJson(bool read_data, int want_exit) {
  return VerifyWith(
      read_data ? std::vector<std::string>{"--read-data"} : std::vector<std::string>{}, want_exit);
}

pid_t Spawn(const std::vector<std::string>& args, const std::string& out) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  pid_t pid = -1;
  if (posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

}  // namespace gnomon::test
