#include "format/pack.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>

#include "format/coding.h"

namespace gnomon {

PackWriter::PackWriter(std::string id, std::unique_ptr<Upload> upload,
                       std::shared_ptr<const MasterKey> key)
    : id_(std::move(id)), file_(std::move(upload)) {
  if (key) key_ = std::make_unique<ObjectKey>(*key, PackObjectName(id_));
}

std::string BlobAd(const Digest& d) { return "blob " + d.Hex(); }

Status PackWriter::Append(std::span<const uint8_t> bytes) {
  if (key_) hash_.Update(bytes);
  return file_->Append(bytes);
}

uint32_t EncodeCodecField(Codec codec, uint8_t patch_depth) {
  uint32_t f = static_cast<uint32_t>(codec);
  if (patch_depth) f |= 0x100u | uint32_t{patch_depth} << 16;
  return f;
}

bool DecodeCodecField(uint32_t field, Codec* codec, uint8_t* patch_depth) {
  if (field & ~0x00ff01ffu) return false;
  uint32_t c = field & 0xff;
  if (c > static_cast<uint32_t>(Codec::kZstd)) return false;
  *codec = static_cast<Codec>(c);
  bool patch = field & 0x100u;
  *patch_depth = static_cast<uint8_t>(field >> 16);
  return patch == (*patch_depth != 0);
}

Status PackWriter::Add(const Digest& d, Codec codec, std::span<const uint8_t> stored,
                       uint32_t raw_len, uint8_t patch_depth, uint64_t raw_check) {
  PackEntry e;
  e.digest = d;
  e.offset = static_cast<uint32_t>(file_->Size());
  e.stored_len = static_cast<uint32_t>(stored.size());
  e.raw_len = raw_len;
  e.codec = codec;
  e.patch_depth = patch_depth;
  if (key_) {
    plain_.resize(kRawCheckSize + stored.size());
    EncodeU64(plain_.data(), raw_check);
    std::memcpy(plain_.data() + kRawCheckSize, stored.data(), stored.size());
    sealed_.clear();
    key_->Seal(BlobAd(d), plain_, &sealed_);
    GNOMON_RETURN_IF_ERROR(Append(sealed_));
  } else {
    GNOMON_RETURN_IF_ERROR(Append(stored));
  }
  entries_.push_back(e);
  return Status::OK();
}

std::string PackWriter::EncodeEntries() const {
  std::string header;
  header.reserve(entries_.size() * kPackEntrySize + kPackTailSize);
  for (const auto& e : entries_) {
    header.append(reinterpret_cast<const char*>(e.digest.bytes.data()), 16);
    PutU32(&header, e.raw_len);
    PutU32(&header, e.stored_len);
    PutU32(&header, EncodeCodecField(e.codec, e.patch_depth));
    PutU32(&header, 0);
  }
  return header;
}

Status PackWriter::Finish() {
  std::string header = EncodeEntries();
  auto bytes = [](const std::string& b) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(b.data()), b.size());
  };
  Status s;
  if (key_) {
    sealed_.clear();
    key_->Seal(kPackHeaderAd, bytes(header), &sealed_);
    std::string tail;
    PutU32(&tail, static_cast<uint32_t>(entries_.size()));
    PutU32(&tail, kSealedPackVersion);
    s = Append(sealed_);
    hash_.Update(bytes(tail));
    const auto h = hash_.Final();
    tail.append(reinterpret_cast<const char*>(h.data()), h.size());
    tail.append(kSealedPackMagic, 8);
    if (s.ok()) s = file_->Append(bytes(tail));
  } else {
    PutU32(&header, static_cast<uint32_t>(entries_.size()));
    PutU32(&header, kPackVersion);
    PutU64(&header, Checksum64(bytes(header)));
    header.append(kPackMagic, 8);
    s = file_->Append(bytes(header));
  }
  if (s.ok()) s = file_->Commit();  // durable, then visible; packs are write-once
  if (!s.ok()) Abandon();
  return s;
}

void PackWriter::Abandon() { file_->Abort(); }

Status CheckBlobLengths(uint32_t stored_len, uint32_t raw_len, const std::string& where) {
  if (raw_len == 0 || raw_len > kMaxChunkSize || stored_len == 0 || stored_len > raw_len)
    return Status::Corruption(where + ": lengths no gnomon writes (" + std::to_string(raw_len) +
                              " bytes, " + std::to_string(stored_len) + " stored; a chunk " +
                              "holds 1.." + std::to_string(kMaxChunkSize) +
                              " and is stored in at most as many)");
  return Status::OK();
}

namespace {

// Parses count entries at b, laying their blobs out from offset 0, each
// taking its stored length plus `overhead`; the blobs must end at data_end.
Status ParseEntries(const std::string& path, const uint8_t* b, uint32_t count, size_t overhead,
                    uint64_t data_end, std::vector<PackEntry>* entries) {
  entries->clear();
  entries->reserve(count);
  uint64_t offset = 0;
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* p = b + uint64_t{i} * kPackEntrySize;
    PackEntry e;
    std::memcpy(e.digest.bytes.data(), p, 16);
    e.raw_len = GetU32(p + 16);
    e.stored_len = GetU32(p + 20);
    if (!DecodeCodecField(GetU32(p + 24), &e.codec, &e.patch_depth))
      return Status::Corruption(path + ": chunk " + e.digest.Hex() + " has an unknown codec " +
                                std::to_string(GetU32(p + 24)));
    GNOMON_RETURN_IF_ERROR(
        CheckBlobLengths(e.stored_len, e.raw_len, path + ": chunk " + e.digest.Hex()));
    if (offset > UINT32_MAX)
      return Status::Corruption(path + ": pack is larger than its 32-bit offsets allow");
    e.offset = static_cast<uint32_t>(offset);
    offset += e.stored_len + overhead;
    entries->push_back(e);
  }
  if (offset != data_end) {
    return Status::Corruption(path + ": pack header describes " + std::to_string(offset) +
                              " data bytes but the file holds " + std::to_string(data_end));
  }
  return Status::OK();
}

Status ReadPlainHeader(const RandomAccessFile& f, const uint8_t* tail,
                       std::vector<PackEntry>* entries) {
  const std::string& path = f.path();
  const uint64_t size = f.Size();
  uint32_t count = GetU32(tail);
  uint32_t version = GetU32(tail + 4);
  if (version == 0 || version > kPackVersion) {
    return Status::Unsupported(path + ": pack format version " + std::to_string(version) +
                               " is not supported (this gnomon reads up to " +
                               std::to_string(kPackVersion) + ")");
  }
  uint64_t header_len = uint64_t{count} * kPackEntrySize;
  if (header_len + kPackTailSize > size) {
    return Status::Corruption(path + ": pack header claims " + std::to_string(count) +
                              " chunks, more than the file can hold");
  }
  std::string buf(header_len + 16, '\0');
  auto* b = reinterpret_cast<uint8_t*>(buf.data());
  GNOMON_RETURN_IF_ERROR(f.ReadAt(size - kPackTailSize - header_len, header_len, b));
  std::memcpy(b + header_len, tail, 8);  // count + version are covered too
  if (Checksum64({b, header_len + 8}) != GetU64(tail + 8)) {
    return Status::Corruption(path + ": pack header checksum mismatch (file is damaged)");
  }
  return ParseEntries(path, b, count, 0, size - kPackTailSize - header_len, entries);
}

// The sealed tail's count, version and header length, checked against the file.
Status ReadSealedTail(const RandomAccessFile& f, uint8_t tail[kSealedPackTailSize], uint32_t* count,
                      uint64_t* sealed_header_len) {
  const std::string& path = f.path();
  const uint64_t size = f.Size();
  if (size < kSealedPackTailSize)
    return Status::Corruption(path + ": pack is truncated (" + std::to_string(size) + " bytes)");
  GNOMON_RETURN_IF_ERROR(
      f.ReadAt(size - kSealedPackTailSize, kSealedPackTailSize, tail).WithContext(path));
  if (std::memcmp(tail + 24, kSealedPackMagic, 8) != 0)
    return Status::Corruption(path + ": not an encrypted gnomon pack, or truncated");
  *count = GetU32(tail);
  const uint32_t version = GetU32(tail + 4);
  if (version != kSealedPackVersion)
    return Status::Unsupported(path + ": sealed pack version " + std::to_string(version) +
                               " is not supported");
  *sealed_header_len = uint64_t{*count} * kPackEntrySize + kSealOverhead;
  // Each chunk costs its entry and a sealed blob of at least 1 + 28 bytes:
  // a count the file cannot hold allocates nothing.
  if (uint64_t{*count} * (kPackEntrySize + 1 + kSealedBlobOverhead) + kSealOverhead +
          kSealedPackTailSize >
      size)
    return Status::Corruption(path + ": pack header claims " + std::to_string(*count) +
                              " chunks, more than the file can hold");
  return Status::OK();
}

Status ReadSealedHeader(const RandomAccessFile& f, const MasterKey& key, const std::string& id,
                        std::vector<PackEntry>* entries) {
  const std::string& path = f.path();
  uint8_t tail[kSealedPackTailSize];
  uint32_t count = 0;
  uint64_t sealed_len = 0;
  GNOMON_RETURN_IF_ERROR(ReadSealedTail(f, tail, &count, &sealed_len));
  const uint64_t data_end = f.Size() - kSealedPackTailSize - sealed_len;
  std::vector<uint8_t> sealed(sealed_len), plain(sealed_len - kSealOverhead);
  GNOMON_RETURN_IF_ERROR(f.ReadAt(data_end, sealed_len, sealed.data()).WithContext(path));
  if (!ObjectKey(key, PackObjectName(id)).Open(kPackHeaderAd, sealed, plain.data()))
    return Status::Corruption(path +
                              ": pack header does not authenticate (damaged, tampered with, or "
                              "moved from another name)");
  return ParseEntries(path, plain.data(), count, kSealedBlobOverhead, data_end, entries);
}

}  // namespace

Status ReadPackHeader(const RandomAccessFile& f, std::vector<PackEntry>* entries,
                      const MasterKey* key, const std::string& id) {
  const std::string& path = f.path();
  uint64_t size = f.Size();
  if (size < kPackTailSize) {
    return Status::Corruption(path + ": pack is truncated (" + std::to_string(size) + " bytes)");
  }
  uint8_t tail[kPackTailSize];
  GNOMON_RETURN_IF_ERROR(f.ReadAt(size - kPackTailSize, kPackTailSize, tail));
  const bool sealed = std::memcmp(tail + 16, kSealedPackMagic, 8) == 0;
  if (!sealed && std::memcmp(tail + 16, kPackMagic, 8) != 0) {
    return Status::Corruption(path + ": not a gnomon pack, or truncated (bad trailing magic)");
  }
  if (sealed && !key)
    return Status::Corruption(path + ": an encrypted pack in a repository that is not encrypted");
  if (!sealed && key)
    return Status::Corruption(path + ": an unencrypted pack in an encrypted repository");
  return sealed ? ReadSealedHeader(f, *key, id, entries) : ReadPlainHeader(f, tail, entries);
}

Status ScrubSealedPack(const RandomAccessFile& f, uint64_t* bytes) {
  uint8_t tail[kSealedPackTailSize];
  uint32_t count = 0;
  uint64_t sealed_len = 0;
  GNOMON_RETURN_IF_ERROR(ReadSealedTail(f, tail, &count, &sealed_len));
  // Covered: everything but the hash and the magic.
  const uint64_t covered = f.Size() - kSealedPackTailSize + 8;
  Hash128 h;
  std::vector<uint8_t> buf(1 << 20);
  for (uint64_t at = 0; at < covered;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), covered - at));
    GNOMON_RETURN_IF_ERROR(f.ReadAt(at, n, buf.data()).WithContext(f.path()));
    h.Update({buf.data(), n});
    at += n;
  }
  *bytes += f.Size();
  const auto want = h.Final();
  if (std::memcmp(want.data(), tail + 8, 16) != 0)
    return Status::Corruption(f.path() +
                              ": pack is damaged (its XXH3-128 does not match its tail)");
  return Status::OK();
}

}  // namespace gnomon
