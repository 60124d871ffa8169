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
#include "engine/pack_sink.h"
#include "engine/pipeline_util.h"
#include "engine/source_volume.h"
#include "engine/volume_imager.h"
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
  // Decides how volume i is read: which parent index to build on and, if
  // change tracking can be trusted, which chunks changed. Fills v's parent,
  // tracking and tracking_reason.
  VolumePlan PlanVolume(size_t i, const SnapshotSession& session, const SourceVolume& src,
                        VolumeRecord* v);
  // The record of volume i of rec, before it is imaged.
  VolumeRecord NewVolume(const BackupRecord& rec, size_t i, const SourceVolume& src,
                         const SnapshotSession* session) const;
  // Writes the volume indexes and the record under rec->id, choosing a new
  // id if a write-once name is taken (never replacing another backup's).
  Status Publish(BackupRecord* rec, const std::vector<VolumeIndex>& indexes);
  // Commits what Image wrote, in the order that keeps every visible file
  // valid; on failure removes it all.
  Status Commit(BackupRecord* rec, const std::vector<VolumeIndex>& indexes,
                const SnapshotSession* session, std::chrono::steady_clock::time_point t0);
  void Discard() {
    sink_.Discard();
    repo_->EndWrite();
  }

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
    const ParentChoice p = ChooseParent(history, vss::VolumeKey(id), full_only);
    if (!p.record) continue;
    parents_[p.volume->key] = Parent{*p.record, *p.volume};
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

VolumePlan BackupRun::PlanVolume(size_t i, const SnapshotSession& session, const SourceVolume& src,
                                 VolumeRecord* v) {
  VolumePlan plan;
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
  vss::MarkChangedChunks(file_ranges, snap.offset, snap.size, repo_->config().chunk_size,
                         &plan.changed, &plan.ranges);
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

VolumeRecord BackupRun::NewVolume(const BackupRecord& rec, size_t i, const SourceVolume& src,
                                  const SnapshotSession* session) const {
  VolumeRecord v;
  v.source = opt_.sources[i];
  const std::string base = std::filesystem::path(v.source).filename();
  v.name = base;
  for (size_t k = 2; std::any_of(rec.volumes.begin(), rec.volumes.end(),
                                 [&](const VolumeRecord& o) { return o.name == v.name; });
       ++k)
    v.name = base + "." + std::to_string(k);
  v.size = src.size();
  v.chunk_size = repo_->config().chunk_size;
  v.index = VolumeIndexName(rec.id, i);
  if (session) v.key = session->sources()[i].key;
  return v;
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
  ctx.cancel = opt_.cancel;
  ctx.progress = opt_.progress;
  UnreadBases unread;
  ctx.unread_bases = &unread;
  std::vector<VolumeIndex> indexes(sources.size());
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < sources.size(); ++i) {
    VolumeRecord v = NewVolume(rec, i, sources[i], session);
    const VolumePlan plan = session ? PlanVolume(i, *session, sources[i], &v) : VolumePlan{};
    if (rec.parent.empty()) rec.parent = v.parent;
    const auto v0 = std::chrono::steady_clock::now();
    // Read from the snapshot, never the live volume: that is what is imaged.
    const BlockMap map =
        opt_.all_blocks ? BlockMap::All(sources[i].size(), "")
                        : ReadBlockMap(sources[i].path(), sources[i].offset(), sources[i].size());
    v.block_map = map.kind;
    v.block_map_reason = map.reason;
    Status s = ImageVolume(ctx, sources[i], v.source, map, plan, &indexes[i], &v.stats);
    v.stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - v0).count();
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
  Status s = sink_.Flush();
  if (s.ok() && !sink_.finished().empty())
    s = repo_->WriteIndexFile(sink_.finished(), &rec->index_file);
  rec->totals.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Saved after DoSnapshotSet and before SetBackupSucceeded, as VSS orders it.
  if (session) rec->extra["vss"] = session->Documents();
  // An offline snapshot is the live volume: if anything wrote to it while
  // it was read, the image is torn and must not be published.
  if (s.ok() && session) s = session->CheckIntact();
  if (s.ok()) s = Publish(rec, indexes);
  // (Not after Exists: then the id's record is another backup's.)
  if (!s.ok() && !s.IsExists() && repo_->BackupExists(rec->id)) {
    // The record is visible though publishing it failed (its directory
    // could not be synced, nor the record taken back): it names everything
    // this run wrote, so nothing of it may go. The backup is complete; only
    // its durability is in doubt, which the error says.
    repo_->EndWrite();
    return s.WithContext("backup " + rec->id + " is published, but may not survive a crash");
  }
  if (!s.ok()) {
    // Best effort: without the record, none of this is referenced.
    if (!rec->index_file.empty())
      repo_->env()->RemoveFile(RepoPath(repo_->path(), kIndex, rec->index_file));
    Discard();
    return s;
  }
  repo_->EndWrite();
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
      repo_->env()->RemoveFile(RepoPath(repo_->path(), rec->volumes[i].index));
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
