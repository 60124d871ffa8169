// Shared plumbing of the gnomon CLI: global options, exit codes, error
// printing, opening the repository, JSON shapes; and the commands.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "engine/backup_job.h"
#include "engine/bench_job.h"
#include "engine/boot_check.h"
#include "engine/fuse_mount.h"
#include "engine/progress.h"
#include "engine/restore_job.h"
#include "engine/retention.h"
#include "engine/verify_job.h"
#include "format/repository.h"

namespace gnomon::cli {

// Exit codes: documented in README.md, "Exit codes". Scripts depend on them.
enum Exit {
  kOk = 0,
  kFailed = 1,          // the command failed (I/O error, bad argument, ...)
  kUsage = 2,           // the command line itself is wrong
  kDamaged = 3,         // verify or restore found damaged data in the repository
  kSnapshotFailed = 4,  // no consistent snapshot: a writer vetoed, a window ran out
  kNoRepo = 10,         // the repository does not exist or is not one
  kLocked = 11,         // another process holds the repository lock
  kUnsupported = 12,    // the repository's format is newer than this gnomon
  kWrongKey = 13,       // the key or passphrase is wrong or missing (encrypted repository)
  kInterrupted = 130,   // SIGINT/SIGTERM
};

struct Globals {
  std::string repo;
  bool json = false;
  bool quiet = false;
  int threads = 0;
  // An encrypted repository's key: a key file, else a passphrase from
  // $GNOMON_PASSWORD, the password file, or a prompt on the terminal.
  std::string password_file;  // --password-file, $GNOMON_PASSWORD_FILE
  std::string key_file;       // --key-file, $GNOMON_KEY_FILE
  // Where the key comes from besides those options: the environment's
  // names (copy gives each of its two repositories names of its own).
  struct KeyEnv {
    std::string password = "GNOMON_PASSWORD", password_file = "GNOMON_PASSWORD_FILE",
                key_file = "GNOMON_KEY_FILE", password_option = "--password-file";
  } key_env;
};

extern CancelFlag g_cancel;

int ExitFor(const Status& s);
// Prints "gnomon: error: ..." (and a JSON error object with --json) and
// returns the exit code for s (or `code` if given).
int Fail(const Globals& g, const Status& s, int code = -1);
// Opens the repository and, when it is encrypted, unlocks it (UnlockRepo).
int OpenRepo(const Globals& g, LockMode mode, const std::string& purpose,
             std::unique_ptr<Repository>* out, bool need_key = true);
// Keys (tools/cmd_key.cc). Unlocks an encrypted repository with the key
// given (a plain one given a key is refused: its config may have been
// replaced to make gnomon write in the clear).
int UnlockRepo(const Globals& g, Repository* repo);
// The key slots a new encrypted repository starts with, and its master key.
Status MakeFirstSlots(const Globals& g, const std::string& repo_id,
                      std::shared_ptr<const MasterKey>* key, std::vector<KeySlot>* slots);
// Whether the user gave a key (then init encrypts by default).
bool KeyGiven(const Globals& g);
// Moves GNOMON_PASSWORD and GNOMON_NEW_PASSWORD out of the environment
// (first thing in main), so no child process inherits them.
void TakeSecretsFromEnvironment();
struct KeyOptions {
  std::string action;  // list, add, remove, passwd
  std::string id;      // remove
  std::string new_password_file, new_key_file;
};
int CmdKey(const Globals& g, const KeyOptions& opt);
nlohmann::json StatsJson(const VolumeStats& s);
nlohmann::json BackupJson(const BackupRecord& r);

// encryption: "aes-256-gcm", "none", or "" (encrypted if a key was given).
int CmdInit(const Globals& g, uint32_t chunk_kib, int level, uint32_t pack_mib,
            const std::string& encryption);
int CmdBackup(const Globals& g, BackupOptions opt);
int CmdList(const Globals& g);
int CmdRestore(const Globals& g, const std::string& what, RestoreOptions opt);
// subset: the packs to read whole (kAll: every pack if read_data, else none).
// without_key: the scrub a storage host runs on an encrypted repository.
int CmdVerify(const Globals& g, bool read_data, const VerifySubset& subset, bool without_key);
int CmdShow(const Globals& g, const std::string& backup);
struct ForgetOptions {
  std::vector<std::string> ids;  // or a policy, not both
  RetentionPolicy policy;
  bool force = false;           // ids: also unreadable records
  bool dry_run = false;         // policy: say what would go, remove nothing
  bool policy_options = false;  // --group-by was given
  bool prune = false;           // then run prune (its options are the defaults)
};
int CmdForget(const Globals& g, const ForgetOptions& opt);
struct PruneCliOptions {
  double max_unused_percent = 5;
  bool dry_run = false;
  double wait_seconds = 3600;
};
int CmdPrune(const Globals& g, const PruneCliOptions& opt);
// components: also list each writer's components (--components).
int CmdWriters(const Globals& g, bool components = false);
int CmdStats(const Globals& g);
struct CopyCliOptions {
  std::string from, to;
  std::vector<std::string> backups;
  struct Key {
    std::string password_file, key_file;
  } from_key, to_key;
};
int CmdCopy(const Globals& g, const CopyCliOptions& opt);
// Use a backup without restoring it (tools/cmd_access.cc).
int CmdMount(const Globals& g, const MountOptions& opt);
struct ServeOptions {
  std::string what;  // BACKUP[:VOLUME]
  std::string socket, address;
  int port = 0;
  bool writable = false;
  std::string overlay;
  uint64_t cache_bytes = 256ull << 20;
  int master_key_fd = -1;  // boot-check's unlocked key (engine/key_handoff.h)
};
int CmdServe(const Globals& g, const ServeOptions& opt);
int CmdBootCheck(const Globals& g, const std::string& backup, BootCheckOptions opt);
int CmdSnapshots(const Globals& g, const std::string& delete_id, bool delete_all);
int CmdBench(const Globals& g, BenchOptions opt);

}  // namespace gnomon::cli
