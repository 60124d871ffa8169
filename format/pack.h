// Pack files: many stored chunks followed by a header that lists them, so a
// pack is written in one pass and read from its tail (restic's layout). See
// FORMAT.md, "Pack files".
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "format/backend.h"
#include "format/codec.h"
#include "format/config.h"
#include "format/crypto.h"
#include "format/digest.h"
#include "format/env.h"

namespace gnomon {

inline constexpr char kPackMagic[9] = "GNMPACK\x01";
inline constexpr uint32_t kPackVersion = 2;
inline constexpr size_t kPackEntrySize = 32;
inline constexpr size_t kPackTailSize = 24;
// A sealed pack (encrypted repository, FORMAT.md §14.3): every blob and the
// header sealed, and a 32-byte tail ending in this magic.
inline constexpr char kSealedPackMagic[9] = "GNMSPAK\x01";
inline constexpr uint32_t kSealedPackVersion = 1;
inline constexpr size_t kSealedPackTailSize = 32;
// A sealed blob seals the XXH3-64 of the chunk's raw bytes (u64) and its
// stored bytes: a reader checks the decoded chunk against it, and only
// verify recomputes the keyed id (FORMAT.md §14.3).
inline constexpr size_t kRawCheckSize = 8;
inline constexpr size_t kSealedBlobOverhead = kSealOverhead + kRawCheckSize;
// The associated data of a sealed pack's blob and header.
std::string BlobAd(const Digest& d);
inline constexpr std::string_view kPackHeaderAd = "header";

struct PackEntry {
  Digest digest;
  uint32_t offset = 0;  // of the stored bytes within the pack
  uint32_t stored_len = 0;
  uint32_t raw_len = 0;
  Codec codec = Codec::kRaw;
  // 0: a whole chunk. N >= 1: a patch (see format/patch.h) on a base of
  // depth N - 1. Stored with the codec in one u32: see EncodeCodecField.
  uint8_t patch_depth = 0;
};

// The u32 "codec" field of pack and index entries: bits 0-7 the codec, bit 8
// set for a patch, bits 16-23 the patch depth. Version-1 files hold only a
// codec. Returns false for bits this version does not know.
uint32_t EncodeCodecField(Codec codec, uint8_t patch_depth);
bool DecodeCodecField(uint32_t field, Codec* codec, uint8_t* patch_depth);

// Corruption (naming `where`) unless a blob's lengths are ones a writer
// could have written (FORMAT.md §5): 0 < raw_len <= kMaxChunkSize (a patch
// is stored only when it is smaller than its chunk) and 0 < stored_len <=
// raw_len (a chunk zstd cannot shrink is stored raw). Every reader of pack
// headers and index files checks before it allocates: a hostile file must
// not make it allocate gigabytes.
Status CheckBlobLengths(uint32_t stored_len, uint32_t raw_len, const std::string& where);

// Appends chunks to a temporary file; Finish() writes the header, fsyncs and
// renames the pack to its final name. Until then the pack is invisible.
class PackWriter {
 public:
  // With a key, the pack is sealed (its object name is packs/<id>).
  PackWriter(std::string id, std::unique_ptr<Upload> upload,
             std::shared_ptr<const MasterKey> key = nullptr);
  // raw_check: XXH3-64 of the raw bytes, taken when d was (sealed packs only).
  Status Add(const Digest& d, Codec codec, std::span<const uint8_t> stored, uint32_t raw_len,
             uint8_t patch_depth = 0, uint64_t raw_check = 0);
  Status Finish();  // header, then the upload committed (durable, then visible)
  void Abandon();   // drops the upload
  uint64_t size() const { return file_->Size(); }
  size_t count() const { return entries_.size(); }
  const std::string& id() const { return id_; }
  const std::vector<PackEntry>& entries() const { return entries_; }

 private:
  std::string id_;
  Status Append(std::span<const uint8_t> bytes);
  std::string EncodeEntries() const;

  std::unique_ptr<Upload> file_;
  std::vector<PackEntry> entries_;
  std::unique_ptr<ObjectKey> key_;       // sealed packs only
  Hash128 hash_;                         // of every byte written, for the sealed tail
  std::vector<uint8_t> plain_, sealed_;  // a blob's check and stored bytes, and sealed form
};

// The object name of pack `id` (its sealing key's name).
inline std::string PackObjectName(const std::string& id) { return "packs/" + id; }

// Reads and validates a pack's header (the entries and their offsets). A
// sealed pack needs `key` (else WrongKey); a plain one is refused when a key
// is given (an encrypted repository holds only sealed packs). A sealed
// pack's offsets are of its sealed blobs (stored length + kSealedBlobOverhead).
Status ReadPackHeader(const RandomAccessFile& f, std::vector<PackEntry>* entries,
                      const MasterKey* key = nullptr, const std::string& id = "");
// Checks a sealed pack without the key: its tail and XXH3-128 over all of it.
Status ScrubSealedPack(const RandomAccessFile& f, uint64_t* bytes);

}  // namespace gnomon
