// Lock objects (FORMAT.md §12.2): the repository's locks on a store that
// has no flock. A taker puts its own lock object, then lists the others;
// both sides put before they list, so of two racing takers at least one
// sees the other and backs off. A holder refreshes its object; one not
// refreshed for the stale time, or whose process on this host is gone, is
// stale and anyone may delete it (restic's rule).
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "base/clock.h"
#include "base/json.h"
#include "base/random.h"
#include "base/system.h"
#include "format/backend_s3.h"
#include "format/crypto.h"
#include "format/repository_layout.h"

namespace gnomon {

namespace {

using nlohmann::json;

constexpr const char* kLocks = "locks";

int64_t Seconds(const char* env, int64_t fallback) {
  const char* v = std::getenv(env);
  return v && *v ? std::max<int64_t>(1, std::atoll(v)) : fallback;
}
int64_t NowMs() { return NowMicros() / 1000; }
int64_t RefreshMs() { return 1000 * Seconds("GNOMON_S3_LOCK_REFRESH_SECONDS", 300); }
int64_t StaleMs() { return 1000 * Seconds("GNOMON_S3_LOCK_STALE_SECONDS", 1800); }

// Which of §8's locks a name is.
std::string LockName(const std::string& name) {
  if (name == kLock) return "repository";
  if (name.rfind("gc/", 0) == 0) return name == "gc/lock" ? "gc" : name.substr(3);
  return name;
}

// This host, without naming it in plaintext (an encrypted repository's
// store must not learn host names): enough to tell "this host" apart. The
// boot and the pid namespace are part of it, so a pid is only judged where
// it means something: a container with the host's name, or the machine
// after a reboot, is another host.
std::string HostId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string boot;
  std::getline(in, boot);
  std::error_code ec;
  const std::string ns = std::filesystem::read_symlink("/proc/self/ns/pid", ec).string();
  const std::string h = "gnomon lock host " + HostName() + "\n" + boot + "\n" + ns;
  uint8_t md[32];
  Sha256({reinterpret_cast<const uint8_t*>(h.data()), h.size()}, md);
  static const char* k = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 8; ++i) {
    out += k[md[i] >> 4];
    out += k[md[i] & 15];
  }
  return out;
}

bool ProcessAlive(int64_t pid) {
  return pid > 0 && pid < (int64_t{1} << 31) &&
         (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM);
}

// A lock object's fields as FORMAT.md §8a types them, else empty or 0: a
// hostile or damaged object never throws.
std::string Str(const json& d, const char* k) {
  auto it = d.find(k);
  return it != d.end() && it->is_string() ? it->get<std::string>() : "";
}
int64_t Int(const json& d, const char* k) {
  auto it = d.find(k);
  return it != d.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

// What a lock object says of its holder, for messages.
std::string Holder(const json& d) {
  const std::string p = Str(d, "purpose");
  return p.empty() ? "pid " + std::to_string(Int(d, "pid")) : p;
}

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

// A held lock object. Its refresher replaces it only if it is still the
// version this holder wrote (If-Match): once someone has deleted it as
// stale, the lock is lost, and the backend refuses this process's writes
// from then on, as it does once the lock has gone unrefreshed for longer
// than others wait before they call it stale (FORMAT.md §8a).
class S3Backend::HeldLock final : public FileLock {
 public:
  HeldLock(S3Backend* b, std::string object, json doc, std::string etag)
      : b_(b), object_(std::move(object)), doc_(std::move(doc)), etag_(std::move(etag)) {
    last_ok_ms_ = Int(doc_, "refreshed");
    b_->Hold(this, true);
    refresher_ = std::thread([this] { Refresh(); });
  }
  ~HeldLock() override {
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    refresher_.join();
    b_->Hold(this, false);
    if (!lost_) b_->Delete(object_);  // best effort: a lock left behind goes stale
  }
  // OK while others cannot yet take this lock for stale (with one refresh
  // interval to spare).
  Status Valid() const {
    if (lost_)
      return Status::Locked(b_->Describe(object_) +
                            ": this process's lock was removed as stale by another gnomon; "
                            "stopping before writing");
    const int64_t age = NowMs() - last_ok_ms_.load();
    if (age > StaleMs() - RefreshMs())
      return Status::Locked(b_->Describe(object_) + ": this process's lock was not refreshed for " +
                            std::to_string(age / 1000) +
                            " s (others may take it for stale); stopping before writing");
    return Status::OK();
  }

 private:
  void Refresh() {
    std::unique_lock<std::mutex> g(mu_);
    while (!lost_ &&
           !cv_.wait_for(g, std::chrono::milliseconds(RefreshMs()), [&] { return stop_; })) {
      const int64_t now = NowMs();
      doc_["refreshed"] = now;
      std::string etag;
      Status s = b_->PutLockObject(object_, Bytes(doc_.dump()), etag_, &etag);
      if (s.ok()) {
        etag_ = etag;
        last_ok_ms_ = now;
      } else if (s.IsLocked()) {
        lost_ = true;  // deleted or replaced by someone who took it for stale
      }
    }
  }

  S3Backend* b_;
  std::string object_;
  json doc_;
  std::string etag_;
  std::atomic<int64_t> last_ok_ms_{0};
  std::atomic<bool> lost_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread refresher_;
};

void S3Backend::Hold(HeldLock* l, bool held) {
  std::lock_guard<std::mutex> g(held_mu_);
  if (held)
    held_.insert(l);
  else
    held_.erase(l);
}

Status S3Backend::MayWrite(const std::string& name) {
  if (name.rfind(std::string(kLocks) + "/", 0) == 0) return Status::OK();
  std::lock_guard<std::mutex> g(held_mu_);
  for (const HeldLock* l : held_) GNOMON_RETURN_IF_ERROR(l->Valid());
  return Status::OK();
}

Status S3Backend::TakeLock(const std::string& name, bool exclusive, const std::string& holder_info,
                           std::unique_ptr<FileLock>* out, std::string* stale_holder) {
  const std::string me = RepoPath(kLocks, RandomHexId(16)), mine = LockName(name);
  const int64_t now = NowMs();
  const std::string host = HostId();
  json doc = {{"host", host},
              {"pid", static_cast<int64_t>(getpid())},
              {"kind", exclusive ? "exclusive" : "shared"},
              {"name", mine},
              {"purpose", holder_info},
              {"created", now},
              {"refreshed", now}};
  std::string etag;
  GNOMON_RETURN_IF_ERROR(PutLockObject(me, Bytes(doc.dump()), "", &etag));
  auto fail = [&](Status s) {
    Delete(me);
    return s;
  };
  std::vector<std::string> others;
  if (Status s = List(kLocks, &others); !s.ok()) return fail(s);
  for (const auto& o : others) {
    const std::string object = RepoPath(kLocks, o);
    if (object == me) continue;
    std::string body, error;
    json d;
    if (Status s = Get(object, &body); !s.ok()) {
      if (s.IsNotFound()) continue;  // released meanwhile
      return fail(s);
    }
    // Not "locked": waiting would not help, and the message must say why.
    if (!ParseJsonBounded(body, &d, &error, 1 << 16) || !d.is_object())
      return fail(Status::Corruption(Describe(object) + ": an unreadable lock object (" +
                                     (error.empty() ? "not a JSON object" : error) +
                                     "); remove it if no gnomon is running"));
    if (Str(d, "name") != mine) continue;
    const bool theirs_exclusive = Str(d, "kind") != "shared";  // unknown: the safe side
    const bool stale = now - Int(d, "refreshed") > StaleMs() ||
                       (Str(d, "host") == host && !ProcessAlive(Int(d, "pid")));
    if (stale) {
      if (theirs_exclusive && stale_holder) *stale_holder = Holder(d);
      Delete(object);
      continue;
    }
    if (exclusive || theirs_exclusive)
      return fail(Status::Locked("locked by " + Holder(d) + " (" + Describe(object) + ")"));
  }
  *out = std::make_unique<HeldLock>(this, me, std::move(doc), etag);
  return Status::OK();
}

Status S3Backend::Lock(const std::string& name, bool exclusive, const std::string& holder_info,
                       std::unique_ptr<FileLock>* out, std::string* stale_holder) {
  return TakeLock(name, exclusive, holder_info, out, stale_holder);
}

Status S3Backend::TryLock(const std::string& name, bool exclusive, std::unique_ptr<FileLock>* out) {
  return TakeLock(name, exclusive, "", out, nullptr);
}

}  // namespace gnomon
