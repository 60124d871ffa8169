#include "format/config.h"

#include <nlohmann/json.hpp>

#include "base/json.h"

namespace gnomon {

using nlohmann::json;

Status RepoConfig::Validate(const std::string& where) const {
  auto bad = [&](const std::string& m) { return Status::InvalidArgument(where + ": " + m); };
  if (chunk_size < 4096 || chunk_size > kMaxChunkSize || (chunk_size & (chunk_size - 1)) != 0)
    return bad("chunk size " + std::to_string(chunk_size) +
               " must be a power of two from 4 KiB to 64 MiB");
  if (compression_level < 1 || compression_level > 19)
    return bad("compression level " + std::to_string(compression_level) + " must be 1..19");
  if (pack_size < chunk_size || pack_size > (1ull << 30))
    return bad("pack size must be between the chunk size and 1 GiB");
  if (encryption == "none") {
    if (version != 1 || hash != "xxh3-128")
      return bad("a plain repository has version 1 and hash xxh3-128");
  } else if (encryption == "aes-256-gcm") {
    if (version != 2 || (hash != "blake3-keyed-128" && hash != "hmac-sha256-128"))
      return bad(
          "an encrypted repository has version 2 and hash blake3-keyed-128 or hmac-sha256-128");
  } else {
    return bad("unknown encryption '" + encryption + "'");
  }
  if (compression != "zstd") return bad("unknown compression '" + compression + "'");
  return Status::OK();
}

void RepoConfig::SetEncrypted() {
  version = 2;
  hash = "blake3-keyed-128";
  encryption = "aes-256-gcm";
}

std::string RepoConfig::Encode() const {
  json j{{"version", version},         {"id", id},
         {"chunk_size", chunk_size},   {"hash", hash},
         {"compression", compression}, {"compression_level", compression_level},
         {"pack_size", pack_size},     {"created", created}};
  if (version >= 2) j["encryption"] = encryption;
  return j.dump(1);
}

Status RepoConfig::Decode(const std::string& path, const std::string& body, RepoConfig* out) {
  json j;
  std::string err;
  if (!ParseJsonBounded(body, &j, &err))
    return Status::Corruption(path + ": config is malformed (" + err + ")");
  try {
    RepoConfig c;
    c.version = j.at("version").get<uint32_t>();
    c.id = j.at("id").get<std::string>();
    c.chunk_size = j.at("chunk_size").get<uint32_t>();
    c.hash = j.at("hash").get<std::string>();
    c.compression = j.at("compression").get<std::string>();
    c.compression_level = j.at("compression_level").get<int>();
    c.pack_size = j.at("pack_size").get<uint64_t>();
    c.created = j.at("created").get<std::string>();
    if (c.version >= 2) c.encryption = j.at("encryption").get<std::string>();
    if (c.version > kRepoFormatVersion)
      return Status::Unsupported(path + ": repository format version " + std::to_string(c.version) +
                                 " is newer than this gnomon (" +
                                 std::to_string(kRepoFormatVersion) + "); upgrade gnomon");
    GNOMON_RETURN_IF_ERROR(c.Validate(path));
    *out = std::move(c);
    return Status::OK();
  } catch (const json::exception& e) {
    return Status::Corruption(path + ": config is malformed (" + e.what() + ")");
  }
}

}  // namespace gnomon
