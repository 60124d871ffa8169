#include "engine/key_handoff.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace gnomon {

Status KeyToPipe(const MasterKey& key, int* fd) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Status::FromErrno("pipe", errno);
  const auto b = key.bytes();
  // 64 bytes fit any pipe buffer: the write never blocks.
  const ssize_t n = ::write(p[1], b.data(), b.size());
  ::close(p[1]);
  if (n != static_cast<ssize_t>(b.size())) {
    ::close(p[0]);
    return Status::IOError("cannot hand the key to a child process");
  }
  *fd = p[0];
  return Status::OK();
}

Status KeyFromPipe(int fd, std::shared_ptr<const MasterKey>* out) {
  std::array<uint8_t, kMasterKeySize> b{};
  size_t got = 0;
  while (got < b.size()) {
    const ssize_t n = ::read(fd, b.data() + got, b.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  if (got != b.size()) return Status::WrongKey("the key handed over by the parent is incomplete");
  *out = MasterKey::FromBytes(b);
  explicit_bzero(b.data(), b.size());
  return Status::OK();
}

}  // namespace gnomon
