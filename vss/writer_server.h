// WriterServer: the writer library's end of the protocol (vss/PROTOCOL.md).
// An application that takes part in backups implements the same Writer
// handlers an in-process writer does, and hands its Writer to a WriterServer.
// The server listens on a Unix socket in the writer directory, where the
// requester finds it at GatherWriterMetadata, and calls the handlers as the
// requester's events arrive.
//
// The server keeps the freeze promise by itself: if the requester's
// connection drops while the writer is prepared or frozen, or Thaw does not
// come within the writer's freeze timeout (counted from PrepareForSnapshot
// and again from Freeze), it calls OnAbort at once, so a killed, stopped or
// stuck requester never leaves the application frozen.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "vss/writer.h"
#include "vss/writer_protocol.h"

namespace gnomon::vss {

struct WriterServerOptions {
  std::string dir = proto::DefaultWriterDir();
  // File name of the socket in dir; "" = the writer's name made safe, plus
  // ".sock".
  std::string socket_name;
  // Besides root and this process's own user, members of this group may
  // connect; the socket file is made group-writable for it. -1 = the
  // process's group.
  gid_t group = static_cast<gid_t>(-1);
  // How long a connection may take to say hello.
  int hello_timeout_ms = 10000;
};

class WriterServer {
 public:
  // writer must be initialized.
  WriterServer(std::shared_ptr<Writer> writer, WriterServerOptions opt = {});
  ~WriterServer();
  WriterServer(const WriterServer&) = delete;
  WriterServer& operator=(const WriterServer&) = delete;

  // Creates the directory, replaces a stale socket of a dead writer (a live
  // one is refused: Exists), listens, and serves on a thread of its own.
  Status Start();
  // Stops listening, drops connections (aborting a frozen writer), removes
  // the socket.
  void Stop();
  const std::string& socket_path() const { return path_; }

 private:
  struct Connection;
  void AcceptLoop();
  void Serve(std::shared_ptr<Connection> c);
  // Checks the peer's credentials and exchanges hellos; false (the peer
  // told why) if the connection is refused.
  bool Admit(Connection* c);
  // Answers events until the connection ends or the server stops.
  void ServeEvents(Connection* c);
  // Handles one event message: fills in *reply, or fails (InvalidArgument)
  // for a message that is not an event this protocol knows. A message of
  // the wrong shape throws nlohmann::json::exception.
  Status Handle(Connection* c, const nlohmann::json& msg, nlohmann::json* reply);
  // True (with *reply filled in) if the event is refused without calling
  // the writer: another connection's backup holds it, or the window ran out
  // (and the writer let its application go) before this Freeze or Thaw.
  bool Refused(Connection* c, WriterEvent ev, nlohmann::json* reply);
  // Records what the writer holds after ev (prepared, frozen, nothing),
  // should the requester vanish.
  void NoteHeld(Connection* c, WriterEvent ev);
  // Calls OnAbort if the connection left the writer prepared or frozen.
  void AbortIfHeld(Connection* c, const std::string& why);

  std::shared_ptr<Writer> writer_;
  WriterServerOptions opt_;
  std::string path_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // an eventfd: Stop() wakes AcceptLoop through it
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  std::mutex mu_;  // guards conns_, owner_
  std::vector<std::shared_ptr<Connection>> conns_;
  Connection* owner_ = nullptr;  // the connection whose backup this writer is in
  std::mutex handler_mu_;        // one handler at a time, as in VSS
};

// For a writer that is a program of its own: serves `writer` until SIGINT or
// SIGTERM, saying on stderr where it listens (prefixed with `program`, and
// `what` it serves), then stops cleanly. Returns the exit code.
int ServeUntilSignalled(std::shared_ptr<Writer> writer, const WriterServerOptions& opt,
                        const std::string& program, const std::string& what);

}  // namespace gnomon::vss
