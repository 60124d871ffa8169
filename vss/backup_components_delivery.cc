// Delivering one event to a group of writers: each handler runs on a thread
// of its own with a deadline (the freeze window for Freeze and Thaw, the
// event timeout otherwise), so a writer that hangs is reported as not
// responding instead of hanging the backup; the waiter wakes when a handler
// ends, at the nearest deadline, or (Freeze, Thaw) when the session aborts.
// The outcome of each call becomes the writer's state, failure and message.
// The handler call itself is CallHandler (vss/writer_call.h), shared with
// the writer library's server.
#include <algorithm>
#include <chrono>
#include <thread>

#include "vss/backup_components_internal.h"

namespace gnomon::vss {

namespace {

// Whether an abort ends the wait for ev's handlers: for Freeze and Thaw the
// abort thaws instead (the watchdog has then already marked a late writer).
bool StopsOnAbort(WriterEvent ev) { return ev == WriterEvent::kFreeze || ev == WriterEvent::kThaw; }

// Events whose handlers see the writer's components of the BCD.
bool CarriesComponents(WriterEvent ev) {
  return ev == WriterEvent::kPrepareBackup || ev == WriterEvent::kPostSnapshot ||
         ev == WriterEvent::kBackupComplete;
}

}  // namespace

std::shared_ptr<SessionView> BackupComponents::MakeView() const {
  auto v = std::make_shared<SessionView>();
  v->backup_type = bcd_.backup_type;
  v->select_components = bcd_.select_components;
  v->bootable_system_state = bcd_.bootable_system_state;
  v->partial_file_support = bcd_.partial_file_support;
  v->context = bcd_.context;
  v->snapshot_set_id = bcd_.snapshot_set_id;
  std::vector<VolumeIdentity> vols;
  for (const auto& m : set_) {
    v->volumes.push_back(m.volume.path);
    v->volume_providers.emplace_back(m.volume.path, m.provider->name());
    v->snapshot_ids.emplace_back(m.volume.path, m.snapshot_id.ToString());
    vols.push_back(m.volume);
  }
  for (const auto& s : bcd_.snapshots) v->snapshot_devices.emplace_back(s.volume, s.device);
  v->path_affected = [vols](const std::string& p) { return PathOnVolumes(p, false, vols); };
  return v;
}

void BackupComponents::MarkFailed(Slot* s, Event ev, HResult hr, const std::string& msg) {
  // Caller holds mu_. A writer keeps its first failure.
  if (IsFailedState(s->state) && s->failure != S_OK_) return;
  s->state = FailedStateAt(ev);
  s->failure = hr;
  s->message = msg;
  if (!last_error_.empty()) last_error_ += "; ";
  last_error_ += "writer '" + s->writer->name() + "' failed at " + WriterEventName(ev) + ": " +
                 DescribeHResult(hr) + (msg.empty() ? "" : ": " + msg);
}

void BackupComponents::IgnoredStampLocked(Slot* s, Event ev, const ComponentRecord& c) {
  // Caller holds mu_. Said once per writer, in its status (which is stored
  // with the backup) and in the session's log; it fails nothing.
  static const std::string kWhy =
      "backup stamp ignored: the writer's backup schema does not declare VSS_BS_TIMESTAMPED "
      "(0x20)";
  log_.push_back({"IgnoreBackupStamp", s->writer->name() + " " + c.FullPath()});
  if (s->message.find(kWhy) != std::string::npos) return;
  s->message += (s->message.empty() ? "" : "; ") + kWhy + " (set in " + WriterEventName(ev) +
                " for " + c.FullPath() + ")";
}

bool BackupComponents::Deliver(Event ev, const std::vector<Slot*>& slots) {
  if (slots.empty()) return true;
  Delivery d(ev, slots);
  std::shared_ptr<SessionView> view;
  {
    std::lock_guard<std::mutex> g(mu_);
    view = MakeView();
    // Registered before any handler starts, so an abort from now on finds
    // it. An abort that came earlier needs nothing: no Freeze or Thaw is
    // then sent (aborted_ never goes back to false), so nothing is waited for.
    if (StopsOnAbort(ev)) abortable_.push_back(d.batch);
  }
  for (size_t i = 0; i < slots.size(); ++i) Send(d, i, view);
  WaitForHandlers(d);
  if (StopsOnAbort(ev)) {
    std::lock_guard<std::mutex> g(mu_);
    abortable_.erase(std::find(abortable_.begin(), abortable_.end(), d.batch));
  }
  return Collect(d);
}

void BackupComponents::Send(Delivery& d, size_t i, const std::shared_ptr<SessionView>& view) {
  Slot* s = d.slots[i];
  auto job = std::make_shared<Job>();
  job->view = view;
  job->ctx.session = view.get();
  job->ctx.set_id_valid = d.ev == Event::kPrepareSnapshot || d.ev == Event::kFreeze ||
                          d.ev == Event::kThaw || d.ev == Event::kPostSnapshot;
  if (d.ev == Event::kIdentify) job->md = IdentityOf(*s->writer);
  {
    std::lock_guard<std::mutex> g(mu_);
    if (!SetDeadlineLocked(d.ev, s, job, &d.deadlines[i])) return;
    if (d.ev == Event::kPostSnapshot) s->got_post_snapshot = true;
    if (CarriesComponents(d.ev)) {
      for (const auto& c : bcd_.components)
        if (c.class_id == s->writer->class_id() && c.instance_id == s->writer->instance_id())
          job->comps.push_back(c);
      job->read_only = bcd_read_only_;
    }
    log_.push_back({WriterEventName(d.ev), s->writer->name()});
  }
  d.jobs[i] = job;
  // The handler's thread owns everything it touches (the session may be
  // gone when a hung handler finally returns) and signals the batch at the end.
  std::thread([w = s->writer, ev = d.ev, job, batch = d.batch] {
    HandlerArgs args;
    args.md = &job->md;
    args.components = &job->comps;
    args.read_only = &job->read_only;
    args.snapshot_set_id = job->view->snapshot_set_id;
    HandlerResult r = CallHandler(*w, ev, &job->ctx, args);
    {
      std::lock_guard<std::mutex> g(batch->mu);
      job->result = std::move(r);
      job->done = true;
    }
    batch->cv.notify_all();
  }).detach();
}

bool BackupComponents::SetDeadlineLocked(Event ev, Slot* s, const std::shared_ptr<Job>& job,
                                         Clock::time_point* deadline) {
  // Caller holds mu_. The freeze window is armed with Freeze and cancelled
  // with Thaw in this one step (see Slot::armed); the watchdog hears both.
  if (ev == Event::kFreeze) {
    if (aborted_) return false;
    s->armed = true;
    s->deadline = Clock::now() + std::chrono::milliseconds(s->writer->freeze_timeout_ms());
    s->freeze_job = job;
    *deadline = s->deadline;
    cv_.notify_all();
  } else if (ev == Event::kThaw) {
    if (aborted_) return false;  // the abort thaws instead
    *deadline = s->deadline;
    s->armed = false;
    cv_.notify_all();
  } else {
    *deadline = Clock::now() + std::chrono::milliseconds(opt_.event_timeout_ms);
  }
  return true;
}

void BackupComponents::WaitForHandlers(const Delivery& d) {
  // Until every handler has ended or is past its deadline, or (Freeze, Thaw)
  // the session aborts: handler threads and AbortWriters signal the batch,
  // and the wait ends by itself at the nearest deadline.
  std::unique_lock<std::mutex> l(d.batch->mu);
  for (;;) {
    if (StopsOnAbort(d.ev) && d.batch->aborted) return;
    const auto now = Clock::now();
    auto next = Clock::time_point::max();
    for (size_t i = 0; i < d.jobs.size(); ++i)
      if (d.jobs[i] && !d.jobs[i]->done && now < d.deadlines[i])
        next = std::min(next, d.deadlines[i]);
    if (next == Clock::time_point::max()) return;
    d.batch->cv.wait_until(l, next);
  }
}

bool BackupComponents::Collect(const Delivery& d) {
  bool all_ok = true;
  // Lock order: the batch's mutex, then mu_.
  std::lock_guard<std::mutex> bl(d.batch->mu);
  std::lock_guard<std::mutex> g(mu_);
  for (size_t i = 0; i < d.slots.size(); ++i)
    if (d.jobs[i] && !ApplyResult(d.slots[i], d.ev, *d.jobs[i])) all_ok = false;
  return all_ok;
}

bool BackupComponents::ApplyResult(Slot* s, Event ev, const Job& job) {
  // Caller holds the batch's mutex and mu_. Returns false if the writer
  // failed the event (Abort and BackupShutdown never fail the delivery).
  if (!job.done) {
    s->responsive = false;
    if (ev == Event::kFreeze || ev == Event::kThaw)
      MarkFailed(
          s, ev, VSS_E_WRITERERROR_TIMEOUT,
          "the freeze window of " + std::to_string(s->writer->freeze_timeout_ms()) + " ms ran out");
    else
      MarkFailed(s, ev, VSS_E_WRITER_NOT_RESPONDING,
                 "no answer within " + std::to_string(opt_.event_timeout_ms) + " ms");
    return false;
  }
  if (job.ctx.not_responding) {
    // A writer in another process that died or dropped its connection.
    s->responsive = false;
    if (ev != Event::kIdentify)
      MarkFailed(s, ev, VSS_E_WRITER_NOT_RESPONDING, job.ctx.failure_message);
    return false;
  }
  if (ev == Event::kIdentify) {
    if (!job.result.ok) return false;  // absent from metadata and status, as in VSS
    s->md = job.md;
    s->identified = true;
    s->state = WriterState::kStable;
    return true;
  }
  if (!job.read_only && !job.comps.empty()) {
    for (const auto& c : job.comps)
      if (auto* rec = bcd_.Find(c.class_id, c.logical_path, c.name)) {
        const std::string stamp = rec->backup_stamp;
        *rec = c;
        // As in VSS, only a writer whose backup schema declares
        // VSS_BS_TIMESTAMPED keeps backup stamps: another's is not stored,
        // so it is never handed back, and its status says so.
        if (c.backup_stamp != stamp && !(s->md.backup_schema & schema::kTimestamped)) {
          rec->backup_stamp = stamp;
          IgnoredStampLocked(s, ev, c);
        }
      }
  }
  if (ev == Event::kAbort || ev == Event::kBackupShutdown) {
    if (!job.result.ok && ev == Event::kBackupShutdown)
      MarkFailed(s, ev, FatalFailure(job.ctx), job.ctx.failure_message);
    else if (!IsFailedState(s->state))
      s->state = WriterState::kStable;
    return true;
  }
  if (ev == Event::kPrepareSnapshot && job.result.ok && s->writer->PreparationRunning()) {
    // VSS: work begun in PrepareForBackup must end before PrepareForSnapshot
    // returns. Freezing beside it would snapshot the application mid-work.
    MarkFailed(s, ev, VSS_E_WRITERERROR_RETRYABLE,
               "work it began in PrepareForBackup was still running when PrepareForSnapshot "
               "returned (it must end first), so nothing was frozen");
    return false;
  }
  if (job.result.ok) {
    // With a failure code set, a non-fatal failure: reported, the writer
    // carries on (§2.2).
    if (job.ctx.failure != S_OK_) {
      // The first failure's message leads; a note (IgnoredStampLocked) follows.
      if (s->failure == S_OK_)
        s->message = job.ctx.failure_message + (s->message.empty() ? "" : "; " + s->message);
      s->failure = job.ctx.failure;
    }
    if (!IsFailedState(s->state)) s->state = StateAfter(ev);
    return true;
  }
  std::string msg = HandlerMessage(job.result, job.ctx);
  MarkFailed(s, ev, FatalFailure(job.ctx), msg.empty() ? "handler returned false" : msg);
  return false;
}

}  // namespace gnomon::vss
