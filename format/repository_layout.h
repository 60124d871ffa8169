// Names of the repository's directories and fixed files (FORMAT.md §1),
// shared by the files that implement Repository.
#pragma once

namespace gnomon {

inline constexpr const char* kConfig = "config";
inline constexpr const char* kLock = "lock";
inline constexpr const char* kPacks = "packs";
inline constexpr const char* kIndex = "index";
inline constexpr const char* kVolumes = "volumes";
inline constexpr const char* kBackups = "backups";
inline constexpr const char* kQuarantine = "quarantine";
inline constexpr const char* kTmp = "tmp";
inline constexpr const char* kJournalSuffix = ".journal";

}  // namespace gnomon
