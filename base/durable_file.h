// Replacing and reading a small state file (outside any repository: the snapshot
// registry, the last writer status) so that a reader sees the old text or
// the new, never half, and nobody can redirect the write: the temporary
// file has an unpredictable name and is created O_EXCL|O_NOFOLLOW, mode
// 0600; it is fsynced before the rename, and the directory after.
#pragma once

#include <cstddef>
#include <string>

namespace gnomon {

// false with *error set on failure; the old file is then untouched.
bool ReplaceFileDurably(const std::string& path, const std::string& text, std::string* error);

// Reads such a state file whole, if it is a regular file of at most
// max_bytes: a FIFO (which would block the open), a link (to /dev/zero,
// which never ends) or a huge file is refused without reading more than
// max_bytes of it.
bool ReadSmallFile(const std::string& path, size_t max_bytes, std::string* text);

}  // namespace gnomon
