#include "engine/volume_imager.h"

#include <oneapi/tbb/enumerable_thread_specific.h>
#include <oneapi/tbb/parallel_pipeline.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <cstring>

#include "base/byte_buffer.h"
#include "engine/backup_plan.h"
#include "engine/level_governor.h"
#include "format/codec.h"
#include "format/patch.h"

namespace gnomon {

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
  uint64_t check = 0;  // encrypted repositories: XXH3-64 of the blob (FORMAT.md §14.3)
  Codec codec = Codec::kRaw;
  int level = 0;   // the zstd level of stored (0: raw)
  ByteBuffer raw;  // sized to a chunk, never zeroed (base/byte_buffer.h)
  std::vector<uint8_t> stored;
};

// The blob's id and, where it is sealed, the check sealed with it, taken
// from the same bytes at the same time.
void SetId(std::span<const uint8_t> blob, Work* w, const Repository& repo) {
  w->digest = repo.hasher().Of(blob);
  if (repo.encrypted()) w->check = Checksum64(blob);
}

class VolumeImager {
 public:
  VolumeImager(const ImageContext& ctx, const SourceVolume& src, const BlockMap& map,
               const VolumePlan& plan)
      : ctx_(ctx), index_(*ctx.index), src_(src), map_(map), plan_(plan) {}
  Status Run(const std::string& label, VolumeIndex* vi, VolumeStats* stats);

 private:
  // Reads slot w->slot's used bytes into w->raw, zeros elsewhere; sets
  // w->zero (and reads nothing) when no used byte holds data.
  Status ReadSlot(uint64_t start, size_t* next_ext, size_t* next_used, Work* w) const;
  // Plans w as a patch of the slot's changed ranges on the parent's chunk,
  // if that is worth it (at most half the chunk changed, chain not too
  // deep); false means read and store the whole chunk. Serial: no I/O.
  bool PlanPatch(size_t* next_range, Work* w) const;
  // For a slot read whole whose digest differs from the parent's: rebuilds
  // the parent's slot from the repository and compares. Equal bytes (the
  // parent stored a patch, whose digest is not its bytes' digest) keep the
  // parent's slot; a difference of at most half the chunk in 4 KiB blocks
  // turns w into a patch on it, as change tracking would have. Without this
  // a full read after scattered changes stores every touched chunk whole.
  // Parallel stage: reads the repository.
  void DiffWithParent(Work* w) const;
  // Reads a planned patch's bytes and builds it in w->raw (parallel stage).
  Status ReadPatch(uint32_t chunk, Work* w) const;
  // A parent's slot digest this backup may name without reading the slot:
  // zero, or a chunk with a usable copy (a patch only if nothing is known
  // damaged, since its base chain is not read here).
  bool Usable(const Digest& d) const {
    if (d.IsZero()) return true;
    const ChunkLocation* loc = index_.Find(d);
    return loc && (loc->patch_depth == 0 || ctx_.health->clean());
  }
  // Where the read stage is: cursors into sorted lists that only move forward.
  struct Cursor {
    uint64_t next = 0;         // the next slot
    size_t ext = 0;            // first data extent that may still overlap the next slot
    size_t used = 0;           // first used run that may still overlap the next slot
    size_t next_range = 0;     // first changed range that may still overlap the next slot
    uint64_t prefetched = 0;   // slots below this were handed to the kernel's readahead
    size_t prefetch_used = 0;  // first used run that may overlap slot `prefetched`
    size_t prefetch_ext = 0;   // first data extent that may overlap slot `prefetched`
  };
  Work* NextSlot(Cursor* c, BufferPool<Work>* pool, const VolumeIndex& vi) const;
  // Full reads: has the kernel start reading the used bytes (never holes,
  // which would fill the page cache with zeros) of the slot being read and
  // the kReadAhead after it, so that a disk slower than compression keeps
  // streaming while the workers compress the slots before them.
  void ReadAhead(Cursor* c, const VolumeIndex& vi) const;
  void Hash(Work* w) const;
  void Dedup(Work* w, VolumeIndex* vi, VolumeStats* stats) const;
  void Write(const Work& w, VolumeStats* stats) const;
  bool Stopping() const { return ctx_.error->failed() || (ctx_.cancel && ctx_.cancel->load()); }

  const ImageContext& ctx_;
  const ChunkIndex& index_;
  const SourceVolume& src_;
  const BlockMap& map_;
  const VolumePlan& plan_;
};

bool VolumeImager::PlanPatch(size_t* next_range, Work* w) const {
  const VolumeIndex& parent = plan_.parent;
  const std::vector<vss::ByteRange>& ranges = plan_.ranges;
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

void VolumeImager::DiffWithParent(Work* w) const {
  const VolumeIndex& parent = plan_.parent;
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
  if (Status s = ctx_.repo->ReadSlot(index_, base, old.data(), w->len, &dec); !s.ok()) {
    if (ctx_.unread_bases) {
      ++ctx_.unread_bases->count;
      ctx_.unread_bases->first.Set(s);
    }
    return;
  }
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
  SetId({w->raw.data(), w->payload}, w, *ctx_.repo);
}

Status VolumeImager::ReadPatch(uint32_t chunk, Work* w) const {
  const SourceVolume& src = src_;
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

Status VolumeImager::ReadSlot(uint64_t start, size_t* next_ext, size_t* next_used, Work* w) const {
  const SourceVolume& src = src_;
  const uint64_t end = start + w->len;
  const auto& extents = src.data_extents();
  const auto& used = map_.used;
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

void VolumeImager::ReadAhead(Cursor* c, const VolumeIndex& vi) const {
  constexpr uint64_t kReadAhead = 2;
  const uint64_t chunk = vi.chunk_size;
  const auto& used = map_.used;
  const auto& extents = src_.data_extents();
  const uint64_t until = std::min<uint64_t>(c->next + kReadAhead, vi.slots.size());
  for (; c->prefetched < until; ++c->prefetched) {
    const uint64_t start = c->prefetched * chunk, end = start + vi.SlotLength(c->prefetched);
    size_t &u = c->prefetch_used, &e = c->prefetch_ext;
    while (u < used.size() && used[u].offset + used[u].length <= start) ++u;
    while (e < extents.size() && extents[e].offset + extents[e].length <= start) ++e;
    // Used runs and data extents are each sorted and disjoint: walk both,
    // prefetching what lies in one of each.
    for (size_t k = u, x = e; k < used.size() && x < extents.size();) {
      const uint64_t a = std::max({used[k].offset, extents[x].offset, start});
      const uint64_t ue = std::min(used[k].offset + used[k].length, end);
      const uint64_t xe = std::min(extents[x].offset + extents[x].length, end);
      if (a >= end) break;
      if (a < std::min(ue, xe)) src_.Prefetch(a, std::min(ue, xe) - a);
      if (ue <= xe) ++k;
      if (xe <= ue) ++x;
    }
  }
}

// The read stage: the next slot's Work, planned (unchanged, patch, or a
// whole read) and, unless it is read in the parallel stage, read.
Work* VolumeImager::NextSlot(Cursor* c, BufferPool<Work>* pool, const VolumeIndex& vi) const {
  const uint32_t chunk = vi.chunk_size;
  const VolumeIndex* parent = plan_.have_parent ? &plan_.parent : nullptr;
  Work* w = pool->Take();
  w->slot = c->next++;
  w->len = vi.SlotLength(w->slot);
  w->is_new = w->same_as_parent = w->zero = false;
  w->patch_depth = 0;
  w->payload = w->len;
  w->read_len = 0;
  // An unchanged slot keeps the parent's digest only if that chunk is
  // intact; otherwise it is read and stored again.
  w->unchanged = plan_.tracked && !plan_.changed[w->slot] && Usable(parent->slots[w->slot]);
  if (w->unchanged) return w;
  if (plan_.tracked && PlanPatch(&c->next_range, w)) {
    // Read in the parallel stage. Scattered changes make many small random
    // reads: queue them all now, while the chunks ahead of this one are
    // still being read, rather than one at a time later.
    const uint64_t start = w->slot * uint64_t{chunk};
    if (w->read_whole)
      src_.Prefetch(start, w->len);
    else
      for (const auto& r : w->ranges) src_.Prefetch(start + r.offset, r.length);
    return w;
  }
  if (!plan_.tracked) ReadAhead(c, vi);
  Status s = ReadSlot(w->slot * chunk, &c->ext, &c->used, w);
  if (!s.ok()) {
    ctx_.error->Set(s);
    w->zero = true;  // flows through harmlessly; the run is failing
  }
  return w;
}

// The parallel stage: a planned patch is read and built; a chunk read whole
// is tested for zeros and hashed (and, after a full read with a parent,
// compared with the parent's slot block by block).
void VolumeImager::Hash(Work* w) const {
  if (Stopping()) return;
  if (w->patch_depth) {
    Status st = ReadPatch(plan_.parent.chunk_size, w);
    if (!st.ok()) ctx_.error->Set(st);
    SetId({w->raw.data(), w->payload}, w, *ctx_.repo);
    return;
  }
  if (w->zero || w->unchanged) return;
  std::span<const uint8_t> data(w->raw.data(), w->len);
  w->zero = IsAllZero(data);
  if (w->zero) return;
  SetId(data, w, *ctx_.repo);
  if (plan_.have_parent && !plan_.tracked && w->digest != plan_.parent.slots[w->slot] &&
      !index_.Contains(w->digest))
    DiffWithParent(w);
}

// The serial dedup stage: the slot's digest, and whether its chunk is new.
void VolumeImager::Dedup(Work* w, VolumeIndex* vi, VolumeStats* stats) const {
  const VolumeIndex* parent = plan_.have_parent ? &plan_.parent : nullptr;
  if (w->unchanged || w->same_as_parent) {
    // Unchanged, or already in the repository as the parent's patch.
    vi->slots[w->slot] = parent->slots[w->slot];
    ++(w->unchanged ? stats->unchanged_chunks : stats->dup_chunks);
    return;
  }
  if (w->zero) {
    ++stats->zero_chunks;
  } else {
    vi->slots[w->slot] = w->digest;
    if (index_.Contains(w->digest) || !ctx_.seen->insert(w->digest).second)
      ++stats->dup_chunks;
    else
      w->is_new = true;
  }
  if (parent && vi->slots[w->slot] != parent->slots[w->slot]) ++stats->changed_chunks;
}

// The serial write stage: a new chunk goes into the pack.
void VolumeImager::Write(const Work& w, VolumeStats* stats) const {
  stats->bytes_read += w.read_len;
  if (!w.is_new || Stopping()) return;
  Status s = ctx_.sink->Append(w.digest, w.codec, w.stored, w.payload, w.patch_depth, w.check);
  if (!s.ok()) ctx_.error->Set(s);
  ++stats->new_chunks;
  stats->patched_chunks += w.patch_depth != 0;
  stats->new_raw_bytes += w.payload;
  stats->new_stored_bytes += w.stored.size();
  ++stats->levels[w.level];
}

Status VolumeImager::Run(const std::string& label, VolumeIndex* vi, VolumeStats* stats) {
  const uint32_t chunk = ctx_.repo->config().chunk_size;
  vi->volume_size = src_.size();
  vi->chunk_size = chunk;
  const uint64_t slots = VolumeIndex::SlotCount(src_.size(), chunk);
  vi->slots.assign(slots, Digest::Zero());
  stats->bytes = src_.size();
  stats->chunks = slots;
  stats->unused_bytes = src_.size() - map_.used_bytes;

  BufferPool<Work> pool(ctx_.tokens, [chunk](Work& w) {
    w.raw.resize(chunk);
    w.stored.reserve(chunk);
  });
  const int floor = ctx_.repo->config().compression_level;
  tbb::enumerable_thread_specific<ChunkCompressor> compressors(floor);
  tbb::enumerable_thread_specific<std::vector<uint8_t>> scratch;
  LevelGovernor governor(floor, ctx_.max_level);
  Cursor cursor;
  uint64_t done_bytes = 0;
  auto read = [&](tbb::flow_control& fc) -> Work* {
    if (cursor.next < slots && !Stopping()) {
      governor.ReadStarted(LevelGovernor::Clock::now());
      Work* w = NextSlot(&cursor, &pool, *vi);
      governor.ReadDone(LevelGovernor::Clock::now());
      return w;
    }
    fc.stop();
    return nullptr;
  };
  auto hash = [&](Work* w) {
    Hash(w);
    return w;
  };
  auto dedup = [&](Work* w) {
    Dedup(w, vi, stats);
    return w;
  };
  auto compress = [&](Work* w) {
    if (w->is_new && !Stopping())
      w->codec = CompressAdaptive(&compressors.local(), governor, {w->raw.data(), w->payload},
                                  &w->stored, &scratch.local(), &w->level);
    return w;
  };
  auto write = [&](Work* w) {
    Write(*w, stats);
    done_bytes += w->len;
    pool.Give(w);
    if (ctx_.progress) ctx_.progress(Progress{"backup", label, done_bytes, src_.size()});
  };
  using tbb::filter_mode;
  tbb::task_arena arena(ctx_.threads);
  arena.execute([&] {
    tbb::parallel_pipeline(ctx_.tokens,
                           tbb::make_filter<void, Work*>(filter_mode::serial_in_order, read) &
                               tbb::make_filter<Work*, Work*>(filter_mode::parallel, hash) &
                               tbb::make_filter<Work*, Work*>(filter_mode::serial_in_order, dedup) &
                               tbb::make_filter<Work*, Work*>(filter_mode::parallel, compress) &
                               tbb::make_filter<Work*, void>(filter_mode::serial_in_order, write));
  });
  if (ctx_.error->failed()) return ctx_.error->status();
  if (ctx_.cancel && ctx_.cancel->load()) return Status::Aborted("backup interrupted");
  return Status::OK();
}

}  // namespace

Status ImageVolume(const ImageContext& ctx, const SourceVolume& src, const std::string& label,
                   const BlockMap& map, const VolumePlan& plan, VolumeIndex* vi,
                   VolumeStats* stats) {
  return VolumeImager(ctx, src, map, plan).Run(label, vi, stats);
}

}  // namespace gnomon
