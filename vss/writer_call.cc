#include "vss/writer_call.h"

#include <exception>

namespace gnomon::vss {

namespace {

bool Dispatch(Writer& w, WriterEvent ev, WriterComponents* comps, const HandlerArgs& a) {
  switch (ev) {
    case WriterEvent::kIdentify:
      return w.OnIdentify(a.md);
    case WriterEvent::kPrepareBackup:
      return w.OnPrepareBackup(comps);
    case WriterEvent::kPrepareSnapshot:
      return w.OnPrepareSnapshot();
    case WriterEvent::kFreeze:
      return w.OnFreeze();
    case WriterEvent::kThaw:
      return w.OnThaw();
    case WriterEvent::kPostSnapshot:
      return w.OnPostSnapshot(comps);
    case WriterEvent::kAbort:
      return w.OnAbort();
    case WriterEvent::kBackupComplete:
      return w.OnBackupComplete(comps);
    case WriterEvent::kBackupShutdown:
      return w.OnBackupShutdown(a.snapshot_set_id);
  }
  return false;
}

}  // namespace

HandlerResult CallHandler(Writer& w, WriterEvent ev, detail::EventContext* ctx,
                          const HandlerArgs& args) {
  static const bool kEditable = false;
  WriterComponents comps;
  if (args.components)
    for (auto& c : *args.components)
      comps.emplace_back(&c, args.read_only ? args.read_only : &kEditable);
  HandlerResult r;
  detail::CurrentEvent() = ctx;
  try {
    r.ok = Dispatch(w, ev, &comps, args);
  } catch (const std::exception& e) {
    r.ok = false;
    r.exception = e.what();
  } catch (...) {
    r.ok = false;
    r.exception = "unknown exception";
  }
  detail::CurrentEvent() = nullptr;
  return r;
}

WriterMetadata IdentityOf(const Writer& w) {
  WriterMetadata md;
  md.class_id = w.class_id();
  md.instance_id = w.instance_id();
  md.name = w.name();
  md.instance_name = w.instance_name();
  md.usage = w.usage();
  md.source = w.source();
  md.level = w.level();
  return md;
}

WriterState StateAfter(WriterEvent ev) {
  static const WriterState kAfter[kWriterEventCount] = {
      WriterState::kStable,                    // Identify
      WriterState::kStable,                    // PrepareForBackup
      WriterState::kWaitingForFreeze,          // PrepareForSnapshot
      WriterState::kWaitingForThaw,            // Freeze
      WriterState::kWaitingForPostSnapshot,    // Thaw
      WriterState::kWaitingForBackupComplete,  // PostSnapshot
      WriterState::kStable,                    // Abort
      WriterState::kStable,                    // BackupComplete
      WriterState::kStable};                   // BackupShutdown
  return kAfter[static_cast<int>(ev)];
}

WriterState FailedStateAt(WriterEvent ev) {
  static const WriterState kFailed[kWriterEventCount] = {WriterState::kFailedAtIdentify,
                                                         WriterState::kFailedAtPrepareBackup,
                                                         WriterState::kFailedAtPrepareSnapshot,
                                                         WriterState::kFailedAtFreeze,
                                                         WriterState::kFailedAtThaw,
                                                         WriterState::kFailedAtPostSnapshot,
                                                         WriterState::kStable /* Abort */,
                                                         WriterState::kFailedAtBackupComplete,
                                                         WriterState::kFailedAtBackupShutdown};
  return kFailed[static_cast<int>(ev)];
}

std::string HandlerMessage(const HandlerResult& r, const detail::EventContext& ctx) {
  return r.exception.empty() ? ctx.failure_message : "handler threw an exception: " + r.exception;
}

HResult FatalFailure(const detail::EventContext& ctx) {
  return ctx.failure != S_OK_ ? ctx.failure : VSS_E_WRITERERROR_NONRETRYABLE;
}

}  // namespace gnomon::vss
