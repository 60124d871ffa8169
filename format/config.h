// The repository config: the settings a repository keeps for life, so every
// backup into it uses the same chunk size and digest. See FORMAT.md, "Config".
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"

namespace gnomon {

// 1: plain. 2: encrypted (FORMAT.md §14), which a reader of 1 must refuse.
inline constexpr uint32_t kRepoFormatVersion = 2;
// The largest chunk size a repository may have.
inline constexpr uint32_t kMaxChunkSize = 64u << 20;

struct RepoConfig {
  uint32_t version = 1;
  std::string id;                   // 32 hex characters
  uint32_t chunk_size = 4u << 20;   // chosen by bench/chunk-size-table.sh; see RESULTS.md
  std::string hash = "xxh3-128";    // "blake3-keyed-128" (or "hmac-sha256-128") when encrypted
  std::string encryption = "none";  // or "aes-256-gcm" (then version 2)
  std::string compression = "zstd";
  int compression_level = 2;         // chosen by bench/tuning-table.sh; see RESULTS.md
  uint64_t pack_size = 64ull << 20;  // target; a pack may exceed it by one chunk
  std::string created;

  bool encrypted() const { return encryption != "none"; }
  // Makes this config an encrypted one's (version, hash, encryption).
  void SetEncrypted();
  Status Validate(const std::string& where) const;
  std::string Encode() const;
  static Status Decode(const std::string& path, const std::string& body, RepoConfig* out);
};

}  // namespace gnomon
