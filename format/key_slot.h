// Key slots (FORMAT.md §14.1): the master key, wrapped by a passphrase
// (Argon2id) or by a key file, one slot per file under keys/. A slot holds
// nothing that opens the repository without its secret.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"
#include "format/crypto.h"

namespace gnomon {

inline constexpr uint64_t kKdfMemory = 64ull << 20;  // Argon2id memory, bytes
inline constexpr size_t kKeyFileKeySize = 32;

struct KeySlot {
  std::string id;    // 16 hex: the file keys/<id>
  std::string kind;  // "password" or "key-file"
  // password: Argon2id (version 0x13) parameters and salt (32 hex).
  uint64_t memory = 0;
  uint32_t passes = 0;
  std::string salt;
  // key-file: the key file's id (16 hex), to pick the slot without trying all.
  std::string key_file_id;
  std::string wrapped;  // hex: nonce | AES-256-GCM(master key) | tag
  std::string created;  // no host name: a slot is not encrypted

  std::string Encode() const;
  static Status Decode(const std::string& path, const std::string& body, KeySlot* out);
};

// Argon2id passes that take about `seconds` here with kKdfMemory (at
// least 1): measured once, when a password slot is made.
uint32_t TuneKdfPasses(double seconds);

// A new slot wrapping `master` under the password / key-file key.
// repo_id is bound into the wrapping, so a slot cannot be moved to another
// repository.
KeySlot MakePasswordSlot(const std::string& repo_id, const MasterKey& master,
                         std::string_view password, uint32_t passes);
KeySlot MakeKeyFileSlot(const std::string& repo_id, const MasterKey& master,
                        std::span<const uint8_t> file_key);

// Unwraps the master key. WrongKey if the secret does not open the slot;
// Corruption if the slot is malformed.
Status OpenPasswordSlot(const std::string& repo_id, const KeySlot& slot, std::string_view password,
                        std::shared_ptr<const MasterKey>* out);
Status OpenKeyFileSlot(const std::string& repo_id, const KeySlot& slot,
                       std::span<const uint8_t> file_key, std::shared_ptr<const MasterKey>* out);

// A key file holds 32 random bytes as 64 hex characters and a newline.
std::string KeyFileId(std::span<const uint8_t> file_key);
Status ParseKeyFile(const std::string& path, const std::string& text, std::string* key);

}  // namespace gnomon
