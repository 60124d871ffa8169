#include "engine/failed_write.h"

#include "format/names.h"

namespace gnomon {

Status EndFailedWrite(Repository* repo, PackSink* sink, const FailedWrite& w, Status s) {
  using State = Repository::RecordState;
  if (w.published.record == State::kVisible) {
    // Its directory could not be synced, nor the record taken back, or the
    // store's answer was lost: the backup is complete, only its durability
    // (a local directory) or the error's cause (an object store) in doubt.
    repo->EndWrite();
    return s.WithContext("backup " + w.id +
                         (repo->backend()->Remote()
                              ? " is published, though its write reported an error"
                              : " is published, but may not survive a crash"));
  }
  if (w.published.record == State::kUnknown) {
    // Nothing goes: the journal stays, and the next run's clean-up keeps
    // what a record names and removes the volume indexes if none does.
    repo->EndWrite(/*keep_journal=*/true);
    return s.WithContext("could not tell whether backup " + w.id +
                         " was published; if it was not, the next backup removes its volume "
                         "indexes and prune its chunks");
  }
  if (!w.index_file.empty() && repo->backend()->ConcurrentWriters()) {
    // A backup beside this one may have loaded the index file and stored
    // only references to its packs: they stay, unreferenced, until a prune
    // (which marks that backup's record first). The journal stays if the
    // index file may not exist, so the clean-up can tell.
    repo->EndWrite(/*keep_journal=*/!w.index_written || w.published.volumes_left);
    return s;
  }
  // Without the record, none of this is referenced. An index file that
  // cannot be removed keeps its packs (and the journal): it names them.
  if (!w.index_file.empty()) {
    Status d = repo->backend()->Delete(RepoPath(kIndex, w.index_file));
    if (!d.ok() && !d.IsNotFound()) {
      repo->EndWrite(/*keep_journal=*/true);
      return s;
    }
  }
  const bool packs_gone = sink->Discard();
  // A pack or volume index that could not be removed: the journal names it.
  repo->EndWrite(/*keep_journal=*/!packs_gone || w.published.volumes_left);
  return s;
}

}  // namespace gnomon
