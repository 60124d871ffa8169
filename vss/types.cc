#include "vss/types.h"

#include "base/random.h"

#include <cstdio>

namespace gnomon::vss {

namespace {
const char* const kStateNames[] = {"VSS_WS_UNKNOWN",
                                   "VSS_WS_STABLE",
                                   "VSS_WS_WAITING_FOR_FREEZE",
                                   "VSS_WS_WAITING_FOR_THAW",
                                   "VSS_WS_WAITING_FOR_POST_SNAPSHOT",
                                   "VSS_WS_WAITING_FOR_BACKUP_COMPLETE",
                                   "VSS_WS_FAILED_AT_IDENTIFY",
                                   "VSS_WS_FAILED_AT_PREPARE_BACKUP",
                                   "VSS_WS_FAILED_AT_PREPARE_SNAPSHOT",
                                   "VSS_WS_FAILED_AT_FREEZE",
                                   "VSS_WS_FAILED_AT_THAW",
                                   "VSS_WS_FAILED_AT_POST_SNAPSHOT",
                                   "VSS_WS_FAILED_AT_BACKUP_COMPLETE",
                                   "VSS_WS_FAILED_AT_PRE_RESTORE",
                                   "VSS_WS_FAILED_AT_POST_RESTORE",
                                   "VSS_WS_FAILED_AT_BACKUPSHUTDOWN"};
const char* const kStateTexts[] = {"Unknown",
                                   "Stable",
                                   "Waiting for freeze",
                                   "Waiting for thaw",
                                   "Waiting for post snapshot",
                                   "Waiting for completion",
                                   "Failed at identify",
                                   "Failed at prepare backup",
                                   "Failed at prepare snapshot",
                                   "Failed at freeze",
                                   "Failed at thaw",
                                   "Failed at post snapshot",
                                   "Failed at backup complete",
                                   "Failed at pre restore",
                                   "Failed at post restore",
                                   "Failed at backup shutdown"};
const char* const kTypeNames[] = {"undefined", "full", "incremental", "differential",
                                  "log",       "copy", "other"};
}  // namespace

std::string WriterStateName(WriterState s) {
  int i = static_cast<int>(s);
  return i >= 0 && i <= 15 ? kStateNames[i] : "VSS_WS_UNKNOWN";
}

std::string WriterStateText(WriterState s) {
  int i = static_cast<int>(s);
  return "[" + std::to_string(i) + "] " + (i >= 0 && i <= 15 ? kStateTexts[i] : "Unknown");
}

bool IsFailedState(WriterState s) {
  int i = static_cast<int>(s);
  return i == 0 || i >= 6;
}

std::string BackupTypeName(BackupType t) {
  int i = static_cast<int>(t);
  return i >= 0 && i <= 6 ? kTypeNames[i] : "undefined";
}

bool ParseBackupType(const std::string& s, BackupType* t) {
  for (int i = 0; i <= 6; ++i)
    if (s == kTypeNames[i]) {
      *t = static_cast<BackupType>(i);
      return true;
    }
  return false;
}

uint32_t fsbt::SnapshotBitFor(BackupType t) {
  switch (t) {
    case BackupType::kDifferential:
      return kDifferentialSnapshotRequired;
    case BackupType::kIncremental:
      return kIncrementalSnapshotRequired;
    case BackupType::kLog:
      return kLogSnapshotRequired;
    default:
      return kFullSnapshotRequired;
  }
}

std::string ApplicationLevelName(ApplicationLevel l) {
  switch (l) {
    case ApplicationLevel::kSystem:
      return "system";
    case ApplicationLevel::kBackEnd:
      return "back-end";
    case ApplicationLevel::kFrontEnd:
      return "front-end";
    case ApplicationLevel::kSystemRm:
      return "system-rm";
    case ApplicationLevel::kAuto:
      return "auto";
    default:
      return "unknown";
  }
}

Guid Guid::Random() {
  Guid g;
  RandomFill(g.b.data(), g.b.size());  // the kernel CSPRNG: snapshot and set ids never repeat
  g.b[6] = (g.b[6] & 0x0f) | 0x40;     // version 4
  g.b[8] = (g.b[8] & 0x3f) | 0x80;     // RFC 4122 variant
  return g;
}

std::string Guid::ToString() const {
  char s[37];
  std::snprintf(s, sizeof s, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
                b[13], b[14], b[15]);
  return s;
}

bool Guid::Parse(const std::string& s, Guid* out) {
  std::string hex;
  for (char c : s)
    if (c != '-') hex.push_back(c);
  if (hex.size() != 32) return false;
  for (int i = 0; i < 16; ++i) {
    unsigned v;
    if (std::sscanf(hex.c_str() + 2 * i, "%2x", &v) != 1) return false;
    out->b[i] = static_cast<uint8_t>(v);
  }
  return true;
}

bool Guid::IsNull() const {
  for (auto x : b)
    if (x) return false;
  return true;
}

}  // namespace gnomon::vss
