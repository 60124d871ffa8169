#include "format/pack.h"

#include <cstring>

#include "format/coding.h"

namespace gnomon {

PackWriter::PackWriter(Env* env, std::string id, std::string tmp_path, std::string final_path,
                       std::unique_ptr<WritableFile> file)
    : env_(env),
      id_(std::move(id)),
      tmp_path_(std::move(tmp_path)),
      final_path_(std::move(final_path)),
      file_(std::move(file)) {}

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
                       uint32_t raw_len, uint8_t patch_depth) {
  PackEntry e;
  e.digest = d;
  e.offset = static_cast<uint32_t>(file_->Size());
  e.stored_len = static_cast<uint32_t>(stored.size());
  e.raw_len = raw_len;
  e.codec = codec;
  e.patch_depth = patch_depth;
  GNOMON_RETURN_IF_ERROR(file_->Append(stored));
  entries_.push_back(e);
  return Status::OK();
}

Status PackWriter::Finish() {
  std::string header;
  header.reserve(entries_.size() * kPackEntrySize + kPackTailSize);
  for (const auto& e : entries_) {
    header.append(reinterpret_cast<const char*>(e.digest.bytes.data()), 16);
    PutU32(&header, e.raw_len);
    PutU32(&header, e.stored_len);
    PutU32(&header, EncodeCodecField(e.codec, e.patch_depth));
    PutU32(&header, 0);
  }
  PutU32(&header, static_cast<uint32_t>(entries_.size()));
  PutU32(&header, kPackVersion);
  PutU64(&header, Checksum64({reinterpret_cast<const uint8_t*>(header.data()), header.size()}));
  header.append(kPackMagic, 8);
  Status s = file_->Append({reinterpret_cast<const uint8_t*>(header.data()), header.size()});
  if (s.ok()) s = file_->Sync();
  Status c = file_->Close();
  if (s.ok()) s = c;
  if (s.ok()) s = env_->RenameNoReplace(tmp_path_, final_path_);  // packs are write-once
  if (s.ok()) s = env_->SyncDir(ParentDir(final_path_));
  if (!s.ok()) Abandon();
  return s;
}

void PackWriter::Abandon() {
  file_->Close();
  env_->RemoveFile(tmp_path_);
}

Status CheckBlobLengths(uint32_t stored_len, uint32_t raw_len, const std::string& where) {
  if (raw_len == 0 || raw_len > kMaxChunkSize || stored_len == 0 || stored_len > raw_len)
    return Status::Corruption(where + ": lengths no gnomon writes (" + std::to_string(raw_len) +
                              " bytes, " + std::to_string(stored_len) + " stored; a chunk " +
                              "holds 1.." + std::to_string(kMaxChunkSize) +
                              " and is stored in at most as many)");
  return Status::OK();
}

Status ReadPackHeader(const RandomAccessFile& f, std::vector<PackEntry>* entries) {
  const std::string& path = f.path();
  uint64_t size = f.Size();
  if (size < kPackTailSize) {
    return Status::Corruption(path + ": pack is truncated (" + std::to_string(size) + " bytes)");
  }
  uint8_t tail[kPackTailSize];
  GNOMON_RETURN_IF_ERROR(f.ReadAt(size - kPackTailSize, kPackTailSize, tail));
  if (std::memcmp(tail + 16, kPackMagic, 8) != 0) {
    return Status::Corruption(path + ": not a gnomon pack, or truncated (bad trailing magic)");
  }
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
  entries->clear();
  entries->reserve(count);
  uint64_t offset = 0;
  const uint64_t data_end = size - kPackTailSize - header_len;
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
    e.offset = static_cast<uint32_t>(offset);
    offset += e.stored_len;
    entries->push_back(e);
  }
  if (offset != data_end) {
    return Status::Corruption(path + ": pack header describes " + std::to_string(offset) +
                              " data bytes but the file holds " + std::to_string(data_end));
  }
  return Status::OK();
}

}  // namespace gnomon
