// Names of the repository's directories and fixed files (FORMAT.md §1),
// shared by the files that implement Repository.
#pragma once

#include <filesystem>
#include <string>

namespace gnomon {

inline constexpr const char* kConfig = "config";
inline constexpr const char* kLock = "lock";
inline constexpr const char* kPacks = "packs";
inline constexpr const char* kIndex = "index";
inline constexpr const char* kVolumes = "volumes";
inline constexpr const char* kBackups = "backups";
inline constexpr const char* kQuarantine = "quarantine";
inline constexpr const char* kChecks = "checks";
inline constexpr const char* kTmp = "tmp";
inline constexpr const char* kKeys = "keys";  // key slots (FORMAT.md §14.1)
inline constexpr const char* kGc = "gc";      // gc/lock, gc/gate, gc/users (FORMAT.md §8)
inline constexpr const char* kJournalSuffix = ".journal";

// root/part/part...: every part is taken as relative (a leading "/" is
// dropped), because std::filesystem's operator/ would otherwise replace the
// whole path with an absolute part, and parts can be names read from
// repository files (checked by format/names.h, but never trusted to stay
// inside the repository on that alone).
template <class... Parts>
std::string RepoPath(const std::string& root, const Parts&... parts) {
  std::filesystem::path p(root);
  ((p /= std::filesystem::path(parts).relative_path()), ...);
  return p.string();
}

}  // namespace gnomon
