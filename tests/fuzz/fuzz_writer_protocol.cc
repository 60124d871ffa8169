// Bytes from the other end of a writer socket: the length-prefixed framing
// (proto::Recv) and each message's session and components, as the writer
// library and the requester read them. The parsers throw
// nlohmann::json::exception on malformed input by contract (callers catch
// it and drop the connection); anything else escaping is a bug.
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "tests/fuzz/fuzz_target.h"
#include "vss/writer_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 256 * 1024) return 0;  // beyond one socket buffer the write would block
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  int buf = 1 << 20;
  ::setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  ::setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  const bool sent = size == 0 || ::write(sv[0], data, size) == static_cast<ssize_t>(size);
  ::close(sv[0]);
  for (int i = 0; sent && i < 64; ++i) {
    nlohmann::json msg;
    gnomon::Status err;
    if (gnomon::vss::proto::Recv(sv[1], 1000, &msg, &err) != gnomon::vss::proto::RecvResult::kOk)
      break;
    // Each on its own: a bad session must not hide the components' parser.
    try {
      gnomon::vss::SessionView view;
      bool set_id_valid = false;
      if (msg.contains("session"))
        gnomon::vss::proto::SessionFromJson(msg.at("session"), &view, &set_id_valid);
    } catch (const nlohmann::json::exception&) {
    }
    try {
      if (msg.contains("components"))
        (void)gnomon::vss::proto::ComponentsFromJson(msg.at("components"));
    } catch (const nlohmann::json::exception&) {
    }
  }
  ::close(sv[1]);
  return 0;
}
