// Random access to a backup without restoring it, for `mount` and `serve`:
// a volume (or a whole disk backup) as a read-only block device whose bytes
// are fetched, decompressed and verified against their digest on demand,
// through one bounded cache of chunks shared by every reader.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "format/repository.h"

namespace gnomon {

// Decoded chunks by (digest, length), least recently used out first once
// their bytes pass the capacity. Two readers of one chunk fetch it once.
class ChunkCache {
 public:
  using Block = std::shared_ptr<const std::vector<uint8_t>>;
  ChunkCache(Repository* repo, const ChunkIndex* index, size_t capacity_bytes)
      : repo_(repo), index_(index), capacity_(capacity_bytes) {}
  // The slot_len bytes of slot digest d (Repository::ReadSlot); a failure
  // is not cached, so a later read tries again.
  Status Get(const Digest& d, uint32_t slot_len, Block* out);
  // Starts fetching d on a background thread, for a reader moving through
  // a volume that will want it next; nothing if it is cached, loading or
  // queued (at most a few are). A failure is left for the reader to meet.
  void Prefetch(const Digest& d, uint32_t slot_len);
  size_t bytes() const;
  ~ChunkCache();

 private:
  struct Key {
    Digest d;
    uint32_t len;
    bool operator==(const Key& o) const { return len == o.len && d == o.d; }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const { return DigestHash()(k.d) ^ k.len; }
  };
  struct Entry {
    bool ready = false;
    Status status;
    Block data;
    std::list<Key>::iterator lru;
  };
  void EvictLocked();
  void PrefetchLoop();

  Repository* repo_;
  const ChunkIndex* index_;
  size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable loaded_;
  std::unordered_map<Key, std::shared_ptr<Entry>, KeyHash> map_;
  std::list<Key> lru_;  // front: most recent; only ready entries
  size_t bytes_ = 0;
  std::deque<Key> queue_;  // prefetches not started
  std::condition_variable queued_;
  bool stop_ = false;
  std::thread worker_;  // started by the first Prefetch
};

// A read-only block device made of stored bytes.
class BlockView {
 public:
  virtual ~BlockView() = default;
  virtual uint64_t size() const = 0;
  // Reads [off, off + len), which lies inside the view. A chunk that cannot
  // be read or fails its digest is an error naming it: never wrong bytes.
  virtual Status Read(uint64_t off, size_t len, uint8_t* out) const = 0;
  // The run that holds byte off: [off, *end) is all zeros stored nowhere
  // (a hole: free or zero blocks) when *zero, else data.
  virtual void Extent(uint64_t off, bool* zero, uint64_t* end) const = 0;
};

// One volume of a backup.
class VolumeView : public BlockView {
 public:
  VolumeView(ChunkCache* cache, VolumeIndex vi, std::string name)
      : cache_(cache), vi_(std::move(vi)), name_(std::move(name)) {}
  uint64_t size() const override { return vi_.volume_size; }
  Status Read(uint64_t off, size_t len, uint8_t* out) const override;
  void Extent(uint64_t off, bool* zero, uint64_t* end) const override;

 private:
  ChunkCache* cache_;
  VolumeIndex vi_;
  std::string name_;
};

// A whole disk backup: the gaps volume with every partition's volume laid
// over it at the partition's start, as restore writes them.
class DiskView : public BlockView {
 public:
  struct Piece {
    uint64_t start;
    const BlockView* view;
  };
  // pieces: sorted by start, inside gaps, not overlapping.
  DiskView(const BlockView* gaps, std::vector<Piece> pieces)
      : gaps_(gaps), pieces_(std::move(pieces)) {}
  uint64_t size() const override { return gaps_->size(); }
  Status Read(uint64_t off, size_t len, uint8_t* out) const override;
  void Extent(uint64_t off, bool* zero, uint64_t* end) const override;

 private:
  // The piece holding off, or null (then *next is where the next one starts).
  const Piece* Find(uint64_t off, uint64_t* next) const;
  const BlockView* gaps_;
  std::vector<Piece> pieces_;
};

// A backup opened for reading: its record, and a view of each volume (and
// of the whole disk for a disk backup), built lazily and kept.
class BackupViews {
 public:
  BackupViews(Repository* repo, ChunkCache* cache, BackupRecord rec)
      : repo_(repo), cache_(cache), rec_(std::move(rec)) {}
  const BackupRecord& record() const { return rec_; }
  // The volume at position i (its volume index is read on first use).
  Status Volume(size_t i, const BlockView** out);
  // The whole disk of a disk backup.
  Status Disk(const BlockView** out);

 private:
  Repository* repo_;
  ChunkCache* cache_;
  BackupRecord rec_;
  std::mutex mu_;
  std::unordered_map<size_t, std::unique_ptr<VolumeView>> volumes_;
  std::unique_ptr<DiskView> disk_;
};

// Opens a repository to read it for a long time (mount, serve): holding
// gc/users (LockMode::kReader), so no prune deletes a chunk meanwhile while
// backups still run; or, for a user who may read the repository but not
// write its lock files, without a lock, and
// *warning says what that risks (a chunk a prune deletes reads as an error,
// never as wrong bytes).
Status OpenForReading(const std::string& path, const std::string& purpose,
                      std::unique_ptr<Repository>* out, std::string* warning);

}  // namespace gnomon
