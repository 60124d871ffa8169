// ScriptWriter: an executable in the hooks directory (default
// /etc/gnomon/writers.d/, as VMware Tools' and Veeam's pre-freeze and
// post-thaw scripts) taking part in every backup as a writer. It is run once
// per event:
//
//   SCRIPT EVENT SNAPSHOT_SET_ID BACKUP_TYPE VOLUME...
//
// with the same in GNOMON_EVENT, GNOMON_SNAPSHOT_SET_ID, GNOMON_BACKUP_TYPE
// and GNOMON_VOLUMES (newline-separated), its backup options (KEY=VALUE
// lines, vss/backup_options.h; from PrepareForBackup on) in
// GNOMON_BACKUP_OPTIONS, and each run has a deadline. A
// non-zero exit is a veto: the writer fails the event with the script's
// stderr as its message, so (unlike the QEMU guest agent's fsfreeze hook) a
// failing script stops a Freeze. A run past its deadline is killed and is a
// VSS_E_WRITERERROR_TIMEOUT. Events: PrepareForBackup, PrepareForSnapshot, Freeze,
// Thaw, PostSnapshot, Abort, BackupComplete, BackupShutdown (not Identify:
// the file itself is the writer's identity).
#pragma once

#include <sys/stat.h>

#include <memory>
#include <string>
#include <vector>

#include "vss/writer.h"

namespace gnomon::vss {

class ScriptWriter : public Writer {
 public:
  // timeout_ms: each run's deadline; Freeze and Thaw get at most half the
  // freeze window, so the script is killed before the window runs out.
  explicit ScriptWriter(std::string path, uint32_t timeout_ms = 30000,
                        uint32_t freeze_timeout_ms = 60000);
  const std::string& path() const { return path_; }
  std::string kind() const override { return "script"; }
  std::string detail() const override { return path_; }

  bool OnIdentify(WriterMetadata* md) override;
  bool OnPrepareBackup(WriterComponents* components) override;
  bool OnPrepareSnapshot() override;
  bool OnFreeze() override;
  bool OnThaw() override;
  bool OnPostSnapshot(WriterComponents* components) override;
  bool OnAbort() override;
  bool OnBackupComplete(WriterComponents* components) override;
  bool OnBackupShutdown(const Guid& snapshot_set_id) override;

 private:
  bool Run(WriterEvent ev, uint32_t deadline_ms);
  // Starts the script for event in a process group of its own, stdin and
  // stdout on /dev/null, stderr into a pipe whose read end is *err_fd.
  // -1 (after SetWriterFailure) if it cannot.
  pid_t Spawn(const std::string& event, int* err_fd);

  std::string path_;
  uint32_t timeout_ms_;
  std::string options_;  // this backup's, from PrepareForBackup
};

// Default hooks directory: $GNOMON_HOOKS_DIR, else /etc/gnomon/writers.d.
std::string DefaultHooksDir();
// Every executable regular file in dir, in name order, skipping what
// run-parts skips (hidden files, backups "~", package leftovers ".dpkg-*").
// A script runs as the backup's user (root, usually) at every event, so
// only what that user alone controls is run: the directory and each script
// must be owned by root or by the invoking user and writable by neither
// group nor others, and so must every directory above them on their real
// paths (symlinks resolved; sticky directories such as /tmp allowed). Everything else is refused,
// with the reason in *refused.
std::vector<std::shared_ptr<ScriptWriter>> DiscoverScriptWriters(const std::string& dir,
                                                                 uint32_t freeze_timeout_ms,
                                                                 std::vector<std::string>* refused);
// Why a file or directory with this stat may not be trusted to run code as
// this process's user, or "" if it may.
std::string UntrustedReason(const std::string& path, const struct stat& st);
// The same for path and every directory above its real path (a sticky
// directory may be writable by others); *resolved (if given) is that real
// path, which is what must then be run.
std::string UntrustedPathReason(const std::string& path, std::string* resolved);

}  // namespace gnomon::vss
