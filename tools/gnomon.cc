// gnomon: the command-line front end. Parses arguments and runs a command
// (tools/cmd_*.cc); no logic of its own.
#include <unistd.h>
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdlib>
#include <system_error>
#include <tuple>

#include "engine/snapshots_admin.h"
#include "format/s3_client.h"
#include "tools/cli.h"
#include "tools/cli_checks.h"

using namespace gnomon::cli;

namespace {

void OnSignal(int) {
  g_cancel = true;
  // A second Ctrl-C kills at once; the repository is safe either way, and
  // the freeze guardian thaws whatever was frozen.
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
}

}  // namespace

// The policy's texts, parsed and checked before the repository is opened.
static int ForgetCommand(const Globals& g, const CLI::App& cmd, const std::string& within,
                         const std::vector<std::string>& tags, const std::string& group_by,
                         ForgetOptions* opt) {
  // An empty value (an unset variable) is an error, never "no rule".
  if (cmd.count("--keep-within"))
    if (gnomon::Status d = gnomon::ParseDuration(within, &opt->policy.within); !d.ok())
      return Fail(g, d, kUsage);
  for (const auto& t : tags) {
    std::vector<std::string> list;
    if (gnomon::Status d = gnomon::ParseTagList(t, &list); !d.ok()) return Fail(g, d, kUsage);
    opt->policy.tags.push_back(list);
  }
  opt->policy_options = cmd.count("--group-by") > 0;
  if (gnomon::Status d = gnomon::ParseGroupBy(group_by, &opt->policy); !d.ok())
    return Fail(g, d, kUsage);
  return CmdForget(g, *opt);
}

int main(int argc, char** argv) {
  CLI::App app{
      "gnomon: block-level snapshot imaging for Linux.\n"
      "Backs up block devices and image files into a deduplicating, compressed\n"
      "repository, and restores them byte for byte."};
  app.set_version_flag("--version", std::string("gnomon ") + GNOMON_VERSION);
  app.require_subcommand(1);
  app.fallthrough();
  gnomon::cli::TakeSecretsFromEnvironment();
  Globals g;
  if (const char* r = std::getenv("GNOMON_REPO")) g.repo = r;
  app.add_option("-r,--repo", g.repo, "Repository path (default: $GNOMON_REPO)");
  app.add_option("--password-file", g.password_file,
                 "An encrypted repository's passphrase: the first line of this file (default: "
                 "$GNOMON_PASSWORD, $GNOMON_PASSWORD_FILE, else asked on the terminal)");
  app.add_option("--key-file", g.key_file,
                 "An encrypted repository's key file instead of a passphrase (default: "
                 "$GNOMON_KEY_FILE); init and key add make it if it does not exist");
  app.add_flag("--json", g.json, "Print machine-readable JSON on stdout");
  app.add_flag("-q,--quiet", g.quiet, "Print only what a script needs (e.g. the backup id)");
  app.add_option("--threads", g.threads, "Worker threads (default: all cores)")
      ->check(CLI::Range(1, 1024));

  uint32_t chunk_kib = 0;
  int level = 0;
  auto* init = app.add_subcommand("init", "Create a new repository");
  std::string encryption;
  init->add_flag("--encryption{aes-256-gcm}", encryption,
                 "Encrypt everything stored (AES-256-GCM, keyed chunk ids) under a passphrase "
                 "or --key-file; --encryption=none for a plain repository. Default: encrypted "
                 "when a key is given ($GNOMON_PASSWORD, --password-file, --key-file), else plain")
      ->check(CLI::IsMember({"aes-256-gcm", "none"}));
  init->add_option("--chunk-size", chunk_kib,
                   "Chunk size in KiB, a power of two from 4 to 65536 (default 4096)")
      ->check(PowerOfTwo(4, 65536));
  init->add_option("--compression", level, "zstd level 1..19 (default 2)")
      ->check(CLI::Range(1, 19));
  uint32_t pack_mib = 0;
  init->add_option("--pack-size", pack_mib, "Target pack file size in MiB, 1 to 1024 (default 64)")
      ->check(CLI::Range(1, 1024));

  gnomon::BackupOptions bopt;
  auto* backup = app.add_subcommand(
      "backup", "Back up block devices or image files; prints the new backup's id");
  backup->add_option("SOURCE", bopt.sources, "Block device or regular file to image")->required();
  backup
      ->add_option("--type", bopt.type,
                   "full (default), incremental (changes since the last full or incremental), "
                   "differential (changes since the last full), or copy (a full that is never "
                   "a base)")
      ->check(CLI::IsMember({"full", "incremental", "differential", "copy"}));
  backup->add_flag("--for-differentials", bopt.snapshot.for_differentials,
                   "With --type full: keep this full's change-tracking snapshot unchanged so "
                   "that later differentials read only what changed since it. Without it the "
                   "next incremental advances that snapshot in place (reflink) or replaces "
                   "it, and a differential after it reads the whole volume");
  backup->add_option("--tag", bopt.tags, "Tag to store with the backup (repeatable)");
  std::vector<std::string> writer_opts;
  backup
      ->add_option("--writer-option", writer_opts,
                   "A backup option for a writer's components (VSS SetBackupOptions), as "
                   "WRITER:KEY=VALUE; WRITER is a name or class id as 'gnomon writers' shows "
                   "them (repeatable). A writer acts on the options it documents and fails the "
                   "backup (exit 4) on one it does not know; a WRITER that does not exist is a "
                   "usage error")
      ->expected(1)
      ->allow_extra_args(false)  // one value per --writer-option: what follows may be a SOURCE
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->type_name("WRITER:KEY=VALUE");
  backup->add_flag("--all-blocks", bopt.all_blocks,
                   "Image every block, not only those the filesystem uses (ext2/3/4 volumes "
                   "are otherwise read through their block bitmaps; free blocks restore as "
                   "zeros)");
  backup->add_flag("--volumes-only", bopt.volumes_only,
                   "Image a SOURCE that holds a partition table as one volume (by default it "
                   "is a disk backup: table, boot code and every partition)");
  backup
      ->add_option(
          "--tokens", bopt.tokens,
          "Chunks in flight (memory bound; default 2 per thread + 2, at most 128 MiB of them)")
      ->check(CLI::Range(1, 4096));
  backup
      ->add_option("--compression-max", bopt.max_level,
                   "Highest zstd level for new chunks while the source, not the CPU, limits "
                   "the backup (a slow disk): spare CPU buys a smaller repository. Default " +
                       std::to_string(gnomon::kDefaultMaxLevel) +
                       "; the repository's level (or lower) turns adaptation off")
      ->check(CLI::Range(1, 19));
  backup
      ->add_option("--provider", bopt.snapshot.provider,
                   "Snapshot provider: reflink or offline (default: the first that supports "
                   "the volume)")
      ->check(CLI::IsMember(gnomon::SnapshotProviderNames()));
  double freeze_s = 60, hold_s = 10, set_wait_s = 30;
  backup
      ->add_option("--freeze-timeout", freeze_s,
                   "Seconds a writer may stay frozen, Freeze to Thaw (default 60)")
      ->check(Seconds(0.1, 3600.0));
  backup
      ->add_option("--hold-timeout", hold_s,
                   "Seconds the provider commit may take while writes are held (default 10)")
      ->check(Seconds(0.1, 600.0));
  backup
      ->add_option("--snapshot-wait", set_wait_s,
                   "Seconds to wait for another snapshot set on this machine (default 30)")
      ->check(Seconds(0.0, 3600.0));
  backup->add_flag("--ignore-writer-failures", bopt.snapshot.ignore_writer_failures,
                   "Back up even if a writer fails PrepareForBackup or PostSnapshot");
  backup
      ->add_option("--component", bopt.snapshot.components,
                   "Only the writers named take part: WRITER (its name or class id, as 'gnomon "
                   "writers' prints them) or WRITER\\PATH (one component, as 'gnomon writers "
                   "--components' prints it, with its writer's required components); "
                   "repeatable. Default: every writer with data on the volumes. The built-in "
                   "writers always take part")
      ->expected(1)
      ->allow_extra_args(false)  // one value per --component: what follows is a SOURCE
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->type_name("WRITER[\\PATH]");

  auto* list = app.add_subcommand("list", "List the backups in the repository");

  std::string what;
  gnomon::RestoreOptions ropt;
  auto* restore = app.add_subcommand(
      "restore", "Restore a volume of a backup, or a whole disk backup, to a file or block device");
  restore
      ->add_option("BACKUP[:VOLUME]", what,
                   "Backup id, unique id prefix or 'latest', and optionally the volume name "
                   "or position (a disk backup without VOLUME restores the whole disk)")
      ->required();
  restore
      ->add_option("TARGET", ropt.target,
                   "File to create, or block device to overwrite. A whole disk is laid out "
                   "for the target's size: a device's, or an existing file's (with "
                   "--overwrite; make it with 'truncate -s SIZE')")
      ->required();
  restore->add_flag("--overwrite", ropt.overwrite, "Replace TARGET if it is an existing file");
  restore->add_flag("--grow", ropt.grow,
                    "Whole disk: extend the last partition and its ext2/3/4 filesystem to the "
                    "end of a larger target");
  restore->add_flag("--shrink", ropt.shrink,
                    "Whole disk onto a smaller target: shrink the last partition and its "
                    "ext2/3/4 filesystem, if its used blocks fit");
  restore->add_flag("--new-ids", ropt.new_ids,
                    "Whole disk: new disk and partition GUIDs and filesystem UUIDs, for a clone "
                    "that runs beside the original (prints which boot files name the old ones)");
  restore->add_flag("--plan", ropt.plan,
                    "Whole disk: print what would be written where, and write nothing");

  ForgetOptions fopt;
  std::string keep_within, group_by = "host,volume";
  std::vector<std::string> keep_tags;
  auto* forget = app.add_subcommand(
      "forget",
      "Remove backups from the repository, by id or by a retention policy (every other backup "
      "still restores)");
  forget->add_option("BACKUP", fopt.ids, "Backup id or unique id prefix");
  forget->add_flag("--force", fopt.force,
                   "Also remove a record that cannot be read (give its full 16-character id); "
                   "says what the file was before removing it");
  auto keep = [&](const char* name, int* n, const std::string& what) {
    forget->add_option(name, *n, what)
        ->check(CLI::Range(1, 1000000))
        ->type_name("N")
        ->group("Retention policy (restic's semantics; periods in UTC)");
  };
  keep("--keep-last", &fopt.policy.last, "Keep the N newest backups");
  for (auto [flag, field, unit] : {std::tuple{"--keep-hourly", &fopt.policy.hourly, "hours"},
                                   std::tuple{"--keep-daily", &fopt.policy.daily, "days"},
                                   std::tuple{"--keep-weekly", &fopt.policy.weekly, "ISO weeks"},
                                   std::tuple{"--keep-monthly", &fopt.policy.monthly, "months"},
                                   std::tuple{"--keep-yearly", &fopt.policy.yearly, "years"}})
    keep(flag, field,
         std::string("Keep the newest backup of each of the last N ") + unit +
             " that have one (if fewer, also the oldest backup)");
  const char* policy_group = "Retention policy (restic's semantics; periods in UTC)";
  forget
      ->add_option("--keep-within", keep_within,
                   "Keep every backup within DURATION (calendar units y m w d h, e.g. 14d, 1y6m) "
                   "of the group's newest backup that is not in the future")
      ->type_name("DURATION")
      ->group(policy_group);
  forget
      ->add_option("--keep-tag", keep_tags,
                   "Keep every backup with tag T (T1,T2: with both); may be repeated")
      ->expected(1)
      ->allow_extra_args(false)  // one value per --keep-tag: what follows may be an id
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->type_name("T")
      ->group(policy_group);
  forget
      ->add_option("--group-by", group_by,
                   "Apply the policy per host,volume (default), host, volume, or '' (all "
                   "backups as one group). Whatever the grouping, a kept differential's full and "
                   "the backups the next incremental and differential build on are kept")
      ->group(policy_group);
  forget->add_flag("--dry-run", fopt.dry_run, "Show what the policy would remove; remove nothing")
      ->group(policy_group);

  forget->add_flag("--prune", fopt.prune,
                   "Then run 'gnomon prune' (default options) to free what the removed backups "
                   "alone used");

  PruneCliOptions popt;
  auto* prune = app.add_subcommand(
      "prune",
      "Free the space no remaining backup uses: delete packs with nothing live, repack mostly "
      "dead ones. Runs beside backups; only its short deletion step waits for them");
  prune
      ->add_option("--max-unused", popt.max_unused_percent,
                   "Repack partly used packs while more than this percentage of the stored "
                   "bytes would stay dead (default 5); only packs at least a third dead are "
                   "repacked, so copying costs at most twice what it frees")
      ->check(CLI::Range(0.0, 100.0))
      ->type_name("PERCENT");
  prune->add_flag("--dry-run", popt.dry_run,
                  "Show what would be deleted and repacked; change nothing");
  prune
      ->add_option("--wait", popt.wait_seconds,
                   "How long the deletion step may wait for running backups, restores and "
                   "verifies to finish, in seconds (default 3600); new ones wait for it")
      ->check(CLI::Range(0.0, 7.0 * 86400))
      ->type_name("SECONDS");

  auto* stats = app.add_subcommand(
      "stats",
      "Show what the repository holds, what of it live backups use, and what a prune could "
      "give back");

  CopyCliOptions copt;
  auto* copy = app.add_subcommand(
      "copy",
      "Copy backups into another repository (an off-site copy), sending only the chunks it "
      "lacks");
  copy->add_option("--from", copt.from, "Source repository (default: --repo / $GNOMON_REPO)");
  copy->add_option("--to", copt.to, "Target repository (a path or s3:http[s]://HOST/BUCKET/...)")
      ->required();
  copy->add_option("BACKUP", copt.backups,
                   "Backups to copy: ids, unique id prefixes or 'latest' (default: every "
                   "backup the target lacks)");
  copy->add_option("--from-password-file", copt.from_key.password_file,
                   "Source passphrase file (or $GNOMON_FROM_PASSWORD, $GNOMON_FROM_PASSWORD_FILE)");
  copy->add_option("--from-key-file", copt.from_key.key_file,
                   "Source key file (or $GNOMON_FROM_KEY_FILE)");
  copy->add_option("--to-password-file", copt.to_key.password_file,
                   "Target passphrase file (or $GNOMON_TO_PASSWORD, $GNOMON_TO_PASSWORD_FILE)");
  copy->add_option("--to-key-file", copt.to_key.key_file,
                   "Target key file (or $GNOMON_TO_KEY_FILE)");

  std::string show_id;
  auto* show = app.add_subcommand(
      "show", "Show one backup: volumes, snapshot set, VSS documents, writer status");
  show->add_option("BACKUP", show_id, "Backup id, unique id prefix or 'latest'")->required();

  bool writer_components = false;
  auto* writers = app.add_subcommand(
      "writers", "List the writers a backup gathers, with their state and last error");
  writers->add_flag("--components", writer_components,
                    "Also list each writer's components: path, selectability, whether required, "
                    "component sets, file specs");
  std::string snap_delete;
  bool snap_delete_all = false;
  auto* snapshots = app.add_subcommand(
      "snapshots", "List snapshots on this machine (left by crashed backups), or delete them");
  snapshots->add_option("--delete", snap_delete, "Delete the snapshot with this id (or prefix)");
  snapshots->add_flag("--delete-all", snap_delete_all,
                      "Delete every snapshot no running backup is using");

  gnomon::BenchOptions benchopt;
  uint64_t bench_size_mib = 0, bench_sample_mib = 256;
  auto* bench = app.add_subcommand(
      "bench",
      "Measure throughput: the source's sequential read, each pipeline stage (hash, "
      "compress, write), the whole pipeline, and which stage bounds it. Read-only; needs "
      "no repository");
  bench->add_option("SOURCE", benchopt.source,
                    "Block device or file to read (default: generated volume-like data)");
  bench->add_option("--size", bench_size_mib, "MiB of the source to use (default: all)")
      ->check(CLI::PositiveNumber);
  bench
      ->add_option("--sample", bench_sample_mib,
                   "MiB held in memory for the hash and compress stages (default 256)")
      ->check(CLI::Range(4, 65536));
  std::vector<int> bench_levels = {1, 3};
  bench->add_option("--levels", bench_levels, "zstd levels to measure, e.g. 1,3,9 (default 1,3)")
      ->delimiter(',')
      ->check(CLI::Range(-7, 19));
  bench
      ->add_option("--level", benchopt.pipeline_level,
                   "zstd level of the pipeline run (default: the repository default, 2)")
      ->check(CLI::Range(1, 19));
  bench->add_flag("--all-blocks", benchopt.all_blocks,
                  "Pipeline: image every block, not only those an ext2/3/4 filesystem uses");
  bench->add_flag("--drop-cache", benchopt.drop_cache,
                  "Drop the source's page cache before reading it (cold-cache numbers)");
  bench->add_option("--dir", benchopt.scratch_dir,
                    "Where the scratch repository and write test go (default: $TMPDIR or /tmp)");

  bool read_data = false;
  std::string read_subset;
  auto* verify = app.add_subcommand(
      "verify",
      "Check the repository's structure (every index file, record, volume index and pack "
      "header) and, with --read-data or --read-data-subset, its data");
  auto* read_all = verify->add_flag(
      "--read-data", read_data,
      "Also read every pack whole: decompress and re-hash every chunk. Damaged copies are "
      "quarantined, so the next backup stores their data again");
  verify
      ->add_option(
          "--read-data-subset", read_subset,
          "Read only some packs whole (the structure is still checked in full); each run "
          "records in checks/ which packs it read. N% (e.g. 10%, 2.5%) reads ceil(N% of the "
          "packs), those checked least recently (never checked first), so N% on a schedule "
          "reads every pack within ceil(100/N) runs: 25% weekly covers everything monthly. "
          "K/T (e.g. 3/7) reads the packs whose id's first 8 hex digits, as a number, are K-1 "
          "modulo T, so 1/T to T/T together read every pack once")
      ->type_name("N%|K/T")
      ->excludes(read_all);
  bool without_key = false;
  verify->add_flag("--without-key", without_key,
                   "Encrypted repository: check every object whole against its plaintext "
                   "XXH3-128 trailer, without the key (what a storage host can scrub). A plain "
                   "repository is read whole (--read-data)");

  gnomon::MountOptions mopt;
  auto* mount = app.add_subcommand(
      "mount",
      "Mount the repository read-only (FUSE): every backup's volumes as sparse images read on "
      "demand, the files inside ext2/3/4 volumes without mounting them, and a disk backup's "
      "whole disk. Runs until unmounted (Ctrl-C or 'fusermount3 -u MOUNTPOINT')");
  mount->add_option("MOUNTPOINT", mopt.mountpoint, "An empty directory")->required();
  mount
      ->add_option("--cache", mopt.cache_bytes,
                   "Decoded chunks held in memory for all readers, e.g. 512M (default 256M)")
      ->transform(CLI::AsSizeValue(false))
      ->type_name("SIZE");
  mount->add_flag("--allow-other", mopt.allow_other,
                  "Let other users in (needs user_allow_other in /etc/fuse.conf); the files "
                  "inside volumes keep their stored owners and modes, which are then enforced");
  mount->add_flag("--debug", mopt.debug, "Log every FUSE request (libfuse's -d)")->group("");

  ServeOptions sopt;
  auto* serve = app.add_subcommand(
      "serve",
      "Export a volume, or a whole disk backup, as an NBD device (through nbdkit), read on "
      "demand: a VM boots from it, qemu-img and nbdcopy read it. Runs until interrupted");
  serve
      ->add_option("BACKUP[:VOLUME]", sopt.what,
                   "Backup id, unique prefix or 'latest', and the volume name or position (a "
                   "disk backup without VOLUME exports the whole disk)")
      ->required();
  serve->add_option("--socket", sopt.socket, "Listen on this Unix socket");
  serve->add_option("--master-key-fd", sopt.master_key_fd, "boot-check's key pipe")->group("");
  serve->add_option("--port", sopt.port, "Listen on this TCP port")->check(CLI::Range(1, 65535));
  serve->add_option("--address", sopt.address,
                    "With --port: the address to listen on (default 127.0.0.1; NBD has no "
                    "authentication: use a Unix socket, or keep it on a trusted network)");
  serve->add_flag("--writable", sopt.writable,
                  "Accept writes, kept in a copy-on-write overlay file beside the repository "
                  "(REPO.<backup>.<volume>.overlay, or --overlay), never in the repository");
  serve->add_option("--overlay", sopt.overlay,
                    "The overlay file for writes (made if missing; implies --writable)");
  serve
      ->add_option("--cache", sopt.cache_bytes,
                   "Decoded chunks held in memory, e.g. 512M (default 256M)")
      ->transform(CLI::AsSizeValue(false))
      ->type_name("SIZE");

  std::string boot_what = "latest";
  gnomon::BootCheckOptions bcopt;
  std::vector<std::string> boot_markers;
  auto* boot = app.add_subcommand(
      "boot-check",
      "Does a disk backup boot? Boots it under QEMU straight from an NBD export (nothing is "
      "restored; the guest's writes go to a throw-away overlay) and watches the serial "
      "console for a marker. Exit 0 booted, 1 not");
  boot->add_option("BACKUP", boot_what, "Backup id, unique prefix or 'latest' (default)");
  boot->add_option("--firmware", bcopt.firmware,
                   "auto (UEFI for a GPT disk with an EFI system partition and no BIOS boot "
                   "partition, else BIOS), bios or uefi")
      ->check(CLI::IsMember({"auto", "bios", "uefi"}));
  boot->add_option("--marker", boot_markers,
                   "Text on the console that means booted (repeatable; default 'login:')");
  boot->add_option("--timeout", bcopt.timeout_s, "Seconds to wait for the marker (default 300)")
      ->check(CLI::Range(1, 86400));
  boot->add_option("--memory", bcopt.memory_mib, "Guest memory in MiB (default 512)")
      ->check(CLI::Range(64, 1 << 20));
  boot->add_option("--console", bcopt.console_log, "Keep the whole serial console in this file");

  gnomon::cli::KeyOptions kopt;
  auto* key = app.add_subcommand(
      "key", "Manage an encrypted repository's key slots: list, add, remove ID, passwd");
  key->add_option("ACTION", kopt.action, "list, add, remove or passwd")
      ->required()
      ->check(CLI::IsMember({"list", "add", "remove", "passwd"}));
  key->add_option("ID", kopt.id, "The key slot to remove (see 'gnomon key list')");
  key->add_option("--new-password-file", kopt.new_password_file,
                  "add/passwd: the new passphrase, first line of this file (default: "
                  "$GNOMON_NEW_PASSWORD, else asked twice on the terminal)");
  key->add_option("--new-key-file", kopt.new_key_file,
                  "add: a key-file slot for this file, which is made if it does not exist");

  app.footer(
      "Exit codes: 0 ok, 1 failed, 2 usage, 3 damaged data, 4 snapshot failed,\n"
      "10 no repository, 11 locked, 12 unsupported format, 13 wrong or missing key,\n"
      "130 interrupted. See README.md.\n"
      "Environment: GNOMON_REPO, GNOMON_PASSWORD, GNOMON_PASSWORD_FILE, GNOMON_KEY_FILE,\n"
      "GNOMON_NEW_PASSWORD, GNOMON_STATE_DIR, GNOMON_RUNTIME_DIR, GNOMON_WRITER_DIR,\n"
      "GNOMON_HOOKS_DIR.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kOk : kUsage;
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  gnomon::SetS3Interrupt(&g_cancel);
  gnomon::Repository::SetWaitNotice([](const std::string& what) {
    std::string line = "gnomon: " + gnomon::EscapeForTerminal(what) + "\n";
    std::fputs(line.c_str(), stderr);
  });

  auto run = [&]() -> int {
    if (*init) return CmdInit(g, chunk_kib, level, pack_mib, encryption);
    if (*backup) {
      bopt.snapshot.freeze_timeout_ms = static_cast<uint32_t>(freeze_s * 1000);
      bopt.snapshot.hold_window_ms = static_cast<uint32_t>(hold_s * 1000);
      bopt.snapshot.set_wait_ms = static_cast<uint32_t>(set_wait_s * 1000);
      for (const auto& text : writer_opts) {
        gnomon::WriterOption o;
        if (gnomon::Status d = gnomon::ParseWriterOption(text, &o); !d.ok())
          return Fail(g, d.WithContext("--writer-option"), kUsage);
        bopt.snapshot.writer_options.push_back(std::move(o));
      }
      return CmdBackup(g, bopt);
    }
    if (*show) return CmdShow(g, show_id);
    if (*stats) return CmdStats(g);
    if (*copy) return CmdCopy(g, copt);
    if (*prune) return CmdPrune(g, popt);
    if (*forget) return ForgetCommand(g, *forget, keep_within, keep_tags, group_by, &fopt);
    if (*writers) return CmdWriters(g, writer_components);
    if (*snapshots) return CmdSnapshots(g, snap_delete, snap_delete_all);
    if (*list) return CmdList(g);
    if (*key) {
      if ((kopt.action == "remove") == kopt.id.empty())
        return Fail(g, gnomon::Status::InvalidArgument("key remove takes a slot ID; only it does"),
                    kUsage);
      return CmdKey(g, kopt);
    }
    if (*mount) return CmdMount(g, mopt);
    if (*serve) {
      if (!sopt.overlay.empty()) sopt.writable = true;
      return CmdServe(g, sopt);
    }
    if (*boot) {
      if (!boot_markers.empty()) bcopt.markers = boot_markers;
      return CmdBootCheck(g, boot_what, bcopt);
    }
    if (*restore) return CmdRestore(g, what, ropt);
    if (*verify) {
      gnomon::VerifySubset subset;
      if (verify->count("--read-data-subset"))
        if (gnomon::Status d = gnomon::ParseVerifySubset(read_subset, &subset); !d.ok())
          return Fail(g, d.WithContext("--read-data-subset"), kUsage);
      return CmdVerify(g, read_data, subset, without_key);
    }
    if (*bench) {
      benchopt.max_bytes = bench_size_mib << 20;
      benchopt.sample_bytes = bench_sample_mib << 20;
      benchopt.levels = bench_levels;
      return CmdBench(g, benchopt);
    }
    return kUsage;
  };
  // fmt::print throws when output cannot be written (stdout closed, a full
  // disk under a redirect): that is a failed command, not a crash.
  try {
    return run();
  } catch (const std::system_error& e) {
    std::string msg = std::string("gnomon: writing output: ") + e.what() + "\n";
    [[maybe_unused]] ssize_t n = ::write(2, msg.data(), msg.size());
    return kFailed;
  }
}
