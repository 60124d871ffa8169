// Where a restore writes: a block device written in place, or a new file
// written under a temporary name and renamed over the target only when
// complete, so a failed restore never destroys an existing file.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/status.h"

namespace gnomon {

class RestoreTarget {
 public:
  RestoreTarget() = default;
  RestoreTarget(const RestoreTarget&) = delete;
  RestoreTarget& operator=(const RestoreTarget&) = delete;
  ~RestoreTarget();

  // Refuses a target inside repo_dir, a block device in use (mounted, held
  // by a holder or open in any process: who is named), an existing file
  // without overwrite, and anything that is neither. Removes partial
  // restores to the same target that a killed run left (*cleaned says so).
  Status Open(const std::string& path, uint64_t size, bool overwrite, const std::string& repo_dir,
              std::vector<std::string>* cleaned);
  // The refusals Open makes for the repository's place and a device in
  // use, without writing or holding anything: a disk restore makes them
  // before it spends minutes resizing a filesystem in a scratch file.
  static Status Check(const std::string& path, const std::string& repo_dir);
  // An unnamed file (O_TMPFILE) in dir, `size` bytes of zeros, that
  // vanishes when closed: where a disk restore resizes a filesystem before
  // copying it into a file target. Commit does nothing for it.
  Status OpenScratch(const std::string& dir, uint64_t size);
  bool is_block() const { return block_; }
  int fd() const { return fd_; }
  // Closes the target after Commit (a device's exclusive hold ends).
  void Close();
  // Safe from several threads for disjoint ranges.
  Status WriteAt(uint64_t off, const uint8_t* p, size_t n);
  // Starts writeback of a finished range without waiting for it, so the
  // disk works while later chunks decompress and the closing fsync has
  // only the tail left.
  void StartWriteback(uint64_t off, uint64_t n);
  // Opened read-write: a disk restore reads its boot code back (Commit).
  // fsync; a file keeps an existing target's permission bits (a new one is 0600, and
  // the owner is always the restoring user) and replaces the target only if
  // it is still the file Open saw, or is published only if there still is
  // none (RENAME_NOREPLACE): a file planted meanwhile is never replaced,
  // nor given the image.
  // finish, if given, runs on the target's descriptor once everything
  // written is on the disk (a device's head too) and before a file is
  // published: a disk restore lays out its partition table there.
  Status Commit(const std::function<Status(int fd)>& finish = {});

  // A device's first bytes, where partition tables and most filesystems
  // keep the signature that makes them recognisable (MBR and GPT, the ext4,
  // XFS and FAT superblocks, btrfs's at 64 KiB), and its last bytes, where
  // a GPT keeps its backup and md 1.0 its superblock, are zeroed at Open
  // and written only by Commit, after everything else is on the disk (the
  // tail, then the head): a restore that is killed or fails leaves a device
  // that blkid, mount and partitioning tools see as empty, never one that
  // looks whole and is not. (The tail is the last MiB of the `size` bytes
  // Open was given, when they are at least 2 MiB.)
  static constexpr uint64_t kDeviceHeadBytes = 1 << 20;

 private:
  Status OpenDevice(const std::string& path, uint64_t size);
  Status OpenFile(const std::string& path, uint64_t size, bool overwrite,
                  std::vector<std::string>* cleaned);
  Status WriteRaw(uint64_t off, const uint8_t* p, size_t n);

  std::string path_, tmp_;
  bool existed_ = false;  // the target existed at Open: *seen is it
  struct stat seen_ = {};
  int fd_ = -1;
  bool block_ = false;
  bool committed_ = false;
  bool scratch_ = false;
  std::vector<uint8_t> head_;  // a device's first bytes, held back until Commit
  std::vector<uint8_t> tail_;  // and its last, at tail_off_
  uint64_t tail_off_ = 0;
};

// Processes that have `real_path` open, as "pid N (comm)", from /proc.
std::vector<std::string> ProcessesUsing(const std::string& real_path);

}  // namespace gnomon
