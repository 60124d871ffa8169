// DoSnapshotSet: the sequence that takes the snapshot (PrepareForSnapshot,
// the providers' preparation, Freeze by level, the provider commit inside
// the flush-and-hold window, Thaw in reverse, PostSnapshot), and what keeps
// its promise never to leave a writer frozen: the abort, which thaws from
// any thread, and the watchdog, which aborts the moment a writer's freeze
// window runs out (or the backup is cancelled), whatever the sequence is
// doing. Every wait here sleeps on cv_ until its deadline or a notification.
#include <algorithm>
#include <chrono>
#include <thread>

#include "vss/backup_components_internal.h"

namespace gnomon::vss {

namespace {

// How often the cancel flags that nothing can notify are looked at:
// RequesterOptions::cancel (set by a signal handler) and a Cancel() of the
// DoSnapshotSet handle by its caller. Everything else the waits here end on
// (a freeze window armed or cancelled, the abort, the commit's end, the
// session's own cancel, the stop) notifies cv_.
constexpr std::chrono::milliseconds kCancelPoll{100};

}  // namespace

HResult BackupComponents::DoSnapshotSet(std::shared_ptr<Async>* async) {
  std::lock_guard<std::mutex> g(mu_);
  bool no_writers = bcd_.context & ctx::kNoWritersBit;
  if (!(state_ == State::kPrepared || (no_writers && state_ == State::kSet)) ||
      CheckIdle() != S_OK_)
    return VSS_E_BAD_STATE;
  do_snapshot_running_ = true;
  watchdog_stop_ = false;
  watchdog_ = std::thread([this] { Watchdog(); });
  *async = Run([this](const std::atomic<bool>& cancelled) {
    HResult hr = DoSnapshotSetWork(cancelled);
    {
      std::lock_guard<std::mutex> g2(mu_);
      watchdog_stop_ = true;
      cv_.notify_all();
      state_ = hr == S_OK_ ? State::kSnapped : State::kFailed;
      do_snapshot_running_ = false;
    }
    if (watchdog_.joinable()) watchdog_.join();
    ReleaseSetLock();  // the set is created (or failed): others may start theirs
    return hr;
  });
  return S_OK_;
}

HResult BackupComponents::DoSnapshotSetWork(const std::atomic<bool>& cancelled) {
  std::vector<Slot*> parts;
  {
    std::lock_guard<std::mutex> g(mu_);
    parts = Participants();
  }
  // 1. PrepareForSnapshot. A failure fails the set (design choice: that
  //    writer will not freeze).
  if (!Deliver(Event::kPrepareSnapshot, parts)) return StopWith(WriterFailure(), "");
  if (Interrupted(cancelled)) return StopWith(VSS_S_ASYNC_CANCELLED, "backup cancelled");

  // 2. Providers prepare each volume.
  if (HResult hr = PrepareProviders(); hr != S_OK_) return hr;

  // 3.-5. Freeze, the provider commit, Thaw.
  if (HResult hr = FreezeCommitThaw(cancelled); hr != S_OK_) return hr;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (aborted_) return WriterFailureLocked();
  }
  if (HResult hr = RunProviders("PreFinalCommitSnapshots", &Provider::PreFinalCommitSnapshots);
      Failed(hr))
    return StopWith(hr, "");

  // 6. PostSnapshot.
  return PostSnapshot();
}

HResult BackupComponents::PrepareProviders() {
  {
    std::lock_guard<std::mutex> g(mu_);
    snapshot_set_reached_ = true;
  }
  for (const auto& m : set_) {
    Log("BeginPrepareSnapshot", m.provider->name());
    HResult hr = m.provider->BeginPrepareSnapshot(bcd_.snapshot_set_id, m.snapshot_id, m.volume);
    if (Failed(hr))
      return StopWith(hr, m.provider->name() + " provider cannot prepare " + m.volume.path + ": " +
                              m.provider->last_error());
  }
  if (HResult hr = RunProviders("EndPrepareSnapshots", &Provider::EndPrepareSnapshots); Failed(hr))
    return StopWith(hr, "");
  return S_OK_;
}

HResult BackupComponents::FreezeCommitThaw(const std::atomic<bool>& cancelled) {
  // frozen_ms: from the first Freeze delivered to the last Thaw returned,
  // or to the end of the abort, however the frozen period ends.
  const auto start = Clock::now();
  const HResult hr = FrozenSteps(cancelled);
  std::lock_guard<std::mutex> g(mu_);
  frozen_ms_ = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  return hr;
}

HResult BackupComponents::FrozenSteps(const std::atomic<bool>& cancelled) {
  // 3. Freeze, front-end writers first, the system level (filesystems) last.
  for (ApplicationLevel level :
       {ApplicationLevel::kFrontEnd, ApplicationLevel::kBackEnd, ApplicationLevel::kSystem}) {
    std::vector<Slot*> group;
    {
      std::lock_guard<std::mutex> g(mu_);
      group = AtLevel(level);
    }
    if (!Deliver(Event::kFreeze, group)) return StopWith(WriterFailure(), "");
    if (Interrupted(cancelled)) return StopWith(WriterFailure(), "backup cancelled during freeze");
  }

  // 4. The provider commit, inside the flush-and-hold window.
  if (HResult hr = CommitInHoldWindow(cancelled); hr != S_OK_) return hr;

  // 5. Thaw, in reverse: filesystems first, front-end applications last.
  for (ApplicationLevel level :
       {ApplicationLevel::kSystem, ApplicationLevel::kBackEnd, ApplicationLevel::kFrontEnd}) {
    std::vector<Slot*> group;
    {
      std::lock_guard<std::mutex> g(mu_);
      if (aborted_) return WriterFailureLocked();  // the abort thawed instead
      group = AtLevel(level);
    }
    if (!Deliver(Event::kThaw, group)) return StopWith(WriterFailure(), "");
  }
  return S_OK_;
}

HResult BackupComponents::CommitInHoldWindow(const std::atomic<bool>& cancelled) {
  if (HResult hr = RunProviders("PreCommitSnapshots", &Provider::PreCommitSnapshots); Failed(hr))
    return StopWith(hr, "");
  // The commit runs on a thread of its own, so that an abort thaws at once
  // whatever the provider is doing; its end notifies cv_. Every path below
  // waits for it before returning, so the thread never outlives `committed`.
  // An abort meanwhile (from here, the watchdog or a cancel) delivers OnAbort
  // at once but leaves the providers' AbortSnapshots to this thread, once
  // CommitSnapshots has returned: a provider never removes the snapshot
  // files its commit is still writing.
  bool committed = false;  // under mu_
  {
    std::lock_guard<std::mutex> g(mu_);
    commit_running_ = true;
  }
  auto commit = Async::Start([this, &committed](const std::atomic<bool>&) {
    HResult hr = RunProviders("CommitSnapshots", &Provider::CommitSnapshots);
    bool abort_providers;
    {
      std::lock_guard<std::mutex> g(mu_);
      committed = true;
      commit_running_ = false;
      abort_providers = provider_abort_deferred_;
      provider_abort_deferred_ = false;
      cv_.notify_all();
    }
    if (abort_providers) RunProviders("AbortSnapshots", &Provider::AbortSnapshots);
    return hr;
  });
  const auto hold_end = Clock::now() + std::chrono::milliseconds(opt_.hold_window_ms);
  switch (WaitForCommit(hold_end, committed, cancelled)) {
    case CommitWait::kDone:
      break;
    case CommitWait::kInterrupted:
      AbortWriters("backup cancelled during the provider commit");
      commit->Wait();  // the commit ends, then the providers abort
      return WriterFailure();
    case CommitWait::kHoldWindowOver:
      AbortWriters("the provider commit overran the flush-and-hold window of " +
                   std::to_string(opt_.hold_window_ms) + " ms");
      commit->Wait();  // the clone ends before its files are removed
      return VSS_E_HOLD_WRITES_TIMEOUT;
  }
  commit->Wait();  // `committed` is set a moment before the handle's result
  {
    // An abort that landed as the commit ended: the providers were aborted
    // (by the commit's thread or the abort itself); nothing more to commit.
    std::lock_guard<std::mutex> g(mu_);
    if (aborted_) return WriterFailureLocked();
  }
  if (HResult hr = commit->QueryStatus(); hr != VSS_S_ASYNC_FINISHED) return StopWith(hr, "");
  if (HResult hr = RunProviders("PostCommitSnapshots", &Provider::PostCommitSnapshots); Failed(hr))
    return StopWith(hr, "");
  return S_OK_;
}

BackupComponents::CommitWait BackupComponents::WaitForCommit(Clock::time_point hold_end,
                                                             const bool& committed,
                                                             const std::atomic<bool>& cancelled) {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    if (committed) return CommitWait::kDone;
    if (aborted_ || cancelled.load() || CancelRequested()) return CommitWait::kInterrupted;
    const auto now = Clock::now();
    if (now >= hold_end) return CommitWait::kHoldWindowOver;
    // Woken by the commit's end, the abort and the session's cancel; the
    // cancel flags nothing notifies are looked at every kCancelPoll.
    cv_.wait_until(l, std::min(hold_end, now + kCancelPoll));
  }
}

HResult BackupComponents::PostSnapshot() {
  // The snapshot exists; a failure here is the requester's call (no Abort).
  std::vector<Slot*> parts;
  {
    std::lock_guard<std::mutex> g(mu_);
    for (const auto& m : set_) {
      SnapshotProperties p;
      if (m.provider->GetSnapshotProperties(m.snapshot_id, &p) == S_OK_)
        bcd_.snapshots.push_back(
            {m.snapshot_id, m.volume.path, m.provider->name(), p.device, p.offset, p.size});
    }
    parts = Participants();
  }
  Deliver(Event::kPostSnapshot, parts);
  if (HResult hr = RunProviders("PostFinalCommitSnapshots", &Provider::PostFinalCommitSnapshots);
      Failed(hr))
    return StopWith(hr, "");
  return S_OK_;
}

HResult BackupComponents::StopWith(HResult hr, const std::string& why) {
  AbortWriters(why);
  return hr;
}

bool BackupComponents::Interrupted(const std::atomic<bool>& cancelled) const {
  std::lock_guard<std::mutex> g(mu_);
  return aborted_ || cancelled.load() || CancelRequested();
}

HResult BackupComponents::WriterFailure() const {
  std::lock_guard<std::mutex> g(mu_);
  return WriterFailureLocked();
}

HResult BackupComponents::WriterFailureLocked() const {
  // What the requester should show: the first failing writer's code.
  for (auto& s : slots_)
    if (IsFailedState(s->state) && s->failure != S_OK_) return s->failure;
  return VSS_E_UNEXPECTED_WRITER_ERROR;
}

void BackupComponents::AbortWriters(const std::string& why) {
  std::vector<Slot*> targets;
  std::vector<std::shared_ptr<Batch>> waiting;
  bool reached, defer_providers;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (aborted_) return;
    aborted_ = true;
    if (!why.empty()) last_error_ += (last_error_.empty() ? "" : "; ") + why;
    for (auto& s : slots_)
      if (Included(*s) && !s->got_post_snapshot && s->responsive) targets.push_back(s.get());
    for (auto& s : slots_) s->armed = false;
    reached = snapshot_set_reached_;
    // During the provider commit its own thread aborts the providers when
    // CommitSnapshots returns (CommitInHoldWindow); the writers thaw now.
    defer_providers = reached && commit_running_;
    if (defer_providers) provider_abort_deferred_ = true;
    waiting = abortable_;
    cv_.notify_all();  // the watchdog, a wait for the commit
  }
  // A Freeze or Thaw delivery still waiting stops now. Its mutex is taken
  // after mu_ is released: the lock order is a batch's mutex, then mu_.
  for (const auto& b : waiting) {
    {
      std::lock_guard<std::mutex> g(b->mu);
      b->aborted = true;
    }
    b->cv.notify_all();
  }
  Deliver(Event::kAbort, targets);
  if (reached && !defer_providers) RunProviders("AbortSnapshots", &Provider::AbortSnapshots);
}

void BackupComponents::Watchdog() {
  std::unique_lock<std::mutex> l(mu_);
  while (!watchdog_stop_) {
    const auto wake = WatchdogWakeLocked();
    if (wake == Clock::time_point::max())
      cv_.wait(l);  // nothing armed and nothing to poll: only a notify changes that
    else
      cv_.wait_until(l, wake);
    if (watchdog_stop_ || aborted_) continue;
    std::string why;
    if (CancelRequested()) why = "backup cancelled";
    ExpireFreezeWindowsLocked(&why);
    if (!why.empty()) {
      l.unlock();
      AbortWriters(why);  // thaws now, whatever the snapshot thread is doing
      l.lock();
    }
  }
}

BackupComponents::Clock::time_point BackupComponents::WatchdogWakeLocked() const {
  // The earliest armed freeze deadline (arming and cancelling notify cv_),
  // and kCancelPoll from now for RequesterOptions::cancel, which nothing can
  // notify (a signal handler sets it). After the abort, only the stop.
  auto wake = Clock::time_point::max();
  if (aborted_) return wake;
  if (opt_.cancel) wake = Clock::now() + kCancelPoll;
  for (const auto& s : slots_)
    if (s->armed) wake = std::min(wake, s->deadline);
  return wake;
}

void BackupComponents::ExpireFreezeWindowsLocked(std::string* why) {
  // Caller holds mu_. Marks each writer whose freeze window has run out and
  // adds it to *why.
  const auto now = Clock::now();
  for (auto& s : slots_) {
    if (!s->armed || now < s->deadline) continue;
    s->armed = false;
    bool freeze_returned = false;
    if (s->freeze_job) {
      // Lock order: mu_ then a job's batch mutex is never taken here; the
      // job's done flag is read racily but only ever goes false -> true.
      freeze_returned = s->freeze_job->done;
    }
    if (IsFailedState(s->state) && s->failure != S_OK_) continue;
    s->state = freeze_returned ? WriterState::kFailedAtThaw : WriterState::kFailedAtFreeze;
    s->failure = VSS_E_WRITERERROR_TIMEOUT;
    s->message = "the freeze window of " + std::to_string(s->writer->freeze_timeout_ms()) +
                 " ms ran out before Thaw";
    *why += (why->empty() ? "" : "; ") + std::string("writer '") + s->writer->name() +
            "': " + s->message;
  }
}

}  // namespace gnomon::vss
