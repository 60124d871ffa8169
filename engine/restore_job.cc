#include "engine/restore_job.h"

#include <fcntl.h>
#include <oneapi/tbb/enumerable_thread_specific.h>
#include <oneapi/tbb/parallel_pipeline.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <span>

#include "base/byte_buffer.h"
#include "engine/backup_job.h"
#include "engine/disk_restore.h"
#include "engine/pipeline_util.h"
#include "engine/restore_target.h"
#include "engine/source_volume.h"
#include "format/repository_layout.h"

namespace gnomon {

Status PickVolume(const BackupRecord& rec, const std::string& volume, const VolumeRecord** out) {
  if (volume.empty()) {
    if (rec.volumes.size() != 1) {
      std::string names;
      for (const auto& v : rec.volumes) names += (names.empty() ? "" : ", ") + v.name;
      return Status::InvalidArgument("backup " + rec.id + " has " +
                                     std::to_string(rec.volumes.size()) + " volumes; name one as " +
                                     rec.id + ":VOLUME (" + names + ")");
    }
    *out = &rec.volumes[0];
    return Status::OK();
  }
  for (const auto& v : rec.volumes)
    if (v.name == volume) {
      *out = &v;
      return Status::OK();
    }
  char* end = nullptr;
  unsigned long pos = std::strtoul(volume.c_str(), &end, 10);
  if (end && *end == '\0' && pos < rec.volumes.size()) {
    *out = &rec.volumes[pos];
    return Status::OK();
  }
  return Status::NotFound("backup " + rec.id + " has no volume '" + volume + "'");
}

namespace {

// A pipeline token: one volume slot, or (from a remote store) a run of
// slots whose chunks lie back to back in one pack, fetched with one request.
struct SlotRun {
  uint64_t first = 0;  // slot index
  uint32_t count = 0;  // slots
  uint64_t len = 0;    // volume bytes
  bool zero = false;   // a single slot of zeros
};

// A window of a pack fetched whole: chunks are decoded from it as from the pack.
class WindowFile final : public RandomAccessFile {
 public:
  WindowFile(const std::string& path, uint64_t base, std::span<const uint8_t> bytes)
      : path_(path), base_(base), bytes_(bytes) {}
  Status ReadAt(uint64_t offset, size_t n, uint8_t* dst) const override {
    if (offset < base_ || offset - base_ > bytes_.size() || n > bytes_.size() - (offset - base_))
      return Status::Corruption(path_ + ": chunk at offset " + std::to_string(offset) +
                                " lies outside the run fetched for it");
    std::memcpy(dst, bytes_.data() + (offset - base_), n);
    return Status::OK();
  }
  uint64_t Size() const override { return base_ + bytes_.size(); }
  const std::string& path() const override { return path_; }

 private:
  const std::string& path_;
  uint64_t base_;
  std::span<const uint8_t> bytes_;
};

// Every chunk the volume index names must be known before a byte of the
// target is written.
Status CheckChunksKnown(const Repository& repo, const VolumeRecord& vol, const VolumeIndex& vi,
                        const ChunkIndex& index, const IndexHealth& health) {
  for (const auto& d : vi.slots) {
    if (d.IsZero() || index.Contains(d)) continue;
    auto lost = health.lost.find(d);
    std::string why = lost != health.lost.end()
                          ? "has no copy left: " + repo.PackPath(lost->second) + " is missing"
                          : "is in no readable chunk index file";
    if (!health.damaged_files.empty() && !health.lost.count(d))
      why += " (damaged: " + health.Describe() + ")";
    return Status::Corruption(RepoPath(repo.path(), vol.index) + ": chunk " + d.Hex() +
                              " of volume '" + vol.name + "' " + why);
  }
  return Status::OK();
}

// How many bytes of a pack one request fetches at most, from a remote
// store: GNOMON_S3_READ_MIB (1 to 64), else 8 MiB (on RGW here, 1 MiB requests
// cost the gateway 1.5x the CPU of 8; 16 gained nothing more).
uint64_t RunBytes() {
  const char* v = std::getenv("GNOMON_S3_READ_MIB");
  char* end = nullptr;
  uint64_t mib = v && *v ? std::strtoull(v, &end, 10) : 0;
  if (mib == 0 || *end != '\0') mib = 8;     // unset or not a number
  return std::min<uint64_t>(mib, 64) << 20;  // times the threads: memory
}

// The pipeline: runs of slots in order -> read, decompress, verify and
// write (parallel) -> progress and writeback (in order).
class RestoreRun {
 public:
  RestoreRun(Repository* repo, const RestoreOptions& opt, const VolumeRecord& vol,
             const VolumeIndex& vi, const ChunkIndex& index, RestoreTarget* target)
      : repo_(repo), opt_(opt), vol_(vol), vi_(vi), index_(index), target_(target) {}
  // The volume's byte 0 goes to target offset base, and only the volume
  // ranges in *only are written (all when null).
  void Place(uint64_t base, const std::vector<DiskLayout::Range>* only) {
    base_ = base;
    only_ = only;
  }
  Status Run(uint64_t* written);

 private:
  SlotRun* Next(BufferPool<SlotRun>* pool);
  const ChunkLocation* WholeChunk(uint64_t slot) const;
  void Extend(SlotRun* r);
  void Fill(const SlotRun& r);
  Status FillSlot(uint64_t slot, bool zero);
  Status FillRun(const SlotRun& r);
  void Done(const SlotRun& r);
  Status Write(uint64_t off, const uint8_t* p, size_t n);
  ByteBuffer& Scratch();

  Repository* repo_;
  const RestoreOptions& opt_;
  const VolumeRecord& vol_;
  const VolumeIndex& vi_;
  const ChunkIndex& index_;
  RestoreTarget* target_;

  uint64_t base_ = 0;
  const std::vector<DiskLayout::Range>* only_ = nullptr;
  uint64_t max_run_bytes_ = 0;  // 0: one slot per request
  // Buffers live per thread, not per token: a slot is written in the
  // stage that reads it.
  tbb::enumerable_thread_specific<ChunkDecompressor> decs_;
  // Grown, never zeroed: every byte is read into before it is used.
  tbb::enumerable_thread_specific<ByteBuffer> scratch_, fetched_;
  FirstError error_;
  uint64_t next_ = 0, done_ = 0, written_ = 0, flushed_ = 0;
};

SlotRun* RestoreRun::Next(BufferPool<SlotRun>* pool) {
  // A block device may hold old data where the volume had zeros; a new file
  // is already zero there.
  if (!target_->is_block())
    while (next_ < vi_.slots.size() && vi_.slots[next_].IsZero()) done_ += vi_.SlotLength(next_++);
  if (next_ >= vi_.slots.size() || error_.failed() || (opt_.cancel && opt_.cancel->load()))
    return nullptr;
  SlotRun* r = pool->Take();
  r->first = next_;
  r->count = 1;
  r->len = vi_.SlotLength(next_);
  r->zero = vi_.slots[next_].IsZero();
  ++next_;
  if (max_run_bytes_ > 0) Extend(r);
  return r;
}

// The slot's chunk when it is a whole chunk that fills the slot (anything
// else goes through ReadSlot, which also names what is wrong).
const ChunkLocation* RestoreRun::WholeChunk(uint64_t slot) const {
  const Digest& d = vi_.slots[slot];
  if (d.IsZero()) return nullptr;
  const ChunkLocation* loc = index_.Find(d);
  return loc && loc->patch_depth == 0 && loc->raw_len == vi_.SlotLength(slot) ? loc : nullptr;
}

void RestoreRun::Extend(SlotRun* r) {
  const ChunkLocation* prev = WholeChunk(r->first);
  if (!prev) return;
  uint64_t bytes = repo_->BlobExtent(*prev);
  while (next_ < vi_.slots.size()) {
    const ChunkLocation* loc = WholeChunk(next_);
    if (!loc || loc->pack != prev->pack || loc->offset != prev->offset + repo_->BlobExtent(*prev) ||
        bytes + repo_->BlobExtent(*loc) > max_run_bytes_)
      return;
    bytes += repo_->BlobExtent(*loc);
    r->len += vi_.SlotLength(next_);
    ++r->count;
    ++next_;
    prev = loc;
  }
}

ByteBuffer& RestoreRun::Scratch() {
  auto& b = scratch_.local();
  if (b.size() < vi_.chunk_size) b.resize(vi_.chunk_size);
  return b;
}

void RestoreRun::Fill(const SlotRun& r) {
  if (error_.failed()) return;
  Status st = r.count > 1 ? FillRun(r) : FillSlot(r.first, r.zero);
  if (!st.ok()) error_.Set(st);
}

Status RestoreRun::FillSlot(uint64_t slot, bool zero) {
  ByteBuffer& buf = Scratch();
  const uint32_t len = vi_.SlotLength(slot);
  if (zero)
    std::fill(buf.begin(), buf.begin() + len, 0);
  else
    GNOMON_RETURN_IF_ERROR(repo_->ReadSlot(index_, vi_.slots[slot], buf.data(), len, &decs_.local())
                               .WithContext("slot " + std::to_string(slot)));
  return Write(slot * vi_.chunk_size, buf.data(), len);
}

// One ranged read for the run's chunks, each then decoded, checked and
// written as FillSlot would.
Status RestoreRun::FillRun(const SlotRun& r) {
  const ChunkLocation& first = *index_.Find(vi_.slots[r.first]);
  const ChunkLocation& last = *index_.Find(vi_.slots[r.first + r.count - 1]);
  std::shared_ptr<RandomAccessFile> pack;
  GNOMON_RETURN_IF_ERROR(repo_->OpenPack(index_.pack_id(first.pack), &pack));
  ByteBuffer& fetched = fetched_.local();
  fetched.resize(last.offset + repo_->BlobExtent(last) - first.offset);
  GNOMON_RETURN_IF_ERROR(pack->ReadAt(first.offset, fetched.size(), fetched.data())
                             .WithContext("slots " + std::to_string(r.first) + "-" +
                                          std::to_string(r.first + r.count - 1)));
  const WindowFile window(pack->path(), first.offset, fetched);
  ByteBuffer& buf = Scratch();
  for (uint64_t slot = r.first; slot < r.first + r.count; ++slot) {
    const Digest& d = vi_.slots[slot];
    GNOMON_RETURN_IF_ERROR(
        repo_->ReadChunkFrom(index_, d, *index_.Find(d), window, buf.data(), &decs_.local())
            .WithContext("slot " + std::to_string(slot)));
    GNOMON_RETURN_IF_ERROR(Write(slot * vi_.chunk_size, buf.data(), vi_.SlotLength(slot)));
  }
  return Status::OK();
}

Status RestoreRun::Write(uint64_t off, const uint8_t* p, size_t n) {
  if (!only_) return target_->WriteAt(base_ + off, p, n);
  for (const auto& r : *only_) {  // few ranges: a disk's gaps
    const uint64_t a = std::max(off, r.offset), b = std::min(off + n, r.offset + r.length);
    if (a < b) GNOMON_RETURN_IF_ERROR(target_->WriteAt(base_ + a, p + (a - off), b - a));
  }
  return Status::OK();
}

void RestoreRun::Done(const SlotRun& r) {
  constexpr uint64_t kWritebackStep = 64ull << 20;
  done_ += r.len;
  written_ += r.len;
  if (done_ - flushed_ >= kWritebackStep) {
    target_->StartWriteback(base_ + flushed_, done_ - flushed_);
    flushed_ = done_;
  }
  if (opt_.progress) opt_.progress(Progress{"restore", opt_.target, done_, vol_.size});
}

Status RestoreRun::Run(uint64_t* written) {
  const bool remote = repo_->backend()->Remote();
  ReadArena arena(remote, opt_.threads, DefaultThreads());
  const int threads = arena.threads();
  // A store's cost is per request as much as per byte (measured on RGW:
  // whole packs cost it half the CPU of the same bytes in 1 MiB ranges).
  if (remote) max_run_bytes_ = RunBytes();
  const size_t tokens = 4u * threads;
  BufferPool<SlotRun> pool(tokens, [](SlotRun&) {});
  using tbb::filter_mode;
  auto next = [&](tbb::flow_control& fc) -> SlotRun* {
    SlotRun* r = Next(&pool);
    if (!r) fc.stop();
    return r;
  };
  auto fill = [&](SlotRun* r) {
    Fill(*r);
    return r;
  };
  auto done = [&](SlotRun* r) {
    Done(*r);
    pool.Give(r);
  };
  arena.Execute([&] {
    tbb::parallel_pipeline(
        tokens, tbb::make_filter<void, SlotRun*>(filter_mode::serial_in_order, next) &
                    tbb::make_filter<SlotRun*, SlotRun*>(filter_mode::parallel, fill) &
                    tbb::make_filter<SlotRun*, void>(filter_mode::serial_in_order, done));
  });
  // Interrupted first: requests cut short by it fail too.
  if (opt_.cancel && opt_.cancel->load()) return Status::Aborted("restore interrupted");
  if (error_.failed()) return error_.status();
  *written = written_;
  return Status::OK();
}

}  // namespace

Status RestoreVolumeInto(Repository* repo, const RestoreOptions& opt, const VolumeRecord& vol,
                         const VolumeIndex& vi, const ChunkIndex& index, RestoreTarget* target,
                         uint64_t base, const std::vector<DiskLayout::Range>* only,
                         uint64_t* written) {
  RestoreRun run(repo, opt, vol, vi, index, target);
  run.Place(base, only);
  uint64_t w = 0;
  GNOMON_RETURN_IF_ERROR(run.Run(&w));
  *written += w;
  return Status::OK();
}

Status LoadVolumeForRestore(Repository* repo, const VolumeRecord& vol, const ChunkIndex& index,
                            const IndexHealth& health, VolumeIndex* vi) {
  GNOMON_RETURN_IF_ERROR(repo->ReadVolumeIndex(vol, vi));
  return CheckChunksKnown(*repo, vol, *vi, index, health);
}

Status RunRestore(Repository* repo, const RestoreOptions& opt, RestoreResult* out) {
  const auto t0 = std::chrono::steady_clock::now();
  BackupRecord rec;
  GNOMON_RETURN_IF_ERROR(repo->FindBackup(opt.backup, &rec));
  if (rec.disk.present() && opt.volume.empty()) return RunDiskRestore(repo, opt, rec, out);
  if (opt.grow || opt.plan || opt.shrink || opt.new_ids)
    return Status::InvalidArgument(
        "--grow, --shrink, --new-ids and --plan are for a whole disk backup; " + rec.id +
        (rec.disk.present() ? ":" + opt.volume + " is one volume of one" : " is not one"));
  const VolumeRecord* vol = nullptr;
  GNOMON_RETURN_IF_ERROR(PickVolume(rec, opt.volume, &vol));
  VolumeIndex vi;
  GNOMON_RETURN_IF_ERROR(repo->ReadVolumeIndex(*vol, &vi));
  ChunkIndex index;
  IndexHealth health;
  GNOMON_RETURN_IF_ERROR(repo->LoadChunkIndex(&index, &health, IndexUse::kRead));
  GNOMON_RETURN_IF_ERROR(CheckChunksKnown(*repo, *vol, vi, index, health));

  RestoreTarget target;
  GNOMON_RETURN_IF_ERROR(
      target.Open(opt.target, vol->size, opt.overwrite, repo->path(), &out->cleaned));
  uint64_t written = 0;
  GNOMON_RETURN_IF_ERROR(RestoreRun(repo, opt, *vol, vi, index, &target).Run(&written));
  GNOMON_RETURN_IF_ERROR(target.Commit());
  if (opt.progress) opt.progress(Progress{"restore", opt.target, vol->size, vol->size});
  out->backup_id = rec.id;
  out->volume = vol->name;
  out->bytes = vol->size;
  out->bytes_written = written;
  out->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return Status::OK();
}

}  // namespace gnomon
