#include "format/framed_file.h"

#include <cstring>

#include "format/coding.h"
#include "format/digest.h"

namespace gnomon {

std::string EncodeFrame(const FrameKind& kind, uint32_t version, std::string_view body) {
  std::string out;
  out.reserve(kFrameHeaderSize + body.size() + kFrameTrailerSize);
  out.append(kind.magic, 8);
  PutU32(&out, version);
  PutU32(&out, 0);  // reserved
  PutU64(&out, body.size());
  out.append(body);
  PutU64(&out, Checksum64({reinterpret_cast<const uint8_t*>(out.data()), out.size()}));
  return out;
}

Status DecodeFrame(const FrameKind& kind, const std::string& path, const std::string& file,
                   std::string* body, uint32_t* version) {
  auto p = reinterpret_cast<const uint8_t*>(file.data());
  if (file.size() < kFrameHeaderSize + kFrameTrailerSize) {
    return Status::Corruption(path + ": " + kind.what + " is truncated (" +
                              std::to_string(file.size()) + " bytes)");
  }
  if (std::memcmp(p, kind.magic, 8) != 0) {
    return Status::Corruption(path + ": not a gnomon " + kind.what + " (bad magic)");
  }
  uint32_t v = GetU32(p + 8);
  if (v == 0 || v > kind.max_version) {
    return Status::Unsupported(path + ": " + kind.what + " has format version " +
                               std::to_string(v) + ", this gnomon reads up to version " +
                               std::to_string(kind.max_version));
  }
  uint64_t len = GetU64(p + 16);
  if (len != file.size() - kFrameHeaderSize - kFrameTrailerSize) {
    return Status::Corruption(path + ": " + kind.what + " is truncated or has trailing bytes " +
                              "(header says " + std::to_string(len) + " body bytes, file has " +
                              std::to_string(file.size() - kFrameHeaderSize - kFrameTrailerSize) +
                              ")");
  }
  uint64_t want = GetU64(p + file.size() - kFrameTrailerSize);
  uint64_t got = Checksum64({p, file.size() - kFrameTrailerSize});
  if (want != got) {
    return Status::Corruption(path + ": " + kind.what + " checksum mismatch (file is damaged)");
  }
  body->assign(file, kFrameHeaderSize, len);
  if (version) *version = v;
  return Status::OK();
}

Status ReadFrameFile(Env* env, const FrameKind& kind, const std::string& path, std::string* body,
                     uint32_t* version) {
  std::string file;
  GNOMON_RETURN_IF_ERROR(env->ReadFileToString(path, &file));
  return DecodeFrame(kind, path, file, body, version);
}

Status WriteFrameFile(Env* env, const FrameKind& kind, uint32_t version, const std::string& path,
                      std::string_view body) {
  std::string file = EncodeFrame(kind, version, body);
  // Every framed file is immutable: published once, never replaced.
  return env->WriteFileOnce(path, {reinterpret_cast<const uint8_t*>(file.data()), file.size()});
}

}  // namespace gnomon
