#include "format/codec.h"

#include <zstd.h>

#include <cstring>

namespace gnomon {

ChunkCompressor::ChunkCompressor(int level) : cctx_(ZSTD_createCCtx()), level_(level) {}
ChunkCompressor::~ChunkCompressor() { ZSTD_freeCCtx(cctx_); }

Codec ChunkCompressor::Compress(std::span<const uint8_t> raw, int level,
                                std::vector<uint8_t>* out) {
  // Bound the output at raw.size(): if zstd cannot beat that it fails with
  // dstSize_tooSmall and the chunk is stored raw, which is what we want anyway.
  out->resize(raw.size());
  // A window that spans the whole chunk: zstd's tables for large inputs cap
  // the low levels at 1 MiB, which loses matches further back in a 4 MiB
  // chunk that is in memory anyway. Measured at level 2 on the realistic
  // volume: 2 % smaller and no slower (bench/RESULTS.md, "Pipeline tuning").
  // (10 is zstd's smallest window; 27 the largest a default decoder takes.)
  int window_log = 10;
  while (window_log < 27 && (size_t{1} << window_log) < raw.size()) ++window_log;
  ZSTD_CCtx_reset(cctx_, ZSTD_reset_parameters);
  ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx_, ZSTD_c_windowLog, window_log);
  size_t n = ZSTD_compress2(cctx_, out->data(), out->size(), raw.data(), raw.size());
  if (ZSTD_isError(n) || n >= raw.size()) {
    out->assign(raw.begin(), raw.end());
    return Codec::kRaw;
  }
  out->resize(n);
  return Codec::kZstd;
}

ChunkDecompressor::ChunkDecompressor() : dctx_(ZSTD_createDCtx()) {}
ChunkDecompressor::~ChunkDecompressor() { ZSTD_freeDCtx(dctx_); }

Status ChunkDecompressor::Decompress(Codec codec, std::span<const uint8_t> stored, uint8_t* out,
                                     size_t raw_len, const std::string& where) {
  switch (codec) {
    case Codec::kRaw:
      if (stored.size() != raw_len)
        return Status::Corruption(where + ": raw chunk has " + std::to_string(stored.size()) +
                                  " bytes, expected " + std::to_string(raw_len));
      std::memcpy(out, stored.data(), raw_len);
      return Status::OK();
    case Codec::kZstd: {
      size_t n = ZSTD_decompressDCtx(dctx_, out, raw_len, stored.data(), stored.size());
      if (ZSTD_isError(n))
        return Status::Corruption(where + ": zstd cannot decode chunk (" + ZSTD_getErrorName(n) +
                                  ")");
      if (n != raw_len)
        return Status::Corruption(where + ": chunk decodes to " + std::to_string(n) +
                                  " bytes, expected " + std::to_string(raw_len));
      return Status::OK();
    }
  }
  return Status::Corruption(where + ": unknown codec " +
                            std::to_string(static_cast<uint32_t>(codec)));
}

}  // namespace gnomon
