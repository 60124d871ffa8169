// `gnomon boot-check`: does last night's disk backup boot? The backup is
// exported by `gnomon serve` (nothing restored), booted under QEMU with a
// throw-away overlay (the export stays read-only), and the serial console is
// watched for a marker (a login prompt by default).
#pragma once

#include <string>
#include <vector>

#include "engine/progress.h"
#include "format/backup_record.h"

namespace gnomon {

struct BootCheckOptions {
  std::string gnomon;  // this program, to run `gnomon serve`
  std::string repo;
  std::string firmware = "auto";               // auto | bios | uefi
  std::vector<std::string> markers{"login:"};  // any of them on the console passes
  int timeout_s = 300;
  int memory_mib = 512;
  std::string console_log;  // where to keep the whole console ("" = nowhere)
  const CancelFlag* cancel = nullptr;
  // An encrypted repository's key (engine/key_handoff.h): a close-on-exec
  // pipe that only the `gnomon serve` child inherits; closed once it runs.
  int key_fd = -1;
};

struct BootCheckResult {
  bool booted = false;
  std::string firmware;      // what was used
  std::string marker_line;   // the console line that held the marker
  double serve_seconds = 0;  // until the export accepted connections
  double boot_seconds = 0;   // from starting QEMU to the marker (or giving up)
  std::string console_tail;  // the console's last lines, when it did not boot
};

// "uefi" for a GPT disk with an EFI system partition and no BIOS boot
// partition, else "bios".
std::string ChooseFirmware(const DiskLayout& disk);

// Not booting is a result (booted = false), not an error; an error is a
// check that could not run (no QEMU, an export that did not start).
Status RunBootCheck(const BackupRecord& rec, const BootCheckOptions& opt, BootCheckResult* out);

}  // namespace gnomon
