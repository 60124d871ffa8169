#include "vss/remote_writer.h"

#include <dirent.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "vss/writer_protocol.h"

namespace gnomon::vss {

using nlohmann::json;

namespace {

// How long one event may take before the proxy gives up waiting, beyond
// the requester's own deadline (which reports the writer first): this only
// bounds how long a thread lingers on a writer that never answers.
constexpr int kEventLimitMs = 15 * 60 * 1000;

Guid GuidOf(const json& j) {
  Guid g;
  Guid::Parse(j.get<std::string>(), &g);
  return g;
}

// Applies what the writer changed in its components (sent as `was`,
// returned as `now`) through the setters, which enforce what a writer may
// change: the stamp, the metadata (once), partial and differenced files
// appended at the end, the two failure messages.
void ApplyEdits(const std::vector<ComponentRecord>& was, const std::vector<ComponentRecord>& now,
                WriterComponents* components) {
  for (size_t i = 0; i < now.size() && i < components->size(); ++i) {
    Component& c = (*components)[i];
    const ComponentRecord& a = was[i];
    const ComponentRecord& b = now[i];
    if (b.backup_stamp != a.backup_stamp) c.SetBackupStamp(b.backup_stamp);
    if (b.has_backup_metadata && !a.has_backup_metadata) c.SetBackupMetadata(b.backup_metadata);
    for (size_t k = a.partial_files.size(); k < b.partial_files.size(); ++k) {
      const auto& p = b.partial_files[k];
      c.AddPartialFile(p.path, p.name, p.ranges, p.metadata);
    }
    for (size_t k = a.differenced_files.size(); k < b.differenced_files.size(); ++k) {
      const auto& d = b.differenced_files[k];
      c.AddDifferencedFilesByLastModifyTime(d.path, d.spec, d.recursive, d.last_modify_time);
    }
    if (b.prepare_backup_failure_msg != a.prepare_backup_failure_msg)
      c.SetPrepareForBackupFailureMsg(b.prepare_backup_failure_msg);
    if (b.post_snapshot_failure_msg != a.post_snapshot_failure_msg)
      c.SetPostSnapshotFailureMsg(b.post_snapshot_failure_msg);
  }
}

}  // namespace

Status RemoteWriter::Connect(const std::string& socket_path, int timeout_ms,
                             std::shared_ptr<RemoteWriter>* out) {
  out->reset();
  int fd = -1;
  if (Status s = proto::ConnectUnix(socket_path, &fd); !s.ok()) {
    if (errno == ECONNREFUSED)
      return Status::NotFound(socket_path +
                              ": no writer is listening (stale socket of a writer that exited?)");
    return s;
  }
  std::shared_ptr<RemoteWriter> w(new RemoteWriter());
  w->path_ = socket_path;
  w->fd_ = fd;
  json hello;
  // A writer that refuses us says why first and closes, maybe before our
  // hello arrives: read its answer even if sending failed.
  const Status sent = proto::Send(fd, {{"type", "hello"}, {"version", proto::kVersion}});
  Status err;
  if (proto::Recv(fd, timeout_ms, &hello, &err) != proto::RecvResult::kOk) {
    if (err.ok()) err = sent;
    return Status::IOError(socket_path + ": no hello from the writer" +
                           (err.ok() ? "" : " (" + err.message() + ")"));
  }
  try {
    if (hello.at("type") == "error")
      return Status::IOError(socket_path + ": the writer refused: " + hello.value("message", ""));
    if (hello.at("type") != "hello" || hello.at("version") != proto::kVersion)
      return Status::Corruption(socket_path + ": unexpected hello " + hello.dump());
    const json& id = hello.at("writer");
    w->pid_ = id.value("pid", 0);
    HResult hr =
        w->Initialize(GuidOf(id.at("class_id")), id.at("name").get<std::string>(),
                      static_cast<UsageType>(id.at("usage").get<int>()),
                      static_cast<SourceType>(id.at("source").get<int>()),
                      static_cast<ApplicationLevel>(id.at("level").get<int>()),
                      id.at("freeze_timeout_ms").get<uint32_t>(), id.value("instance_name", ""));
    if (hr != S_OK_)
      return Status::Corruption(socket_path + ": the writer's identity is invalid: " + id.dump());
  } catch (const json::exception& e) {
    return Status::Corruption(socket_path + ": malformed hello (" + e.what() + ")");
  }
  *out = std::move(w);
  return Status::OK();
}

RemoteWriter::~RemoteWriter() {
  if (fd_ >= 0) ::close(fd_);
}

bool RemoteWriter::Unreachable(const std::string& why) {
  if (!broken_) {
    broken_ = true;
    broken_reason_ = why;
    ::shutdown(fd_, SHUT_RDWR);
  }
  ReportNotResponding(name() + " (pid " + std::to_string(pid_) + ", " + path_ +
                      "): " + broken_reason_);
  return false;
}

bool RemoteWriter::Call(WriterEvent ev, WriterComponents* components, json* reply) {
  const char* event = WriterEventName(ev);
  std::lock_guard<std::mutex> g(mu_);
  if (broken_) return Unreachable(broken_reason_);
  const detail::EventContext* ctx = detail::CurrentEvent();
  json msg{{"type", "event"}, {"seq", ++seq_}, {"event", event}};
  static const SessionView kNoSession;
  msg["session"] = proto::SessionToJson(ctx && ctx->session ? *ctx->session : kNoSession,
                                        ctx && ctx->set_id_valid);
  std::vector<ComponentRecord> sent;
  if (components) {
    for (const auto& c : *components) sent.push_back(c.record());
    msg["components"] = proto::ComponentsToJson(sent);
    // The writer's side refuses edits in a read-only phase; so do the
    // requester's setters below.
    msg["read_only"] = !components->empty() && components->front().read_only();
  }
  if (Status s = proto::Send(fd_, msg); !s.ok())
    return Unreachable("connection lost: " + s.message());
  const int limit = ev == WriterEvent::kFreeze || ev == WriterEvent::kThaw
                        ? static_cast<int>(freeze_timeout_ms()) + kEventLimitMs
                        : kEventLimitMs;
  Status err;
  switch (proto::Recv(fd_, limit, reply, &err)) {
    case proto::RecvResult::kOk:
      break;
    case proto::RecvResult::kClosed:
      return Unreachable("the writer closed its connection during " + std::string(event) +
                         " (it exited or crashed)");
    case proto::RecvResult::kTimeout:
      return Unreachable("no answer to " + std::string(event));
    case proto::RecvResult::kError:
      return Unreachable("bad answer to " + std::string(event) + ": " + err.message());
  }
  try {
    if (reply->at("type") == "error")
      return Unreachable("the writer rejected " + std::string(event) + ": " +
                         reply->value("message", ""));
    if (reply->at("type") != "result" || reply->at("seq") != seq_)
      return Unreachable("answer out of sequence: " + reply->dump().substr(0, 200));
    if (components && reply->contains("components"))
      ApplyEdits(sent, proto::ComponentsFromJson(reply->at("components")), components);
    if (ev == WriterEvent::kPrepareBackup || ev == WriterEvent::kPrepareSnapshot)
      remote_preparing_ = reply->value("preparing", false);
    const HResult failure = reply->value("failure", S_OK_);
    if (failure != S_OK_) SetWriterFailure(failure, reply->value("message", ""));
    return reply->value("ok", false);
  } catch (const json::exception& e) {
    return Unreachable("malformed answer to " + std::string(event) + ": " + e.what());
  }
}

bool RemoteWriter::OnIdentify(WriterMetadata* md) {
  json reply;
  if (!Call(WriterEvent::kIdentify, nullptr, &reply)) return false;
  WriterMetadata remote;
  if (!reply.contains("metadata"))
    return Unreachable("malformed writer metadata: the answer has none");
  if (Status s = WriterMetadata::FromJson(reply["metadata"], &remote); !s.ok())
    return Unreachable("malformed writer metadata: " + s.message());
  // Identity stays as the requester knows it; the rest is the writer's.
  md->restore_method = remote.restore_method;
  md->backup_schema = remote.backup_schema;
  md->excludes = remote.excludes;
  md->components = remote.components;
  return true;
}
bool RemoteWriter::OnPrepareBackup(WriterComponents* c) {
  json r;
  return Call(WriterEvent::kPrepareBackup, c, &r);
}
bool RemoteWriter::OnPrepareSnapshot() {
  json r;
  return Call(WriterEvent::kPrepareSnapshot, nullptr, &r);
}
bool RemoteWriter::OnFreeze() {
  json r;
  return Call(WriterEvent::kFreeze, nullptr, &r);
}
bool RemoteWriter::OnThaw() {
  json r;
  return Call(WriterEvent::kThaw, nullptr, &r);
}
bool RemoteWriter::OnPostSnapshot(WriterComponents* c) {
  json r;
  return Call(WriterEvent::kPostSnapshot, c, &r);
}
bool RemoteWriter::OnAbort() {
  // An event still in flight (a writer hung in Freeze) holds the connection:
  // drop it instead of queueing behind it. The writer's server aborts when
  // its requester's connection drops.
  std::unique_lock<std::mutex> l(mu_, std::try_to_lock);
  if (!l.owns_lock()) {
    ::shutdown(fd_, SHUT_RDWR);
    return true;
  }
  l.unlock();
  json r;
  return Call(WriterEvent::kAbort, nullptr, &r);
}
bool RemoteWriter::OnBackupComplete(WriterComponents* c) {
  json r;
  return Call(WriterEvent::kBackupComplete, c, &r);
}
bool RemoteWriter::OnBackupShutdown(const Guid&) {
  json r;
  return Call(WriterEvent::kBackupShutdown, nullptr, &r);
}

std::vector<std::shared_ptr<RemoteWriter>> DiscoverRemoteWriters(const std::string& dir,
                                                                 int timeout_ms,
                                                                 std::vector<std::string>* notes) {
  std::vector<std::shared_ptr<RemoteWriter>> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;  // no writer directory: no writers
  std::vector<std::string> paths;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;  // hidden: a writer still setting up its socket
    std::string p = dir + "/" + e->d_name;
    struct stat st;
    if (::lstat(p.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) paths.push_back(p);
  }
  ::closedir(d);
  std::sort(paths.begin(), paths.end());
  for (const auto& p : paths) {
    std::shared_ptr<RemoteWriter> w;
    if (Status s = RemoteWriter::Connect(p, timeout_ms, &w); s.ok())
      out.push_back(std::move(w));
    else if (notes)
      notes->push_back(s.message());
  }
  return out;
}

}  // namespace gnomon::vss
