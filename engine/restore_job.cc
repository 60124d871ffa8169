#include "engine/restore_job.h"

#include <fcntl.h>
#include <oneapi/tbb/enumerable_thread_specific.h>
#include <oneapi/tbb/parallel_pipeline.h>
#include <oneapi/tbb/task_arena.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <mutex>

#include "engine/backup_job.h"
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

}  // namespace

Status RunRestore(Repository* repo, const RestoreOptions& opt, RestoreResult* out) {
  const auto t0 = std::chrono::steady_clock::now();
  BackupRecord rec;
  GNOMON_RETURN_IF_ERROR(repo->FindBackup(opt.backup, &rec));
  const VolumeRecord* vol = nullptr;
  GNOMON_RETURN_IF_ERROR(PickVolume(rec, opt.volume, &vol));
  VolumeIndex vi;
  GNOMON_RETURN_IF_ERROR(repo->ReadVolumeIndex(*vol, &vi));
  ChunkIndex index;
  IndexHealth health;
  GNOMON_RETURN_IF_ERROR(repo->LoadChunkIndex(&index, &health, IndexUse::kRead));
  // Check every chunk is known before writing a byte to the target.
  for (const auto& d : vi.slots) {
    if (d.IsZero() || index.Contains(d)) continue;
    auto lost = health.lost.find(d);
    std::string why = lost != health.lost.end()
                          ? "has no copy left: " + repo->PackPath(lost->second) + " is missing"
                          : "is in no readable chunk index file";
    if (!health.damaged_files.empty() && !health.lost.count(d))
      why += " (damaged: " + health.Describe() + ")";
    return Status::Corruption(RepoPath(repo->path(), vol->index) + ": chunk " + d.Hex() +
                              " of volume '" + vol->name + "' " + why);
  }

  RestoreTarget target;
  GNOMON_RETURN_IF_ERROR(
      target.Open(opt.target, vol->size, opt.overwrite, repo->path(), &out->cleaned));

  const int threads = opt.threads > 0 ? opt.threads : DefaultThreads();
  const size_t tokens = 4u * threads;
  std::vector<std::unique_ptr<Slot>> storage;
  std::vector<Slot*> free_slots;
  std::mutex free_mu;
  for (size_t i = 0; i < tokens; ++i) {
    storage.push_back(std::make_unique<Slot>());
    storage.back()->buf.resize(vi.chunk_size);
    free_slots.push_back(storage.back().get());
  }
  tbb::enumerable_thread_specific<ChunkDecompressor> decs;
  std::mutex err_mu;
  Status error;
  std::atomic<bool> failed{false};
  auto fail = [&](const Status& s) {
    std::lock_guard<std::mutex> g(err_mu);
    if (error.ok()) error = s;
    failed = true;
  };
  // A block device may hold old data where the volume had zeros; a new file
  // is already zero there.
  const bool write_zeros = target.is_block();
  uint64_t next = 0, done = 0, written = 0, flushed = 0;
  constexpr uint64_t kWritebackStep = 64ull << 20;
  const uint64_t nslots = vi.slots.size();

  tbb::task_arena arena(threads);
  arena.execute([&] {
    tbb::parallel_pipeline(
        tokens,
        tbb::make_filter<
            void, Slot*>(tbb::filter_mode::serial_in_order, [&](tbb::flow_control& fc) -> Slot* {
          if (!write_zeros)
            while (next < nslots && vi.slots[next].IsZero()) done += vi.SlotLength(next++);
          if (next >= nslots || failed || (opt.cancel && opt.cancel->load())) {
            fc.stop();
            return nullptr;
          }
          Slot* s;
          {
            std::lock_guard<std::mutex> g(free_mu);
            s = free_slots.back();
            free_slots.pop_back();
          }
          s->index = next;
          s->len = vi.SlotLength(next);
          s->zero = vi.slots[next].IsZero();
          ++next;
          return s;
        }) & tbb::make_filter<Slot*, Slot*>(tbb::filter_mode::parallel, [&](Slot* s) -> Slot* {
          if (failed) return s;
          if (s->zero) {
            std::fill(s->buf.begin(), s->buf.begin() + s->len, 0);
          } else {
            Status st =
                repo->ReadSlot(index, vi.slots[s->index], s->buf.data(), s->len, &decs.local());
            if (!st.ok()) fail(st.WithContext("slot " + std::to_string(s->index)));
          }
          if (!failed) {
            Status st = target.WriteAt(s->index * vi.chunk_size, s->buf.data(), s->len);
            if (!st.ok()) fail(st);
          }
          return s;
        }) & tbb::make_filter<Slot*, void>(tbb::filter_mode::serial_in_order, [&](Slot* s) {
          done += s->len;
          written += s->len;
          if (done - flushed >= kWritebackStep) {
            target.StartWriteback(flushed, done - flushed);
            flushed = done;
          }
          if (opt.progress) opt.progress(Progress{"restore", opt.target, done, vol->size});
          std::lock_guard<std::mutex> g(free_mu);
          free_slots.push_back(s);
        }));
  });
  if (failed) return error;
  if (opt.cancel && opt.cancel->load()) return Status::Aborted("restore interrupted");
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
