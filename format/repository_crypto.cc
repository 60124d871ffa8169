// The repository's encryption (FORMAT.md §14): unlocking, key slots, sealed
// framed files and packs, and the scrub a storage host runs without the key.
#include <algorithm>
#include <cstring>
#include <filesystem>

#include "format/coding.h"
#include "format/names.h"
#include "format/repository.h"
#include "format/repository_layout.h"

namespace gnomon {

Status Repository::NeedKey(const std::string& what) const {
  if (!encrypted() || key_) return Status::OK();
  return Status::WrongKey(what +
                          ": the repository is encrypted and no key was given "
                          "(GNOMON_PASSWORD, --password-file or --key-file)");
}

void Repository::SetKey(std::shared_ptr<const MasterKey> key) {
  const bool first = !key_;
  key_ = std::move(key);
  const IdFunction f =
      config_.hash == "hmac-sha256-128" ? IdFunction::kHmacSha256 : IdFunction::kBlake3Keyed;
  hasher_ = key_ ? ChunkHasher(key_, f) : ChunkHasher();
  if (first && key_ && Writes()) CleanUpDeadRuns();
}

Status Repository::ListKeySlots(std::vector<KeySlot>* out, std::vector<Status>* errors) {
  out->clear();
  std::vector<std::string> names;
  GNOMON_RETURN_IF_ERROR(backend_->List(kKeys, &names));
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    if (!IsHexName(n, 16)) continue;
    const std::string path = D(P(kKeys, n));
    std::string body;
    KeySlot slot;
    Status s = ReadPlainFramed(kKeySlotFrame, P(kKeys, n), &body);
    if (s.ok()) s = KeySlot::Decode(path, body, &slot);
    if (s.ok() && slot.id != n) s = Status::Corruption(path + ": key slot id != file name");
    if (s.ok())
      out->push_back(std::move(slot));
    else if (errors)
      errors->push_back(s);
  }
  return Status::OK();
}

namespace {
// Tries every slot; the first that opens wins. A slot that fails for
// another reason than the secret is damage, and the next one is tried.
template <class TryFn>
Status TrySlots(const std::vector<KeySlot>& slots, std::vector<Status> damaged,
                const std::string& path, const char* what, TryFn&& try_slot) {
  size_t tried = 0;
  for (const auto& slot : slots) {
    Status s = try_slot(slot);
    if (s.ok()) return s;
    if (!s.IsWrongKey()) {
      damaged.push_back(s);
      continue;
    }
    tried += s.message().find("is not for") == std::string::npos;
  }
  // Nothing to try but damaged slots, or none at all: damage, not a wrong key.
  if (tried == 0 && !damaged.empty()) return damaged.front();
  if (tried == 0 && slots.empty())
    return Status::Corruption(path +
                              ": an encrypted repository without key slots (keys/ is "
                              "empty or missing): nothing can open it");
  std::string m = path + ": wrong " + what + " (" + std::to_string(tried) + " of " +
                  std::to_string(slots.size()) + " key slots tried)";
  if (!damaged.empty()) m += "; and " + damaged.front().message();
  // The slots are bound to the config's id: a right key fails if it changed.
  return Status::WrongKey(m + "; if the " + what + " is right, the config may have been altered");
}
}  // namespace

Status Repository::UnlockWithPassword(std::string_view password) {
  if (!encrypted()) return Status::OK();
  std::vector<KeySlot> slots;
  std::vector<Status> damaged;
  GNOMON_RETURN_IF_ERROR(ListKeySlots(&slots, &damaged));
  std::shared_ptr<const MasterKey> key;
  const bool any = !slots.empty();
  std::erase_if(slots, [](const KeySlot& s) { return s.kind != "password"; });
  if (any && slots.empty() && damaged.empty())
    return Status::WrongKey(path() +
                            ": no passphrase opens this repository, only a key file "
                            "(--key-file)");
  GNOMON_RETURN_IF_ERROR(TrySlots(slots, damaged, path(), "passphrase", [&](const KeySlot& s) {
    Status st = OpenPasswordSlot(config_.id, s, password, &key);
    if (st.ok()) unlocked_slot_ = s.id;
    return st;
  }));
  SetKey(key);
  return Status::OK();
}

Status Repository::UnlockWithKeyFile(std::span<const uint8_t> file_key) {
  if (!encrypted()) return Status::OK();
  std::vector<KeySlot> slots;
  std::vector<Status> damaged;
  GNOMON_RETURN_IF_ERROR(ListKeySlots(&slots, &damaged));
  std::shared_ptr<const MasterKey> key;
  GNOMON_RETURN_IF_ERROR(TrySlots(slots, damaged, path(), "key file", [&](const KeySlot& s) {
    Status st = OpenKeyFileSlot(config_.id, s, file_key, &key);
    if (st.ok()) unlocked_slot_ = s.id;
    return st;
  }));
  SetKey(key);
  return Status::OK();
}

Status Repository::AddKeySlot(const KeySlot& slot) {
  GNOMON_RETURN_IF_ERROR(NeedKey("adding a key"));
  return WritePlainFramed(kKeySlotFrame, 1, P(kKeys, slot.id), slot.Encode());
}

Status Repository::RemoveKeySlot(const std::string& id) {
  if (!IsHexName(id, 16)) return Status::InvalidArgument("'" + id + "' is not a key slot id");
  std::vector<KeySlot> slots;
  GNOMON_RETURN_IF_ERROR(ListKeySlots(&slots, nullptr));
  if (!backend_->Exists(P(kKeys, id)))
    return Status::NotFound("no key slot " + id + " in " + path());
  // A damaged slot may go as long as an intact one stays.
  std::erase_if(slots, [&](const KeySlot& s) { return s.id == id; });
  if (slots.empty())
    return Status::InvalidArgument("key slot " + id +
                                   " is the last one that opens the repository; add another "
                                   "first (gnomon key add)");
  return backend_->Delete(P(kKeys, id));
}

Status Repository::WritePlainFramed(const FrameKind& kind, uint32_t version,
                                    const std::string& name, std::string_view body) {
  // Every framed file is immutable: published once, never replaced.
  const std::string file = EncodeFrame(kind, version, body);
  return backend_->Put(name, {reinterpret_cast<const uint8_t*>(file.data()), file.size()});
}

Status Repository::ReadPlainFramed(const FrameKind& kind, const std::string& name,
                                   std::string* body, uint32_t* version) {
  std::string file;
  GNOMON_RETURN_IF_ERROR(backend_->Get(name, &file));
  return DecodeFrame(kind, D(name), file, body, version);
}

Status Repository::WriteFramed(const FrameKind& kind, uint32_t version, const std::string& name,
                               std::string_view body) {
  if (!encrypted()) return WritePlainFramed(kind, version, name, body);
  GNOMON_RETURN_IF_ERROR(NeedKey(D(name)));
  const std::string sealed = SealObject(*key_, name, EncodeFrame(kind, version, body));
  return backend_->Put(name, {reinterpret_cast<const uint8_t*>(sealed.data()), sealed.size()});
}

Status Repository::ReadFramed(const FrameKind& kind, const std::string& name, std::string* body,
                              uint32_t* version) {
  if (!encrypted()) return ReadPlainFramed(kind, name, body, version);
  const std::string path = D(name);
  GNOMON_RETURN_IF_ERROR(NeedKey(path));
  std::string sealed, frame;
  GNOMON_RETURN_IF_ERROR(backend_->Get(name, &sealed));
  GNOMON_RETURN_IF_ERROR(OpenObject(*key_, name, path, sealed, &frame));
  return DecodeFrame(kind, path, frame, body, version);
}

Status Repository::ReadPackHeader(const std::string& id, const RandomAccessFile& f,
                                  std::vector<PackEntry>* entries) {
  GNOMON_RETURN_IF_ERROR(NeedKey(f.path()));
  return gnomon::ReadPackHeader(f, entries, key_.get(), id);
}

Status Repository::ReadBlob(const std::string& id, const RandomAccessFile& f, const PackEntry& e,
                            std::vector<uint8_t>* stored, uint8_t* raw, ChunkDecompressor* dec,
                            bool full_check, uint64_t* raw_check) {
  const std::string where =
      f.path() + ": chunk " + e.digest.Hex() + " at offset " + std::to_string(e.offset);
  if (!key_) {
    GNOMON_RETURN_IF_ERROR(NeedKey(where));
    stored->resize(e.stored_len);
    GNOMON_RETURN_IF_ERROR(f.ReadAt(e.offset, e.stored_len, stored->data()).WithContext(where));
    GNOMON_RETURN_IF_ERROR(dec->Decompress(e.codec, *stored, raw, e.raw_len, where));
    if (hasher_.Of({raw, e.raw_len}) != e.digest)
      return Status::Corruption(where + ": content does not match its digest (data is damaged)");
    if (raw_check) *raw_check = Checksum64({raw, e.raw_len});
    return Status::OK();
  }
  thread_local std::vector<uint8_t> sealed;
  sealed.resize(e.stored_len + kSealedBlobOverhead);
  stored->resize(e.stored_len + kRawCheckSize);
  GNOMON_RETURN_IF_ERROR(f.ReadAt(e.offset, sealed.size(), sealed.data()).WithContext(where));
  if (!ObjectKey(*key_, PackObjectName(id)).Open(BlobAd(e.digest), sealed, stored->data()))
    return Status::Corruption(where +
                              ": does not authenticate (damaged, tampered with, or moved "
                              "from another place)");
  const uint64_t check = GetU64(stored->data());
  stored->erase(stored->begin(), stored->begin() + kRawCheckSize);
  GNOMON_RETURN_IF_ERROR(dec->Decompress(e.codec, *stored, raw, e.raw_len, where));
  // Authenticated bytes are what a gnomon wrote; the check catches what
  // went wrong in that gnomon's memory between hashing and sealing.
  if (Checksum64({raw, e.raw_len}) != check ||
      (full_check && hasher_.Of({raw, e.raw_len}) != e.digest))
    return Status::Corruption(where + ": content does not match its digest (written damaged)");
  if (raw_check) *raw_check = check;
  return Status::OK();
}

namespace {
// What ScrubWithoutKey walks: each directory and the names it keeps.
struct ScrubDir {
  const char* dir;
  size_t hex_len;  // 0: anything but temporaries
};
}  // namespace

Status Repository::ScrubWithoutKey(std::vector<Status>* damaged, uint64_t* objects, uint64_t* bytes,
                                   const std::atomic<bool>* cancel) {
  if (!encrypted())
    return Status::InvalidArgument(path() + ": not encrypted; verify --read-data needs no key");
  auto stop = [&] { return cancel && cancel->load(); };
  // Config and key slots are framed plaintext: their XXH3-64 checksum.
  {
    std::string body;
    Status s = ReadPlainFramed(kConfigFrame, kConfig, &body);
    ++*objects;
    if (!s.ok()) damaged->push_back(s);
    std::vector<KeySlot> slots;
    GNOMON_RETURN_IF_ERROR(ListKeySlots(&slots, damaged));
    *objects += slots.size();
  }
  const ScrubDir dirs[] = {
      {kIndex, 32}, {kVolumes, 0}, {kBackups, 16}, {kQuarantine, 32}, {kChecks, 32}};
  for (const auto& d : dirs) {
    std::vector<std::string> names;
    GNOMON_RETURN_IF_ERROR(backend_->List(d.dir, &names));
    std::sort(names.begin(), names.end());
    for (const auto& n : names) {
      if (stop()) return Status::Aborted("interrupted");
      if (d.hex_len ? !IsHexName(n, d.hex_len) : n.find(".tmp-") != std::string::npos) continue;
      const std::string path = D(P(d.dir, n));
      std::string file;
      Status s = backend_->Get(P(d.dir, n), &file);
      if (s.IsNotFound()) continue;  // forgotten while we walked
      if (s.ok())
        s = encrypted() ? CheckSealedObject(
                              path, {reinterpret_cast<const uint8_t*>(file.data()), file.size()})
                        : Status::OK();
      ++*objects;
      *bytes += file.size();
      if (!s.ok()) damaged->push_back(s);
    }
  }
  std::vector<std::string> ids;
  GNOMON_RETURN_IF_ERROR(ListPacks(&ids));
  for (const auto& id : ids) {
    if (stop()) return Status::Aborted("interrupted");
    std::unique_ptr<RandomAccessFile> f;
    Status s = backend_->Open(PackName(id), &f);
    if (s.IsNotFound()) continue;
    if (s.ok()) s = ScrubSealedPack(*f, bytes);
    ++*objects;
    if (!s.ok()) damaged->push_back(s);
  }
  return Status::OK();
}

}  // namespace gnomon
