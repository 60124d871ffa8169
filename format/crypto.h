// Encryption of a repository (FORMAT.md §14): the master key, keyed chunk
// ids, sealed objects and sealed pack blobs. AES-256-GCM, HMAC-SHA-256 and
// HKDF come from OpenSSL, which uses the CPU's AES-NI/VAES and SHA-NI;
// keyed BLAKE3 from its official C implementation (SIMD chosen at run time).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "format/digest.h"

namespace gnomon {

inline constexpr size_t kMasterKeySize = 64;  // 32 AEAD, 32 chunk ids
inline constexpr size_t kNonceSize = 12;
inline constexpr size_t kTagSize = 16;
inline constexpr size_t kSealOverhead = kNonceSize + kTagSize;  // per sealed blob
inline constexpr char kSealedMagic[9] = "GNMSEAL\x01";
inline constexpr size_t kSealedObjectOverhead = 8 + kSealOverhead + 16;

// The repository's random master key. Wiped when the last holder lets go.
class MasterKey {
 public:
  static std::shared_ptr<const MasterKey> Generate();
  static std::shared_ptr<const MasterKey> FromBytes(std::span<const uint8_t> bytes);
  ~MasterKey();
  MasterKey(const MasterKey&) = delete;
  MasterKey& operator=(const MasterKey&) = delete;
  std::span<const uint8_t> bytes() const { return k_; }
  std::span<const uint8_t> aead() const { return std::span<const uint8_t>(k_).first(32); }
  std::span<const uint8_t> id_key() const { return std::span<const uint8_t>(k_).last(32); }

 private:
  MasterKey() = default;
  std::array<uint8_t, kMasterKeySize> k_{};
};

// The keyed functions an encrypted repository's config may name (§14):
// BLAKE3 in keyed mode for new repositories (about 4 GB/s a core here,
// against 1.2 GB/s for HMAC-SHA-256 with SHA-NI), HMAC-SHA-256 for the
// repositories made before it.
enum class IdFunction { kBlake3Keyed, kHmacSha256 };

// How a repository names chunks: XXH3-128 in a plain one; in an encrypted
// one a keyed function under the id key, truncated to 128 bits, so nobody
// without the key can compute an id, let alone a colliding one.
class ChunkHasher {
 public:
  ChunkHasher() = default;
  ChunkHasher(std::shared_ptr<const MasterKey> key, IdFunction f) : key_(std::move(key)), f_(f) {}
  Digest Of(std::span<const uint8_t> data) const;
  bool keyed() const { return key_ != nullptr; }

 private:
  std::shared_ptr<const MasterKey> key_;
  IdFunction f_ = IdFunction::kBlake3Keyed;
};

// The AES-256-GCM key of one object: HKDF-SHA-256 of the master key with
// the object's name as info, so no key seals more than one object's worth
// of random nonces.
class ObjectKey {
 public:
  ObjectKey(const MasterKey& master, std::string_view name);
  ~ObjectKey();
  ObjectKey(const ObjectKey&) = delete;
  ObjectKey& operator=(const ObjectKey&) = delete;
  // Appends nonce | ciphertext | tag (plain.size() + kSealOverhead bytes).
  void Seal(std::string_view ad, std::span<const uint8_t> plain, std::vector<uint8_t>* out) const;
  // Opens nonce | ciphertext | tag into out (sealed.size() - kSealOverhead
  // bytes); false if it does not authenticate under this key and ad.
  bool Open(std::string_view ad, std::span<const uint8_t> sealed, uint8_t* out) const;

 private:
  std::array<uint8_t, 32> k_{};
};

// AES-256-GCM under a raw 32-byte key (key slots wrap the master key so).
void SealWithKey(std::span<const uint8_t> key, std::string_view ad, std::span<const uint8_t> plain,
                 std::vector<uint8_t>* out);
bool OpenWithKey(std::span<const uint8_t> key, std::string_view ad, std::span<const uint8_t> sealed,
                 uint8_t* out);
// HKDF-SHA-256(ikm, no salt, info) into out.
void Hkdf(std::span<const uint8_t> ikm, std::string_view info, std::span<uint8_t> out);
void Sha256(std::span<const uint8_t> data, uint8_t out[32]);
void HmacSha256(std::span<const uint8_t> key, std::span<const uint8_t> data, uint8_t out[32]);

// A sealed object (FORMAT.md §14.2): magic | nonce | AES-GCM(plain) | tag |
// XXH3-128 of everything before it. `name` is the object's name in the
// repository (e.g. "backups/0123…"): its key and its associated data.
std::string SealObject(const MasterKey& key, std::string_view name, std::string_view plain);
// Corruption naming `path` if the bytes are damaged (trailer) or do not
// authenticate as `name` (tampered, or moved from another name).
Status OpenObject(const MasterKey& key, std::string_view name, const std::string& path,
                  const std::string& sealed, std::string* plain);
// The check a storage host can run without the key: length, magic, trailer.
Status CheckSealedObject(const std::string& path, std::span<const uint8_t> bytes);
bool LooksSealed(std::string_view bytes);

// XXH3-128 in canonical (big-endian) byte order, streamed.
class Hash128 {
 public:
  Hash128();
  ~Hash128();
  Hash128(const Hash128&) = delete;
  Hash128& operator=(const Hash128&) = delete;
  void Update(std::span<const uint8_t> data);
  std::array<uint8_t, 16> Final() const;

 private:
  void* state_;
};

}  // namespace gnomon
