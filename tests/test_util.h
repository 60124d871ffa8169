// Helpers shared by the test suites: scratch directories, volume contents,
// running the real gnomon binary, and root/loop-device checks.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace gnomon::test {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Deterministic content generators (seeded) for volumes.
std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed);
std::vector<uint8_t> TextLikeBytes(size_t n, uint64_t seed);  // compressible, not repetitive

void WriteFile(const std::string& path, const std::vector<uint8_t>& data);
std::vector<uint8_t> ReadFile(const std::string& path);
bool FilesEqual(const std::string& a, const std::string& b);  // streams, any size
void FlipByte(const std::string& path, uint64_t offset);
// Damages the first chunk of a pack: its stored bytes start at offset 0, and
// every chunk the tests store is longer than 100 bytes.
inline void DamageFirstChunk(const std::string& pack) { FlipByte(pack, 100); }
void TruncateFile(const std::string& path, uint64_t size);

struct CommandResult {
  int exit_code = -1;  // or 128+signal
  std::string out, err;
};
// Runs argv with the environment plus env (NAME=VALUE) and no stdin.
CommandResult Run(const std::vector<std::string>& argv, const std::vector<std::string>& env = {});
// Runs a shell command line (for set-up: mkfs, mount, losetup).
CommandResult Sh(const std::string& cmd);
// Runs the gnomon binary built alongside the tests.
CommandResult Gnomon(const std::vector<std::string>& args);
std::string GnomonBinary();
// Starts argv (searched in PATH) in the background with no stdin, its
// stdout and stderr appended to out, none of the test's other open files;
// -1 if it cannot be started. The caller reaps it.
pid_t Spawn(const std::vector<std::string>& argv, const std::string& out = "/dev/null");

// Points GNOMON_RUNTIME_DIR, GNOMON_STATE_DIR, GNOMON_HOOKS_DIR and
// GNOMON_WRITER_DIR at a scratch directory for the life of the object, so
// tests never share snapshot-set locks, state or writers.
class IsolatedState {
 public:
  IsolatedState();
  std::string runtime_dir() const { return dir_ / "run"; }
  std::string state_dir() const { return dir_ / "state"; }
  std::string hooks_dir() const { return dir_ / "hooks"; }         // script writers
  std::string writer_dir() const { return dir_ / "run/writers"; }  // writer sockets

 private:
  TempDir dir_;
};

// A filesystem with reflinks on a loop device, mounted at dir/<kind> for the
// life of the object: kind "xfs" (reflink=1) or "btrfs" (root only; check
// RootSkipReason and SkipReason first).
class ReflinkFs {
 public:
  ReflinkFs(const TempDir& dir, const std::string& size = "1G", const std::string& kind = "xfs");
  ~ReflinkFs();
  // Why `kind` cannot be made here (its mkfs is missing), or "".
  static std::string SkipReason(const std::string& kind);
  bool ok() const { return mounted_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool mounted_ = false;
};

// A test that cannot run here skips, saying why; under CI
// (GNOMON_TEST_REQUIRE_ALL=1) it fails instead, so nothing passes by skipping.
bool RequireAll();
#define GNOMON_SKIP_IF(why_expr)                                               \
  do {                                                                         \
    if (std::string _why = (why_expr); !_why.empty()) {                        \
      if (::gnomon::test::RequireAll()) FAIL() << "cannot run here: " << _why; \
      GTEST_SKIP() << _why;                                                    \
    }                                                                          \
  } while (0)

bool IsRoot();
// Why root-only tests cannot run here, or "" if they can.
std::string RootSkipReason();
// A loop device over a backing file, detached on destruction.
class LoopDevice {
 public:
  LoopDevice(const std::string& backing_file);
  ~LoopDevice();
  const std::string& device() const { return dev_; }

 private:
  std::string dev_;
};

// A program run in the background for the life of the object (SIGTERM,
// then reaped, on destruction), with no stdin and none of the test's open
// files; ready once ready_path exists (waits up to 10 s).
class BackgroundProcess {
 public:
  BackgroundProcess(const std::vector<std::string>& argv, const std::string& ready_path);
  ~BackgroundProcess();
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;

 private:
  int pid_ = -1;
};

// A fresh repository (64 KiB chunks, 1 MiB packs) for tests that drive the
// gnomon binary, with isolated writer state.
class RepoTest : public ::testing::Test {
 protected:
  void SetUp() override;
  // gnomon --repo REPO args...
  CommandResult G(std::vector<std::string> args);
  // Backs src up (--json) and returns the new id, or "" after a failure.
  std::string BackupId(const std::string& src);
  // Regular files under REPO/sub, sorted ("" for all).
  std::vector<std::string> Files(const std::string& sub);
  // gnomon verify --json args...: expects want_exit, returns the report.
  nlohmann::json VerifyWith(std::vector<std::string> args, int want_exit);
  // ... with --read-data or without.
  nlohmann::json VerifyJson(bool read_data, int want_exit);

  IsolatedState state_;
  TempDir dir_;
  std::string repo_;
};

}  // namespace gnomon::test
