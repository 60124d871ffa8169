#include "format/s3_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

namespace gnomon {

namespace {

std::once_flag g_curl_init;

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

struct Transfer {
  std::span<const uint8_t> body;
  size_t sent = 0;
  S3Response* out;
  std::span<uint8_t> into;
  void* handle;
};

size_t OnRead(char* dst, size_t size, size_t n, void* arg) {
  auto* t = static_cast<Transfer*>(arg);
  const size_t k = std::min(size * n, t->body.size() - t->sent);
  std::memcpy(dst, t->body.data() + t->sent, k);
  t->sent += k;
  return k;
}

size_t OnWrite(char* src, size_t size, size_t n, void* arg) {
  auto* t = static_cast<Transfer*>(arg);
  size_t k = 0;
  if (t->out->into_len < t->into.size()) {
    long code = 0;
    curl_easy_getinfo(static_cast<CURL*>(t->handle), CURLINFO_RESPONSE_CODE, &code);
    if (code == 206) {
      k = std::min(size * n, t->into.size() - t->out->into_len);
      std::memcpy(t->into.data() + t->out->into_len, src, k);
      t->out->into_len += k;
    }
  }
  t->out->body.append(src + k, size * n - k);
  return size * n;
}

size_t OnHeader(char* src, size_t size, size_t n, void* arg) {
  std::string line(src, size * n);
  const auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string v = line.substr(colon + 1);
    while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' ')) v.pop_back();
    v.erase(0, std::min(v.find_first_not_of(' '), v.size()));
    static_cast<Transfer*>(arg)->out->headers[Lower(line.substr(0, colon))] = v;
  }
  return size * n;
}

// Whether a transport failure may pass if the request is sent again.
bool TransientCurl(CURLcode c) {
  return c != CURLE_URL_MALFORMAT && c != CURLE_UNSUPPORTED_PROTOCOL && c != CURLE_OUT_OF_MEMORY &&
         c != CURLE_BAD_FUNCTION_ARGUMENT;
}

}  // namespace

std::string S3Location::Url() const {
  return "s3:" + endpoint + "/" + bucket + (prefix.empty() ? "" : "/" + prefix);
}

Status ParseS3Location(const std::string& location, S3Location* out) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("'" + location + "': " + why +
                                   " (want s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX])");
  };
  if (location.rfind("s3:", 0) != 0) return bad("not an S3 location");
  std::string rest = location.substr(3);
  const auto scheme = rest.find("://");
  if (scheme == std::string::npos) return bad("no http:// or https://");
  const std::string proto = rest.substr(0, scheme);
  if (proto != "http" && proto != "https") return bad("scheme must be http or https");
  rest = rest.substr(scheme + 3);
  const auto slash = rest.find('/');
  if (slash == std::string::npos || slash == 0) return bad("no bucket");
  out->host = rest.substr(0, slash);
  out->endpoint = proto + "://" + out->host;
  std::string path = rest.substr(slash + 1);
  while (!path.empty() && path.back() == '/') path.pop_back();
  const auto b = path.find('/');
  out->bucket = path.substr(0, b);
  out->prefix = b == std::string::npos ? "" : path.substr(b + 1);
  if (out->bucket.empty()) return bad("no bucket");
  for (char c : out->bucket)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_')
      return bad("bucket names hold letters, digits, '-', '.' and '_'");
  const std::string parts = "/" + out->prefix + "/";
  if ((!out->prefix.empty() && out->prefix[0] == '/') ||
      out->prefix.find("//") != std::string::npos || parts.find("/./") != std::string::npos ||
      parts.find("/../") != std::string::npos)
    return bad("the prefix has an empty or '..' part");
  return Status::OK();
}

Status LoadS3Credentials(S3Credentials* out) {
  out->access_key = Env("AWS_ACCESS_KEY_ID");
  out->secret_key = Env("AWS_SECRET_ACCESS_KEY");
  out->session_token = Env("AWS_SESSION_TOKEN");
  std::string region = Env("AWS_DEFAULT_REGION");
  if (region.empty()) region = Env("AWS_REGION");
  if (!region.empty()) out->region = region;
  if (!out->access_key.empty() && !out->secret_key.empty()) return Status::OK();
  std::string file = Env("AWS_SHARED_CREDENTIALS_FILE");
  if (file.empty() && !Env("HOME").empty()) file = Env("HOME") + "/.aws/credentials";
  const std::string profile = Env("AWS_PROFILE").empty() ? "default" : Env("AWS_PROFILE");
  std::ifstream in(file);
  std::string line, section;
  while (in && std::getline(in, line)) {
    line.erase(0, std::min(line.find_first_not_of(" \t"), line.size()));
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      section = line.substr(1, line.size() - 2);
      continue;
    }
    const auto eq = line.find('=');
    if (section != profile || eq == std::string::npos) continue;
    std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    while (!k.empty() && k.back() == ' ') k.pop_back();
    v.erase(0, std::min(v.find_first_not_of(' '), v.size()));
    if (k == "aws_access_key_id") out->access_key = v;
    if (k == "aws_secret_access_key") out->secret_key = v;
    if (k == "aws_session_token") out->session_token = v;
  }
  if (out->access_key.empty() || out->secret_key.empty())
    return Status::InvalidArgument(
        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put them in "
        "the [" +
        profile + "] section of " + (file.empty() ? "~/.aws/credentials" : file));
  return Status::OK();
}

RetryPolicy RetryPolicy::FromEnvironment() {
  RetryPolicy p;
  const std::string v = Env("GNOMON_S3_RETRY_SECONDS");
  if (!v.empty()) p.budget_seconds = std::max(0.0, std::atof(v.c_str()));
  return p;
}

namespace {
std::atomic<const std::atomic<bool>*> g_interrupt{nullptr};
bool Interrupted() {
  const std::atomic<bool>* f = g_interrupt.load();
  return f && f->load();
}
}  // namespace

void SetS3Interrupt(const std::atomic<bool>* flag) { g_interrupt = flag; }

bool Retryable(long http_status) {
  return http_status >= 500 || http_status == 429 || http_status == 408;
}

S3Client::S3Client(S3Location loc, S3Credentials cred, RetryPolicy retry)
    : loc_(std::move(loc)), cred_(std::move(cred)), retry_(retry) {
  std::call_once(g_curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

S3Client::~S3Client() {
  for (void* h : idle_) curl_easy_cleanup(static_cast<CURL*>(h));
}

void* S3Client::TakeHandle() {
  {
    std::lock_guard<std::mutex> g(mu_);
    if (!idle_.empty()) {
      void* h = idle_.back();
      idle_.pop_back();
      return h;
    }
  }
  return curl_easy_init();
}

void S3Client::ReturnHandle(void* h) {
  std::lock_guard<std::mutex> g(mu_);
  idle_.push_back(h);
}

Status S3Client::Send(const Call& call, S3Response* out, int* attempts) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  thread_local std::mt19937_64 rng(std::random_device{}());
  double backoff = retry_.first_backoff_seconds;
  for (int n = 1;; ++n) {
    bool transient = false;
    Status s = SendOnce(call, out, &transient);
    if (attempts) *attempts = n;
    if (!transient) return s;
    if (Interrupted())
      return Status::Aborted("interrupted while " + call.method + " " + call.key + " was retried");
    const double spent = std::chrono::duration<double>(Clock::now() - start).count();
    // Full jitter (AWS's advice): many hosts retrying do not stay in step.
    const double wait = std::uniform_real_distribution<double>(0.5, 1.0)(rng) * backoff;
    if (spent + wait > retry_.budget_seconds) {
      const std::string last =
          s.ok() ? DescribeS3Error(call.method + " " + call.key, *out) : s.message();
      return Status::IOError("S3 request failed " + std::to_string(n) + " time(s) over " +
                             std::to_string(static_cast<int>(spent)) + " s; giving up: " + last);
    }
    for (const auto until = Clock::now() + std::chrono::duration<double>(wait);
         Clock::now() < until && !Interrupted();)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    backoff = std::min(backoff * 2, retry_.max_backoff_seconds);
  }
}

Status S3Client::SendOnce(const Call& call, S3Response* out, bool* transient) {
  *out = S3Response();
  SigV4Request r;
  r.method = call.method;
  r.encoded_path = "/" + loc_.bucket + (call.key.empty() ? "" : "/" + UriEncode(call.key, false));
  r.query = call.query;
  r.headers = call.headers;
  r.headers["host"] = loc_.host;
  const std::string date = AmzDate(std::time(nullptr));
  r.headers["x-amz-date"] = date;
  // Bodies are checked by gnomon itself (every object carries its own
  // checksum or tag): hashing each one again only to sign it buys nothing.
  r.payload_hash = "UNSIGNED-PAYLOAD";
  r.headers["x-amz-content-sha256"] = r.payload_hash;
  if (!cred_.session_token.empty()) r.headers["x-amz-security-token"] = cred_.session_token;
  const std::string auth = SignV4(r, cred_, date);
  const std::string query = CanonicalQuery(r.query);
  const std::string url = loc_.endpoint + r.encoded_path + (query.empty() ? "" : "?" + query);

  CURL* h = static_cast<CURL*>(TakeHandle());
  if (!h) return Status::IOError("cannot create an HTTP handle (libcurl)");
  curl_easy_reset(h);
  curl_slist* list = nullptr;
  for (const auto& [k, v] : r.headers)
    if (k != "host") list = curl_slist_append(list, (k + ": " + v).c_str());
  list = curl_slist_append(list, ("authorization: " + auth).c_str());
  list = curl_slist_append(list, "Expect:");  // no 100-continue round trip
  Transfer t{call.body, 0, out, call.into, h};
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);  // a stalled transfer is a failure
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L);
  curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L << 10);  // fewer, larger reads of big bodies
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, OnWrite);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
  if (call.method == "PUT") {
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, OnRead);
    curl_easy_setopt(h, CURLOPT_READDATA, &t);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(call.body.size()));
  } else if (call.method == "HEAD") {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else if (call.method != "GET") {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, call.method.c_str());
  }
  const CURLcode rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
  curl_slist_free_all(list);
  if (rc != CURLE_OK) {
    curl_easy_cleanup(h);  // its connection is in an unknown state
    *transient = TransientCurl(rc);
    // call.key already holds the prefix.
    return Status::IOError(call.method + " s3:" + loc_.endpoint + "/" + loc_.bucket + "/" +
                           call.key + ": " + curl_easy_strerror(rc));
  }
  ReturnHandle(h);
  *transient = Retryable(out->status);
  return Status::OK();
}

std::string DescribeS3Error(const std::string& what, const S3Response& r) {
  auto tag = [&](const char* name) {
    const std::string open = std::string("<") + name + ">", close = std::string("</") + name + ">";
    const auto a = r.body.find(open), b = r.body.find(close);
    return a == std::string::npos || b == std::string::npos || b < a
               ? std::string()
               : r.body.substr(a + open.size(), b - a - open.size());
  };
  std::string m = what + ": HTTP " + std::to_string(r.status);
  if (!tag("Code").empty()) m += " " + tag("Code");
  if (!tag("Message").empty()) m += " (" + tag("Message") + ")";
  if (r.status == 403)
    m += ": access denied; check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
         "~/.aws/credentials) and the clock";
  return m;
}

}  // namespace gnomon
