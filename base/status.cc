#include "base/status.h"

#include <cerrno>
#include <cstring>

namespace gnomon {

Status Status::FromErrno(const std::string& what, int err) {
  if (err == ENOENT) return NotFound(what + ": " + std::strerror(err));
  return IOError(what + ": " + std::strerror(err));
}

}  // namespace gnomon
