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
// store must not learn host names): enough to tell "this host" apart.
std::string HostId() {
  const std::string h = "gnomon lock host " + HostName();
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
  return pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM);
}

class LockObject final : public FileLock {
 public:
  LockObject(Backend* b, std::string object, json doc)
      : b_(b), object_(std::move(object)), doc_(std::move(doc)) {
    refresher_ = std::thread([this] { Refresh(); });
  }
  ~LockObject() override {
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    refresher_.join();
    b_->Delete(object_);  // best effort: a lock left behind goes stale
  }

 private:
  void Refresh() {
    std::unique_lock<std::mutex> g(mu_);
    while (!cv_.wait_for(g, std::chrono::milliseconds(RefreshMs()), [&] { return stop_; })) {
      doc_["refreshed"] = NowMs();
      const std::string text = doc_.dump();
      b_->PutReplace(object_, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
    }
  }

  Backend* b_;
  std::string object_;
  json doc_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread refresher_;
};

// What a lock object says of its holder, for messages.
std::string Holder(const json& d) {
  std::string p = d.value("purpose", "");
  return p.empty() ? "pid " + std::to_string(d.value("pid", 0)) : p;
}

}  // namespace

Status TakeLockObject(Backend* b, const std::string& name, bool exclusive,
                      const std::string& holder_info, std::unique_ptr<FileLock>* out,
                      std::string* stale_holder) {
  const std::string me = RepoPath(kLocks, RandomHexId(16)), mine = LockName(name);
  const int64_t now = NowMs();
  json doc = {{"host", HostId()},
              {"pid", static_cast<int64_t>(getpid())},
              {"kind", exclusive ? "exclusive" : "shared"},
              {"name", mine},
              {"purpose", holder_info},
              {"created", now},
              {"refreshed", now}};
  const std::string text = doc.dump();
  GNOMON_RETURN_IF_ERROR(b->Put(me, {reinterpret_cast<const uint8_t*>(text.data()), text.size()}));
  auto fail = [&](Status s) {
    b->Delete(me);
    return s;
  };
  std::vector<std::string> others;
  if (Status s = b->List(kLocks, &others); !s.ok()) return fail(s);
  for (const auto& o : others) {
    const std::string object = RepoPath(kLocks, o);
    if (object == me) continue;
    std::string body;
    json d;
    std::string error;
    if (Status s = b->Get(object, &body); !s.ok()) {
      if (s.IsNotFound()) continue;  // released meanwhile
      return fail(s);
    }
    if (!ParseJsonBounded(body, &d, &error, 1 << 16) || !d.is_object())
      return fail(Status::Locked(b->Describe(object) + ": an unreadable lock object (" + error +
                                 "); remove it if no gnomon is running"));
    if (d.value("name", "") != mine) continue;
    const bool theirs_exclusive = d.value("kind", "") == "exclusive";
    const bool stale = now - d.value("refreshed", int64_t{0}) > StaleMs() ||
                       (d.value("host", "") == HostId() && !ProcessAlive(d.value("pid", 0)));
    if (stale) {
      if (theirs_exclusive && stale_holder) *stale_holder = Holder(d);
      b->Delete(object);
      continue;
    }
    if (exclusive || theirs_exclusive)
      return fail(Status::Locked("locked by " + Holder(d) + " (" + b->Describe(object) + ")"));
  }
  *out = std::make_unique<LockObject>(b, me, std::move(doc));
  return Status::OK();
}

Status S3Backend::Lock(const std::string& name, bool exclusive, const std::string& holder_info,
                       std::unique_ptr<FileLock>* out, std::string* stale_holder) {
  return TakeLockObject(this, name, exclusive, holder_info, out, stale_holder);
}

Status S3Backend::TryLock(const std::string& name, bool exclusive, std::unique_ptr<FileLock>* out) {
  return TakeLockObject(this, name, exclusive, "", out, nullptr);
}

}  // namespace gnomon
