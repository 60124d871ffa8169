#include "engine/volume_reader.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "engine/restore_job.h"
#include "format/codec.h"
#include "format/repository_layout.h"

namespace gnomon {

Status ChunkCache::Get(const Digest& d, uint32_t slot_len, Block* out) {
  const Key key{d, slot_len};
  std::shared_ptr<Entry> e;
  {
    std::unique_lock lock(mu_);
    auto it = map_.find(key);
    if (it != map_.end()) {
      e = it->second;
      loaded_.wait(lock, [&] { return e->ready; });
      if (!e->status.ok()) return e->status;
      // While this thread waited, the entry may have been evicted: its
      // bytes are still ours to use, its place in the list is gone.
      if (auto now = map_.find(key); now != map_.end() && now->second == e)
        lru_.splice(lru_.begin(), lru_, e->lru);
      *out = e->data;
      return Status::OK();
    }
    e = std::make_shared<Entry>();
    map_.emplace(key, e);
  }
  // Fetched outside the lock: readers of other chunks go on meanwhile.
  thread_local ChunkDecompressor dec;
  auto buf = std::make_shared<std::vector<uint8_t>>(slot_len);
  Status st = repo_->ReadSlot(*index_, d, buf->data(), slot_len, &dec);
  std::lock_guard lock(mu_);
  e->ready = true;
  e->status = st;
  if (st.ok()) {
    e->data = std::move(buf);
    lru_.push_front(key);
    e->lru = lru_.begin();
    bytes_ += slot_len;
    *out = e->data;
    EvictLocked();
  } else {
    map_.erase(key);  // waiters hold e and see the failure; the next read retries
  }
  loaded_.notify_all();
  return st;
}

void ChunkCache::EvictLocked() {
  // The newest entry stays even when it alone passes the capacity.
  while (bytes_ > capacity_ && lru_.size() > 1) {
    auto it = map_.find(lru_.back());
    bytes_ -= it->second->data->size();
    map_.erase(it);
    lru_.pop_back();
  }
}

void ChunkCache::Prefetch(const Digest& d, uint32_t slot_len) {
  const Key key{d, slot_len};
  std::lock_guard lock(mu_);
  if (stop_ || map_.count(key) || queue_.size() >= 4 ||
      std::find(queue_.begin(), queue_.end(), key) != queue_.end())
    return;
  queue_.push_back(key);
  if (!worker_.joinable()) worker_ = std::thread([this] { PrefetchLoop(); });
  queued_.notify_one();
}

void ChunkCache::PrefetchLoop() {
  std::unique_lock lock(mu_);
  for (;;) {
    queued_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    const Key key = queue_.front();
    queue_.pop_front();
    lock.unlock();
    Block ignored;
    (void)Get(key.d, key.len, &ignored);
    lock.lock();
  }
}

ChunkCache::~ChunkCache() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  queued_.notify_all();
  if (worker_.joinable()) worker_.join();
}

size_t ChunkCache::bytes() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

Status VolumeView::Read(uint64_t off, size_t len, uint8_t* out) const {
  if (len == 0) return Status::OK();
  while (len > 0) {
    const uint64_t slot = off / vi_.chunk_size;
    const uint64_t in = off - slot * vi_.chunk_size;
    const uint32_t slot_len = vi_.SlotLength(slot);
    const size_t n = std::min<uint64_t>(len, slot_len - in);
    const Digest& d = vi_.slots[slot];
    if (d.IsZero()) {
      std::memset(out, 0, n);
    } else {
      ChunkCache::Block b;
      Status st = cache_->Get(d, slot_len, &b);
      if (!st.ok())
        return st.WithContext("volume '" + name_ + "', bytes " +
                              std::to_string(slot * vi_.chunk_size) + "+" +
                              std::to_string(slot_len));
      std::memcpy(out, b->data() + in, n);
    }
    off += n;
    out += n;
    len -= n;
  }
  // A reader moving through the volume (cat, cp, a booting guest) wants
  // the next chunks soon: fetch them meanwhile, on the other core.
  const uint64_t last = (off - 1) / vi_.chunk_size;
  for (uint64_t next = last + 1; next <= last + 2 && next < vi_.slots.size(); ++next)
    if (!vi_.slots[next].IsZero()) cache_->Prefetch(vi_.slots[next], vi_.SlotLength(next));
  return Status::OK();
}

void VolumeView::Extent(uint64_t off, bool* zero, uint64_t* end) const {
  uint64_t slot = off / vi_.chunk_size;
  *zero = vi_.slots[slot].IsZero();
  while (slot + 1 < vi_.slots.size() && vi_.slots[slot + 1].IsZero() == *zero) ++slot;
  *end = std::min<uint64_t>((slot + 1) * vi_.chunk_size, vi_.volume_size);
}

const DiskView::Piece* DiskView::Find(uint64_t off, uint64_t* next) const {
  auto it = std::upper_bound(pieces_.begin(), pieces_.end(), off,
                             [](uint64_t o, const Piece& p) { return o < p.start; });
  *next = it == pieces_.end() ? size() : it->start;
  if (it == pieces_.begin()) return nullptr;
  const Piece& p = *std::prev(it);
  return off < p.start + p.view->size() ? &p : nullptr;
}

Status DiskView::Read(uint64_t off, size_t len, uint8_t* out) const {
  while (len > 0) {
    uint64_t next = 0;
    const Piece* p = Find(off, &next);
    const uint64_t stop = p ? p->start + p->view->size() : next;
    const size_t n = std::min<uint64_t>(len, stop - off);
    GNOMON_RETURN_IF_ERROR(p ? p->view->Read(off - p->start, n, out) : gaps_->Read(off, n, out));
    off += n;
    out += n;
    len -= n;
  }
  return Status::OK();
}

void DiskView::Extent(uint64_t off, bool* zero, uint64_t* end) const {
  uint64_t next = 0;
  if (const Piece* p = Find(off, &next)) {
    p->view->Extent(off - p->start, zero, end);
    *end += p->start;
    return;
  }
  gaps_->Extent(off, zero, end);
  *end = std::min(*end, next);
}

Status BackupViews::Volume(size_t i, const BlockView** out) {
  std::lock_guard lock(mu_);
  if (i >= rec_.volumes.size()) return Status::NotFound("no volume " + std::to_string(i));
  auto& v = volumes_[i];
  if (!v) {
    // Unlike a restore, a chunk that is lost does not refuse the volume:
    // reading its range fails, and every other range reads.
    VolumeIndex vi;
    GNOMON_RETURN_IF_ERROR(repo_->ReadVolumeIndex(rec_.volumes[i], &vi));
    v = std::make_unique<VolumeView>(cache_, std::move(vi), rec_.volumes[i].name);
  }
  *out = v.get();
  return Status::OK();
}

Status BackupViews::Disk(const BlockView** out) {
  if (!rec_.disk.present()) return Status::NotFound("backup " + rec_.id + " is not a disk backup");
  {
    std::lock_guard lock(mu_);
    if (disk_) {
      *out = disk_.get();
      return Status::OK();
    }
  }
  const BlockView* gaps = nullptr;
  GNOMON_RETURN_IF_ERROR(Volume(rec_.disk.gaps_volume, &gaps));
  std::vector<DiskView::Piece> pieces;
  for (const auto& p : rec_.disk.partitions) {
    if (p.volume < 0) continue;  // an extended container: its EBRs are in the gaps
    const BlockView* v = nullptr;
    GNOMON_RETURN_IF_ERROR(Volume(p.volume, &v));
    pieces.push_back({p.start, v});
  }
  std::sort(pieces.begin(), pieces.end(),
            [](const DiskView::Piece& a, const DiskView::Piece& b) { return a.start < b.start; });
  std::lock_guard lock(mu_);
  if (!disk_) disk_ = std::make_unique<DiskView>(gaps, std::move(pieces));
  *out = disk_.get();
  return Status::OK();
}

Status OpenForReading(const std::string& path, const std::string& purpose,
                      std::unique_ptr<Repository>* out, std::string* warning) {
  Status st = Repository::OpenLocation(path, LockMode::kReader, purpose, out);
  if (st.ok() || st.IsNotFound() || IsS3Location(path)) return st;
  const bool writable = ::access(RepoPath(path, kGc, "users").c_str(), W_OK) == 0;
  if (writable) return st;
  GNOMON_RETURN_IF_ERROR(Repository::Open(Env::Default(), path, LockMode::kNone, purpose, out));
  *warning =
      "the repository's lock files are not writable for this user, so it is read without a "
      "lock: a prune that runs meanwhile may delete chunks, and reading them then fails (it "
      "never returns wrong bytes)";
  return Status::OK();
}

}  // namespace gnomon
