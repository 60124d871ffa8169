// Writers in other processes: the requester drives a real writer program
// (test_writer_app, linking the writer library) over its Unix socket through
// the whole VSS sequence, and through every way it can go wrong: a veto, a
// writer that crashes or hangs, a requester killed while the writer is
// frozen, a stale socket, malformed and oversized messages, a peer that may
// not connect. Stamps and backup options cross the socket both ways.
#include <grp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <thread>

#include "tests/test_util.h"
#include "vss/backup_components.h"
#include "vss/offline_provider.h"
#include "vss/remote_writer.h"
#include "vss/writer_protocol.h"

namespace gnomon::vss {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;
using test::TempDir;

int ConnectTo(const std::string& path) {
  int fd = -1;
  proto::ConnectUnix(path, &fd);  // stays -1 on failure
  return fd;
}

// The writer program, running until the object dies (then SIGKILLed).
class WriterApp {
 public:
  // run_as: a uid (with the same gid) to run the program as, or 0 for
  // root; dir and log must then be writable by it.
  WriterApp(const std::string& dir, const std::string& name, const std::string& log,
            std::vector<std::string> extra = {}, uid_t run_as = 0)
      : socket_(dir + "/" + name + ".sock"), log_(log) {
    std::vector<std::string> args = {TEST_WRITER_APP_BIN, dir, name, log};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      if (run_as != 0 &&
          (::setgroups(0, nullptr) != 0 || ::setgid(run_as) != 0 || ::setuid(run_as) != 0))
        _exit(126);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      _exit(127);
    }
    // Ready once it accepts connections.
    for (auto until = Clock::now() + std::chrono::seconds(10); Clock::now() < until;) {
      int fd = ConnectTo(socket_);
      if (fd >= 0) {
        ::close(fd);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "writer app did not start listening on " << socket_;
  }
  ~WriterApp() { Kill(); }
  void Kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  bool Alive() const { return pid_ > 0 && ::kill(pid_, 0) == 0 && !Exited(); }
  // True once the process has exited (and is reaped), waiting up to
  // timeout_ms: a process closes its sockets before it becomes a zombie, so
  // its peer can see the connection drop a moment before it has exited.
  bool Exited(int timeout_ms = 0) const {
    if (pid_ <= 0) return true;
    for (auto until = Clock::now() + std::chrono::milliseconds(timeout_ms);;) {
      int st;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return true;
      }
      if (Clock::now() >= until) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  std::vector<std::string> Events() const {
    std::vector<std::string> v;
    std::ifstream f(log_);
    for (std::string line; std::getline(f, line);) v.push_back(line);
    return v;
  }
  // Waits until `event` is logged; false after timeout_ms.
  bool WaitFor(const std::string& event, int timeout_ms) const {
    for (auto until = Clock::now() + std::chrono::milliseconds(timeout_ms); Clock::now() < until;) {
      for (auto& e : Events())
        if (e == event) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }
  const std::string& socket() const { return socket_; }

 private:
  std::string socket_, log_;
  mutable pid_t pid_ = -1;
};

class RemoteWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    writers_dir_ = dir_ / "writers";
    volume_ = dir_ / "volume.img";
    test::WriteFile(volume_, test::RandomBytes(65536, 1));
    opt_.runtime_dir = dir_ / "run";
    opt_.event_timeout_ms = 5000;
  }
  std::unique_ptr<WriterApp> App(const std::string& name, std::vector<std::string> extra = {}) {
    extra.push_back("--volume");
    extra.push_back(volume_);
    return std::make_unique<WriterApp>(writers_dir_, name, dir_ / (name + ".log"), extra);
  }
  std::unique_ptr<BackupComponents> Requester(std::vector<std::string>* notes = nullptr) {
    std::vector<std::string> n;
    auto remote = DiscoverRemoteWriters(writers_dir_, 5000, notes ? notes : &n);
    std::vector<std::shared_ptr<Writer>> ws(remote.begin(), remote.end());
    return std::make_unique<BackupComponents>(
        ws, std::vector<std::shared_ptr<Provider>>{std::make_shared<OfflineProvider>()}, opt_);
  }
  // GatherWriterMetadata .. PrepareForBackup; returns PrepareForBackup's result.
  HResult Prepare(BackupComponents* bc) {
    EXPECT_EQ(bc->InitializeForBackup(), S_OK_);
    EXPECT_EQ(bc->SetBackupState(true, false, BackupType::kFull), S_OK_);
    std::shared_ptr<Async> a;
    EXPECT_EQ(bc->GatherWriterMetadata(&a), S_OK_);
    EXPECT_EQ(WaitForAsync(a), S_OK_);
    for (size_t i = 0; i < bc->GetWriterMetadataCount(); ++i) {
      const WriterMetadata* md = bc->GetWriterMetadata(i);
      for (const auto& c : md->components)
        EXPECT_EQ(bc->AddComponent(md->instance_id, md->class_id, c.type, c.logical_path, c.name),
                  S_OK_);
    }
    Guid set, snap;
    EXPECT_EQ(bc->StartSnapshotSet(&set), S_OK_);
    EXPECT_EQ(bc->AddToSnapshotSet(volume_, "", &snap), S_OK_);
    EXPECT_EQ(bc->PrepareForBackup(&a), S_OK_);
    return WaitForAsync(a);
  }
  HResult Snapshot(BackupComponents* bc) {
    std::shared_ptr<Async> a;
    HResult hr = bc->DoSnapshotSet(&a);
    return hr != S_OK_ ? hr : WaitForAsync(a);
  }
  WriterStatus Status(BackupComponents* bc, const std::string& name) {
    std::shared_ptr<Async> a;
    bc->GatherWriterStatus(&a);
    WaitForAsync(a);
    for (size_t i = 0; i < bc->GetWriterStatusCount(); ++i) {
      WriterStatus s;
      bc->GetWriterStatus(i, &s);
      if (s.name == name) return s;
    }
    ADD_FAILURE() << "no status for " << name;
    return {};
  }

  TempDir dir_;
  std::string writers_dir_, volume_;
  RequesterOptions opt_;
};

TEST_F(RemoteWriterTest, WholeSequenceCrossesTheSocketWithComponentEdits) {
  auto app = App("appwriter");
  auto bc = Requester();
  ASSERT_EQ(Prepare(bc.get()), S_OK_);
  ASSERT_EQ(bc->GetWriterMetadataCount(), 1u);
  const WriterMetadata* md = bc->GetWriterMetadata(0);
  EXPECT_EQ(md->name, "appwriter");
  ASSERT_EQ(md->components.size(), 1u);  // declared by the other process
  EXPECT_EQ(md->components[0].files.at(0).path, volume_);
  ASSERT_EQ(Snapshot(bc.get()), S_OK_) << bc->last_error();
  EXPECT_EQ(Status(bc.get(), "appwriter").state, WriterState::kWaitingForBackupComplete);
  const auto& c = bc->document().components.at(0);
  EXPECT_EQ(c.backup_metadata, "metadata from appwriter");
  EXPECT_EQ(c.backup_stamp, "stamp from appwriter for full");
  ASSERT_EQ(c.partial_files.size(), 1u);
  EXPECT_EQ(c.partial_files[0].ranges, "0:4096");
  for (auto& rc : bc->document().components)
    bc->SetBackupSucceeded(rc.instance_id, rc.class_id, rc.type, rc.logical_path, rc.name, true);
  std::shared_ptr<Async> a;
  ASSERT_EQ(bc->BackupComplete(&a), S_OK_);
  ASSERT_EQ(WaitForAsync(a), S_OK_);
  bc->Release();
  EXPECT_EQ(app->Events(), (std::vector<std::string>{
                               "Identify", "PrepareForBackup", "PrepareForSnapshot", "Freeze",
                               "Thaw", "PostSnapshot", "BackupComplete", "BackupShutdown"}));
}

TEST_F(RemoteWriterTest, VetoInFreezeFailsTheSetAndThawsTheWriter) {
  auto app = App("vetoer", {"--veto", "Freeze"});
  auto bc = Requester();
  ASSERT_EQ(Prepare(bc.get()), S_OK_);
  EXPECT_NE(Snapshot(bc.get()), S_OK_);
  WriterStatus s = Status(bc.get(), "vetoer");
  EXPECT_EQ(s.failure, VSS_E_WRITERERROR_RETRYABLE);
  EXPECT_EQ(s.message, "vetoer vetoes Freeze");
  bc->Release();
  EXPECT_TRUE(app->WaitFor("Abort", 5000));
}

class CrashTest : public RemoteWriterTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(CrashTest, WriterThatDiesIsNotRespondingAndTheBackupEndsCleanly) {
  const std::string phase = GetParam();
  auto app = App("crasher", {"--crash", phase});
  auto bc = Requester();
  const auto t0 = Clock::now();
  HResult prepared = Prepare(bc.get());
  if (phase != "PrepareForBackup") {
    ASSERT_EQ(prepared, S_OK_);
    HResult snap = Snapshot(bc.get());
    // A writer lost in PrepareForSnapshot, Freeze or Thaw fails the set, as
    // a veto there does (a Thaw that fails means writes may have reached the
    // snapshot); lost in PostSnapshot, the snapshot stands and the status
    // says who.
    if (phase == "PostSnapshot")
      EXPECT_EQ(snap, S_OK_) << bc->last_error();
    else
      EXPECT_NE(snap, S_OK_);
  }
  WriterStatus s = Status(bc.get(), "crasher");
  EXPECT_EQ(s.failure, VSS_E_WRITER_NOT_RESPONDING) << HResultName(s.failure) << " " << s.message;
  EXPECT_NE(s.message.find("closed its connection during " + phase), std::string::npos)
      << s.message;
  bc->Release();
  // Not the event deadline: the dropped connection is noticed at once.
  EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(opt_.event_timeout_ms));
  EXPECT_TRUE(app->Exited(5000));
}

INSTANTIATE_TEST_SUITE_P(Phases, CrashTest,
                         ::testing::Values("PrepareForBackup", "PrepareForSnapshot", "Freeze",
                                           "Thaw", "PostSnapshot"));

TEST_F(RemoteWriterTest, WriterThatHangsTimesOut) {
  opt_.event_timeout_ms = 800;
  auto app = App("hanger", {"--hang", "PrepareForSnapshot"});
  auto bc = Requester();
  ASSERT_EQ(Prepare(bc.get()), S_OK_);
  EXPECT_NE(Snapshot(bc.get()), S_OK_);
  WriterStatus s = Status(bc.get(), "hanger");
  EXPECT_EQ(s.failure, VSS_E_WRITER_NOT_RESPONDING);
  bc->Release();
  EXPECT_TRUE(app->Alive());  // hung, not dead; the requester went on without it
}

// Runs a requester in a child process until the writer is frozen, with a
// provider commit that takes 30 s, and returns the child's pid.
pid_t FrozenRequester(const std::string& writers_dir, const std::string& volume,
                      const std::string& runtime_dir) {
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  class SlowProvider : public OfflineProvider {
   public:
    HResult CommitSnapshots(const Guid& set) override {
      std::this_thread::sleep_for(std::chrono::seconds(30));
      return OfflineProvider::CommitSnapshots(set);
    }
  };
  RequesterOptions o;
  o.runtime_dir = runtime_dir;
  o.hold_window_ms = 60000;
  std::vector<std::string> notes;
  auto remote = DiscoverRemoteWriters(writers_dir, 5000, &notes);
  std::vector<std::shared_ptr<Writer>> ws(remote.begin(), remote.end());
  BackupComponents bc(ws, {std::make_shared<SlowProvider>()}, o);
  bc.InitializeForBackup();
  bc.SetBackupState(true, false, BackupType::kFull);
  std::shared_ptr<Async> a;
  bc.GatherWriterMetadata(&a);
  WaitForAsync(a);
  for (size_t i = 0; i < bc.GetWriterMetadataCount(); ++i) {
    const WriterMetadata* md = bc.GetWriterMetadata(i);
    for (const auto& c : md->components)
      bc.AddComponent(md->instance_id, md->class_id, c.type, c.logical_path, c.name);
  }
  Guid set, snap;
  bc.StartSnapshotSet(&set);
  bc.AddToSnapshotSet(volume, "", &snap);
  bc.PrepareForBackup(&a);
  WaitForAsync(a);
  bc.DoSnapshotSet(&a);
  WaitForAsync(a);
  _exit(0);
}

TEST_F(RemoteWriterTest, RequesterKilledWhileFrozenThawsTheWriterAtOnce) {
  auto app = App("frozen");  // freeze window: 60 s
  pid_t requester = FrozenRequester(writers_dir_, volume_, opt_.runtime_dir);
  ASSERT_TRUE(app->WaitFor("Freeze", 10000));
  ::kill(requester, SIGKILL);
  const auto killed = Clock::now();
  ::waitpid(requester, nullptr, 0);
  // The dropped connection thaws it, long before the 60 s window would.
  ASSERT_TRUE(app->WaitFor("Abort", 10000));
  EXPECT_LT(Clock::now() - killed, std::chrono::seconds(10));
  EXPECT_FALSE(app->WaitFor("Thaw", 0));
}

TEST_F(RemoteWriterTest, StoppedRequesterThawsTheWriterWhenItsWindowEnds) {
  auto app = App("windowed", {"--freeze-ms", "1500"});
  pid_t requester = FrozenRequester(writers_dir_, volume_, opt_.runtime_dir);
  ASSERT_TRUE(app->WaitFor("Freeze", 10000));
  // Stopped, its connection stays open: only the writer's own freeze window
  // can thaw it.
  ::kill(requester, SIGSTOP);
  const auto frozen = Clock::now();
  ASSERT_TRUE(app->WaitFor("Abort", 20000));
  EXPECT_GE(Clock::now() - frozen, std::chrono::milliseconds(1000));
  ::kill(requester, SIGKILL);
  ::waitpid(requester, nullptr, 0);
}

TEST_F(RemoteWriterTest, StaleSocketIsSkippedWithAReasonAndReplacedByTheNextWriter) {
  {
    auto app = App("gone");
    app->Kill();  // SIGKILL: its socket file stays behind
  }
  ASSERT_TRUE(std::filesystem::exists(writers_dir_ + "/gone.sock"));
  std::vector<std::string> notes;
  EXPECT_TRUE(DiscoverRemoteWriters(writers_dir_, 2000, &notes).empty());
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("gone.sock: no writer is listening"), std::string::npos) << notes[0];
  // A new writer of the same name takes the socket over.
  auto again = App("gone");
  notes.clear();
  EXPECT_EQ(DiscoverRemoteWriters(writers_dir_, 2000, &notes).size(), 1u);
  EXPECT_TRUE(notes.empty());
}

TEST_F(RemoteWriterTest, MalformedAndOversizedMessagesAreRejectedAndTheWriterSurvives) {
  auto app = App("sturdy");
  gnomon::Status err;
  auto expect_rejected = [&](const std::string& raw, const std::string& what) {
    int fd = ConnectTo(app->socket());
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::send(fd, raw.data(), raw.size(), MSG_NOSIGNAL), static_cast<ssize_t>(raw.size()));
    json reply;
    ASSERT_EQ(proto::Recv(fd, 5000, &reply, &err), proto::RecvResult::kOk)
        << what << ": " << err.message();
    EXPECT_EQ(reply.value("type", ""), "error") << what << ": " << reply.dump();
    EXPECT_NE(reply.value("message", "").find(what), std::string::npos) << reply.dump();
    // And the connection is closed.
    EXPECT_EQ(proto::Recv(fd, 5000, &reply, &err), proto::RecvResult::kClosed) << what;
    ::close(fd);
  };
  auto frame = [](const std::string& body) {
    uint32_t n = static_cast<uint32_t>(body.size());
    return std::string(reinterpret_cast<const char*>(&n), 4) + body;
  };
  expect_rejected(std::string("\xff\xff\xff\x7f", 4) + "xx", "outside 1..");  // 2 GiB claimed
  expect_rejected(frame("this is not json"), "expected hello");
  expect_rejected(frame(R"({"type":"hello","version":99})"), "version 99 is not supported");
  // Nested 200,000 deep: parsing it is fine, but dump() and the destructor
  // would recurse through it and overflow the stack.
  expect_rejected(frame(std::string(200000, '[') + std::string(200000, ']')),
                  "nesting deeper than 64");
  {
    // A valid hello, then an event missing its session.
    int fd = ConnectTo(app->socket());
    json reply;
    ASSERT_TRUE(proto::Send(fd, {{"type", "hello"}, {"version", 1}}).ok());
    ASSERT_EQ(proto::Recv(fd, 5000, &reply, &err), proto::RecvResult::kOk);
    ASSERT_TRUE(proto::Send(fd, {{"type", "event"}, {"seq", 1}, {"event", "Freeze"}}).ok());
    ASSERT_EQ(proto::Recv(fd, 5000, &reply, &err), proto::RecvResult::kOk);
    EXPECT_EQ(reply.value("type", ""), "error");
    EXPECT_NE(reply.value("message", "").find("malformed event"), std::string::npos);
    ::close(fd);
  }
  {
    // An event whose component has a class id that is no GUID: refused
    // like any malformed event (it used to escape the server's catch and
    // end the writer process).
    int fd = ConnectTo(app->socket());
    json reply;
    ASSERT_TRUE(proto::Send(fd, {{"type", "hello"}, {"version", 1}}).ok());
    ASSERT_EQ(proto::Recv(fd, 5000, &reply, &err), proto::RecvResult::kOk);
    const json event{{"type", "event"},
                     {"seq", 1},
                     {"event", "PrepareForBackup"},
                     {"session", proto::SessionToJson(SessionView{}, false)},
                     {"components", json::array({{{"class_id", "not-a-guid"}}})}};
    ASSERT_TRUE(proto::Send(fd, event).ok());
    ASSERT_EQ(proto::Recv(fd, 5000, &reply, &err), proto::RecvResult::kOk);
    EXPECT_EQ(reply.value("type", ""), "error") << reply.dump();
    EXPECT_NE(reply.value("message", "").find("bad guid"), std::string::npos) << reply.dump();
    // Closed once the server let go of the writer, so the backup below
    // does not find it taken.
    EXPECT_EQ(proto::Recv(fd, 5000, &reply, &err), proto::RecvResult::kClosed);
    ::close(fd);
  }
  // The writer is still there and serves a real backup.
  EXPECT_TRUE(app->Alive());
  auto bc = Requester();
  ASSERT_EQ(Prepare(bc.get()), S_OK_);
  EXPECT_EQ(Snapshot(bc.get()), S_OK_) << bc->last_error();
  bc->Release();
  // The malformed Freeze never reached the application's handler.
  auto events = app->Events();
  EXPECT_EQ(std::count(events.begin(), events.end(), "Freeze"), 1);
}

// Connects to socket as uid:gid with the supplementary groups given, from
// a child process: "connected" or the refusal's message.
std::string ConnectAs(const std::string& socket, uid_t uid, gid_t gid, std::vector<gid_t> groups) {
  int pipefd[2];
  if (::pipe(pipefd) != 0) return "pipe failed";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipefd[0]);
    std::string out = "setid-failed";
    if (::setgroups(groups.size(), groups.data()) == 0 && ::setgid(gid) == 0 &&
        ::setuid(uid) == 0) {
      std::shared_ptr<RemoteWriter> w;
      gnomon::Status s = RemoteWriter::Connect(socket, 5000, &w);
      out = s.ok() ? "connected" : s.message();
    }
    ::write(pipefd[1], out.data(), out.size());
    _exit(0);
  }
  ::close(pipefd[1]);
  char buf[512] = {};
  ssize_t n = ::read(pipefd[0], buf, sizeof buf - 1);
  ::close(pipefd[0]);
  ::waitpid(pid, nullptr, 0);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "no answer";
}

// The peer-credential rule (SO_PEERCRED), case by case: root, the writer's
// own user and a peer whose primary group is the writer's group may
// connect; anyone else is refused, even with that group as a supplementary
// one (the kernel reports only the primary group).
TEST_F(RemoteWriterTest, OnlyRootTheOwnerAndTheOwnerGroupMayConnect) {
  GNOMON_SKIP_IF(test::RootSkipReason());
  // The directories must be reachable by the other users for a refusal to
  // be the writer's, not the file system's.
  std::filesystem::create_directories(writers_dir_);
  ::chmod(writers_dir_.c_str(), 0777);
  ::chmod(dir_.path().c_str(), 0777);
  const uid_t nobody = 65534, daemon = 1;
  struct Case {
    const char* who;
    uid_t uid;
    gid_t gid;
    std::vector<gid_t> groups;
    bool allowed;
  };
  // A writer running as root (group 0).
  {
    auto app = App("asroot");
    ::chmod(app->socket().c_str(), 0777);
    for (const Case& c :
         std::vector<Case>{{"root", 0, 0, {}, true},
                           {"another user", nobody, nobody, {}, false},
                           {"the writer's group", nobody, 0, {}, true},
                           {"the group only as supplementary", nobody, nobody, {0}, false}}) {
      const std::string r = ConnectAs(app->socket(), c.uid, c.gid, c.groups);
      if (c.allowed)
        EXPECT_EQ(r, "connected") << "writer as root, peer " << c.who;
      else
        EXPECT_NE(r.find("permission denied"), std::string::npos) << c.who << ": " << r;
    }
  }
  // A writer running as an ordinary user (nobody:nogroup).
  {
    const std::string log = dir_ / "asuser.log";
    std::ofstream(log).close();
    ::chown(log.c_str(), nobody, nobody);
    WriterApp app(writers_dir_, "asuser", log, {"--volume", volume_}, nobody);
    ::chmod(app.socket().c_str(), 0777);
    for (const Case& c : std::vector<Case>{{"root", 0, 0, {}, true},
                                           {"the writer's own user", nobody, nobody, {}, true},
                                           {"another user", daemon, daemon, {}, false},
                                           {"the writer's group", daemon, nobody, {}, true}}) {
      const std::string r = ConnectAs(app.socket(), c.uid, c.gid, c.groups);
      if (c.allowed)
        EXPECT_EQ(r, "connected") << "writer as nobody, peer " << c.who;
      else
        EXPECT_NE(r.find("permission denied"), std::string::npos) << c.who << ": " << r;
    }
  }
}

TEST_F(RemoteWriterTest, SecondBackupIsRefusedWhileTheFirstHoldsTheWriter) {
  auto app = App("shared");
  auto first = Requester();
  ASSERT_EQ(Prepare(first.get()), S_OK_);
  // On this machine: the snapshot set in creation is the first's.
  auto second = Requester();
  ASSERT_EQ(second->InitializeForBackup(), S_OK_);
  std::shared_ptr<Async> a;
  ASSERT_EQ(second->GatherWriterMetadata(&a), S_OK_);
  ASSERT_EQ(WaitForAsync(a), S_OK_);
  Guid set;
  EXPECT_EQ(second->StartSnapshotSet(&set), VSS_E_SNAPSHOT_SET_IN_PROGRESS);
  // A requester that does not share the lock (another runtime directory)
  // still finds the writer taken.
  opt_.runtime_dir = dir_ / "run2";
  auto third = Requester();
  EXPECT_EQ(Prepare(third.get()), S_OK_);
  WriterStatus s = Status(third.get(), "shared");
  EXPECT_EQ(s.failure, VSS_E_WRITERERROR_RETRYABLE);
  EXPECT_NE(s.message.find("another backup"), std::string::npos) << s.message;
  third->Release();
  second->Release();
  // The first goes on undisturbed.
  EXPECT_EQ(Snapshot(first.get()), S_OK_) << first->last_error();
  first->Release();
}

TEST_F(RemoteWriterTest, AWriterThatAnswersGarbageIsLeftOutWithoutHarm) {
  // A fake writer: a proper hello, then an answer claiming to be 2 GiB long.
  std::filesystem::create_directories(writers_dir_);
  sockaddr_un addr;
  ASSERT_TRUE(proto::UnixAddress(writers_dir_ + "/evil.sock", &addr).ok());
  int lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(lfd, 4), 0);
  std::thread fake([lfd] {
    int fd = ::accept(lfd, nullptr, nullptr);
    gnomon::Status e;
    json msg;
    proto::Recv(fd, 5000, &msg, &e);
    proto::Send(fd, {{"type", "hello"},
                     {"version", 1},
                     {"writer",
                      {{"class_id", Guid::Random().ToString()},
                       {"name", "evil"},
                       {"usage", 2},
                       {"source", 2},
                       {"level", 3},
                       {"freeze_timeout_ms", 60000}}}});
    proto::Recv(fd, 5000, &msg, &e);  // Identify
    ::send(fd, "\xff\xff\xff\x7f{", 5, MSG_NOSIGNAL);
    proto::Recv(fd, 5000, &msg, &e);  // until the requester hangs up
    ::close(fd);
  });
  auto app = App("honest");
  auto bc = Requester();
  EXPECT_EQ(Prepare(bc.get()), S_OK_);
  // The garbling writer is absent, as a writer that fails Identify is; the
  // honest one is there and the backup works.
  ASSERT_EQ(bc->GetWriterMetadataCount(), 1u);
  EXPECT_EQ(bc->GetWriterMetadata(0)->name, "honest");
  EXPECT_EQ(Snapshot(bc.get()), S_OK_) << bc->last_error();
  bc->Release();
  bc.reset();
  fake.join();
  ::close(lfd);
}

// The sequence up to PrepareForBackup for a backup of `type` that hands
// each component `options` and `previous` (if not empty), as gnomon backup
// does for an incremental with --writer-option.
HResult PrepareWith(BackupComponents* bc, const std::string& volume, BackupType type,
                    const std::string& options, const std::string& previous) {
  EXPECT_EQ(bc->InitializeForBackup(), S_OK_);
  EXPECT_EQ(bc->SetBackupState(true, false, type), S_OK_);
  std::shared_ptr<Async> a;
  EXPECT_EQ(bc->GatherWriterMetadata(&a), S_OK_);
  EXPECT_EQ(WaitForAsync(a), S_OK_);
  std::vector<std::pair<const WriterMetadata*, ComponentInfo>> comps;
  for (size_t i = 0; i < bc->GetWriterMetadataCount(); ++i) {
    const WriterMetadata* md = bc->GetWriterMetadata(i);
    for (const auto& c : md->components) {
      EXPECT_EQ(bc->AddComponent(md->instance_id, md->class_id, c.type, c.logical_path, c.name),
                S_OK_);
      comps.emplace_back(md, c);
    }
  }
  Guid set, snap;
  EXPECT_EQ(bc->StartSnapshotSet(&set), S_OK_);
  EXPECT_EQ(bc->AddToSnapshotSet(volume, "", &snap), S_OK_);
  for (const auto& [md, c] : comps) {
    if (!options.empty()) {
      EXPECT_EQ(bc->SetBackupOptions(md->class_id, c.type, c.logical_path, c.name, options), S_OK_);
    }
    if (!previous.empty()) {
      EXPECT_EQ(bc->SetPreviousBackupStamp(md->class_id, c.type, c.logical_path, c.name, previous),
                S_OK_);
    }
  }
  EXPECT_EQ(bc->PrepareForBackup(&a), S_OK_);
  return WaitForAsync(a);
}

// What the writer program said it received in PrepareForBackup (--report).
std::vector<json> Reports(const std::string& path) {
  std::vector<json> v;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);) v.push_back(json::parse(line));
  return v;
}

TEST_F(RemoteWriterTest, PreviousStampAndOptionsCrossTheSocketAndTheNewStampComesBack) {
  const std::string report = dir_ / "report";
  auto app = App("stamper", {"--options", "mode", "--report", report});
  auto bc = Requester();
  ASSERT_EQ(PrepareWith(bc.get(), volume_, BackupType::kIncremental, "mode=fast\n",
                        "stamp from stamper for full"),
            S_OK_);
  ASSERT_EQ(Snapshot(bc.get()), S_OK_) << bc->last_error();
  auto got = Reports(report);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["type"], "incremental");
  EXPECT_EQ(got[0]["component"], "app\\db");
  EXPECT_EQ(got[0]["previous_stamp"], "stamp from stamper for full");
  EXPECT_EQ(got[0]["options"], "mode=fast\n");
  const auto& c = bc->document().components.at(0);
  EXPECT_EQ(c.previous_backup_stamp, "stamp from stamper for full");
  EXPECT_EQ(c.backup_stamp, "stamp from stamper for incremental");
  EXPECT_EQ(Status(bc.get(), "stamper").message, "");
  bc->Release();
}

TEST_F(RemoteWriterTest, AWriterWithoutTimestampedKeepsNoStampAndItsStatusSaysWhy) {
  auto app = App("plain", {"--schema", "0"});
  auto bc = Requester();
  ASSERT_EQ(Prepare(bc.get()), S_OK_);
  EXPECT_EQ(bc->GetWriterMetadata(0)->backup_schema, 0u);
  ASSERT_EQ(Snapshot(bc.get()), S_OK_) << bc->last_error();
  const auto& c = bc->document().components.at(0);
  EXPECT_EQ(c.backup_stamp, "") << "the writer set one, but does not declare VSS_BS_TIMESTAMPED";
  EXPECT_EQ(c.backup_metadata, "metadata from plain");  // its other edits stand
  ASSERT_EQ(c.partial_files.size(), 1u);
  WriterStatus s = Status(bc.get(), "plain");
  EXPECT_EQ(s.failure, S_OK_);
  EXPECT_NE(s.message.find("does not declare VSS_BS_TIMESTAMPED"), std::string::npos) << s.message;
  bc->Release();
}

TEST_F(RemoteWriterTest, AnOptionTheWriterDoesNotKnowFailsItsPrepareForBackup) {
  const std::string report = dir_ / "report";
  auto app = App("strict", {"--options", "mode", "--report", report});
  auto bc = Requester();
  ASSERT_EQ(PrepareWith(bc.get(), volume_, BackupType::kFull, "mode=fast\ncolour=blue\n", ""),
            S_OK_);
  WriterStatus s = Status(bc.get(), "strict");
  EXPECT_EQ(s.state, WriterState::kFailedAtPrepareBackup);
  EXPECT_EQ(s.failure, VSS_E_WRITERERROR_NONRETRYABLE);
  EXPECT_NE(s.message.find("unknown backup option 'colour'"), std::string::npos) << s.message;
  EXPECT_NE(s.message.find("understands: mode=TEXT"), std::string::npos) << s.message;
  ASSERT_EQ(Reports(report).size(), 1u);
  EXPECT_EQ(Reports(report)[0]["options"], "mode=fast\ncolour=blue\n");
  bc->Release();
}

// Work a writer begins in PrepareForBackup may run on past it, but must end
// before PrepareForSnapshot returns: a writer still preparing is failed
// there, and nothing freezes.
TEST_F(RemoteWriterTest, PreparationStillRunningAfterPrepareForSnapshotFailsTheSetBeforeFreeze) {
  auto app = App("eager", {"--prepare-ms", "2000", "--prepare-finish", "no"});
  auto bc = Requester();
  ASSERT_EQ(Prepare(bc.get()), S_OK_);
  EXPECT_NE(Snapshot(bc.get()), S_OK_);
  WriterStatus s = Status(bc.get(), "eager");
  EXPECT_EQ(s.state, WriterState::kFailedAtPrepareSnapshot);
  EXPECT_EQ(s.failure, VSS_E_WRITERERROR_RETRYABLE);
  EXPECT_NE(s.message.find("began in PrepareForBackup was still running"), std::string::npos)
      << s.message;
  bc->Release();
  auto ev = app->Events();
  EXPECT_EQ(std::count(ev.begin(), ev.end(), "Freeze"), 0);
  EXPECT_EQ(std::count(ev.begin(), ev.end(), "PreparationEnded"), 0) << "the check came too late";
}

TEST_F(RemoteWriterTest, PreparationThatEndsInPrepareForSnapshotLetsTheSetGoOn) {
  auto app = App("patient", {"--prepare-ms", "300"});
  auto bc = Requester();
  ASSERT_EQ(Prepare(bc.get()), S_OK_);
  ASSERT_EQ(Snapshot(bc.get()), S_OK_) << bc->last_error();
  EXPECT_EQ(Status(bc.get(), "patient").state, WriterState::kWaitingForBackupComplete);
  bc->Release();
  auto ev = app->Events();
  ASSERT_GE(ev.size(), 5u);
  EXPECT_EQ(std::vector<std::string>(ev.begin(), ev.begin() + 5),
            (std::vector<std::string>{"Identify", "PrepareForBackup", "PreparationEnded",
                                      "PrepareForSnapshot", "Freeze"}));
}

TEST_F(RemoteWriterTest, AnErrorOfThePreparationIsTheWritersFailureAtPrepareForSnapshot) {
  auto app = App("failing", {"--prepare-ms", "0", "--prepare-fail", "checkpoint: disk full"});
  auto bc = Requester();
  ASSERT_EQ(Prepare(bc.get()), S_OK_);
  EXPECT_NE(Snapshot(bc.get()), S_OK_);
  WriterStatus s = Status(bc.get(), "failing");
  EXPECT_EQ(s.state, WriterState::kFailedAtPrepareSnapshot);
  EXPECT_EQ(s.message, "checkpoint: disk full");
  bc->Release();
  auto ev = app->Events();
  EXPECT_EQ(std::count(ev.begin(), ev.end(), "Freeze"), 0);
}

}  // namespace
}  // namespace gnomon::vss
