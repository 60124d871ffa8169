#include "engine/copy_job.h"

#include <tbb/enumerable_thread_specific.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <chrono>
#include <set>
#include <unordered_set>

#include "engine/backup_job.h"
#include "engine/failed_write.h"
#include "engine/pack_sink.h"
#include "engine/pipeline_util.h"
#include "format/codec.h"
#include "format/names.h"

namespace gnomon {

namespace {

// One slot of a batch: what the target gets for it.
struct Slot {
  Digest target;      // its id in the target (zero: a slot of zeros)
  bool send = false;  // stored anew (the target lacks it)
  Codec codec = Codec::kRaw;
  std::vector<uint8_t> stored;  // its stored form, when sent
  uint32_t raw_len = 0;
  uint64_t raw_check = 0;
  Status status;
};

class CopyRun {
 public:
  CopyRun(Repository* from, Repository* to, const CopyOptions& opt)
      : from_(from),
        to_(to),
        opt_(opt),
        // Unkeyed on both sides: an id means the same bytes in both.
        same_ids_(!from->encrypted() && !to->encrypted()),
        level_(to->config().compression_level) {}

  Status Run(CopyResult* out) {
    const auto t0 = std::chrono::steady_clock::now();
    if (from_->config().chunk_size != to_->config().chunk_size)
      return Status::InvalidArgument(
          "the target's chunk size (" + std::to_string(to_->config().chunk_size / 1024) +
          " KiB) differs from the source's (" + std::to_string(from_->config().chunk_size / 1024) +
          " KiB): create the target with gnomon init --chunk-size " +
          std::to_string(from_->config().chunk_size / 1024));
    std::vector<BackupRecord> wanted;
    GNOMON_RETURN_IF_ERROR(Select(&wanted, out));
    IndexHealth health;
    GNOMON_RETURN_IF_ERROR(from_->LoadChunkIndex(&from_index_, &health, IndexUse::kRead));
    GNOMON_RETURN_IF_ERROR(to_->LoadChunkIndex(&to_index_, &health, IndexUse::kDedup));
    for (const auto& r : wanted)
      for (const auto& v : r.volumes) total_ += v.size;
    for (const auto& r : wanted) {
      GNOMON_RETURN_IF_ERROR(CopyOne(r, out).WithContext("copying backup " + r.id));
      out->copied.push_back(r.id);
    }
    out->volume_bytes = total_;
    out->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return Status::OK();
  }

 private:
  // The backups asked for, less those the target has already.
  Status Select(std::vector<BackupRecord>* wanted, CopyResult* out) {
    std::vector<BackupRecord> all;
    if (opt_.backups.empty()) {
      std::vector<Status> errors;
      GNOMON_RETURN_IF_ERROR(from_->ListBackups(&all, &errors));
      if (!errors.empty()) return errors.front().WithContext("a source record cannot be read");
    } else {
      std::set<std::string> seen;
      for (const auto& spec : opt_.backups) {
        BackupRecord r;
        GNOMON_RETURN_IF_ERROR(from_->FindBackup(spec, &r));
        if (seen.insert(r.id).second) all.push_back(std::move(r));
      }
    }
    for (auto& r : all) {
      if (to_->BackupExists(r.id))
        out->already_there.push_back(r.id);
      else
        wanted->push_back(std::move(r));
    }
    return Status::OK();
  }

  Status CopyOne(const BackupRecord& src, CopyResult* out) {
    PackSink sink(to_);
    std::vector<VolumeIndex> indexes(src.volumes.size());
    Status s;
    for (size_t i = 0; s.ok() && i < src.volumes.size(); ++i)
      s = CopyVolume(src.volumes[i], &sink, &indexes[i], out);
    if (s.ok()) s = sink.Flush();
    if (s.ok()) s = CheckArrived(sink.finished());
    BackupRecord rec = src;
    rec.index_file.clear();
    FailedWrite w;
    w.id = src.id;
    if (s.ok() && !sink.finished().empty()) {
      s = to_->WriteIndexFile(sink.finished(), &rec.index_file);
      if (!s.IsExists()) w.index_file = rec.index_file;  // (else the name is another's)
      w.index_written = s.ok();
    }
    if (s.ok()) s = Publish(&rec, indexes, &w.published);
    if (!s.ok()) return EndFailedWrite(to_, &sink, w, s);
    to_->EndWrite();
    return Status::OK();
  }

  Status CopyVolume(const VolumeRecord& v, PackSink* sink, VolumeIndex* vi, CopyResult* out) {
    VolumeIndex src;
    GNOMON_RETURN_IF_ERROR(from_->ReadVolumeIndex(v, &src));
    *vi = src;
    const size_t batch = 2 * static_cast<size_t>(arena_.threads());
    std::vector<Slot> slots(batch);
    for (size_t first = 0; first < src.slots.size(); first += batch) {
      if (opt_.cancel && opt_.cancel->load()) return Status::Aborted("copy interrupted");
      const size_t n = std::min(batch, src.slots.size() - first);
      arena_.Execute([&] {
        tbb::parallel_for(size_t{0}, n, [&](size_t k) { PrepareSlot(src, first + k, &slots[k]); });
      });
      for (size_t k = 0; k < n; ++k) {
        Slot& sl = slots[k];
        GNOMON_RETURN_IF_ERROR(sl.status);
        vi->slots[first + k] = sl.target;
        if (sl.target.IsZero()) continue;
        if (!sl.send || !added_.insert(sl.target).second) {
          ++out->chunks_present;
          continue;
        }
        GNOMON_RETURN_IF_ERROR(
            sink->Append(sl.target, sl.codec, sl.stored, sl.raw_len, 0, sl.raw_check));
        ++out->chunks_sent;
        out->bytes_sent += sl.stored.size();
      }
      done_ += static_cast<uint64_t>(n) * src.chunk_size;
      if (opt_.progress) opt_.progress(std::min(done_, total_), total_);
    }
    return Status::OK();
  }

  // Runs on many threads: reads, checks and prepares one slot.
  void PrepareSlot(const VolumeIndex& src, size_t i, Slot* sl) {
    *sl = Slot();
    const Digest& d = src.slots[i];
    if (d.IsZero()) return;  // sl->target stays zero
    if (same_ids_ && Present(d)) {
      sl->target = d;
      return;
    }
    auto& raw = raw_.local();
    sl->raw_len = src.SlotLength(i);
    raw.resize(sl->raw_len);
    bool stored = false;
    sl->status = ReadSource(d, raw.data(), sl, &stored);
    if (!sl->status.ok()) return;
    sl->target = same_ids_ ? d : to_->hasher().Of(raw);
    if (sl->target.IsZero() || Present(sl->target)) return;
    if (!stored) {
      auto& comp = comp_.local();
      if (!comp) comp = std::make_unique<ChunkCompressor>(level_);
      sl->codec = comp->Compress(raw, &sl->stored);
      sl->raw_check = Checksum64(raw);
    }
    sl->send = true;
  }

  // Reads slot content d into raw, checked against its id in the source
  // (patches applied): what is sent is what the source backed up. A whole
  // chunk also keeps its stored form in sl (*stored): it travels compressed
  // as the source stored it, as Proxmox's sync and restic's copy keep
  // blobs, and is not compressed again.
  Status ReadSource(const Digest& d, uint8_t* raw, Slot* sl, bool* stored) {
    const ChunkLocation* loc = from_index_.Find(d);
    if (!loc || loc->patch_depth != 0 || loc->raw_len != sl->raw_len)
      return from_->ReadSlot(from_index_, d, raw, sl->raw_len, &dec_.local());
    std::shared_ptr<RandomAccessFile> f;
    const std::string& pack = from_index_.pack_id(loc->pack);
    GNOMON_RETURN_IF_ERROR(from_->OpenPack(pack, &f));
    GNOMON_RETURN_IF_ERROR(from_->ReadBlob(pack, *f, Repository::EntryOf(d, *loc), &sl->stored, raw,
                                           &dec_.local(), false, &sl->raw_check));
    sl->codec = loc->codec;
    *stored = true;
    return Status::OK();
  }

  // added_ only grows between batches, so reading it here is safe.
  bool Present(const Digest& d) const { return to_index_.Contains(d) || added_.count(d); }

  // Verified on arrival: each new pack's header, read back from the
  // target, names exactly the chunks written into it.
  Status CheckArrived(const std::vector<PackSummary>& packs) {
    for (const auto& p : packs) {
      std::shared_ptr<RandomAccessFile> f;
      GNOMON_RETURN_IF_ERROR(to_->OpenPack(p.id, &f));
      std::vector<PackEntry> entries;
      GNOMON_RETURN_IF_ERROR(to_->ReadPackHeader(p.id, *f, &entries));
      bool same = entries.size() == p.entries.size();
      for (size_t i = 0; same && i < entries.size(); ++i)
        same = entries[i].digest == p.entries[i].digest &&
               entries[i].stored_len == p.entries[i].stored_len;
      if (!same)
        return Status::Corruption(to_->PackPath(p.id) +
                                  ": the pack read back is not the one written");
    }
    return Status::OK();
  }

  // Volume indexes, then the record (FORMAT.md §9), under the source's id.
  Status Publish(BackupRecord* rec, const std::vector<VolumeIndex>& indexes,
                 Repository::PublishOutcome* out) {
    Status s = to_->PublishBackup(rec, indexes, out);
    return s.IsExists() ? s.WithContext("another run copied it meanwhile") : s;
  }

  Repository* from_;
  Repository* to_;
  const CopyOptions& opt_;
  const bool same_ids_;
  const int level_;
  // A source in an object store is read with many requests in flight.
  ReadArena arena_{from_->backend()->Remote(), opt_.threads, DefaultThreads()};
  ChunkIndex from_index_, to_index_;
  std::unordered_set<Digest, DigestHash> added_;
  tbb::enumerable_thread_specific<std::vector<uint8_t>> raw_;
  tbb::enumerable_thread_specific<ChunkDecompressor> dec_;
  tbb::enumerable_thread_specific<std::unique_ptr<ChunkCompressor>> comp_;
  uint64_t total_ = 0, done_ = 0;
};

}  // namespace

Status CopyBackups(Repository* from, Repository* to, const CopyOptions& opt, CopyResult* out) {
  *out = CopyResult();
  if (from->config().id == to->config().id)
    return Status::InvalidArgument("source and target are the same repository");
  CopyRun run(from, to, opt);
  return run.Run(out);
}

}  // namespace gnomon
