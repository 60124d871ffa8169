#include "engine/backup_job.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <unordered_set>

#include "engine/backup_plan.h"
#include "engine/block_map.h"
#include "engine/disk_probe.h"
#include "engine/failed_write.h"
#include "engine/pack_sink.h"
#include "engine/pipeline_util.h"
#include "engine/source_volume.h"
#include "engine/volume_imager.h"
#include "format/digest.h"
#include "format/names.h"
#include "format/repository_layout.h"
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

// Everything one backup run shares across its volumes.
class BackupRun {
 public:
  BackupRun(Repository* repo, const BackupOptions& opt) : repo_(repo), opt_(opt), sink_(repo) {}

  Status Run(BackupResult* out);
  // The pipeline alone over the first max_bytes of each source, read as it
  // is: no writers, no snapshot (gnomon bench).
  Status RunPipelineOnly(uint64_t max_bytes, BackupResult* out);

 private:
  // session: the snapshot set the sources were read from, or null.
  Status Image(std::vector<SourceVolume>& sources, const SnapshotSession* session,
               BackupResult* out);
  // Finds each source's parent backup and its stamp (incremental and
  // differential only), and the stamps of every other writer's components
  // in those parents. A record that cannot be read is named in *warnings:
  // the backup builds on the newest one that can be (whole, but perhaps
  // larger than it had to be).
  Status FindParents(bool full_only, std::map<std::string, std::string>* stamps,
                     std::vector<ComponentStamp>* component_stamps,
                     std::vector<std::string>* warnings);
  // One volume of the record: a whole source, or, in a disk backup, one
  // partition of it or the bytes outside every partition.
  struct Unit {
    size_t source = 0;    // position in opt_.sources and the session
    uint64_t within = 0;  // offset in that source's snapshot
    uint64_t size = 0;
    std::string name, key;  // "" = from the source
    bool gaps = false;
  };
  // The volumes to image: one per source, or a disk's partitions and gaps
  // (then *disk is its layout) when the only source holds a partition table.
  Status PlanUnits(const std::vector<SourceVolume>& sources, const SnapshotSession* session,
                   std::vector<Unit>* units, DiskLayout* disk, std::vector<std::string>* warnings);
  // Decides how a unit is read: which parent index to build on and, if
  // change tracking can be trusted, which chunks changed. Fills v's parent,
  // tracking and tracking_reason.
  VolumePlan PlanVolume(const Unit& u, const SnapshotSession& session, const SourceVolume& src,
                        VolumeRecord* v);
  // The record of volume i of rec, before it is imaged.
  VolumeRecord NewVolume(const BackupRecord& rec, size_t i, const Unit& u, const SourceVolume& src,
                         const SnapshotSession* session) const;
  // Writes the volume indexes and the record under rec->id, choosing a new
  // id if a write-once name is taken (never replacing another backup's).
  Status Publish(BackupRecord* rec, const std::vector<VolumeIndex>& indexes,
                 Repository::PublishOutcome* out);
  // Commits what Image wrote, in the order that keeps every visible file
  // valid; on failure removes what nothing may use (EndFailedWrite).
  Status Commit(BackupRecord* rec, const std::vector<VolumeIndex>& indexes,
                const SnapshotSession* session, std::chrono::steady_clock::time_point t0);
  // A pack that cannot be removed keeps the run's journal, which names it
  // for the next run to remove.
  void Discard() { repo_->EndWrite(/*keep_journal=*/!sink_.Discard()); }

  struct Parent {
    BackupRecord record;
    VolumeRecord volume;
  };
  std::map<std::string, Parent> parents_;  // by volume key
  Repository* repo_;
  const BackupOptions& opt_;
  ChunkIndex index_;
  IndexHealth health_;
  std::unordered_set<Digest, DigestHash> seen_;
  PackSink sink_;
  FirstError error_;
};

Status BackupRun::FindParents(bool full_only, std::map<std::string, std::string>* stamps,
                              std::vector<ComponentStamp>* component_stamps,
                              std::vector<std::string>* warnings) {
  std::vector<BackupRecord> history;
  std::vector<Status> unreadable;
  GNOMON_RETURN_IF_ERROR(repo_->ListBackups(&history, &unreadable));
  for (const Status& e : unreadable)
    warnings->push_back(e.message() + " (not considered as a parent)");
  std::vector<const BackupRecord*> parent_records;
  for (const auto& src : opt_.sources) {
    vss::VolumeIdentity id;
    if (!vss::IdentifyVolume(src, &id).ok()) continue;  // the snapshot session reports it
    const std::string key = vss::VolumeKey(id);
    const ParentChoice p = ChooseSourceParent(history, key, full_only);
    if (!p.record) continue;
    // Each volume builds on the parent's volume of exactly its own key: a
    // whole volume on a whole volume, a partition on the same partition at
    // the same place, a disk's gaps on gaps of the same layout. Anything
    // else reads all it images (a disk's gaps hold zeros where partitions
    // were: a whole volume built on them would restore zeros).
    for (const VolumeRecord& v : p.record->volumes)
      if (v.key == key || v.key.rfind(key + "#", 0) == 0) parents_[v.key] = Parent{*p.record, v};
    parent_records.push_back(p.record);
    // The parent's stamp for this volume, as its volume writer left it; none
    // means the writer falls back to a full read and says why.
    if (std::string stamp =
            StoredStamp(*p.record, vss::VolumeWriter::ClassId().ToString(), p.volume->source);
        !stamp.empty())
      (*stamps)[src] = stamp;
  }
  // Every other writer's stamps come from the backups this one builds on,
  // matched by class, logical path and component name (vss-behaviour.md
  // §6); the session hands them back to the writers that keep stamps.
  *component_stamps = ParentStamps(parent_records, vss::VolumeWriter::ClassId().ToString());
  return Status::OK();
}

VolumePlan BackupRun::PlanVolume(const Unit& u, const SnapshotSession& session,
                                 const SourceVolume& src, VolumeRecord* v) {
  VolumePlan plan;
  const size_t i = u.source;
  auto p = parents_.find(v->key);
  const vss::TrackingVerdict verdict = session.Verdict(i);
  v->tracking = kTrackingFullRead;
  v->tracking_reason = verdict.reason;
  if (p == parents_.end()) return plan;
  v->parent = p->second.record.id;
  // The writer's reason, when it has one, is the more specific.
  auto fall_back = [&](const std::string& why) {
    if (v->tracking_reason.empty() || verdict.tracked()) v->tracking_reason = why;
  };
  Status s = repo_->ReadVolumeIndex(p->second.volume, &plan.parent);
  if (!s.ok()) {
    // Whatever the writer said, this is why nothing was compared.
    v->tracking_reason = "the parent's volume index cannot be read: " + s.message();
    return plan;
  }
  if (plan.parent.chunk_size != repo_->config().chunk_size ||
      plan.parent.volume_size != src.size()) {
    fall_back("the parent's volume index has another size or chunk size");
    return plan;
  }
  // From here on every chunk's digest is compared with the parent's.
  plan.have_parent = true;
  if (!verdict.tracked()) return plan;
  const SnapshotSource& snap = session.sources()[i];
  std::vector<vss::ByteRange> file_ranges;
  if (Status c = session.ChangedSinceBase(i, verdict, &file_ranges); !c.ok()) {
    fall_back(c.message());
    return plan;
  }
  vss::MarkChangedChunks(file_ranges, snap.offset + u.within, src.size(),
                         repo_->config().chunk_size, &plan.changed, &plan.ranges);
  plan.tracked = true;
  v->tracking = vss::TrackerName(verdict.tracker);
  v->tracking_reason.clear();
  return plan;
}

Status BackupRun::Run(BackupResult* out) {
  if (opt_.sources.empty()) return Status::InvalidArgument("no volume to back up");
  SnapshotOptions so = opt_.snapshot;
  if (!vss::ParseBackupType(opt_.type, &so.type) || so.type == vss::BackupType::kLog ||
      so.type == vss::BackupType::kOther || so.type == vss::BackupType::kUndefined)
    return Status::InvalidArgument("backup type '" + opt_.type +
                                   "' is not supported (use full, incremental, differential "
                                   "or copy)");
  if (so.for_differentials && so.type != vss::BackupType::kFull)
    return Status::InvalidArgument(
        "--for-differentials keeps a full's snapshot for the "
        "differentials built on it; this backup is " +
        opt_.type);
  // Parents: an incremental builds on the newest full or incremental of the
  // same volume, a differential on the newest full; a copy is never one.
  std::map<std::string, std::string> stamps;
  std::vector<ComponentStamp> component_stamps;
  if (so.type == vss::BackupType::kIncremental || so.type == vss::BackupType::kDifferential)
    GNOMON_RETURN_IF_ERROR(FindParents(so.type == vss::BackupType::kDifferential, &stamps,
                                       &component_stamps, &out->warnings));
  so.cancel = opt_.cancel;
  // Writers frozen, snapshot taken, writers thawed: from here on the
  // pipeline reads the snapshots, never the live volumes.
  SnapshotSession session(so);
  Status created = session.Create(opt_.sources, stamps, component_stamps);
  out->warnings.insert(out->warnings.end(), session.notes().begin(), session.notes().end());
  out->bad_selection = session.bad_selection();
  GNOMON_RETURN_IF_ERROR(created);
  std::vector<SourceVolume> sources(opt_.sources.size());
  for (size_t i = 0; i < sources.size(); ++i) {
    const SnapshotSource& snap = session.sources()[i];
    Status s = SourceVolume::OpenSnapshot(snap.device, snap.offset, snap.size, &sources[i]);
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
      Status r = session.RetainBase(i, out->record.id, so.type);
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

VolumeRecord BackupRun::NewVolume(const BackupRecord& rec, size_t i, const Unit& u,
                                  const SourceVolume& src, const SnapshotSession* session) const {
  VolumeRecord v;
  v.source = opt_.sources[u.source];
  const std::string base =
      u.name.empty() ? std::string(std::filesystem::path(v.source).filename()) : u.name;
  v.name = base;
  for (size_t k = 2; std::any_of(rec.volumes.begin(), rec.volumes.end(),
                                 [&](const VolumeRecord& o) { return o.name == v.name; });
       ++k)
    v.name = base + "." + std::to_string(k);
  v.size = src.size();
  v.chunk_size = repo_->config().chunk_size;
  v.index = VolumeIndexName(rec.id, i);
  if (session) v.key = session->sources()[u.source].key + u.key;
  return v;
}

// The bytes of a disk outside its partitions: partitions are volumes of
// their own, so here they are free and restore as zeros.
static BlockMap GapsMap(const DiskLayout& disk) {
  BlockMap m;
  m.kind = "gaps";
  for (const auto& g : disk.Gaps()) {
    m.used.push_back({g.offset, g.length});
    m.used_bytes += g.length;
  }
  return m;
}

// A partition name that a partition table script can carry: quotes,
// backslashes and control characters become '_'.
static std::string ScriptSafe(std::string s) {
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == '"' || c == '\\' || c == 0x7f) c = '_';
  return s;
}

Status BackupRun::PlanUnits(const std::vector<SourceVolume>& sources,
                            const SnapshotSession* session, std::vector<Unit>* units,
                            DiskLayout* disk, std::vector<std::string>* warnings) {
  for (size_t i = 0; i < sources.size(); ++i) units->push_back({i, 0, sources[i].size()});
  if (!session || opt_.volumes_only) return Status::OK();
  for (size_t i = 0; i < sources.size(); ++i) {
    bool is_disk = false;
    DiskLayout d;
    GNOMON_RETURN_IF_ERROR(
        ProbeDisk(sources[i].fd(), opt_.sources[i], sources[i].size(), &is_disk, &d)
            .WithContext("use --volumes-only to image it as one volume"));
    if (!is_disk) continue;
    if (sources.size() > 1 || sources[i].offset() != 0)
      return Status::InvalidArgument(opt_.sources[i] +
                                     " holds a partition table: a disk backup takes one disk "
                                     "alone (or use --volumes-only to image it as one volume)");
    units->clear();
    for (auto& p : d.partitions) {
      if (p.kind == "extended") continue;
      if (std::string safe = ScriptSafe(p.name); safe != p.name) {
        warnings->push_back("partition " + std::to_string(p.number) +
                            "'s name holds quotes or control characters; stored as '" + safe + "'");
        p.name = safe;
      }
      p.volume = static_cast<int>(units->size());
      const std::string n = "p" + std::to_string(p.number);
      units->push_back({i, p.start, p.size, n, "#" + n + "@" + std::to_string(p.start)});
    }
    d.gaps_volume = static_cast<int>(units->size());
    // The gaps' key names the layout: only identical gaps pair as parents.
    std::string gaps;
    for (const auto& g : d.Gaps())
      gaps += std::to_string(g.offset) + "+" + std::to_string(g.length) + ",";
    const uint64_t h = Checksum64({reinterpret_cast<const uint8_t*>(gaps.data()), gaps.size()});
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
    units->push_back({i, 0, sources[i].size(), "disk-gaps", std::string("#gaps@") + hex, true});
    GNOMON_RETURN_IF_ERROR(
        d.Validate(units->size())
            .WithContext(opt_.sources[i] + ": cannot back up as a disk (use --volumes-only)"));
    *disk = std::move(d);
  }
  return Status::OK();
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

  ImageContext ctx;
  ctx.repo = repo_;
  ctx.index = &index_;
  ctx.health = &health_;
  ctx.seen = &seen_;
  ctx.sink = &sink_;
  ctx.error = &error_;
  ctx.threads = opt_.threads > 0 ? opt_.threads : DefaultThreads();
  ctx.tokens = opt_.tokens > 0 ? static_cast<size_t>(opt_.tokens)
                               : DefaultTokens(ctx.threads, repo_->config().chunk_size);
  ctx.max_level = opt_.max_level;
  ctx.cancel = opt_.cancel;
  ctx.progress = opt_.progress;
  UnreadBases unread;
  ctx.unread_bases = &unread;
  std::vector<Unit> units;
  GNOMON_RETURN_IF_ERROR(PlanUnits(sources, session, &units, &rec.disk, &out->warnings));
  std::vector<VolumeIndex> indexes(units.size());
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < units.size(); ++i) {
    const Unit& u = units[i];
    const SourceVolume* src = &sources[u.source];
    SourceVolume part;  // a partition: a range of the disk's snapshot
    if (u.within != 0 || u.size != src->size()) {
      if (Status s =
              SourceVolume::OpenSnapshot(src->path(), src->offset() + u.within, u.size, &part);
          !s.ok()) {
        Discard();
        return s;
      }
      src = &part;
    }
    VolumeRecord v = NewVolume(rec, i, u, *src, session);
    const VolumePlan plan = session ? PlanVolume(u, *session, *src, &v) : VolumePlan{};
    if (rec.parent.empty()) rec.parent = v.parent;
    const auto v0 = std::chrono::steady_clock::now();
    // Read from the snapshot, never the live volume: that is what is imaged.
    const BlockMap map = u.gaps            ? GapsMap(rec.disk)
                         : opt_.all_blocks ? BlockMap::All(src->size(), "")
                                           : ReadBlockMap(src->path(), src->offset(), src->size());
    v.block_map = map.kind;
    v.block_map_reason = map.reason;
    Status s = ImageVolume(ctx, *src, v.source + (u.name.empty() ? "" : " " + u.name), map, plan,
                           &indexes[i], &v.stats);
    v.stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - v0).count();
    if (u.gaps) {
      // The partitions' bytes are counted once, by their own volumes.
      const uint64_t in_partitions = src->size() - map.used_bytes;
      v.stats.bytes -= std::min(v.stats.bytes, in_partitions);
      v.stats.unused_bytes -= std::min(v.stats.unused_bytes, in_partitions);
    }
    if (!s.ok()) {
      Discard();
      return s;
    }
    rec.totals.Add(v.stats);
    rec.volumes.push_back(std::move(v));
  }
  Status s = Commit(&rec, indexes, session, t0);
  if (s.ok()) out->packs_written = sink_.finished().size();
  if (s.ok() && unread.count > 0)
    out->warnings.push_back(std::to_string(unread.count.load()) +
                            " chunk(s) of the parent backup could not be read to store only "
                            "what changed, and were stored whole (first: " +
                            unread.first.status().message() + ")");
  return s;
}

Status BackupRun::Commit(BackupRecord* rec, const std::vector<VolumeIndex>& indexes,
                         const SnapshotSession* session, std::chrono::steady_clock::time_point t0) {
  // Packs first (durable once flushed); then the index file naming them,
  // the volume indexes, and last the record that makes the backup exist.
  FailedWrite w;
  Status s = sink_.Flush();
  if (s.ok() && !sink_.finished().empty()) {
    s = repo_->WriteIndexFile(sink_.finished(), &rec->index_file);
    if (!s.IsExists()) w.index_file = rec->index_file;  // (else the name is another's)
    w.index_written = s.ok();
  }
  rec->totals.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Saved after DoSnapshotSet and before SetBackupSucceeded, as VSS orders it.
  if (session) rec->extra["vss"] = session->Documents();
  // An offline snapshot is the live volume: if anything wrote to it while
  // it was read, the image is torn and must not be published.
  if (s.ok() && session) s = session->CheckIntact();
  if (s.ok()) s = Publish(rec, indexes, &w.published);
  w.id = rec->id;
  if (!s.ok()) return EndFailedWrite(repo_, &sink_, w, s);
  repo_->EndWrite();
  return Status::OK();
}

Status BackupRun::Publish(BackupRecord* rec, const std::vector<VolumeIndex>& indexes,
                          Repository::PublishOutcome* out) {
  for (int attempt = 0;; ++attempt) {
    Status s = repo_->PublishBackup(rec, indexes, out);
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
