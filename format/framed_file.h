// The envelope shared by every gnomon metadata file (config, chunk index
// files, volume indexes, backup records): magic, version, body length, body,
// and an XXH3-64 checksum of everything before it. See FORMAT.md, "Framed files".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "format/env.h"

namespace gnomon {

struct FrameKind {
  const char* magic;     // exactly 8 bytes
  const char* what;      // "config", "backup record", ... for error messages
  uint32_t max_version;  // newest version this build reads
};

inline constexpr FrameKind kConfigFrame{"GNMCONF\x01", "repository config", 1};
inline constexpr FrameKind kIndexFrame{"GNMINDX\x01", "chunk index file", 2};
inline constexpr FrameKind kVolumeIndexFrame{"GNMFIDX\x01", "volume index", 1};
inline constexpr FrameKind kBackupFrame{"GNMBKUP\x01", "backup record", 4};
inline constexpr FrameKind kQuarantineFrame{"GNMQUAR\x01", "quarantine file", 1};
inline constexpr FrameKind kCheckFrame{"GNMCHEK\x01", "check file", 1};
inline constexpr FrameKind kKeySlotFrame{"GNMKEYS\x01", "key slot", 1};

inline constexpr size_t kFrameHeaderSize = 24;
inline constexpr size_t kFrameTrailerSize = 8;

std::string EncodeFrame(const FrameKind& kind, uint32_t version, std::string_view body);

// Checks magic, version, length and checksum; on success *body is the body
// and *version the file's version. Errors name `path`.
Status DecodeFrame(const FrameKind& kind, const std::string& path, const std::string& file,
                   std::string* body, uint32_t* version);

// Reads and decodes path through env.
Status ReadFrameFile(Env* env, const FrameKind& kind, const std::string& path, std::string* body,
                     uint32_t* version = nullptr);
Status WriteFrameFile(Env* env, const FrameKind& kind, uint32_t version, const std::string& path,
                      std::string_view body);

}  // namespace gnomon
