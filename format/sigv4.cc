#include "format/sigv4.h"

#include <algorithm>
#include <cstdint>
#include <ctime>
#include <span>

#include "format/crypto.h"

namespace gnomon {

namespace {

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string Hex(const uint8_t* p, size_t n) {
  static const char* k = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out += k[p[i] >> 4];
    out += k[p[i] & 15];
  }
  return out;
}

std::string Hmac(std::string_view key, std::string_view data) {
  uint8_t md[32];
  HmacSha256(Bytes(key), Bytes(data), md);
  return std::string(reinterpret_cast<const char*>(md), 32);
}

// Header values are trimmed and inner runs of spaces folded (the spec's
// canonical form).
std::string Trimmed(const std::string& v) {
  std::string out;
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

}  // namespace

std::string Sha256Hex(std::string_view data) {
  uint8_t md[32];
  Sha256(Bytes(data), md);
  return Hex(md, 32);
}

std::string UriEncode(std::string_view s, bool encode_slash) {
  static const char* k = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (c == '/' && !encode_slash)) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += k[c >> 4];
      out += k[c & 15];
    }
  }
  return out;
}

std::string CanonicalQuery(std::vector<std::pair<std::string, std::string>> query) {
  for (auto& [k, v] : query) {
    k = UriEncode(k, true);
    v = UriEncode(v, true);
  }
  std::sort(query.begin(), query.end());
  std::string out;
  for (const auto& [k, v] : query) out += (out.empty() ? "" : "&") + k + "=" + v;
  return out;
}

std::string CanonicalRequest(const SigV4Request& r) {
  std::string headers, names;
  for (const auto& [k, v] : r.headers) {  // std::map: sorted by name
    headers += k + ":" + Trimmed(v) + "\n";
    names += (names.empty() ? "" : ";") + k;
  }
  return r.method + "\n" + r.encoded_path + "\n" + CanonicalQuery(r.query) + "\n" + headers + "\n" +
         names + "\n" + r.payload_hash;
}

std::string AmzDate(int64_t unix_seconds) {
  const time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

std::string SignV4(const SigV4Request& r, const S3Credentials& c, const std::string& amz_date) {
  const std::string day = amz_date.substr(0, 8);
  const std::string scope = day + "/" + c.region + "/" + r.service + "/aws4_request";
  const std::string to_sign =
      "AWS4-HMAC-SHA256\n" + amz_date + "\n" + scope + "\n" + Sha256Hex(CanonicalRequest(r));
  std::string key = Hmac("AWS4" + c.secret_key, day);
  key = Hmac(key, c.region);
  key = Hmac(key, r.service);
  key = Hmac(key, "aws4_request");
  const std::string sig = Hmac(key, to_sign);
  std::string names;
  for (const auto& h : r.headers) names += (names.empty() ? "" : ";") + h.first;
  return "AWS4-HMAC-SHA256 Credential=" + c.access_key + "/" + scope + ", SignedHeaders=" + names +
         ", Signature=" + Hex(reinterpret_cast<const uint8_t*>(sig.data()), sig.size());
}

}  // namespace gnomon
