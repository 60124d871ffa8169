#include "vss/writer_protocol.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "base/json.h"
#include "vss/provider.h"

namespace gnomon::vss::proto {

using nlohmann::json;

std::string DefaultWriterDir() {
  const char* d = std::getenv("GNOMON_WRITER_DIR");
  if (d && *d) return d;
  return DefaultRuntimeDir() + "/writers";
}

Status Send(int fd, const json& msg) {
  const std::string body = msg.dump();
  if (body.size() > kMaxMessageBytes)
    return Status::InvalidArgument("message of " + std::to_string(body.size()) +
                                   " bytes exceeds the protocol's limit");
  std::string frame(4, '\0');
  const uint32_t n = static_cast<uint32_t>(body.size());
  for (int i = 0; i < 4; ++i) frame[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  frame += body;
  size_t done = 0;
  while (done < frame.size()) {
    ssize_t w = ::send(fd, frame.data() + done, frame.size() - done, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return Status::FromErrno("send", errno);
    done += static_cast<size_t>(w);
  }
  return Status::OK();
}

namespace {

using Clock = std::chrono::steady_clock;

// Reads exactly n bytes by the deadline.
RecvResult ReadFull(int fd, char* p, size_t n, Clock::time_point deadline, bool forever,
                    Status* error) {
  size_t done = 0;
  while (done < n) {
    int wait = -1;
    if (!forever) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return RecvResult::kTimeout;
      wait = static_cast<int>(left.count());
    }
    pollfd pfd{fd, POLLIN, 0};
    int r = ::poll(&pfd, 1, wait);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      *error = Status::FromErrno("poll", errno);
      return RecvResult::kError;
    }
    if (r == 0) return RecvResult::kTimeout;
    ssize_t got = ::recv(fd, p + done, n - done, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      if (errno == ECONNRESET) return RecvResult::kClosed;
      *error = Status::FromErrno("recv", errno);
      return RecvResult::kError;
    }
    if (got == 0) {
      if (done > 0) {
        *error = Status::Corruption("connection closed in the middle of a message");
        return RecvResult::kError;
      }
      return RecvResult::kClosed;
    }
    done += static_cast<size_t>(got);
  }
  return RecvResult::kOk;
}

}  // namespace

RecvResult Recv(int fd, int timeout_ms, json* msg, Status* error) {
  const bool forever = timeout_ms < 0;
  const auto deadline = Clock::now() + std::chrono::milliseconds(forever ? 0 : timeout_ms);
  unsigned char len[4];
  RecvResult r = ReadFull(fd, reinterpret_cast<char*>(len), 4, deadline, forever, error);
  if (r != RecvResult::kOk) return r;
  const uint32_t n = len[0] | (len[1] << 8) | (len[2] << 16) | (uint32_t{len[3]} << 24);
  if (n == 0 || n > kMaxMessageBytes) {
    *error = Status::Corruption("message length " + std::to_string(n) + " is outside 1.." +
                                std::to_string(kMaxMessageBytes) + " bytes");
    return RecvResult::kError;
  }
  std::string body(n, '\0');
  r = ReadFull(fd, body.data(), n, deadline, forever, error);
  if (r == RecvResult::kClosed) {
    *error = Status::Corruption("connection closed in the middle of a message");
    return RecvResult::kError;
  }
  if (r != RecvResult::kOk) return r;
  // Bounded like every stored document: a message nested 500,000 deep
  // parses, but dump() and the destructor would recurse through it.
  std::string why;
  if (!ParseJsonBounded(body, msg, &why, kMaxMessageBytes)) {
    *error = Status::Corruption("message is not acceptable JSON: " + why);
    return RecvResult::kError;
  }
  if (!msg->is_object()) {
    *error = Status::Corruption("message is not a JSON object");
    return RecvResult::kError;
  }
  return RecvResult::kOk;
}

namespace {
json Pairs(const std::vector<std::pair<std::string, std::string>>& v) {
  json j = json::object();
  for (const auto& [k, val] : v) j[k] = val;
  return j;
}
std::vector<std::pair<std::string, std::string>> PairsFrom(const json& j) {
  std::vector<std::pair<std::string, std::string>> v;
  for (const auto& [k, val] : j.items()) v.emplace_back(k, val.get<std::string>());
  return v;
}
}  // namespace

json SessionToJson(const SessionView& v, bool set_id_valid) {
  return json{{"backup_type", BackupTypeName(v.backup_type)},
              {"select_components", v.select_components},
              {"bootable_system_state", v.bootable_system_state},
              {"partial_file_support", v.partial_file_support},
              {"context", v.context},
              {"snapshot_set_id", set_id_valid ? v.snapshot_set_id.ToString() : ""},
              {"volumes", v.volumes},
              {"snapshot_devices", Pairs(v.snapshot_devices)},
              {"volume_providers", Pairs(v.volume_providers)},
              {"snapshot_ids", Pairs(v.snapshot_ids)}};
}

void SessionFromJson(const json& j, SessionView* v, bool* set_id_valid) {
  SessionView s;
  std::string type = j.at("backup_type").get<std::string>();
  if (!ParseBackupType(type, &s.backup_type)) s.backup_type = BackupType::kUndefined;
  s.select_components = j.at("select_components").get<bool>();
  s.bootable_system_state = j.at("bootable_system_state").get<bool>();
  s.partial_file_support = j.at("partial_file_support").get<bool>();
  s.context = j.at("context").get<uint32_t>();
  const std::string set_id = j.at("snapshot_set_id").get<std::string>();
  *set_id_valid = !set_id.empty() && Guid::Parse(set_id, &s.snapshot_set_id);
  s.volumes = j.at("volumes").get<std::vector<std::string>>();
  s.snapshot_devices = PairsFrom(j.at("snapshot_devices"));
  s.volume_providers = PairsFrom(j.at("volume_providers"));
  s.snapshot_ids = PairsFrom(j.at("snapshot_ids"));
  // The writer decides what is affected the way the requester does: by the
  // volumes' identities, looked up on this machine only when it asks (few
  // writers do, so events do not pay for it).
  s.path_affected = [volumes = s.volumes](const std::string& path) {
    std::vector<VolumeIdentity> ids;
    for (const auto& p : volumes) {
      VolumeIdentity id;
      if (IdentifyVolume(p, &id).ok()) ids.push_back(id);
    }
    return PathOnVolumes(path, false, ids);
  };
  *v = std::move(s);
}

json ComponentsToJson(const std::vector<ComponentRecord>& c) {
  json a = json::array();
  for (const auto& r : c) a.push_back(r.ToJson());
  return a;
}

std::vector<ComponentRecord> ComponentsFromJson(const json& j) {
  std::vector<ComponentRecord> out;
  for (const auto& c : j) out.push_back(ComponentRecord::FromJson(c));
  return out;
}

Status UnixAddress(const std::string& path, sockaddr_un* addr) {
  *addr = sockaddr_un{};
  addr->sun_family = AF_UNIX;
  if (path.size() >= sizeof addr->sun_path)
    return Status::InvalidArgument(path + ": socket path too long");
  std::memcpy(addr->sun_path, path.c_str(), path.size() + 1);
  return Status::OK();
}

Status ConnectUnix(const std::string& path, int* fd) {
  *fd = -1;
  sockaddr_un addr;
  if (Status st = UnixAddress(path, &addr); !st.ok()) {
    errno = ENAMETOOLONG;
    return st;
  }
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s >= 0 && ::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    *fd = s;
    return Status::OK();
  }
  const int err = errno;
  if (s >= 0) ::close(s);
  Status st = Status::FromErrno(path, err);
  errno = err;
  return st;
}

bool PeerCredentials(int fd, uid_t* uid, gid_t* gid, pid_t* pid) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  *uid = cred.uid;
  *gid = cred.gid;
  *pid = cred.pid;
  return true;
}

}  // namespace gnomon::vss::proto
