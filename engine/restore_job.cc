#include "engine/restore_job.h"

#include <fcntl.h>
#include <oneapi/tbb/enumerable_thread_specific.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/parallel_pipeline.h>
#include <oneapi/tbb/task_arena.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>

#include <cerrno>
#include <chrono>

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

struct Slot {
  uint64_t index = 0;
  uint32_t len = 0;
  bool zero = false;
  std::vector<uint8_t> buf;
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

// The pipeline: slots in order -> read, decompress, verify and write
// (parallel) -> progress and writeback (in order).
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
  Slot* Next(BufferPool<Slot>* pool);
  void Fill(Slot* s);
  void Done(Slot* s);

  Repository* repo_;
  const RestoreOptions& opt_;
  const VolumeRecord& vol_;
  const VolumeIndex& vi_;
  const ChunkIndex& index_;
  RestoreTarget* target_;
  Status Write(uint64_t off, const uint8_t* p, size_t n);

  uint64_t base_ = 0;
  const std::vector<DiskLayout::Range>* only_ = nullptr;
  tbb::enumerable_thread_specific<ChunkDecompressor> decs_;
  FirstError error_;
  uint64_t next_ = 0, done_ = 0, written_ = 0, flushed_ = 0;
};

Slot* RestoreRun::Next(BufferPool<Slot>* pool) {
  // A block device may hold old data where the volume had zeros; a new file
  // is already zero there.
  if (!target_->is_block())
    while (next_ < vi_.slots.size() && vi_.slots[next_].IsZero()) done_ += vi_.SlotLength(next_++);
  if (next_ >= vi_.slots.size() || error_.failed() || (opt_.cancel && opt_.cancel->load()))
    return nullptr;
  Slot* s = pool->Take();
  s->index = next_;
  s->len = vi_.SlotLength(next_);
  s->zero = vi_.slots[next_].IsZero();
  ++next_;
  return s;
}

void RestoreRun::Fill(Slot* s) {
  if (error_.failed()) return;
  if (s->zero) {
    std::fill(s->buf.begin(), s->buf.begin() + s->len, 0);
  } else {
    Status st = repo_->ReadSlot(index_, vi_.slots[s->index], s->buf.data(), s->len, &decs_.local());
    if (!st.ok()) return error_.Set(st.WithContext("slot " + std::to_string(s->index)));
  }
  Status st = Write(s->index * vi_.chunk_size, s->buf.data(), s->len);
  if (!st.ok()) error_.Set(st);
}

Status RestoreRun::Write(uint64_t off, const uint8_t* p, size_t n) {
  if (!only_) return target_->WriteAt(base_ + off, p, n);
  for (const auto& r : *only_) {  // few ranges: a disk's gaps
    const uint64_t a = std::max(off, r.offset), b = std::min(off + n, r.offset + r.length);
    if (a < b) GNOMON_RETURN_IF_ERROR(target_->WriteAt(base_ + a, p + (a - off), b - a));
  }
  return Status::OK();
}

void RestoreRun::Done(Slot* s) {
  constexpr uint64_t kWritebackStep = 64ull << 20;
  done_ += s->len;
  written_ += s->len;
  if (done_ - flushed_ >= kWritebackStep) {
    target_->StartWriteback(base_ + flushed_, done_ - flushed_);
    flushed_ = done_;
  }
  if (opt_.progress) opt_.progress(Progress{"restore", opt_.target, done_, vol_.size});
}

Status RestoreRun::Run(uint64_t* written) {
  // A remote store answers each chunk after a round trip: more requests in
  // flight than cores keeps the link busy while threads wait.
  const int threads = opt_.threads > 0             ? opt_.threads
                      : repo_->backend()->Remote() ? std::max(8, 4 * DefaultThreads())
                                                   : DefaultThreads();
  const size_t tokens = 4u * threads;
  const uint32_t chunk = vi_.chunk_size;
  BufferPool<Slot> pool(tokens, [chunk](Slot& s) { s.buf.resize(chunk); });
  using tbb::filter_mode;
  auto next = [&](tbb::flow_control& fc) -> Slot* {
    Slot* s = Next(&pool);
    if (!s) fc.stop();
    return s;
  };
  auto fill = [&](Slot* s) {
    Fill(s);
    return s;
  };
  auto done = [&](Slot* s) {
    Done(s);
    pool.Give(s);
  };
  // TBB keeps one worker per core unless told otherwise.
  tbb::global_control workers(
      tbb::global_control::max_allowed_parallelism,
      std::max<size_t>(threads, tbb::global_control::active_value(
                                    tbb::global_control::max_allowed_parallelism)));
  tbb::task_arena arena(threads);
  arena.execute([&] {
    tbb::parallel_pipeline(tokens,
                           tbb::make_filter<void, Slot*>(filter_mode::serial_in_order, next) &
                               tbb::make_filter<Slot*, Slot*>(filter_mode::parallel, fill) &
                               tbb::make_filter<Slot*, void>(filter_mode::serial_in_order, done));
  });
  if (error_.failed()) return error_.status();
  if (opt_.cancel && opt_.cancel->load()) return Status::Aborted("restore interrupted");
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
