// Garbage collection's side of the repository: the gc/ locks that let prune
// run beside backups and readers, and the deletions of its last step
// (FORMAT.md §8, §9a).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "base/clock.h"
#include "format/framed_file.h"
#include "format/names.h"
#include "format/repository.h"
#include "format/repository_layout.h"

namespace gnomon {

namespace {

constexpr int64_t kUserWaitMs = 10 * 60 * 1000;  // a user waits this long at the gate
constexpr int64_t kDrainMs = 60 * 1000;          // prune holds the gate this long per try
constexpr int64_t kPollMs = 20;

std::function<void(const std::string&)>& WaitNotice() {
  static std::function<void(const std::string&)> notice;
  return notice;
}

int64_t NowMs() { return NowMicros() / 1000; }
void Nap(int64_t ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// Retries f (a TryFlock) until it stops answering Locked or deadline_ms passes.
template <class F>
Status Poll(int64_t deadline_ms, F f) {
  for (;;) {
    Status s = f();
    if (!s.IsLocked() || NowMs() >= deadline_ms) return s;
    Nap(kPollMs);
  }
}

}  // namespace

void Repository::SetWaitNotice(std::function<void(const std::string&)> notice) {
  WaitNotice() = std::move(notice);
}

Status Repository::EnterAsUser() {
  // A repository on read-only media cannot have gc/ made: nobody can
  // delete there, so there is nothing to wait for. Anywhere else a failure
  // is an error: going on unregistered would let a prune delete beside us.
  if (backend_->ReadOnly()) return Status::OK();
  const int64_t deadline = NowMs() + kUserWaitMs;
  bool told = false;
  for (;;) {
    std::unique_ptr<FileLock> gate;
    Status s = backend_->TryLock(P(kGc, "gate"), false, &gate);
    // Holding the gate shared while taking users means a prune cannot
    // slip in between and find us half-entered.
    if (s.ok()) s = backend_->TryLock(P(kGc, "users"), false, &users_lock_);
    if (!s.IsLocked()) return s;
    if (NowMs() >= deadline)
      return Status::Locked("a prune has been deleting in " + path() +
                            " for 10 minutes; try later");
    if (!told && WaitNotice()) WaitNotice()("waiting for a prune to finish deleting in " + path());
    told = true;
    gate.reset();
    Nap(50);
  }
}

Status Repository::LockGc(const std::string& purpose, std::unique_ptr<FileLock>* out) {
  const std::string info = HolderText("gnomon " + purpose);
  std::string stale;
  // A backup's clean-up holds it shared for milliseconds; another prune
  // holds it for its whole run.
  Status s =
      Poll(NowMs() + 5000, [&] { return backend_->Lock(P(kGc, "lock"), true, info, out, &stale); });
  if (s.IsLocked())
    return Status::Locked(
        path() + ": another prune is running (or a backup is cleaning up): " + s.message());
  return s;
}

Status Repository::EnterDeletion(int64_t max_wait_ms, const std::atomic<bool>* cancel,
                                 DeletionLocks* out) {
  const int64_t deadline = NowMs() + max_wait_ms;
  const std::string info = HolderText("gnomon prune, deleting");
  auto poll = [&](int64_t until, auto f) {
    for (;;) {
      if (cancel && cancel->load()) return Status::Aborted("prune interrupted");
      Status s = f();
      if (!s.IsLocked() || NowMs() >= until) return s;
      Nap(kPollMs);
    }
  };
  for (;;) {
    *out = DeletionLocks();
    // The gate first: no new user starts while the ones running drain.
    Status s = poll(deadline, [&] { return backend_->TryLock(P(kGc, "gate"), true, &out->gate); });
    if (s.IsLocked()) return Status::Locked("the gate stays busy");
    GNOMON_RETURN_IF_ERROR(s);
    const int64_t drain = std::min(deadline, NowMs() + kDrainMs);
    s = poll(drain, [&] { return backend_->TryLock(P(kGc, "users"), true, &out->users); });
    if (s.ok()) {
      std::string stale;
      s = poll(drain, [&] { return backend_->Lock(kLock, true, info, &out->repository, &stale); });
    }
    if (!s.IsLocked()) return s;
    *out = DeletionLocks();  // a long restore or verify: let backups through meanwhile
    if (NowMs() >= deadline)
      return Status::Locked(
          "the repository stayed in use (a backup, restore or verify is running)");
    for (int64_t until = std::min(deadline, NowMs() + 5000); NowMs() < until;) {
      if (cancel && cancel->load()) return Status::Aborted("prune interrupted");
      Nap(100);
    }
  }
}

Status Repository::DeletePack(const std::string& id) {
  if (!IsObjectId(id)) return Status::Corruption("pack id '" + id + "' is malformed");
  Status s = backend_->Delete(PackName(id));
  return s.IsNotFound() ? Status::OK() : s;
}

Status Repository::DeleteIndexFile(const std::string& name) {
  if (!IsObjectId(name)) return Status::Corruption("index file name '" + name + "' is malformed");
  Status s = backend_->Delete(P(kIndex, name));
  return s.IsNotFound() ? Status::OK() : s;
}

Status Repository::ListQuarantineFiles(std::vector<QuarantineFile>* out,
                                       std::vector<Status>* errors) {
  out->clear();
  std::vector<std::string> names;
  GNOMON_RETURN_IF_ERROR(backend_->List(kQuarantine, &names));
  for (const auto& n : names) {
    if (!IsObjectId(n)) continue;
    std::string path = D(P(kQuarantine, n)), body;
    uint64_t t = 0;
    QuarantineFile q{n, {}};
    Status s = ReadFramed(kQuarantineFrame, P(kQuarantine, n), &body);
    if (s.ok()) s = DecodeQuarantine(path, body, &t, &q.chunks);
    if (s.ok())
      out->push_back(std::move(q));
    else
      errors->push_back(s);
  }
  return Status::OK();
}

Status Repository::DeleteQuarantineFile(const std::string& name) {
  if (!IsObjectId(name)) return Status::Corruption("quarantine file '" + name + "' is malformed");
  Status s = backend_->Delete(P(kQuarantine, name));
  return s.IsNotFound() ? Status::OK() : s;
}

Status Repository::DeleteCheckFile(const std::string& name) {
  if (!IsObjectId(name)) return Status::Corruption("check file '" + name + "' is malformed");
  Status s = backend_->Delete(P(kChecks, name));
  return s.IsNotFound() ? Status::OK() : s;
}

void Repository::RemoveLeftoversForGc() { RemoveLeftovers(/*unjournaled=*/true); }

}  // namespace gnomon
