// Replacing a small state file (outside any repository: the snapshot
// registry, the last writer status) so that a reader sees the old text or
// the new, never half, and nobody can redirect the write: the temporary
// file has an unpredictable name and is created O_EXCL|O_NOFOLLOW, mode
// 0600; it is fsynced before the rename, and the directory after.
#pragma once

#include <string>

namespace gnomon {

// false with *error set on failure; the old file is then untouched.
bool ReplaceFileDurably(const std::string& path, const std::string& text, std::string* error);

}  // namespace gnomon
