#include "format/key_slot.h"

#include <sodium.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "base/clock.h"
#include "base/json.h"
#include "base/random.h"
#include "format/names.h"

namespace gnomon {

using nlohmann::json;

namespace {

constexpr size_t kSaltSize = 16;  // crypto_pwhash_argon2id_SALTBYTES
constexpr uint32_t kMaxPasses = 64;

void InitSodium() {
  static const bool ok = sodium_init() >= 0;
  if (!ok) {
    fprintf(stderr, "gnomon: fatal: libsodium failed to initialise\n");
    abort();
  }
}

std::string ToHex(std::span<const uint8_t> b) {
  std::string s(b.size() * 2 + 1, '\0');
  sodium_bin2hex(s.data(), s.size(), b.data(), b.size());
  s.pop_back();
  return s;
}

bool FromHex(const std::string& hex, std::vector<uint8_t>* out) {
  if (hex.size() % 2) return false;
  out->assign(hex.size() / 2, 0);
  size_t n = 0;
  return sodium_hex2bin(out->data(), out->size(), hex.data(), hex.size(), nullptr, &n, nullptr) ==
             0 &&
         n == out->size();
}

// Binds a wrapped key to its repository and slot.
std::string SlotAd(const std::string& repo_id, const KeySlot& s) {
  return std::string("gnomon key slot\0", 16) + repo_id + '\0' + s.id + '\0' + s.kind;
}

struct Kek {
  std::array<uint8_t, 32> k{};
  ~Kek() { sodium_memzero(k.data(), k.size()); }
};

bool PasswordKek(const KeySlot& s, std::string_view password, Kek* kek) {
  InitSodium();
  std::vector<uint8_t> salt;
  if (!FromHex(s.salt, &salt) || salt.size() != kSaltSize) return false;
  return crypto_pwhash(kek->k.data(), kek->k.size(), password.data(), password.size(), salt.data(),
                       s.passes, s.memory, crypto_pwhash_ALG_ARGON2ID13) == 0;
}

void FileKek(std::span<const uint8_t> file_key, Kek* kek) {
  Hkdf(file_key, std::string("gnomon key file\0", 16), kek->k);
}

KeySlot NewSlot(const char* kind) {
  KeySlot s;
  s.id = RandomHexId(8);
  s.kind = kind;
  s.created = NowRfc3339();
  return s;
}

void Wrap(const std::string& repo_id, const MasterKey& master, const Kek& kek, KeySlot* s) {
  std::vector<uint8_t> sealed;
  SealWithKey(kek.k, SlotAd(repo_id, *s), master.bytes(), &sealed);
  s->wrapped = ToHex(sealed);
}

Status Unwrap(const std::string& repo_id, const KeySlot& s, const Kek& kek,
              std::shared_ptr<const MasterKey>* out) {
  std::vector<uint8_t> sealed;
  if (!FromHex(s.wrapped, &sealed) || sealed.size() != kMasterKeySize + kSealOverhead)
    return Status::Corruption("key slot " + s.id + ": wrapped key is malformed");
  std::array<uint8_t, kMasterKeySize> m{};
  if (!OpenWithKey(kek.k, SlotAd(repo_id, s), sealed, m.data()))
    return Status::WrongKey("key slot " + s.id + " does not open with this " +
                            (s.kind == "password" ? "passphrase" : "key file"));
  *out = MasterKey::FromBytes(m);
  sodium_memzero(m.data(), m.size());
  return Status::OK();
}

}  // namespace

std::string KeySlot::Encode() const {
  json j{{"id", id}, {"kind", kind}, {"wrapped", wrapped}, {"created", created}};
  if (kind == "password") {
    j["kdf"] = "argon2id";
    j["memory"] = memory;
    j["passes"] = passes;
    j["salt"] = salt;
  } else {
    j["key_file_id"] = key_file_id;
  }
  return j.dump(1);
}

Status KeySlot::Decode(const std::string& path, const std::string& body, KeySlot* out) {
  json j;
  std::string err;
  if (!ParseJsonBounded(body, &j, &err))
    return Status::Corruption(path + ": key slot is malformed (" + err + ")");
  try {
    KeySlot s;
    s.id = j.at("id").get<std::string>();
    s.kind = j.at("kind").get<std::string>();
    s.wrapped = j.at("wrapped").get<std::string>();
    s.created = j.value("created", "");
    if (s.kind == "password") {
      if (j.at("kdf").get<std::string>() != "argon2id")
        return Status::Unsupported(path + ": key slot uses an unknown KDF");
      s.memory = j.at("memory").get<uint64_t>();
      s.passes = j.at("passes").get<uint32_t>();
      s.salt = j.at("salt").get<std::string>();
      // A hostile slot must not make an unlock allocate or spin unbounded.
      if (s.memory < 8192 || s.memory > (1ull << 30) || s.passes < 1 || s.passes > kMaxPasses)
        return Status::Corruption(path + ": key slot has KDF parameters out of range");
    } else if (s.kind == "key-file") {
      s.key_file_id = j.at("key_file_id").get<std::string>();
      if (!IsHexName(s.key_file_id, 16))
        return Status::Corruption(path + ": key slot names a malformed key file id");
    } else {
      return Status::Unsupported(path + ": key slot of unknown kind '" + s.kind + "'");
    }
    if (!IsHexName(s.id, 16)) return Status::Corruption(path + ": key slot id is malformed");
    if (!IsHexName(s.wrapped, (kMasterKeySize + kSealOverhead) * 2) ||
        (s.kind == "password" && !IsHexName(s.salt, kSaltSize * 2)))
      return Status::Corruption(path + ": key slot's wrapped key or salt is malformed");
    *out = std::move(s);
    return Status::OK();
  } catch (const json::exception& e) {
    return Status::Corruption(path + ": key slot is malformed (" + e.what() + ")");
  }
}

uint32_t TuneKdfPasses(double seconds) {
  InitSodium();
  static const uint8_t salt[kSaltSize] = {};
  auto time = [&](uint32_t passes) {
    Kek k;
    const auto t0 = std::chrono::steady_clock::now();
    if (crypto_pwhash(k.k.data(), k.k.size(), "tune", 4, salt, passes, kKdfMemory,
                      crypto_pwhash_ALG_ARGON2ID13) != 0)
      return seconds;  // out of memory: making the slot fails later, with a message
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  // Time is not linear in passes (the first touches all the memory):
  // scale up from measurements until one is close enough.
  uint32_t passes = 1;
  double t = time(passes);
  for (int i = 0; i < 4 && t < seconds * 0.85 && passes < kMaxPasses; ++i) {
    const double want = t > 0 ? passes * seconds / t : kMaxPasses;
    passes = static_cast<uint32_t>(std::clamp(want, passes + 1.0, double{kMaxPasses}));
    t = time(passes);
  }
  return passes;
}

KeySlot MakePasswordSlot(const std::string& repo_id, const MasterKey& master,
                         std::string_view password, uint32_t passes) {
  KeySlot s = NewSlot("password");
  uint8_t salt[kSaltSize];
  RandomFill(salt, sizeof salt);
  s.salt = ToHex(salt);
  s.memory = kKdfMemory;
  s.passes = passes;
  Kek kek;
  if (!PasswordKek(s, password, &kek)) {
    fprintf(stderr, "gnomon: fatal: Argon2id could not get %llu bytes of memory\n",
            static_cast<unsigned long long>(s.memory));
    abort();
  }
  Wrap(repo_id, master, kek, &s);
  return s;
}

KeySlot MakeKeyFileSlot(const std::string& repo_id, const MasterKey& master,
                        std::span<const uint8_t> file_key) {
  KeySlot s = NewSlot("key-file");
  s.key_file_id = KeyFileId(file_key);
  Kek kek;
  FileKek(file_key, &kek);
  Wrap(repo_id, master, kek, &s);
  return s;
}

Status OpenPasswordSlot(const std::string& repo_id, const KeySlot& slot, std::string_view password,
                        std::shared_ptr<const MasterKey>* out) {
  if (slot.kind != "password")
    return Status::WrongKey("key slot " + slot.id + " takes a key file, not a passphrase");
  Kek kek;
  if (!PasswordKek(slot, password, &kek))
    return Status::IOError("key slot " + slot.id + ": Argon2id failed (out of memory?)");
  return Unwrap(repo_id, slot, kek, out);
}

Status OpenKeyFileSlot(const std::string& repo_id, const KeySlot& slot,
                       std::span<const uint8_t> file_key, std::shared_ptr<const MasterKey>* out) {
  if (slot.kind != "key-file" || slot.key_file_id != KeyFileId(file_key))
    return Status::WrongKey("key slot " + slot.id + " is not for this key file");
  Kek kek;
  FileKek(file_key, &kek);
  return Unwrap(repo_id, slot, kek, out);
}

std::string KeyFileId(std::span<const uint8_t> file_key) {
  std::vector<uint8_t> b(file_key.begin(), file_key.end());
  const char tag[] = "gnomon key file id";
  b.insert(b.begin(), tag, tag + sizeof tag);
  uint8_t h[32];
  Sha256(b, h);
  sodium_memzero(b.data(), b.size());
  return ToHex({h, 8});
}

Status ParseKeyFile(const std::string& path, const std::string& text, std::string* key) {
  std::string hex = text;
  while (!hex.empty() && (hex.back() == '\n' || hex.back() == '\r')) hex.pop_back();
  std::vector<uint8_t> b;
  if (!IsHexName(hex, kKeyFileKeySize * 2) || !FromHex(hex, &b))
    return Status::InvalidArgument(path + ": not a gnomon key file (want 64 hex characters)");
  key->assign(b.begin(), b.end());
  sodium_memzero(b.data(), b.size());
  return Status::OK();
}

}  // namespace gnomon
