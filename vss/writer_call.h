// One call of a writer's handler, and what its outcome means. This is the
// single place that turns a WriterEvent into the Writer handler it runs:
// the requester's delivery threads (BackupComponents, for in-process writers
// and the RemoteWriter proxies of writers in other processes) and the writer
// library's server (WriterServer, inside such a process) both call writers
// through it, so the two ends of the protocol cannot drift apart.
#pragma once

#include <string>
#include <vector>

#include "vss/documents.h"
#include "vss/writer.h"

namespace gnomon::vss {

// What a handler is given besides the event.
struct HandlerArgs {
  // Identify: the metadata, arriving with the identity (IdentityOf); the
  // handler adds its components.
  WriterMetadata* md = nullptr;
  // PrepareBackup, PostSnapshot, BackupComplete: the writer's included
  // components as records of the BCD, edited in place; null = none.
  std::vector<ComponentRecord>* components = nullptr;
  // Whether those records can no longer be edited; null = editable.
  const bool* read_only = nullptr;
  // BackupShutdown: the set being shut down.
  Guid snapshot_set_id;
};

// How a handler call ended.
struct HandlerResult {
  bool ok = false;        // the handler returned true (false if it threw)
  std::string exception;  // what() of an exception that escaped it, else ""
};

// Runs w's handler for ev on this thread, with ctx as the thread's current
// event for the duration of the call (the Writer helpers such as
// SetWriterFailure read it; null = none), and catches whatever it throws.
HandlerResult CallHandler(Writer& w, WriterEvent ev, detail::EventContext* ctx,
                          const HandlerArgs& args);

// The metadata OnIdentify starts from: the writer's identity.
WriterMetadata IdentityOf(const Writer& w);

// The state a writer is in after its handler for ev succeeded, and the
// state it fails at (Abort has no failed state: kStable).
WriterState StateAfter(WriterEvent ev);
WriterState FailedStateAt(WriterEvent ev);

// The text that goes with a call's outcome: the escaped exception, else what
// the writer said with SetWriterFailure ("" if nothing).
std::string HandlerMessage(const HandlerResult& r, const detail::EventContext& ctx);
// The code a failed call (ok false) is reported with: the writer's own, else
// VSS_E_WRITERERROR_NONRETRYABLE.
HResult FatalFailure(const detail::EventContext& ctx);

}  // namespace gnomon::vss
