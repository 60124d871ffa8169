// AWS Signature Version 4 for S3 requests, signed by the project itself so
// it does not depend on a curl release's notion of canonical form (see
// docs: https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gnomon {

struct S3Credentials {
  std::string access_key, secret_key, region = "us-east-1";
  std::string session_token;  // x-amz-security-token, when temporary
};

struct SigV4Request {
  std::string method;  // "GET", "PUT", ...
  // The path as sent, already URI-encoded ("/bucket/packs/ab/0123...").
  std::string encoded_path;
  // Query parameters, raw (encoded and sorted when signed and sent).
  std::vector<std::pair<std::string, std::string>> query;
  // Headers to sign, names in lower case; host and x-amz-date are needed.
  std::map<std::string, std::string> headers;
  std::string payload_hash;  // hex SHA-256 of the body, or "UNSIGNED-PAYLOAD"
  std::string service = "s3";
};

// RFC 3986 unreserved characters stay; everything else is %XX (upper-case
// hex). '/' stays unless encode_slash (object keys in paths keep theirs).
std::string UriEncode(std::string_view s, bool encode_slash);
// name=value pairs encoded, sorted by name (then value), joined by '&'.
std::string CanonicalQuery(std::vector<std::pair<std::string, std::string>> query);
std::string CanonicalRequest(const SigV4Request& r);
// "20130524T000000Z" for a UNIX time.
std::string AmzDate(int64_t unix_seconds);
// The Authorization header's value. amz_date must equal headers["x-amz-date"].
std::string SignV4(const SigV4Request& r, const S3Credentials& c, const std::string& amz_date);
std::string Sha256Hex(std::string_view data);

}  // namespace gnomon
