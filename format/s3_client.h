// A small S3 client over libcurl: path-style requests signed with SigV4
// (format/sigv4.h), connections kept alive and reused across threads,
// transient failures retried with exponential backoff and jitter.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "format/sigv4.h"

namespace gnomon {

// "s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]".
struct S3Location {
  std::string endpoint;        // "http://127.0.0.1:7480"
  std::string host;            // "127.0.0.1:7480", as signed
  std::string bucket, prefix;  // prefix without leading or trailing '/'
  std::string Url() const;     // the location as the user wrote it, normalised
};
Status ParseS3Location(const std::string& location, S3Location* out);

// From AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN /
// AWS_DEFAULT_REGION (or AWS_REGION), else the [AWS_PROFILE or default]
// section of AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials.
Status LoadS3Credentials(S3Credentials* out);

struct S3Response {
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // names in lower case
  size_t into_len = 0;                         // bytes written to Call::into
};

// When to give up on a request that keeps failing: the whole budget, and
// how the backoff starts. GNOMON_S3_RETRY_SECONDS overrides the budget.
struct RetryPolicy {
  double budget_seconds = 60;
  double first_backoff_seconds = 0.1, max_backoff_seconds = 5;
  static RetryPolicy FromEnvironment();
};

// The program's interruption flag (set on SIGINT): once it is set, no
// request is retried (it fails as Aborted), so an interrupted command ends
// within one request's time rather than a retry budget's.
void SetS3Interrupt(const std::atomic<bool>* flag);

// Whether a response or a transport failure may succeed if sent again.
bool Retryable(long http_status);

class S3Client {
 public:
  S3Client(S3Location loc, S3Credentials cred, RetryPolicy retry = RetryPolicy::FromEnvironment());
  ~S3Client();
  const S3Location& location() const { return loc_; }

  struct Call {
    std::string method;
    std::string key;  // object key below the bucket ("" for the bucket)
    std::vector<std::pair<std::string, std::string>> query;
    std::map<std::string, std::string> headers;  // extra, lower-case names
    std::span<const uint8_t> body;
    // Where a 206 (partial content) answer's body goes instead of
    // S3Response::body: a ranged read lands in its caller's buffer without
    // a copy. What does not fit goes to S3Response::body.
    std::span<uint8_t> into;
  };
  // Sends `call`, retrying transient failures within the policy. A final
  // HTTP status (2xx, 3xx, 4xx but 429) is returned in *out with OK;
  // Status is an IOError only when no final answer came. *attempts (if
  // given): how many times it was sent (a create-once PUT that was sent
  // more than once may have been stored by an attempt that lost its answer).
  Status Send(const Call& call, S3Response* out, int* attempts = nullptr);

 private:
  Status SendOnce(const Call& call, S3Response* out, bool* transient);
  void* TakeHandle();
  void ReturnHandle(void* h);

  S3Location loc_;
  S3Credentials cred_;
  RetryPolicy retry_;
  std::mutex mu_;
  std::vector<void*> idle_;  // CURL* handles kept for their connections
};

// A message for an S3 error answer: "PUT s3:.../key: 403 AccessDenied ...".
std::string DescribeS3Error(const std::string& what, const S3Response& r);

}  // namespace gnomon
