// VSS enumerations and bit masks with their documented numeric values
// (vss.h / vswriter.h): writer states, backup types, schema and file-spec
// masks, application levels, contexts. See shared/vss-behaviour.md §4-5.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace gnomon::vss {

// A range of bytes of a volume or file.
struct ByteRange {
  uint64_t offset, length;
};

enum class WriterState : int {
  kUnknown = 0,
  kStable = 1,
  kWaitingForFreeze = 2,
  kWaitingForThaw = 3,
  kWaitingForPostSnapshot = 4,
  kWaitingForBackupComplete = 5,
  kFailedAtIdentify = 6,
  kFailedAtPrepareBackup = 7,
  kFailedAtPrepareSnapshot = 8,
  kFailedAtFreeze = 9,
  kFailedAtThaw = 10,
  kFailedAtPostSnapshot = 11,
  kFailedAtBackupComplete = 12,
  kFailedAtPreRestore = 13,
  kFailedAtPostRestore = 14,
  kFailedAtBackupShutdown = 15,
};
std::string WriterStateName(WriterState s);  // "VSS_WS_STABLE"
std::string WriterStateText(WriterState s);  // "[1] Stable" as vssadmin prints it
bool IsFailedState(WriterState s);

enum class BackupType : int {
  kUndefined = 0,
  kFull = 1,
  kIncremental = 2,
  kDifferential = 3,
  kLog = 4,
  kCopy = 5,
  kOther = 6,
};
std::string BackupTypeName(BackupType t);  // "full", "copy", ...
bool ParseBackupType(const std::string& s, BackupType* t);

namespace schema {  // VSS_BACKUP_SCHEMA
inline constexpr uint32_t kDifferential = 0x1;
inline constexpr uint32_t kIncremental = 0x2;
inline constexpr uint32_t kExclusiveIncrementalDifferential = 0x4;
inline constexpr uint32_t kLog = 0x8;
inline constexpr uint32_t kCopy = 0x10;
inline constexpr uint32_t kTimestamped = 0x20;
inline constexpr uint32_t kLastModify = 0x40;
inline constexpr uint32_t kLsn = 0x80;
}  // namespace schema

namespace fsbt {  // VSS_FILE_SPEC_BACKUP_TYPE
inline constexpr uint32_t kFullBackupRequired = 0x1;
inline constexpr uint32_t kDifferentialBackupRequired = 0x2;
inline constexpr uint32_t kIncrementalBackupRequired = 0x4;
inline constexpr uint32_t kLogBackupRequired = 0x8;
inline constexpr uint32_t kFullSnapshotRequired = 0x100;
inline constexpr uint32_t kDifferentialSnapshotRequired = 0x200;
inline constexpr uint32_t kIncrementalSnapshotRequired = 0x400;
inline constexpr uint32_t kLogSnapshotRequired = 0x800;
inline constexpr uint32_t kCreatedDuringBackup = 0x10000;
inline constexpr uint32_t kAllBackupRequired = 0xF;
inline constexpr uint32_t kAllSnapshotRequired = 0xF00;
inline constexpr uint32_t kDefault = 0xF0F;  // a file set added without a mask
// The "snapshot required" bit that matters for a backup type (§5.4); COPY
// and OTHER count as FULL.
uint32_t SnapshotBitFor(BackupType t);
}  // namespace fsbt

enum class ApplicationLevel : int {
  kAuto = -1,
  kUnknown = 0,
  kSystem = 1,
  kBackEnd = 2,
  kFrontEnd = 3,
  kSystemRm = 4,
};
std::string ApplicationLevelName(ApplicationLevel l);

enum class UsageType : int {
  kUndefined = 0,
  kBootableSystemState = 1,
  kSystemService = 2,
  kUserData = 3,
  kOther = 4
};
enum class SourceType : int { kUndefined = 0, kTransactedDb = 1, kNonTransactedDb = 2, kOther = 3 };
enum class ComponentType : int { kUndefined = 0, kDatabase = 1, kFileGroup = 2 };

namespace ctx {  // VSS_CTX_*
inline constexpr uint32_t kBackup = 0;
inline constexpr uint32_t kFileShareBackup = 0x10;
inline constexpr uint32_t kNasRollback = 0x19;
inline constexpr uint32_t kAppRollback = 0x9;
inline constexpr uint32_t kClientAccessible = 0x1D;
inline constexpr uint32_t kClientAccessibleWriters = 0xD;
inline constexpr uint32_t kAll = 0xFFFFFFFF;
inline constexpr uint32_t kNoWritersBit = 0x10;  // VSS_VOLSNAP_ATTR_NO_WRITERS
}  // namespace ctx

// 128-bit identifiers (class, instance, snapshot set, snapshot, provider),
// printed in GUID form.
struct Guid {
  std::array<uint8_t, 16> b{};
  static Guid Random();
  static bool Parse(const std::string& s, Guid* out);
  std::string ToString() const;  // 8-4-4-4-12 lowercase
  bool IsNull() const;
  friend bool operator==(const Guid&, const Guid&) = default;
  friend auto operator<=>(const Guid&, const Guid&) = default;
};

}  // namespace gnomon::vss
