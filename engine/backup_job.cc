#include "engine/backup_job.h"

#include <oneapi/tbb/enumerable_thread_specific.h>
#include <oneapi/tbb/parallel_pipeline.h>
#include <oneapi/tbb/task_arena.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <unordered_set>

#include "engine/backup_plan.h"
#include "engine/block_map.h"
#include "engine/source_volume.h"
#include "format/codec.h"
#include "format/names.h"
#include "format/patch.h"
#include "vss/extent_diff.h"
#include "vss/volume_stamp.h"
#include "vss/volume_writer.h"

namespace gnomon {

int DefaultThreads() {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

size_t DefaultTokens(int threads, uint32_t chunk_size) {
  // Two per thread, plus one for each serial stage's hand-off, keeps every
  // thread busy: on 2 cores 2 to 8 tokens ran equally fast and 16 or 32 only
  // cost memory (bench/RESULTS.md, "Pipeline tuning"). Each token holds a
  // chunk and its compressed form, so on many cores the count is capped to
  // keep the tokens within kTokenBudget, never below one per thread plus two.
  constexpr uint64_t kTokenBudget = 128ull << 20;
  const size_t per_thread = 2u * static_cast<size_t>(threads) + 2;
  const size_t by_memory = static_cast<size_t>(kTokenBudget / (2ull * chunk_size));
  return std::min(per_thread, std::max(static_cast<size_t>(threads) + 2, by_memory));
}

namespace {

// One chunk in flight. Buffers are reused, so steady state allocates nothing.
struct Work {
  uint64_t slot = 0;
  uint32_t len = 0;
  bool zero = false;
  bool unchanged = false;       // change tracking proved it: the parent's digest, no read
  bool same_as_parent = false;  // read, and equal to the parent's patched slot
  uint8_t patch_depth = 0;      // > 0: raw holds a patch on the parent's chunk, not the chunk
  uint32_t payload = 0;         // bytes of raw that are the blob (the chunk, or the patch)
  uint32_t read_len = 0;        // bytes read from the volume for it
  // A planned patch (patch_depth > 0): its base and ranges, read in the
  // parallel stage, from the whole chunk at once when there are many.
  Digest patch_base;
  std::vector<PatchRange> ranges;
  bool read_whole = false;
  bool is_new = false;
  Digest digest;
  Codec codec = Codec::kRaw;
  std::vector<uint8_t> raw, stored;
};

class WorkPool {
 public:
  WorkPool(size_t n, size_t chunk) {
    for (size_t i = 0; i < n; ++i) {
      auto w = std::make_unique<Work>();
      w->raw.resize(chunk);
      w->stored.reserve(chunk);
      free_.push_back(std::move(w));
    }
  }
  Work* Take() {
    std::lock_guard<std::mutex> g(mu_);
    Work* w = free_.back().release();
    free_.pop_back();
    return w;
  }
  void Give(Work* w) {
    std::lock_guard<std::mutex> g(mu_);
    free_.emplace_back(w);
  }

 private:
  std::mutex mu_;
  std::vector<std::unique_ptr<Work>> free_;
};

// Everything one backup run shares across its volumes.
class BackupRun {
 public:
  BackupRun(Repository* repo, const BackupOptions& opt) : repo_(repo), opt_(opt) {}

  Status Run(BackupResult* out);
  // The pipeline alone over the first max_bytes of each source, read as it
  // is: no writers, no snapshot (gnomon bench).
  Status RunPipelineOnly(uint64_t max_bytes, BackupResult* out);

 private:
  // session: the snapshot set the sources were read from, or null.
  Status Image(std::vector<SourceVolume>& sources, const SnapshotSession* session,
               BackupResult* out);
  // Finds each source's parent backup and its stamp (incremental and
  // differential only).
  Status FindParents(bool full_only, std::map<std::string, std::string>* stamps);
  // Decides how volume i is read: which parent index to build on and, if
  // change tracking can be trusted, which chunks changed. Fills v's parent,
  // tracking and tracking_reason.
  void PlanVolume(size_t i, const SnapshotSession& session, const SourceVolume& src,
                  VolumeRecord* v, VolumeIndex* parent_index, bool* have_parent,
                  std::vector<bool>* changed, std::vector<vss::ByteRange>* ranges, bool* tracked);

  struct Parent {
    BackupRecord record;
    VolumeRecord volume;
  };
  std::map<std::string, Parent> parents_;  // by volume key
  // parent: the parent backup's index of this volume (same size and chunk
  // size), or null; changed: from change tracking, or null to read all;
  // ranges: the changed byte ranges, so a mostly unchanged chunk is stored
  // as a patch on the parent's (only with changed).
  // map: the bytes to read; the rest is stored as zeros.
  Status ImageVolume(const SourceVolume& src, const std::string& label, const BlockMap& map,
                     const VolumeIndex* parent, const std::vector<bool>* changed,
                     const std::vector<vss::ByteRange>* ranges, VolumeIndex* vi,
                     VolumeStats* stats);
  // Reads slot w->slot's used bytes into w->raw, zeros elsewhere; sets
  // w->zero (and reads nothing) when no used byte holds data.
  static Status ReadSlot(const SourceVolume& src, const BlockMap& map, uint64_t start,
                         size_t* next_ext, size_t* next_used, Work* w);
  // Plans w as a patch of the slot's changed ranges on the parent's chunk,
  // if that is worth it (at most half the chunk changed, chain not too
  // deep); false means read and store the whole chunk. Serial: no I/O.
  bool PlanPatch(const VolumeIndex& parent, const std::vector<vss::ByteRange>& ranges,
                 size_t* next_range, Work* w);
  // For a slot read whole whose digest differs from the parent's: rebuilds
  // the parent's slot from the repository and compares. Equal bytes (the
  // parent stored a patch, whose digest is not its bytes' digest) keep the
  // parent's slot; a difference of at most half the chunk in 4 KiB blocks
  // turns w into a patch on it, as change tracking would have. Without this
  // a full read after scattered changes stores every touched chunk whole.
  // Parallel stage: reads the repository.
  void DiffWithParent(const VolumeIndex& parent, Work* w);
  // Reads a planned patch's bytes and builds it in w->raw (parallel stage).
  static Status ReadPatch(const SourceVolume& src, uint32_t chunk, Work* w);
  Status AppendChunk(const Work& w);
  // Seals the current pack (header, fdatasync, rename) on a background
  // thread, so the in-order write stage never waits for the disk; at most
  // kMaxSealing packs are in flight, which bounds dirty page-cache growth.
  Status SealPack();
  Status WaitSealed(size_t keep);
  void Fail(const Status& s) {
    std::lock_guard<std::mutex> g(err_mu_);
    if (error_.ok()) error_ = s;
    failed_ = true;
  }
  void DiscardPacks();
  // A parent's slot digest this backup may name without reading the slot:
  // zero, or a chunk with a usable copy (a patch only if nothing is known
  // damaged, since its base chain is not read here).
  bool Usable(const Digest& d) const {
    if (d.IsZero()) return true;
    const ChunkLocation* loc = index_.Find(d);
    return loc && (loc->patch_depth == 0 || health_.clean());
  }
  // Writes the volume indexes and the record under rec->id, choosing a new
  // id if a write-once name is taken (never replacing another backup's).
  Status Publish(BackupRecord* rec, const std::vector<VolumeIndex>& indexes);

  Repository* repo_;
  const BackupOptions& opt_;
  ChunkIndex index_;
  // What is known damaged or missing. While anything is, a parent's patch
  // is trusted only after its chain has been read back (DiffWithParent).
  IndexHealth health_;
  std::unordered_set<Digest, DigestHash> seen_;  // new chunks of this run
  std::unique_ptr<PackWriter> pack_;
  struct Sealing {
    std::unique_ptr<PackWriter> pack;
    std::future<Status> done;
  };
  static constexpr size_t kMaxSealing = 2;
  std::deque<Sealing> sealing_;
  std::vector<PackSummary> finished_;
  std::mutex err_mu_;
  Status error_;
  std::atomic<bool> failed_{false};
};

Status BackupRun::SealPack() {
  if (!pack_) return Status::OK();
  std::unique_ptr<PackWriter> p = std::move(pack_);
  if (p->count() == 0) {
    p->Abandon();
    return Status::OK();
  }
  PackWriter* raw = p.get();
  sealing_.push_back(
      {std::move(p), std::async(std::launch::async, [raw] { return raw->Finish(); })});
  return WaitSealed(kMaxSealing);
}

Status BackupRun::WaitSealed(size_t keep) {
  Status first;
  while (sealing_.size() > keep) {
    Sealing s = std::move(sealing_.front());
    sealing_.pop_front();
    Status st = s.done.get();
    if (st.ok()) {
      finished_.push_back(PackSummary{s.pack->id(), s.pack->entries()});
    } else if (first.ok()) {
      first = st;
    }
  }
  return first;
}

Status BackupRun::AppendChunk(const Work& w) {
  if (!pack_) GNOMON_RETURN_IF_ERROR(repo_->NewPackWriter(&pack_));
  GNOMON_RETURN_IF_ERROR(pack_->Add(w.digest, w.codec, w.stored, w.payload, w.patch_depth));
  if (pack_->size() >= repo_->config().pack_size) return SealPack();
  return Status::OK();
}

void BackupRun::DiscardPacks() {
  if (pack_) pack_->Abandon();
  pack_.reset();
  WaitSealed(0);  // a pack whose sealing failed has removed itself
  // Nothing refers to these packs yet (the index file comes later), so
  // removing them returns the repository to exactly where it was.
  for (const auto& p : finished_) repo_->env()->RemoveFile(repo_->PackPath(p.id));
  finished_.clear();
  repo_->EndWrite();
}

bool BackupRun::PlanPatch(const VolumeIndex& parent, const std::vector<vss::ByteRange>& ranges,
                          size_t* next_range, Work* w) {
  const uint64_t start = w->slot * uint64_t{parent.chunk_size};
  const uint64_t total = SlotChangedBlocks(ranges, start, w->len, next_range, &w->ranges);
  const auto& rel = w->ranges;
  w->patch_base = parent.slots[w->slot];
  uint8_t depth = 0;
  if (!w->patch_base.IsZero()) {
    // The parent's chunk is not here, or is a patch on a chain that may be
    // damaged: read the slot whole.
    if (!Usable(w->patch_base)) return false;
    depth = index_.Find(w->patch_base)->patch_depth;
  }
  if (rel.empty() || total > w->len / 2 || depth >= kMaxPatchDepth ||
      PatchHeaderSize(rel.size()) + total > w->raw.size())
    return false;
  // Many small reads cost more than one sequential read of the chunk
  // (measured: bench/RESULTS.md, "Incremental backups").
  constexpr size_t kWholeReadRanges = 32;
  w->read_whole = rel.size() > kWholeReadRanges;
  w->payload = static_cast<uint32_t>(PatchHeaderSize(rel.size()) + total);
  w->read_len = static_cast<uint32_t>(w->read_whole ? w->len : total);
  w->patch_depth = static_cast<uint8_t>(depth + 1);
  return true;
}

void BackupRun::DiffWithParent(const VolumeIndex& parent, Work* w) {
  const Digest& base = parent.slots[w->slot];
  uint8_t depth = 0;
  if (!base.IsZero()) {
    const ChunkLocation* loc = index_.Find(base);
    if (!loc) return;
    depth = loc->patch_depth;
  }
  if (depth >= kMaxPatchDepth) return;
  thread_local ChunkDecompressor dec;
  thread_local std::vector<uint8_t> old, patch;
  old.resize(w->len);
  // A parent slot that cannot be read only means the chunk is stored whole.
  if (!repo_->ReadSlot(index_, base, old.data(), w->len, &dec).ok()) return;
  std::vector<PatchRange> ranges;
  const uint64_t total = DifferingBlocks({old.data(), w->len}, {w->raw.data(), w->len}, &ranges);
  if (ranges.empty()) {
    w->same_as_parent = true;
    return;
  }
  if (total > w->len / 2 || PatchHeaderSize(ranges.size()) + total > w->raw.size()) return;
  patch.clear();
  EncodePatchHeader(base, w->len, ranges, &patch);
  for (const auto& r : ranges)
    patch.insert(patch.end(), w->raw.begin() + r.offset, w->raw.begin() + r.offset + r.length);
  std::memcpy(w->raw.data(), patch.data(), patch.size());
  w->payload = static_cast<uint32_t>(patch.size());
  w->patch_base = base;
  w->ranges = std::move(ranges);
  w->patch_depth = static_cast<uint8_t>(depth + 1);
  w->digest = Digest::Of({w->raw.data(), w->payload});
}

Status BackupRun::ReadPatch(const SourceVolume& src, uint32_t chunk, Work* w) {
  const uint64_t start = w->slot * uint64_t{chunk};
  std::vector<uint8_t> header;
  EncodePatchHeader(w->patch_base, w->len, w->ranges, &header);
  std::memcpy(w->raw.data(), header.data(), header.size());
  uint8_t* p = w->raw.data() + header.size();
  if (w->read_whole) {
    w->stored.resize(w->len);  // free until the compress stage
    GNOMON_RETURN_IF_ERROR(src.ReadAt(start, w->len, w->stored.data()));
    for (const auto& r : w->ranges) {
      std::memcpy(p, w->stored.data() + r.offset, r.length);
      p += r.length;
    }
  } else {
    for (const auto& r : w->ranges) {
      GNOMON_RETURN_IF_ERROR(src.ReadAt(start + r.offset, r.length, p));
      p += r.length;
    }
  }
  return Status::OK();
}

Status BackupRun::ReadSlot(const SourceVolume& src, const BlockMap& map, uint64_t start,
                           size_t* next_ext, size_t* next_used, Work* w) {
  const uint64_t end = start + w->len;
  const auto& extents = src.data_extents();
  const auto& used = map.used;
  size_t& e = *next_ext;
  size_t& u = *next_used;
  while (e < extents.size() && extents[e].offset + extents[e].length <= start) ++e;
  while (u < used.size() && used[u].offset + used[u].length <= start) ++u;
  // A slot no data extent touches is a hole, and one no used block touches
  // is free space: zeros either way, and no read at all.
  w->zero =
      e == extents.size() || extents[e].offset >= end || u == used.size() || used[u].offset >= end;
  w->read_len = 0;
  if (w->zero) return Status::OK();
  if (used[u].offset <= start && used[u].offset + used[u].length >= end) {
    w->read_len = w->len;
    return src.ReadAt(start, w->len, w->raw.data());
  }
  // Partly free: read the used runs and store zeros for the rest, so no
  // stale data from free blocks reaches the repository.
  std::memset(w->raw.data(), 0, w->len);
  for (size_t k = u; k < used.size() && used[k].offset < end; ++k) {
    const uint64_t a = std::max(used[k].offset, start);
    const uint64_t b = std::min(used[k].offset + used[k].length, end);
    GNOMON_RETURN_IF_ERROR(src.ReadAt(a, b - a, w->raw.data() + (a - start)));
    w->read_len += static_cast<uint32_t>(b - a);
  }
  return Status::OK();
}

Status BackupRun::ImageVolume(const SourceVolume& src, const std::string& label,
                              const BlockMap& map, const VolumeIndex* parent,
                              const std::vector<bool>* changed,
                              const std::vector<vss::ByteRange>* ranges, VolumeIndex* vi,
                              VolumeStats* stats) {
  const uint32_t chunk = repo_->config().chunk_size;
  vi->volume_size = src.size();
  vi->chunk_size = chunk;
  const uint64_t slots = VolumeIndex::SlotCount(src.size(), chunk);
  vi->slots.assign(slots, Digest::Zero());
  stats->bytes = src.size();
  stats->chunks = slots;
  stats->unused_bytes = src.size() - map.used_bytes;

  const int threads = opt_.threads > 0 ? opt_.threads : DefaultThreads();
  const size_t tokens =
      opt_.tokens > 0 ? static_cast<size_t>(opt_.tokens) : DefaultTokens(threads, chunk);
  WorkPool pool(tokens, chunk);
  tbb::enumerable_thread_specific<ChunkCompressor> compressors(repo_->config().compression_level);

  size_t ext = 0;         // first data extent that may still overlap the next slot
  size_t used = 0;        // first used run that may still overlap the next slot
  size_t next_range = 0;  // first changed range that may still overlap the next slot
  uint64_t next = 0;
  uint64_t done_bytes = 0;

  auto read_stage = [&](tbb::flow_control& fc) -> Work* {
    if (next >= slots || failed_ || (opt_.cancel && opt_.cancel->load())) {
      fc.stop();
      return nullptr;
    }
    Work* w = pool.Take();
    w->slot = next++;
    w->len = vi->SlotLength(w->slot);
    w->is_new = false;
    // An unchanged slot keeps the parent's digest only if that chunk is
    // intact; otherwise it is read and stored again.
    w->unchanged = changed && !(*changed)[w->slot] && Usable(parent->slots[w->slot]);
    w->same_as_parent = false;
    w->patch_depth = 0;
    w->payload = w->len;
    w->read_len = 0;
    if (w->unchanged) {
      w->zero = false;
      return w;
    }
    if (changed && ranges && parent && PlanPatch(*parent, *ranges, &next_range, w)) {
      w->zero = false;
      // Read in the parallel stage. Scattered changes make many small
      // random reads: queue them all now, while the chunks ahead of this
      // one are still being read, rather than one at a time later.
      const uint64_t start = w->slot * uint64_t{chunk};
      if (w->read_whole)
        src.Prefetch(start, w->len);
      else
        for (const auto& r : w->ranges) src.Prefetch(start + r.offset, r.length);
      return w;
    }
    Status s = ReadSlot(src, map, w->slot * chunk, &ext, &used, w);
    if (!s.ok()) {
      Fail(s);
      w->zero = true;  // flows through harmlessly; the run is failing
    }
    return w;
  };
  auto hash_stage = [&](Work* w) -> Work* {
    if (w->patch_depth) {
      if (failed_) return w;
      Status st = ReadPatch(src, chunk, w);
      if (!st.ok()) Fail(st);
      w->digest = Digest::Of({w->raw.data(), w->payload});
      return w;
    }
    if (!w->zero && !w->unchanged && !failed_) {
      std::span<const uint8_t> data(w->raw.data(), w->len);
      w->zero = IsAllZero(data);
      if (!w->zero) w->digest = Digest::Of(data);
      // A full read with a parent (no change tracking to trust): what
      // differs from the parent's slot is compared block by block.
      if (!w->zero && parent && !changed && w->digest != parent->slots[w->slot] &&
          !index_.Contains(w->digest))
        DiffWithParent(*parent, w);
    }
    return w;
  };
  auto dedup_stage = [&](Work* w) -> Work* {
    if (w->unchanged) {
      vi->slots[w->slot] = parent->slots[w->slot];
      ++stats->unchanged_chunks;
      return w;
    }
    if (w->same_as_parent) {  // already in the repository, as the parent's patch
      vi->slots[w->slot] = parent->slots[w->slot];
      ++stats->dup_chunks;
      return w;
    }
    if (w->zero) {
      ++stats->zero_chunks;
    } else {
      vi->slots[w->slot] = w->digest;
      if (index_.Contains(w->digest) || !seen_.insert(w->digest).second) {
        ++stats->dup_chunks;
      } else {
        w->is_new = true;
      }
    }
    if (parent && vi->slots[w->slot] != parent->slots[w->slot]) ++stats->changed_chunks;
    return w;
  };
  auto compress_stage = [&](Work* w) -> Work* {
    if (w->is_new && !failed_)
      w->codec = compressors.local().Compress({w->raw.data(), w->payload}, &w->stored);
    return w;
  };
  auto write_stage = [&](Work* w) {
    if (w->is_new && !failed_) {
      Status s = AppendChunk(*w);
      if (!s.ok()) Fail(s);
      ++stats->new_chunks;
      stats->patched_chunks += w->patch_depth != 0;
      stats->new_raw_bytes += w->payload;
      stats->new_stored_bytes += w->stored.size();
    }
    stats->bytes_read += w->read_len;
    done_bytes += w->len;
    pool.Give(w);
    if (opt_.progress) opt_.progress(Progress{"backup", label, done_bytes, src.size()});
  };

  tbb::task_arena arena(threads);
  arena.execute([&] {
    tbb::parallel_pipeline(
        tokens, tbb::make_filter<void, Work*>(tbb::filter_mode::serial_in_order, read_stage) &
                    tbb::make_filter<Work*, Work*>(tbb::filter_mode::parallel, hash_stage) &
                    tbb::make_filter<Work*, Work*>(tbb::filter_mode::serial_in_order, dedup_stage) &
                    tbb::make_filter<Work*, Work*>(tbb::filter_mode::parallel, compress_stage) &
                    tbb::make_filter<Work*, void>(tbb::filter_mode::serial_in_order, write_stage));
  });
  if (failed_) return error_;
  if (opt_.cancel && opt_.cancel->load()) return Status::Aborted("backup interrupted");
  return Status::OK();
}

Status BackupRun::FindParents(bool full_only, std::map<std::string, std::string>* stamps) {
  std::vector<BackupRecord> history;
  GNOMON_RETURN_IF_ERROR(repo_->ListBackups(&history, nullptr));  // unreadable ones: no parent
  for (const auto& src : opt_.sources) {
    vss::VolumeIdentity id;
    std::string err;
    if (!vss::IdentifyVolume(src, &id, &err)) continue;  // the snapshot session reports it
    const ParentChoice p = ChooseParent(history, vss::VolumeKey(id), full_only);
    if (!p.record) continue;
    parents_[p.volume->key] = Parent{*p.record, *p.volume};
    // The parent's stamp for this volume, as its volume writer left it; none
    // means the writer falls back to a full read and says why.
    if (std::string stamp =
            StoredStamp(*p.record, vss::VolumeWriter::ClassId().ToString(), p.volume->source);
        !stamp.empty())
      (*stamps)[src] = stamp;
  }
  return Status::OK();
}

void BackupRun::PlanVolume(size_t i, const SnapshotSession& session, const SourceVolume& src,
                           VolumeRecord* v, VolumeIndex* parent_index, bool* have_parent,
                           std::vector<bool>* changed, std::vector<vss::ByteRange>* ranges,
                           bool* tracked) {
  *have_parent = *tracked = false;
  auto p = parents_.find(v->key);
  TrackingVerdict verdict = session.Verdict(i);
  v->tracking = "full-read";
  v->tracking_reason = verdict.reason;
  if (p == parents_.end()) return;
  v->parent = p->second.record.id;
  // The writer's reason, when it has one, is the more specific.
  auto fall_back = [&](const std::string& why) {
    if (v->tracking_reason.empty() || verdict.tracked) v->tracking_reason = why;
  };
  Status s = repo_->ReadVolumeIndex(p->second.volume, parent_index);
  if (!s.ok()) {
    fall_back("the parent's volume index cannot be read: " + s.message());
    return;
  }
  if (parent_index->chunk_size != repo_->config().chunk_size ||
      parent_index->volume_size != src.size()) {
    fall_back("the parent's volume index has another size or chunk size");
    return;
  }
  // From here on every chunk's digest is compared with the parent's.
  *have_parent = true;
  if (!verdict.tracked) return;
  const SnapshotSource& snap = session.sources()[i];
  if (snap.changes) {
    // The base was advanced in place: the provider compared the extents.
    vss::MarkChangedChunks(*snap.changes, snap.offset, snap.size, repo_->config().chunk_size,
                           changed, ranges);
  } else {
    std::vector<vss::FileExtent> base, now;
    std::string err;
    if (!vss::ReadExtents(verdict.base_device, &base, &err) ||
        !vss::ReadExtents(snap.device, &now, &err)) {
      fall_back("reading extent maps failed: " + err);
      return;
    }
    vss::DiffExtents(base, now, snap.offset, snap.size, repo_->config().chunk_size, changed,
                     ranges);
  }
  *tracked = true;
  v->tracking = "reflink-fiemap";
  v->tracking_reason.clear();
}

Status BackupRun::Run(BackupResult* out) {
  if (opt_.sources.empty()) return Status::InvalidArgument("no volume to back up");
  SnapshotOptions so = opt_.snapshot;
  if (!vss::ParseBackupType(opt_.type, &so.type) || so.type == vss::BackupType::kLog ||
      so.type == vss::BackupType::kOther || so.type == vss::BackupType::kUndefined)
    return Status::InvalidArgument("backup type '" + opt_.type +
                                   "' is not supported (use full, incremental, differential "
                                   "or copy)");
  // Parents: an incremental builds on the newest full or incremental of the
  // same volume, a differential on the newest full; a copy is never one.
  std::map<std::string, std::string> stamps;
  if (so.type == vss::BackupType::kIncremental || so.type == vss::BackupType::kDifferential)
    GNOMON_RETURN_IF_ERROR(FindParents(so.type == vss::BackupType::kDifferential, &stamps));
  so.cancel = opt_.cancel;
  // Writers frozen, snapshot taken, writers thawed: from here on the
  // pipeline reads the snapshots, never the live volumes.
  SnapshotSession session(so);
  Status created = session.Create(opt_.sources, stamps);
  out->warnings.insert(out->warnings.end(), session.notes().begin(), session.notes().end());
  GNOMON_RETURN_IF_ERROR(created);
  std::vector<SourceVolume> sources(opt_.sources.size());
  for (size_t i = 0; i < sources.size(); ++i) {
    const SnapshotSource& snap = session.sources()[i];
    Status s = session.skipped()
                   ? SourceVolume::Open(snap.volume, &sources[i])
                   : SourceVolume::OpenSnapshot(snap.device, snap.offset, snap.size, &sources[i]);
    if (!s.ok()) {
      session.Complete(false);
      return s;
    }
  }
  Status st = Image(sources, &session, out);
  if (st.ok() && (so.type == vss::BackupType::kFull || so.type == vss::BackupType::kIncremental)) {
    // The backup is durable: its snapshots become the bases of the next.
    for (size_t i = 0; i < sources.size(); ++i) {
      if (!session.sources()[i].retainable) continue;
      Status r = session.RetainBase(i, out->record.id, opt_.type);
      if (!r.ok()) out->warnings.push_back(r.message());
    }
  }
  // Writers learn the outcome in BackupComplete (no log truncation on failure).
  Status complete = session.Complete(st.ok());
  if (st.ok() && !complete.ok()) out->warnings.push_back(complete.message());
  return st;
}

Status BackupRun::RunPipelineOnly(uint64_t max_bytes, BackupResult* out) {
  std::vector<SourceVolume> sources(opt_.sources.size());
  for (size_t i = 0; i < sources.size(); ++i) {
    uint64_t size = 0;
    GNOMON_RETURN_IF_ERROR(VolumeSize(opt_.sources[i], &size));
    GNOMON_RETURN_IF_ERROR(
        SourceVolume::OpenSnapshot(opt_.sources[i], 0, std::min(size, max_bytes), &sources[i]));
  }
  return Image(sources, nullptr, out);
}

Status BackupRun::Image(std::vector<SourceVolume>& sources, const SnapshotSession* session,
                        BackupResult* out) {
  // Missing packs are noticed here, and their chunks, like quarantined
  // ones, are not in index_: this backup stores such data again.
  GNOMON_RETURN_IF_ERROR(repo_->LoadChunkIndex(&index_, &health_, IndexUse::kDedup));
  if (!health_.clean())
    out->warnings.push_back("the repository has damaged or missing data (" + health_.Describe() +
                            "); this backup stores any of it that it meets again; run "
                            "'gnomon verify --read-data'");

  BackupRecord& rec = out->record;
  do rec.id = RandomHexId(8);
  while (repo_->BackupIdTaken(rec.id));
  rec.time = NowRfc3339();
  rec.host = HostName();
  rec.type = opt_.type;
  rec.tags = opt_.tags;

  std::vector<VolumeIndex> indexes(sources.size());
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < sources.size(); ++i) {
    VolumeRecord v;
    v.source = opt_.sources[i];
    v.name = BaseName(v.source);
    for (size_t k = 2; std::any_of(rec.volumes.begin(), rec.volumes.end(),
                                   [&](const VolumeRecord& o) { return o.name == v.name; });
         ++k)
      v.name = BaseName(v.source) + "." + std::to_string(k);
    v.size = sources[i].size();
    v.chunk_size = repo_->config().chunk_size;
    v.index = VolumeIndexName(rec.id, i);
    if (session) v.key = session->sources()[i].key;
    VolumeIndex parent_index;
    std::vector<bool> changed;
    std::vector<vss::ByteRange> ranges;
    bool have_parent = false, tracked = false;
    if (session)
      PlanVolume(i, *session, sources[i], &v, &parent_index, &have_parent, &changed, &ranges,
                 &tracked);
    if (rec.parent.empty()) rec.parent = v.parent;
    const auto v0 = std::chrono::steady_clock::now();
    // Read from the snapshot, never the live volume: that is what is imaged.
    const BlockMap map =
        opt_.all_blocks ? BlockMap::All(sources[i].size(), "")
                        : ReadBlockMap(sources[i].path(), sources[i].offset(), sources[i].size());
    v.block_map = map.kind;
    v.block_map_reason = map.reason;
    Status s = ImageVolume(sources[i], v.source, map, have_parent ? &parent_index : nullptr,
                           tracked ? &changed : nullptr, tracked ? &ranges : nullptr, &indexes[i],
                           &v.stats);
    v.stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - v0).count();
    if (!s.ok()) {
      DiscardPacks();
      return s;
    }
    rec.totals.Add(v.stats);
    rec.volumes.push_back(std::move(v));
  }

  // Commit, in the order that keeps every visible file valid: packs are
  // already durable; then the index file naming them, the volume indexes,
  // and last the record that makes the backup exist.
  Status s = SealPack();
  Status w = WaitSealed(0);
  if (s.ok()) s = w;
  if (s.ok() && !finished_.empty()) s = repo_->WriteIndexFile(finished_, &rec.index_file);
  rec.totals.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Saved after DoSnapshotSet and before SetBackupSucceeded, as VSS orders it.
  if (session) rec.extra["vss"] = session->Documents();
  // An offline snapshot is the live volume: if anything wrote to it while
  // it was read, the image is torn and must not be published.
  if (s.ok() && session) s = session->CheckIntact();
  if (s.ok()) s = Publish(&rec, indexes);
  if (!s.ok()) {
    // Best effort: without the record, none of this is referenced.
    if (!rec.index_file.empty())
      repo_->env()->RemoveFile(JoinPath(JoinPath(repo_->path(), "index"), rec.index_file));
    DiscardPacks();
    return s;
  }
  repo_->EndWrite();
  out->packs_written = finished_.size();
  return Status::OK();
}

Status BackupRun::Publish(BackupRecord* rec, const std::vector<VolumeIndex>& indexes) {
  for (int attempt = 0;; ++attempt) {
    size_t written = 0;
    Status s = repo_->JournalBackup(rec->id);
    for (; s.ok() && written < indexes.size(); ++written) {
      rec->volumes[written].index = VolumeIndexName(rec->id, written);
      s = repo_->WriteVolumeIndex(rec->volumes[written].index, indexes[written],
                                  &rec->volumes[written].index_checksum);
      if (!s.ok()) break;
    }
    if (s.ok()) s = repo_->WriteBackupRecord(*rec);
    if (s.ok()) return s;
    // Only what this attempt wrote is removed: a name that was taken
    // belongs to another backup.
    for (size_t i = 0; i < written; ++i)
      repo_->env()->RemoveFile(JoinPath(repo_->path(), rec->volumes[i].index));
    if (!s.IsExists() || attempt == 8) return s;
    do rec->id = RandomHexId(8);
    while (repo_->BackupIdTaken(rec->id));
  }
}

}  // namespace

Status RunBackup(Repository* repo, const BackupOptions& opt, BackupResult* out) {
  BackupRun run(repo, opt);
  return run.Run(out);
}

Status RunPipelineOnly(Repository* repo, const BackupOptions& opt, uint64_t max_bytes,
                       BackupResult* out) {
  BackupRun run(repo, opt);
  return run.RunPipelineOnly(max_bytes, out);
}

}  // namespace gnomon
