// The out-of-process writer protocol, version 1 (vss/PROTOCOL.md): how a
// requester and a writer in another process talk over a Unix stream socket.
// Framing, limits, and the JSON forms of what crosses the socket; both ends
// (RemoteWriter, WriterServer) are built on these.
#pragma once

#include <sys/types.h>
#include <sys/un.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/status.h"
#include "vss/documents.h"
#include "vss/writer.h"

namespace gnomon::vss::proto {

inline constexpr int kVersion = 1;
// Larger messages are refused and the connection closed: a writer's
// metadata is kilobytes, and a bogus length must not make either side
// allocate gigabytes.
inline constexpr uint32_t kMaxMessageBytes = 1u << 20;

// Where writers listen: $GNOMON_WRITER_DIR, else <runtime dir>/writers
// (/run/gnomon/writers for root).
std::string DefaultWriterDir();

// Writes one message: a 4-byte little-endian length, then that many bytes of
// JSON. Never raises SIGPIPE. InvalidArgument for a message over
// kMaxMessageBytes, IOError if the socket refuses it.
Status Send(int fd, const nlohmann::json& msg);

// What Recv got. Only kError is a failure; a peer that closed and a wait
// that ran out are outcomes the caller decides about.
enum class RecvResult { kOk, kClosed, kTimeout, kError };
// Reads one message, waiting at most timeout_ms in all (< 0: no limit). A
// length of 0 or over kMaxMessageBytes, or a body that is not a JSON object,
// is kError with *error Corruption (IOError when poll or recv fail); the
// caller then closes the connection. *error is set only for kError.
RecvResult Recv(int fd, int timeout_ms, nlohmann::json* msg, Status* error);

// The session as a writer may see it during one event.
nlohmann::json SessionToJson(const SessionView& v, bool set_id_valid);
// Throws nlohmann::json::exception on a malformed session.
void SessionFromJson(const nlohmann::json& j, SessionView* v, bool* set_id_valid);

nlohmann::json ComponentsToJson(const std::vector<ComponentRecord>& c);
std::vector<ComponentRecord> ComponentsFromJson(const nlohmann::json& j);  // throws

// The address of the Unix socket at path; InvalidArgument if the path is
// too long.
Status UnixAddress(const std::string& path, sockaddr_un* addr);
// *fd is a connected stream socket to path, or -1 with the error (errno is
// kept: ECONNREFUSED means nobody listens there).
Status ConnectUnix(const std::string& path, int* fd);

// The identity of the process at the other end of a connected Unix socket.
bool PeerCredentials(int fd, uid_t* uid, gid_t* gid, pid_t* pid);

}  // namespace gnomon::vss::proto
