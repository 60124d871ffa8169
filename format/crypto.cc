#include "format/crypto.h"

#include <blake3.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/sha.h>
#include <xxhash.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "base/random.h"

namespace gnomon {

namespace {

[[noreturn]] void CryptoAbort(const char* what) {
  // OpenSSL fails these only when out of memory or broken: never go on
  // with a half-made key or ciphertext.
  fprintf(stderr, "gnomon: fatal: OpenSSL %s failed\n", what);
  abort();
}

struct CipherCtx {
  CipherCtx() : c(EVP_CIPHER_CTX_new()) {
    if (!c) CryptoAbort("EVP_CIPHER_CTX_new");
  }
  ~CipherCtx() { EVP_CIPHER_CTX_free(c); }
  EVP_CIPHER_CTX* c;
};

const uint8_t* U8(std::string_view s) { return reinterpret_cast<const uint8_t*>(s.data()); }

}  // namespace

std::shared_ptr<const MasterKey> MasterKey::Generate() {
  std::shared_ptr<MasterKey> k(new MasterKey());
  RandomFill(k->k_.data(), k->k_.size());
  return k;
}

std::shared_ptr<const MasterKey> MasterKey::FromBytes(std::span<const uint8_t> bytes) {
  if (bytes.size() != kMasterKeySize) return nullptr;
  std::shared_ptr<MasterKey> k(new MasterKey());
  std::memcpy(k->k_.data(), bytes.data(), kMasterKeySize);
  return k;
}

MasterKey::~MasterKey() { OPENSSL_cleanse(k_.data(), k_.size()); }

Digest ChunkHasher::Of(std::span<const uint8_t> data) const {
  if (!key_) return Digest::Of(data);
  const auto k = key_->id_key();
  Digest d;
  if (f_ == IdFunction::kBlake3Keyed) {
    static_assert(BLAKE3_KEY_LEN == 32);
    blake3_hasher h;
    blake3_hasher_init_keyed(&h, k.data());
    blake3_hasher_update(&h, data.data(), data.size());
    blake3_hasher_finalize(&h, d.bytes.data(), d.bytes.size());
    OPENSSL_cleanse(&h, sizeof h);  // it holds the key
  } else {
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (!HMAC(EVP_sha256(), k.data(), static_cast<int>(k.size()), data.data(), data.size(), md,
              &len))
      CryptoAbort("HMAC");
    std::memcpy(d.bytes.data(), md, 16);
  }
  // The all-zero id means "a slot of zeros" (FORMAT.md §6); 2^-128.
  if (d.IsZero()) d.bytes[15] = 1;
  return d;
}

void HmacSha256(std::span<const uint8_t> key, std::span<const uint8_t> data, uint8_t out[32]) {
  unsigned len = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data.data(), data.size(), out,
            &len) ||
      len != 32)
    CryptoAbort("HMAC");
}

void Hkdf(std::span<const uint8_t> ikm, std::string_view info, std::span<uint8_t> out) {
  EVP_PKEY_CTX* p = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr);
  size_t n = out.size();
  bool ok = p && EVP_PKEY_derive_init(p) > 0 && EVP_PKEY_CTX_set_hkdf_md(p, EVP_sha256()) > 0 &&
            EVP_PKEY_CTX_set1_hkdf_key(p, ikm.data(), static_cast<int>(ikm.size())) > 0 &&
            EVP_PKEY_CTX_add1_hkdf_info(p, U8(info), static_cast<int>(info.size())) > 0 &&
            EVP_PKEY_derive(p, out.data(), &n) > 0 && n == out.size();
  EVP_PKEY_CTX_free(p);
  if (!ok) CryptoAbort("HKDF");
}

void Sha256(std::span<const uint8_t> data, uint8_t out[32]) {
  if (!SHA256(data.data(), data.size(), out)) CryptoAbort("SHA256");
}

// EVP takes int lengths: feed it at most 1 GiB at a time (AES-GCM itself
// allows up to 64 GiB per message, far more than any object holds).
constexpr size_t kPiece = size_t{1} << 30;

void SealWithKey(std::span<const uint8_t> key, std::string_view ad, std::span<const uint8_t> plain,
                 std::vector<uint8_t>* out) {
  const size_t at = out->size();
  out->resize(at + plain.size() + kSealOverhead);
  uint8_t* nonce = out->data() + at;
  uint8_t* ct = nonce + kNonceSize;
  RandomFill(nonce, kNonceSize);
  CipherCtx c;
  int len = 0;
  bool ok = EVP_EncryptInit_ex(c.c, EVP_aes_256_gcm(), nullptr, key.data(), nonce) > 0 &&
            EVP_EncryptUpdate(c.c, nullptr, &len, U8(ad), static_cast<int>(ad.size())) > 0;
  for (size_t done = 0; ok && done < plain.size(); done += kPiece) {
    const size_t n = std::min(kPiece, plain.size() - done);
    ok = EVP_EncryptUpdate(c.c, ct + done, &len, plain.data() + done, static_cast<int>(n)) > 0 &&
         static_cast<size_t>(len) == n;
  }
  ok = ok && EVP_EncryptFinal_ex(c.c, ct + plain.size(), &len) > 0 && len == 0 &&
       EVP_CIPHER_CTX_ctrl(c.c, EVP_CTRL_GCM_GET_TAG, kTagSize, ct + plain.size()) > 0;
  if (!ok) CryptoAbort("AES-256-GCM encryption");
}

bool OpenWithKey(std::span<const uint8_t> key, std::string_view ad, std::span<const uint8_t> sealed,
                 uint8_t* out) {
  if (sealed.size() < kSealOverhead) return false;
  const size_t n = sealed.size() - kSealOverhead;
  const uint8_t* nonce = sealed.data();
  const uint8_t* ct = nonce + kNonceSize;
  uint8_t tag[kTagSize];
  std::memcpy(tag, ct + n, kTagSize);
  CipherCtx c;
  int len = 0;
  // The tag is set before any byte is decrypted, and every failure wipes
  // what was: bytes that did not authenticate never leave here.
  bool ok = EVP_DecryptInit_ex(c.c, EVP_aes_256_gcm(), nullptr, key.data(), nonce) > 0 &&
            EVP_CIPHER_CTX_ctrl(c.c, EVP_CTRL_GCM_SET_TAG, kTagSize, tag) > 0 &&
            EVP_DecryptUpdate(c.c, nullptr, &len, U8(ad), static_cast<int>(ad.size())) > 0;
  for (size_t done = 0; ok && done < n; done += kPiece) {
    const size_t m = std::min(kPiece, n - done);
    ok = EVP_DecryptUpdate(c.c, out + done, &len, ct + done, static_cast<int>(m)) > 0 &&
         static_cast<size_t>(len) == m;
  }
  ok = ok && EVP_DecryptFinal_ex(c.c, out + n, &len) > 0;
  if (!ok && n) OPENSSL_cleanse(out, n);
  return ok;
}

ObjectKey::ObjectKey(const MasterKey& master, std::string_view name) {
  Hkdf(master.aead(), std::string("gnomon object key\0", 18) + std::string(name), k_);
}

ObjectKey::~ObjectKey() { OPENSSL_cleanse(k_.data(), k_.size()); }

void ObjectKey::Seal(std::string_view ad, std::span<const uint8_t> plain,
                     std::vector<uint8_t>* out) const {
  SealWithKey(k_, ad, plain, out);
}

bool ObjectKey::Open(std::string_view ad, std::span<const uint8_t> sealed, uint8_t* out) const {
  return OpenWithKey(k_, ad, sealed, out);
}

Hash128::Hash128() : state_(XXH3_createState()) {
  if (!state_) CryptoAbort("XXH3_createState");
  XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_));
}

Hash128::~Hash128() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

void Hash128::Update(std::span<const uint8_t> data) {
  XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), data.data(), data.size());
}

std::array<uint8_t, 16> Hash128::Final() const {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits_digest(static_cast<XXH3_state_t*>(state_)));
  std::array<uint8_t, 16> out;
  std::memcpy(out.data(), c.digest, 16);
  return out;
}

namespace {
std::array<uint8_t, 16> Trailer(std::span<const uint8_t> bytes) {
  Hash128 h;
  h.Update(bytes);
  return h.Final();
}
}  // namespace

std::string SealObject(const MasterKey& key, std::string_view name, std::string_view plain) {
  std::vector<uint8_t> out(kSealedMagic, kSealedMagic + 8);
  ObjectKey(key, name).Seal(name, {U8(plain), plain.size()}, &out);
  const auto t = Trailer(out);
  out.insert(out.end(), t.begin(), t.end());
  return std::string(out.begin(), out.end());
}

bool LooksSealed(std::string_view bytes) {
  return bytes.size() >= 8 && std::memcmp(bytes.data(), kSealedMagic, 8) == 0;
}

Status CheckSealedObject(const std::string& path, std::span<const uint8_t> b) {
  if (b.size() < kSealedObjectOverhead)
    return Status::Corruption(path + ": encrypted object is truncated (" +
                              std::to_string(b.size()) + " bytes)");
  if (std::memcmp(b.data(), kSealedMagic, 8) != 0)
    return Status::Corruption(path + ": not an encrypted gnomon object (bad magic)");
  const auto t = Trailer(b.first(b.size() - 16));
  if (std::memcmp(t.data(), b.data() + b.size() - 16, 16) != 0)
    return Status::Corruption(path +
                              ": encrypted object is damaged or truncated (its XXH3-128 "
                              "trailer does not match)");
  return Status::OK();
}

Status OpenObject(const MasterKey& key, std::string_view name, const std::string& path,
                  const std::string& sealed, std::string* plain) {
  std::span<const uint8_t> b(U8(sealed), sealed.size());
  GNOMON_RETURN_IF_ERROR(CheckSealedObject(path, b));
  const auto body = b.subspan(8, b.size() - 8 - 16);
  plain->resize(body.size() - kSealOverhead);
  if (!ObjectKey(key, name).Open(name, body, reinterpret_cast<uint8_t*>(plain->data()))) {
    plain->clear();
    return Status::Corruption(path +
                              ": encrypted object does not authenticate (tampered with, or "
                              "moved here from another name or repository)");
  }
  return Status::OK();
}

}  // namespace gnomon
