// RemoteWriter: a writer in another process, as the requester sees it: one
// more Writer, whose handlers send the event over the writer's Unix socket
// (vss/PROTOCOL.md) and wait for its answer. Component edits the writer made
// (stamps, metadata, partial and differenced files) come back with the
// answer and are applied to the requester's document.
//
// A writer whose process has died or whose connection breaks is reported as
// not responding (VSS_E_WRITER_NOT_RESPONDING) for that event and every
// later one. Abort while another event is still in flight drops the
// connection, which makes the writer's server abort (thaw) on its side.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/status.h"
#include "vss/writer.h"

namespace gnomon::vss {

class RemoteWriter : public Writer {
 public:
  // Connects and exchanges hello; *out is then initialized with the remote
  // writer's identity. On failure *out is null and the message names the
  // socket: NotFound if nobody listens there (a stale socket), IOError if
  // the socket or the writer refused us or no hello came, Corruption for a
  // hello that makes no sense.
  static Status Connect(const std::string& socket_path, int timeout_ms,
                        std::shared_ptr<RemoteWriter>* out);
  ~RemoteWriter() override;

  const std::string& socket_path() const { return path_; }
  pid_t pid() const { return pid_; }
  std::string kind() const override { return "process"; }
  std::string detail() const override { return "pid " + std::to_string(pid_) + ", " + path_; }

  bool OnIdentify(WriterMetadata* md) override;
  bool OnPrepareBackup(WriterComponents* components) override;
  bool OnPrepareSnapshot() override;
  bool OnFreeze() override;
  bool OnThaw() override;
  bool OnPostSnapshot(WriterComponents* components) override;
  bool OnAbort() override;
  bool OnBackupComplete(WriterComponents* components) override;
  bool OnBackupShutdown(const Guid& snapshot_set_id) override;
  // What the writer said in its last answer to PrepareForBackup or
  // PrepareForSnapshot ("preparing"; PROTOCOL.md).
  bool PreparationRunning() const override { return remote_preparing_.load(); }

 private:
  RemoteWriter() = default;
  // Sends one event and waits for the result; applies its failure code and
  // component edits. False if the writer failed the event or is unreachable.
  bool Call(WriterEvent ev, WriterComponents* components, nlohmann::json* reply);
  bool Unreachable(const std::string& why);

  std::string path_;
  int fd_ = -1;
  pid_t pid_ = 0;
  std::mutex mu_;  // one event in flight
  bool broken_ = false;
  std::string broken_reason_;
  uint64_t seq_ = 0;
  std::atomic<bool> remote_preparing_{false};
};

// Every writer listening in dir, connected and identified. A socket nobody
// listens on (left by a writer that died) or a writer that does not answer
// hello is skipped, with a line in *notes saying which and why.
std::vector<std::shared_ptr<RemoteWriter>> DiscoverRemoteWriters(const std::string& dir,
                                                                 int timeout_ms,
                                                                 std::vector<std::string>* notes);

}  // namespace gnomon::vss
