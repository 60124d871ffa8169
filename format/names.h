// The exact forms of every name a repository file may contain (FORMAT.md
// §1). A name read from a file becomes a path only after it passes one of
// these checks, so no repository file can point gnomon outside the
// repository ("../victim", "/etc/passwd", "a/../../b").
#pragma once

#include <cstddef>
#include <string>

namespace gnomon {

inline constexpr size_t kBackupIdHex = 16;  // 8 random bytes
inline constexpr size_t kObjectIdHex = 32;  // packs, index files, quarantine files, repositories

// s is exactly len lowercase hex digits.
bool IsHexName(const std::string& s, size_t len);
inline bool IsBackupId(const std::string& s) { return IsHexName(s, kBackupIdHex); }
inline bool IsObjectId(const std::string& s) { return IsHexName(s, kObjectIdHex); }
// "volumes/<backup>.<n>", relative to the repository.
std::string VolumeIndexName(const std::string& backup_id, size_t n);
// A host name reduced to [A-Za-z0-9.-] for use inside a file name.
std::string SafeHostName(const std::string& host);

}  // namespace gnomon
