// Handing an unlocked master key to a child process (gnomon serve to its
// nbdkit plugin, boot-check to gnomon serve) through an inherited pipe, so
// it never appears in an argument list, the environment or a file.
#pragma once

#include <memory>

#include "base/status.h"
#include "format/crypto.h"

namespace gnomon {

// A pipe holding the key; *fd is its read end, close-on-exec: the caller
// clears that for the one child that should inherit it.
Status KeyToPipe(const MasterKey& key, int* fd);
// Reads the key from fd (and closes it).
Status KeyFromPipe(int fd, std::shared_ptr<const MasterKey>* out);

}  // namespace gnomon
