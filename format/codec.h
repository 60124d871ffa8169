// Chunk compression. A chunk is stored zstd-compressed, or raw when zstd does
// not make it smaller. Each codec object owns its zstd context, so give every
// worker thread its own.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

struct ZSTD_CCtx_s;
struct ZSTD_DCtx_s;

namespace gnomon {

enum class Codec : uint32_t { kRaw = 0, kZstd = 1 };

class ChunkCompressor {
 public:
  explicit ChunkCompressor(int level);
  ~ChunkCompressor();
  ChunkCompressor(const ChunkCompressor&) = delete;
  ChunkCompressor& operator=(const ChunkCompressor&) = delete;
  // Fills *out with the stored form of raw and returns its codec.
  Codec Compress(std::span<const uint8_t> raw, std::vector<uint8_t>* out) {
    return Compress(raw, level_, out);
  }
  // The same at another zstd level than the one this was made with.
  Codec Compress(std::span<const uint8_t> raw, int level, std::vector<uint8_t>* out);

 private:
  ZSTD_CCtx_s* cctx_;
  int level_;
};

class ChunkDecompressor {
 public:
  ChunkDecompressor();
  ~ChunkDecompressor();
  ChunkDecompressor(const ChunkDecompressor&) = delete;
  ChunkDecompressor& operator=(const ChunkDecompressor&) = delete;
  // Decodes stored bytes into exactly raw_len bytes at out. `where` names the
  // chunk for error messages.
  Status Decompress(Codec codec, std::span<const uint8_t> stored, uint8_t* out, size_t raw_len,
                    const std::string& where);

 private:
  ZSTD_DCtx_s* dctx_;
};

}  // namespace gnomon
