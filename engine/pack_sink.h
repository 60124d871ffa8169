// Where a backup's new chunks go: appended to the open pack; a full pack is
// sealed (header, fdatasync, rename) on a background thread so the in-order
// write stage never waits for the disk, with at most kMaxSealing packs in
// flight, which bounds dirty page-cache growth. Until the backup's index
// file names them, the packs are referenced by nothing, so Discard returns
// the repository to exactly where it was.
#pragma once

#include <deque>
#include <future>
#include <memory>
#include <vector>

#include "format/repository.h"

namespace gnomon {

class PackSink {
 public:
  explicit PackSink(Repository* repo) : repo_(repo) {}

  // One stored chunk (or patch): its digest, codec, stored bytes and raw
  // length, and patch depth (format/pack.h).
  // raw_check: see PackWriter::Add.
  Status Append(const Digest& d, Codec codec, std::span<const uint8_t> stored, uint32_t raw_len,
                uint8_t patch_depth, uint64_t raw_check);
  // Seals the open pack and waits for every pack in flight: afterwards
  // finished() lists every durable pack of this backup.
  Status Flush();
  const std::vector<PackSummary>& finished() const { return finished_; }
  // Abandons the open pack and removes every pack written so far; false if
  // one could not be removed, or a seal failed (then its pack may exist),
  // so that only the run's journal names it.
  bool Discard();

 private:
  Status Seal();
  Status WaitSealed(size_t keep);

  static constexpr size_t kMaxSealing = 2;
  struct Sealing {
    std::unique_ptr<PackWriter> pack;
    std::future<Status> done;
  };
  Repository* repo_;
  std::unique_ptr<PackWriter> pack_;
  std::deque<Sealing> sealing_;
  bool seal_failed_ = false;
  std::vector<PackSummary> finished_;
};

}  // namespace gnomon
