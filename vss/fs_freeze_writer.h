// The built-in filesystem writer: in PrepareForSnapshot it flushes
// (syncfs) every mounted filesystem that lives on a volume of the snapshot
// set, so that little is left to flush inside the freeze window, and vetoes
// if writing back fails (data would be missing from the snapshot); on Freeze
// it freezes (FIFREEZE) them, in reverse mount order, and thaws them
// (FITHAW) on Thaw, on Abort, or when it is destroyed. It is a SYSTEM-level writer, so applications
// freeze before it and thaw after it.
//
// Never leave a filesystem frozen: before the first FIFREEZE it starts a
// guardian process (its own session, deaf to SIGINT/SIGTERM/SIGHUP) that
// holds the mount points open and thaws them all as soon as this process
// dies (its pipe reaches EOF) or the freeze window runs out, whichever is
// first. It writes nothing while anything is frozen.
#pragma once

#include <sys/types.h>

#include <mutex>
#include <string>
#include <vector>

#include "base/status.h"
#include "vss/volume.h"
#include "vss/writer.h"

namespace gnomon::vss {

class FsFreezeWriter : public Writer {
 public:
  // Fixed class id, as every instance of a writer class shares one.
  static Guid ClassId();
  explicit FsFreezeWriter(uint32_t freeze_timeout_ms = 60000);
  ~FsFreezeWriter() override;

  bool OnIdentify(WriterMetadata* md) override;
  bool OnPrepareSnapshot() override;
  bool OnFreeze() override;
  bool OnThaw() override;
  bool OnAbort() override;
  bool OnBackupShutdown(const Guid& set) override;

  // Mount points frozen now (for status and tests).
  std::vector<std::string> frozen() const;

 private:
  struct Target {
    std::string mount_point;
    int fd = -1;
    bool frozen = false;  // by us: an already-frozen filesystem is not ours to thaw
  };
  Status StartGuardian();
  void StopGuardian();
  // Thaws whatever we froze, in reverse order of freezing; an IOError naming
  // every filesystem we froze that was no longer frozen (someone else
  // thawed it: the freeze window was overrun) or could not be thawed.
  Status ThawAll();
  void CloseTargets();

  mutable std::mutex mu_;
  std::vector<Target> targets_;  // in reverse mount order = freeze order
  pid_t guardian_ = -1;
  int guardian_pipe_ = -1;
};

}  // namespace gnomon::vss
