// How a backup or copy that failed ends its write (FORMAT.md §9): it takes
// back what it wrote, except what may already be in use. A record that is
// or may be visible names everything the run wrote; an index file another
// writer may have loaded (an object store, where backups run side by side)
// names packs that writer may have deduplicated against.
#pragma once

#include <string>

#include "base/status.h"
#include "engine/pack_sink.h"
#include "format/repository.h"

namespace gnomon {

struct FailedWrite {
  std::string id;  // the backup id it published (or meant to) under
  // The index file it wrote or may have ("": none, or the name it last
  // tried was another's).
  std::string index_file;
  bool index_written = false;  // WriteIndexFile returned OK
  Repository::PublishOutcome published;
};

// Ends repo's write for a run that failed with s; returns s, with context
// when the backup's record is, or may be, there after all.
Status EndFailedWrite(Repository* repo, PackSink* sink, const FailedWrite& w, Status s);

}  // namespace gnomon
