// The parts of BackupComponents that its implementation files share and its
// users never see. The session is split by job over backup_components*.cc:
//   backup_components.cc            the session: call order, status, release
//   backup_components_selection.cc  which writers and components take part
//   backup_components_set.cc        the snapshot set: volumes and providers
//   backup_components_delivery.cc   delivering an event to writers' handlers
//   backup_components_snapshot.cc   DoSnapshotSet: freeze, commit, thaw, abort
//
// Locks, always taken in this order, never the other way round:
//   a Batch's mu  ->  the session's mu_  ->  an Async's own (CheckIdle)
// AbortWriters and the watchdog hold mu_ alone: AbortWriters takes a
// Batch's mu only after releasing mu_, and the watchdog reads a Job's done
// flag (atomic) instead. A handler thread takes its Batch's mu alone.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "vss/backup_components.h"
#include "vss/component_sets.h"
#include "vss/writer_call.h"

namespace gnomon::vss {

// One writer as the session sees it.
struct BackupComponents::Slot {
  std::shared_ptr<Writer> writer;
  WriterMetadata md;
  bool identified = false;
  WriterState state = WriterState::kStable;
  HResult failure = S_OK_;
  std::string message;
  bool responsive = true;
  bool got_post_snapshot = false;
  // The freeze window: armed when Freeze is delivered, cancelled when Thaw
  // is, both under mu_ so the watchdog never sees one without the other
  // (the timer race of KB 915331). Both notify cv_, which the watchdog
  // sleeps on until the earliest armed deadline.
  bool armed = false;
  Clock::time_point deadline;
  std::shared_ptr<Job> freeze_job;
  // Selectability relations of md's components, built on first use under
  // mu_ (md does not change after Identify).
  std::unique_ptr<ComponentSets> sets;
  const ComponentSets& Sets() {
    if (!sets) sets = std::make_unique<ComponentSets>(md);
    return *sets;
  }
};

// One handler call in flight. Shared with the handler's thread, which may
// outlive the session if the writer hangs: it owns everything it touches.
struct BackupComponents::Job {
  std::atomic<bool> done{false};  // read by the watchdog without the batch lock
  HandlerResult result;           // under the batch's mu, once done
  detail::EventContext ctx;
  std::shared_ptr<SessionView> view;
  std::vector<ComponentRecord> comps;
  bool read_only = false;
  WriterMetadata md;  // Identify: arrives with the identity, leaves as the WMD
};

// One event's delivery to a group of writers: shared by its handler threads,
// which signal cv as each ends, and the thread waiting for them.
struct BackupComponents::Batch {
  std::mutex mu;
  std::condition_variable cv;
  // Set (under mu) by AbortWriters: a Freeze or Thaw delivery stops waiting
  // at once, since the abort thaws instead.
  bool aborted = false;
};

// Deliver's working state: who gets the event, their calls, their deadlines.
struct BackupComponents::Delivery {
  Delivery(Event e, const std::vector<Slot*>& s)
      : ev(e), slots(s), jobs(s.size()), deadlines(s.size()), batch(std::make_shared<Batch>()) {}
  Event ev;
  std::vector<Slot*> slots;
  std::vector<std::shared_ptr<Job>> jobs;  // null: not sent (the session had aborted)
  std::vector<Clock::time_point> deadlines;
  std::shared_ptr<Batch> batch;
};

}  // namespace gnomon::vss
