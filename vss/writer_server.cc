#include "vss/writer_server.h"

#include <fmt/format.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "vss/writer_call.h"

namespace gnomon::vss {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

using E = WriterEvent;

std::string SafeName(const std::string& name) {
  std::string s;
  for (char ch : name) s += std::isalnum(static_cast<unsigned char>(ch)) ? std::tolower(ch) : '-';
  return s.empty() ? "writer" : s;
}

}  // namespace

struct WriterServer::Connection {
  int fd = -1;
  std::thread thread;
  std::atomic<bool> done{false};
  enum class Held { kNone, kPrepared, kFrozen } held = Held::kNone;
  Clock::time_point freeze_deadline;
  bool timed_out = false;  // the freeze window ran out and the writer thawed itself
};

WriterServer::WriterServer(std::shared_ptr<Writer> writer, WriterServerOptions opt)
    : writer_(std::move(writer)), opt_(std::move(opt)) {}

WriterServer::~WriterServer() { Stop(); }

Status WriterServer::Start() {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC);
  if (wake_fd_ < 0) return Status::FromErrno("eventfd", errno);
  std::error_code ec;
  std::filesystem::create_directories(opt_.dir, ec);
  path_ = opt_.dir + "/" +
          (opt_.socket_name.empty() ? SafeName(writer_->name()) + ".sock" : opt_.socket_name);
  sockaddr_un addr;
  GNOMON_RETURN_IF_ERROR(proto::UnixAddress(path_, &addr));  // the name must fit
  // A socket file nobody listens on is a dead writer's: replace it. One
  // somebody listens on is a live writer's: never steal it.
  if (int probe = -1; proto::ConnectUnix(path_, &probe).ok()) {
    ::close(probe);
    return Status::Exists(path_ + ": another writer is listening there");
  }
  // Listen under a temporary name and rename into place, so the socket a
  // requester finds is always one it can connect to (never bound but not
  // yet listening). The temporary name lives in a private directory
  // (mkdtemp, 0700): chmod and chown, which follow links, can only ever
  // reach our own socket there.
  std::string private_dir = opt_.dir + "/.tmp-XXXXXX";
  if (!::mkdtemp(private_dir.data())) return Status::FromErrno(opt_.dir, errno);
  const std::string tmp = private_dir + "/sock";
  sockaddr_un tmp_addr;
  if (Status s = proto::UnixAddress(tmp, &tmp_addr); !s.ok()) {
    ::rmdir(private_dir.c_str());
    return s;
  }
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0 ||
      ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&tmp_addr), sizeof tmp_addr) != 0 ||
      ::listen(listen_fd_, 16) != 0 ||
      // The file's mode lets the owner group connect; the peer check below
      // is what actually decides.
      ::chmod(tmp.c_str(), 0660) != 0 ||
      (opt_.group != static_cast<gid_t>(-1) &&
       ::chown(tmp.c_str(), static_cast<uid_t>(-1), opt_.group) != 0) ||
      ::rename(tmp.c_str(), path_.c_str()) != 0) {
    Status s = Status::FromErrno(path_, errno);
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
    ::unlink(tmp.c_str());
    ::rmdir(private_dir.c_str());
    return s;
  }
  ::rmdir(private_dir.c_str());
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  return Status::OK();
}

void WriterServer::Stop() {
  if (stopping_.exchange(true)) return;
  if (wake_fd_ >= 0) {
    const uint64_t one = 1;
    ssize_t n = ::write(wake_fd_, &one, sizeof one);  // wakes AcceptLoop
    (void)n;
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  if (wake_fd_ >= 0) ::close(wake_fd_);
  wake_fd_ = -1;
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
  std::vector<std::shared_ptr<Connection>> conns;
  {
    std::lock_guard<std::mutex> g(mu_);
    conns.swap(conns_);
  }
  for (auto& c : conns) ::shutdown(c->fd, SHUT_RDWR);
  for (auto& c : conns)
    if (c->thread.joinable()) c->thread.join();
  if (!path_.empty()) ::unlink(path_.c_str());
}

void WriterServer::AcceptLoop() {
  while (!stopping_) {
    // No timeout: Stop() wakes this through wake_fd_.
    pollfd pfd[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (::poll(pfd, 2, -1) <= 0 || pfd[0].revents == 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    auto c = std::make_shared<Connection>();
    c->fd = fd;
    std::lock_guard<std::mutex> g(mu_);
    // Reap finished connections.
    for (auto it = conns_.begin(); it != conns_.end();) {
      if ((*it)->done) {
        (*it)->thread.join();
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
    conns_.push_back(c);
    c->thread = std::thread([this, c] { Serve(c); });
  }
}

void WriterServer::AbortIfHeld(Connection* c, const std::string& why) {
  if (c->held == Connection::Held::kNone) return;
  // The application's operator should see why its writer aborted by itself.
  // fputs, not fmt::print: a closed stderr must not throw on the way to
  // the abort (fmt::print throws when it cannot write).
  std::fputs(fmt::format("writer {}: {} while {}; aborting\n", writer_->name(), why,
                         c->held == Connection::Held::kFrozen ? "frozen" : "prepared")
                 .c_str(),
             stderr);
  std::lock_guard<std::mutex> h(handler_mu_);
  // If the application's own abort fails or throws, there is nothing more
  // to do.
  CallHandler(*writer_, E::kAbort, nullptr, {});
  c->held = Connection::Held::kNone;
}

void WriterServer::Serve(std::shared_ptr<Connection> c) {
  if (Admit(c.get())) {
    ServeEvents(c.get());
    AbortIfHeld(c.get(), "the writer is stopping");
  }
  {
    std::lock_guard<std::mutex> g(mu_);
    if (owner_ == c.get()) owner_ = nullptr;
  }
  ::close(c->fd);
  c->done = true;
}

bool WriterServer::Admit(Connection* c) {
  // Root, this process's user, and the socket's group only.
  uid_t uid;
  gid_t gid;
  pid_t pid;
  const gid_t group = opt_.group != static_cast<gid_t>(-1) ? opt_.group : ::getegid();
  if (!proto::PeerCredentials(c->fd, &uid, &gid, &pid) ||
      !(uid == 0 || uid == ::geteuid() || gid == group)) {
    proto::Send(c->fd,
                {{"type", "error"},
                 {"message", "permission denied: only root, uid " + std::to_string(::geteuid()) +
                                 " and gid " + std::to_string(group) + " may connect"}});
    return false;
  }
  json hello;
  Status err;
  if (proto::Recv(c->fd, opt_.hello_timeout_ms, &hello, &err) != proto::RecvResult::kOk ||
      hello.value("type", "") != "hello" || !hello.contains("version") ||
      !hello["version"].is_number_integer()) {
    proto::Send(c->fd, {{"type", "error"}, {"message", "expected hello: " + err.message()}});
    return false;
  }
  if (hello["version"].get<int>() != proto::kVersion) {
    proto::Send(c->fd, {{"type", "error"},
                        {"message", "protocol version " + hello["version"].dump() +
                                        " is not supported (this writer speaks " +
                                        std::to_string(proto::kVersion) + ")"}});
    return false;
  }
  const Writer& w = *writer_;
  proto::Send(c->fd, {{"type", "hello"},
                      {"version", proto::kVersion},
                      {"writer",
                       {{"class_id", w.class_id().ToString()},
                        {"instance_id", w.instance_id().ToString()},
                        {"name", w.name()},
                        {"instance_name", w.instance_name()},
                        {"usage", static_cast<int>(w.usage())},
                        {"source", static_cast<int>(w.source())},
                        {"level", static_cast<int>(w.level())},
                        {"freeze_timeout_ms", w.freeze_timeout_ms()},
                        {"pid", ::getpid()}}}});
  return true;
}

void WriterServer::ServeEvents(Connection* c) {
  while (!stopping_) {
    int timeout = -1;
    if (c->held != Connection::Held::kNone) {
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(c->freeze_deadline - Clock::now());
      timeout = std::max<int>(0, static_cast<int>(left.count()));
    }
    json msg;
    Status err;
    proto::RecvResult r = proto::Recv(c->fd, timeout, &msg, &err);
    if (r == proto::RecvResult::kTimeout) {
      // The window ran out with no Thaw (or, prepared, with no Freeze): a
      // requester that is stopped or hung must not hold the application
      // for ever. Thaw now, and say so when the requester does send Thaw.
      AbortIfHeld(c, "the freeze window ran out");
      c->timed_out = true;
      continue;
    }
    if (r != proto::RecvResult::kOk) {
      if (r == proto::RecvResult::kError)
        proto::Send(c->fd, {{"type", "error"}, {"message", err.message()}});
      AbortIfHeld(c, "the requester's connection dropped");
      break;
    }
    json reply;
    Status handled;
    try {
      handled = Handle(c, msg, &reply);
    } catch (const json::exception& e) {  // a field missing or of the wrong type
      handled = Status::Corruption(e.what());
    }
    if (!handled.ok()) {
      proto::Send(c->fd, {{"type", "error"}, {"message", "malformed event: " + handled.message()}});
      AbortIfHeld(c, "malformed event");
      break;
    }
    if (!proto::Send(c->fd, reply).ok()) {
      AbortIfHeld(c, "the requester's connection dropped");
      break;
    }
  }
}

Status WriterServer::Handle(Connection* c, const json& msg, json* out) {
  if (msg.at("type").get<std::string>() != "event")
    return Status::InvalidArgument("unknown message type " + msg.at("type").dump());
  const std::string name = msg.at("event").get<std::string>();
  WriterEvent ev;
  if (!WriterEventFromName(name, &ev)) return Status::InvalidArgument("unknown event " + name);
  json& reply = *out;
  reply = json{{"type", "result"}, {"seq", msg.at("seq")}, {"event", name}};
  if (Refused(c, ev, &reply)) return Status::OK();

  SessionView view;
  detail::EventContext ctx;
  proto::SessionFromJson(msg.at("session"), &view, &ctx.set_id_valid);
  ctx.session = &view;
  std::vector<ComponentRecord> recs =
      proto::ComponentsFromJson(msg.value("components", json::array()));
  const bool read_only = msg.value("read_only", false);
  WriterMetadata md = IdentityOf(*writer_);
  HandlerArgs args;
  args.md = &md;
  args.components = &recs;
  args.read_only = &read_only;
  args.snapshot_set_id = view.snapshot_set_id;

  HandlerResult result;
  {
    std::lock_guard<std::mutex> h(handler_mu_);  // one handler at a time
    result = CallHandler(*writer_, ev, &ctx, args);
  }
  NoteHeld(c, ev);
  reply["ok"] = result.ok;
  reply["failure"] = ctx.failure;
  reply["message"] = HandlerMessage(result, ctx);
  if (ev == E::kPrepareBackup || ev == E::kPrepareSnapshot)
    reply["preparing"] = writer_->PreparationRunning();
  if (ev == E::kIdentify) reply["metadata"] = md.ToJson();
  if (ev == E::kPrepareBackup || ev == E::kPostSnapshot || ev == E::kBackupComplete)
    reply["components"] = proto::ComponentsToJson(recs);
  return Status::OK();
}

bool WriterServer::Refused(Connection* c, WriterEvent ev, json* reply) {
  if (ev != E::kIdentify) {
    std::lock_guard<std::mutex> g(mu_);
    if (owner_ && owner_ != c) {
      (*reply)["ok"] = false;
      (*reply)["failure"] = VSS_E_WRITERERROR_RETRYABLE;
      (*reply)["message"] = "the writer is taking part in another backup";
      return true;
    }
    owner_ = c;
  }
  // Past its window the writer has let its application go: a late Freeze
  // must not freeze it again as if it were still prepared (the snapshot
  // would be taken without what PrepareForSnapshot did), nor a late Thaw
  // report success.
  if ((ev == E::kFreeze || ev == E::kThaw) && c->timed_out) {
    if (ev == E::kThaw) c->timed_out = false;
    (*reply)["ok"] = false;
    (*reply)["failure"] = VSS_E_WRITERERROR_TIMEOUT;
    (*reply)["message"] = "the freeze window of " + std::to_string(writer_->freeze_timeout_ms()) +
                          " ms ran out before " + WriterEventName(ev) +
                          "; the writer let its application go";
    return true;
  }
  return false;
}

void WriterServer::NoteHeld(Connection* c, WriterEvent ev) {
  // A writer may hold its application from PrepareForSnapshot on (the
  // SQLite writer takes its lock there): the window runs from then, and
  // again from Freeze, so a requester stopped in between cannot hold it for
  // longer than two windows.
  if (ev == E::kPrepareBackup) c->timed_out = false;  // a new backup on this connection
  if (ev == E::kPrepareSnapshot) {
    c->held = Connection::Held::kPrepared;
    c->freeze_deadline = Clock::now() + std::chrono::milliseconds(writer_->freeze_timeout_ms());
    c->timed_out = false;
  }
  if (ev == E::kFreeze) {
    c->held = Connection::Held::kFrozen;
    c->freeze_deadline = Clock::now() + std::chrono::milliseconds(writer_->freeze_timeout_ms());
    c->timed_out = false;
  }
  if (ev == E::kThaw || ev == E::kAbort || ev == E::kPostSnapshot)
    c->held = Connection::Held::kNone;
  if (ev == E::kBackupShutdown) {
    std::lock_guard<std::mutex> g(mu_);
    if (owner_ == c) owner_ = nullptr;
  }
}

namespace {

// The self-pipe ServeUntilSignalled sleeps on: the SIGTERM and SIGINT
// handler writes a byte to it, whichever thread the signal lands on (the
// server's threads are already running, so blocking the signals for
// sigwait in this thread alone would not do).
int g_signal_pipe[2] = {-1, -1};

void OnStopSignal(int) {
  const int saved_errno = errno;
  const char byte = 1;
  ssize_t n = ::write(g_signal_pipe[1], &byte, 1);  // never blocks: O_NONBLOCK
  (void)n;
  errno = saved_errno;
}

}  // namespace

int ServeUntilSignalled(std::shared_ptr<Writer> writer, const WriterServerOptions& opt,
                        const std::string& program, const std::string& what) {
  if (g_signal_pipe[0] < 0 && ::pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    std::fputs(fmt::format("{}: pipe: {}\n", program, std::strerror(errno)).c_str(), stderr);
    return 1;
  }
  char drain[64];
  while (::read(g_signal_pipe[0], drain, sizeof drain) > 0) {
  }
  WriterServer server(std::move(writer), opt);
  if (Status s = server.Start(); !s.ok()) {
    std::fputs(fmt::format("{}: {}\n", program, s.message()).c_str(), stderr);
    return 1;
  }
  std::fputs(fmt::format("{}: {}, listening on {}\n", program, what, server.socket_path()).c_str(),
             stderr);
  struct sigaction sa = {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // as signal(2) installs it
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  // Serving has no deadline: it ends when a signal comes, and only then.
  pollfd p{g_signal_pipe[0], POLLIN, 0};
  while (::poll(&p, 1, -1) <= 0) {
  }
  server.Stop();
  return 0;
}

}  // namespace gnomon::vss
