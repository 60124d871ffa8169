// The S3 backend (FORMAT.md §12.1, §12.2): one object per repository name
// under the location's prefix. Create-once is PUT with If-None-Match: *;
// a pack is buffered and sent in one PUT when committed; the repository's
// locks are lock objects (s3_locks.cc).
#include "format/backend_s3.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstring>

#include "format/names.h"
#include "format/repository_layout.h"

namespace gnomon {

namespace {

// What S3 gives a single-part object as its ETag: the quoted MD5 of its body.
std::string QuotedMd5(std::span<const uint8_t> data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_md5(), nullptr);
  static const char* k = "0123456789abcdef";
  std::string out = "\"";
  for (unsigned i = 0; i < len; ++i) {
    out += k[md[i] >> 4];
    out += k[md[i] & 15];
  }
  return out + "\"";
}

std::string XmlUnescape(std::string s) {
  static const std::pair<const char*, const char*> kEntities[] = {
      {"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&apos;", "'"}, {"&amp;", "&"}};
  for (const auto& [from, to] : kEntities)
    for (size_t p = 0; (p = s.find(from, p)) != std::string::npos; p += std::strlen(to))
      s.replace(p, std::strlen(from), to);
  return s;
}

// Every <tag>value</tag> in an XML answer, in order.
std::vector<std::string> XmlValues(const std::string& xml, const std::string& tag) {
  std::vector<std::string> out;
  const std::string open = "<" + tag + ">", close = "</" + tag + ">";
  for (size_t p = 0; (p = xml.find(open, p)) != std::string::npos;) {
    const size_t start = p + open.size(), end = xml.find(close, start);
    if (end == std::string::npos) break;
    out.push_back(XmlUnescape(xml.substr(start, end - start)));
    p = end + close.size();
  }
  return out;
}

class S3File final : public RandomAccessFile {
 public:
  S3File(S3Client* c, std::string key, std::string path, uint64_t size)
      : c_(c), key_(std::move(key)), path_(std::move(path)), size_(size) {}
  Status ReadAt(uint64_t offset, size_t n, uint8_t* dst) const override {
    if (n == 0) return Status::OK();
    if (offset + n > size_)
      return Status::Corruption(path_ + ": object is truncated (wanted " + std::to_string(n) +
                                " bytes at offset " + std::to_string(offset) + ", it has " +
                                std::to_string(size_) + ")");
    S3Client::Call call{"GET", key_, {}, {}, {}};
    call.headers["range"] =
        "bytes=" + std::to_string(offset) + "-" + std::to_string(offset + n - 1);
    call.into = {dst, n};
    S3Response r;
    GNOMON_RETURN_IF_ERROR(c_->Send(call, &r).WithContext("reading " + path_));
    if (r.status == 404) return Status::NotFound(path_ + ": object is gone");
    if (r.status != 206 && r.status != 200)
      return Status::IOError(DescribeS3Error("reading " + path_, r));
    if (r.status == 206 ? r.into_len + r.body.size() != n : r.body.size() < offset + n)
      return Status::Corruption(path_ + ": short or long read (wanted " + std::to_string(n) +
                                " bytes at offset " + std::to_string(offset) + ")");
    // A server that ignored the range sent the whole object.
    if (r.status == 200) std::memcpy(dst, r.body.data() + offset, n);
    return Status::OK();
  }
  uint64_t Size() const override { return size_; }
  const std::string& path() const override { return path_; }

 private:
  S3Client* c_;
  std::string key_, path_;
  uint64_t size_;
};

class S3Upload final : public Upload {
 public:
  S3Upload(S3Backend* b, std::string name) : b_(b), name_(std::move(name)) {}
  Status Append(std::span<const uint8_t> data) override {
    buf_.insert(buf_.end(), data.begin(), data.end());
    return Status::OK();
  }
  Status Commit() override {
    Status s = b_->Put(name_, buf_);
    Abort();
    return s;
  }
  void Abort() override { std::vector<uint8_t>().swap(buf_); }
  uint64_t Size() const override { return buf_.size(); }

 private:
  S3Backend* b_;
  std::string name_;
  std::vector<uint8_t> buf_;
};

}  // namespace

S3Backend::S3Backend(std::unique_ptr<S3Client> client)
    : client_(std::move(client)), location_(client_->location().Url()) {}

S3Backend::~S3Backend() = default;

std::string S3Backend::Key(const std::string& name) const {
  const auto& prefix = client_->location().prefix;
  return prefix.empty() ? name : prefix + "/" + name;
}

Status S3Backend::Answer(const std::string& what, const S3Response& r) const {
  if (r.status >= 200 && r.status < 300) return Status::OK();
  if (r.status == 404) return Status::NotFound(what + ": not found (HTTP 404)");
  return Status::IOError(DescribeS3Error(what, r));
}

Status S3Backend::CheckLocation() {
  S3Response r;
  GNOMON_RETURN_IF_ERROR(client_->Send({"HEAD", "", {}, {}, {}}, &r).WithContext(location_));
  if (r.status == 404) return Status::NotFound(location_ + ": the bucket does not exist");
  return Answer(location_, r);  // a wrong key says so here (403)
}

Status S3Backend::CheckCreate() {
  S3Response r;
  GNOMON_RETURN_IF_ERROR(client_->Send({"HEAD", "", {}, {}, {}}, &r));
  if (r.status == 404) return Status::OK();  // Create makes the bucket
  GNOMON_RETURN_IF_ERROR(Answer(location_, r));
  GNOMON_RETURN_IF_ERROR(CheckNotNested());
  std::vector<std::string> all;
  GNOMON_RETURN_IF_ERROR(ListKeys(client_->location().prefix, &all));
  for (const auto& n : all) {
    if (n == kConfig)
      return Status::InvalidArgument(location_ + ": a repository already exists here");
    // Only key slots of an init that died may be there (FORMAT.md §14.1).
    if (n.rfind(std::string(kKeys) + "/", 0) != 0 || !IsHexName(n.substr(5), 16))
      return Status::InvalidArgument(location_ + ": holds objects (" + n +
                                     "); refusing to create a repository among them");
  }
  return Status::OK();
}

// Not inside another repository: its clean-up would take ours for its own.
Status S3Backend::CheckNotNested() {
  const std::string& prefix = client_->location().prefix;
  if (prefix.empty()) return Status::OK();
  std::vector<std::string> above = {""};
  for (size_t p = prefix.find('/'); p != std::string::npos; p = prefix.find('/', p + 1))
    above.push_back(prefix.substr(0, p));
  for (const auto& a : above) {
    S3Response h;
    GNOMON_RETURN_IF_ERROR(
        client_->Send({"HEAD", a.empty() ? kConfig : a + "/" + kConfig, {}, {}, {}}, &h));
    if (h.status == 200)
      return Status::InvalidArgument(
          location_ + ": lies inside the repository at s3:" + client_->location().endpoint + "/" +
          client_->location().bucket + (a.empty() ? "" : "/" + a));
    if (h.status != 404) GNOMON_RETURN_IF_ERROR(Answer(location_, h));
  }
  return Status::OK();
}

Status S3Backend::Create() {
  GNOMON_RETURN_IF_ERROR(CheckCreate());
  S3Response r;
  GNOMON_RETURN_IF_ERROR(client_->Send({"HEAD", "", {}, {}, {}}, &r));
  if (r.status == 404) {
    GNOMON_RETURN_IF_ERROR(client_->Send({"PUT", "", {}, {}, {}}, &r));
    if (r.status != 409)  // BucketAlreadyOwnedByYou: made meanwhile
      GNOMON_RETURN_IF_ERROR(Answer("creating bucket " + client_->location().bucket, r));
  }
  // Key slots an init that died left stay: they may be another init's,
  // running now (two hosts cannot tell), and are bound to its config's id.
  return Status::OK();
}

void S3Backend::DiscardCreated(const std::vector<std::string>& written) {
  for (const auto& n : written) Delete(n);
}

Status S3Backend::PutObject(const std::string& name, std::span<const uint8_t> data, bool once) {
  GNOMON_RETURN_IF_ERROR(MayWrite(name));
  S3Client::Call call{"PUT", Key(name), {}, {}, data};
  if (once) call.headers["if-none-match"] = "*";
  S3Response r;
  int attempts = 0;
  GNOMON_RETURN_IF_ERROR(
      client_->Send(call, &r, &attempts).WithContext("writing " + Describe(name)));
  if (once && r.status == 412) {
    // An earlier attempt whose answer was lost may have stored it: ours if
    // the stored body is ours. If the store cannot say, neither can we: not
    // Exists, on which a caller would take back what the object names.
    if (attempts > 1) {
      S3Response h;
      Status head = client_->Send({"HEAD", Key(name), {}, {}, {}}, &h);
      if (head.ok() && h.status == 200 && h.headers["etag"] == QuotedMd5(data)) return Status::OK();
      if (!head.ok() || (h.status != 200 && h.status != 404))
        return Status::IOError("writing " + Describe(name) +
                               ": an earlier attempt may have stored it, and asking failed");
    }
    return Status::Exists(Describe(name) + ": already exists");
  }
  return Answer("writing " + Describe(name), r);
}

Status S3Backend::Put(const std::string& name, std::span<const uint8_t> data) {
  return PutObject(name, data, true);
}

Status S3Backend::PutReplace(const std::string& name, std::span<const uint8_t> data) {
  return PutObject(name, data, false);
}

Status S3Backend::NewUpload(const std::string& name, std::unique_ptr<Upload>* out) {
  *out = std::make_unique<S3Upload>(this, name);
  return Status::OK();
}

Status S3Backend::Get(const std::string& name, std::string* out) {
  S3Response r;
  GNOMON_RETURN_IF_ERROR(client_->Send({"GET", Key(name), {}, {}, {}}, &r));
  GNOMON_RETURN_IF_ERROR(Answer(Describe(name), r));
  *out = std::move(r.body);
  return Status::OK();
}

Status S3Backend::Open(const std::string& name, std::unique_ptr<RandomAccessFile>* out) {
  uint64_t size = 0;
  GNOMON_RETURN_IF_ERROR(Head(name, &size));
  *out = std::make_unique<S3File>(client_.get(), Key(name), Describe(name), size);
  return Status::OK();
}

Status S3Backend::Head(const std::string& name, uint64_t* size) {
  S3Response r;
  GNOMON_RETURN_IF_ERROR(client_->Send({"HEAD", Key(name), {}, {}, {}}, &r));
  GNOMON_RETURN_IF_ERROR(Answer(Describe(name), r));
  if (size) *size = std::strtoull(r.headers["content-length"].c_str(), nullptr, 10);
  return Status::OK();
}

Status S3Backend::ListKeys(const std::string& prefix, std::vector<std::string>* names) {
  names->clear();
  const std::string want = prefix.empty() ? "" : prefix + "/";
  std::string token;
  for (;;) {
    S3Client::Call call{"GET", "", {{"list-type", "2"}, {"prefix", want}}, {}, {}};
    if (!token.empty()) call.query.push_back({"continuation-token", token});
    S3Response r;
    GNOMON_RETURN_IF_ERROR(client_->Send(call, &r));
    GNOMON_RETURN_IF_ERROR(Answer("listing " + location_ + "/" + want, r));
    for (auto& k : XmlValues(r.body, "Key"))
      if (k.size() > want.size() && k.compare(0, want.size(), want) == 0)
        names->push_back(k.substr(want.size()));
    const auto truncated = XmlValues(r.body, "IsTruncated");
    const auto next = XmlValues(r.body, "NextContinuationToken");
    if (truncated.empty() || truncated[0] != "true") return Status::OK();
    if (next.empty() || next[0].empty() || next[0] == token)
      return Status::IOError("listing " + location_ + ": truncated answer without a next token");
    token = next[0];
  }
}

Status S3Backend::List(const std::string& dir, std::vector<std::string>* names) {
  GNOMON_RETURN_IF_ERROR(ListKeys(Key(dir), names));
  // The layout's depth (FORMAT.md §1): packs/XX/<id>, else dir/<name>. A
  // deeper key is no object of this repository (one nested in it, say).
  const size_t depth = dir == kPacks ? 1 : 0;
  std::erase_if(*names, [&](const std::string& n) {
    return static_cast<size_t>(std::count(n.begin(), n.end(), '/')) != depth;
  });
  return Status::OK();
}

Status S3Backend::PutLockObject(const std::string& name, std::span<const uint8_t> data,
                                const std::string& if_match, std::string* etag) {
  S3Client::Call call{"PUT", Key(name), {}, {}, data};
  if (if_match.empty()) {
    call.headers["if-none-match"] = "*";
  } else {
    // RGW 16 ignores If-Match on PUT (412 whatever the ETag), so the
    // version is checked first: a lock object deleted or replaced by
    // someone who took it for stale is lost, never put back. (Between the
    // check and the PUT a deletion can still slip in; the holder's own
    // age limit covers that window.)
    S3Response h;
    GNOMON_RETURN_IF_ERROR(client_->Send({"HEAD", Key(name), {}, {}, {}}, &h));
    if (h.status == 404 || (h.status == 200 && h.headers["etag"] != if_match))
      return Status::Locked(Describe(name) + ": the lock object is gone or not ours any more");
    GNOMON_RETURN_IF_ERROR(Answer(Describe(name), h));
  }
  S3Response r;
  GNOMON_RETURN_IF_ERROR(client_->Send(call, &r).WithContext("writing " + Describe(name)));
  if (r.status == 412 || (r.status == 404 && !if_match.empty()))
    return Status::Locked(Describe(name) + ": the lock object is gone or not ours any more");
  GNOMON_RETURN_IF_ERROR(Answer("writing " + Describe(name), r));
  *etag = r.headers["etag"];
  return Status::OK();
}

Status S3Backend::Delete(const std::string& name) {
  GNOMON_RETURN_IF_ERROR(MayWrite(name));
  S3Response r;
  GNOMON_RETURN_IF_ERROR(client_->Send({"DELETE", Key(name), {}, {}, {}}, &r));
  return Answer("deleting " + Describe(name), r);
}

Status S3Backend::ListTemporaries(std::vector<std::string>* names) {
  names->clear();  // a PUT is all or nothing: nothing is left half-written
  return Status::OK();
}

Status OpenS3Backend(const std::string& location, std::unique_ptr<Backend>* out) {
  S3Location loc;
  GNOMON_RETURN_IF_ERROR(ParseS3Location(location, &loc));
  S3Credentials cred;
  GNOMON_RETURN_IF_ERROR(LoadS3Credentials(&cred));
  *out = std::make_unique<S3Backend>(std::make_unique<S3Client>(loc, cred));
  return Status::OK();
}

bool IsS3Location(const std::string& location) { return location.rfind("s3:", 0) == 0; }

Status OpenBackend(Env* env, const std::string& location, std::unique_ptr<Backend>* out) {
  if (IsS3Location(location)) return OpenS3Backend(location, out);
  *out = NewLocalBackend(env, location);
  return Status::OK();
}

}  // namespace gnomon
