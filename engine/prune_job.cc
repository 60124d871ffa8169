#include "engine/prune_job.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <thread>
#include <unordered_set>

#include "base/clock.h"
#include "engine/prune_internal.h"
#include "format/codec.h"

namespace gnomon {

namespace {

struct PackPlan {
  uint64_t live = 0, dead = 0;
  bool dead_quarantined = false;
  std::vector<Digest> live_elsewhere;  // dead copies of live digests: their keepers
};

struct Plan {
  std::set<std::string> remove, repack;
  std::map<std::string, PackPlan> packs;
};

void MakePlan(const Census& c, const ChunkIndex& index, const DigestSet& live, double max_unused,
              Plan* plan, PruneResult* out) {
  uint64_t dead_total = 0;
  for (const auto& [id, entries] : c.claims) {
    if (!c.present.count(id)) continue;
    PackPlan& p = plan->packs[id];
    for (const auto& e : entries) {
      out->stored_bytes += e.stored_len;
      if (IsKeeper(index, live, id, e)) {
        p.live += e.stored_len;
        continue;
      }
      p.dead += e.stored_len;
      p.dead_quarantined |= c.quarantined.count({id, e.digest}) > 0;
      if (live.count(e.digest)) p.live_elsewhere.push_back(e.digest);
    }
    out->live_bytes += p.live;
    dead_total += p.dead;
    if (p.live == 0) plan->remove.insert(id);
  }
  for (const auto& id : plan->remove) dead_total -= plan->packs[id].dead;
  // Mostly dead first; only where copying the live part costs at most
  // twice what it frees, and only while too much dead space would stay.
  std::vector<std::pair<double, std::string>> order;
  for (const auto& [id, p] : plan->packs)
    if (p.live > 0 && p.dead > 0)
      order.push_back({static_cast<double>(p.dead) / static_cast<double>(p.live + p.dead), id});
  std::sort(order.rbegin(), order.rend());
  // The allowance is a share of what stays stored after this prune.
  uint64_t stays = out->stored_bytes;
  for (const auto& id : plan->remove) stays -= plan->packs[id].dead;
  for (const auto& [share, id] : order) {
    const PackPlan& p = plan->packs[id];
    if (p.dead_quarantined ||
        (static_cast<double>(dead_total) > max_unused * static_cast<double>(stays) &&
         p.dead * 2 >= p.live)) {
      plan->repack.insert(id);
      dead_total -= p.dead;
      stays -= p.dead;
    }
  }
}

// Before a dead copy of a live chunk goes, its keeper is read back: the
// dead copy may be the only good one. A pack whose dead copy cannot be
// spared is kept whole.
void CheckKeepers(Repository* repo, const ChunkIndex& index, Plan* plan, DigestSet* checked,
                  PruneResult* out) {
  ChunkDecompressor dec;
  std::vector<uint8_t> buf;
  std::map<Digest, bool> result;
  for (auto* set : {&plan->remove, &plan->repack})
    for (auto it = set->begin(); it != set->end();) {
      bool spare = true;
      for (const auto& d : plan->packs[*it].live_elsewhere) {
        auto [c, fresh] = result.emplace(d, true);
        if (fresh) {
          buf.resize(index.Find(d)->raw_len);
          Status s = repo->ReadChunk(index, d, buf.data(), &dec);
          c->second = s.ok();
          if (s.ok()) checked->insert(d);
          if (!s.ok())
            out->warnings.push_back("kept pack " + *it + ": the copy of chunk " + d.Hex() +
                                    " that backups use cannot be read (" + s.message() +
                                    "); run 'gnomon verify --read-data'");
        }
        spare &= c->second;
      }
      it = spare ? std::next(it) : set->erase(it);
    }
}

// Whether dead runs left anything, or index files name missing packs: the
// deletion step then runs even with no pack to delete.
bool NeedsCleaning(Repository* repo, const Census& c) {
  Leftovers l;
  if (!repo->FindLeftovers(&l).ok()) return false;
  if (!l.journals.empty() || !l.temporaries.empty() || !l.journaled_orphans.empty()) return true;
  for (const auto& id : c.present)
    if (!c.claims.count(id)) return true;  // no index file names it
  for (const auto& [id, entries] : c.claims)
    if (!c.present.count(id)) return true;  // named, missing
  return StaleSideFiles(repo, c.present);
}

// Volume indexes without a record may belong to a record moved away by
// hand, which must find its chunks when it comes back; or to a forget that
// is between removing a record and its volume indexes, for milliseconds.
// Only those still there a moment later count.
Status PersistentOrphans(Repository* repo, std::vector<std::string>* out) {
  Leftovers first, again;
  GNOMON_RETURN_IF_ERROR(repo->FindLeftovers(&first));
  if (first.orphan_indexes.empty()) return Status::OK();
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  GNOMON_RETURN_IF_ERROR(repo->FindLeftovers(&again));
  const std::set<std::string> now(again.orphan_indexes.begin(), again.orphan_indexes.end());
  for (const auto& o : first.orphan_indexes)
    if (now.count(o)) out->push_back(o);
  return Status::OK();
}

}  // namespace

Status TakeCensus(Repository* repo, Census* c, std::vector<std::string>* problems) {
  *c = Census();
  std::vector<std::string> names, ids;
  GNOMON_RETURN_IF_ERROR(repo->ListIndexFiles(&names));
  for (const auto& n : names) {
    std::vector<PackSummary> packs;
    if (Status s = repo->ReadIndexFile(n, &packs); !s.ok()) {
      problems->push_back(s.message());
      continue;
    }
    auto& mine = c->packs_of_file[n];
    for (auto& p : packs) {
      mine.push_back(p.id);
      auto& claim = c->claims[p.id];
      if (claim.empty()) {
        claim = std::move(p.entries);
        continue;
      }
      // Named twice (a crash between a replacement index and the deletion
      // of the files it replaces): each entry once.
      std::set<std::pair<Digest, uint32_t>> seen;
      for (const auto& e : claim) seen.insert({e.digest, e.offset});
      for (auto& e : p.entries)
        if (seen.insert({e.digest, e.offset}).second) claim.push_back(e);
    }
  }
  GNOMON_RETURN_IF_ERROR(repo->ListPacks(&ids));
  c->present.insert(ids.begin(), ids.end());
  std::vector<Status> qerrors;
  GNOMON_RETURN_IF_ERROR(repo->ReadQuarantine(&c->quarantined, &qerrors));
  for (const auto& e : qerrors) problems->push_back(e.message());
  return Status::OK();
}

Status Mark(Repository* repo, const std::vector<BackupRecord>& records, ChunkIndex* index,
            DigestSet* live, std::vector<std::string>* problems) {
  IndexHealth health;
  GNOMON_RETURN_IF_ERROR(repo->LoadChunkIndex(index, &health, IndexUse::kRead));
  // An index file that cannot be read now (the census may have read it a
  // moment ago) leaves live chunks unlocated: name it, not only them.
  for (const auto& e : health.damaged_files)
    if (std::find(problems->begin(), problems->end(), e.message()) == problems->end())
      problems->push_back(e.message());
  std::vector<std::string> orphans;
  GNOMON_RETURN_IF_ERROR(PersistentOrphans(repo, &orphans));
  for (const auto& o : orphans)
    problems->push_back(o +
                        " has no backup record (put its record back, or remove it with "
                        "'gnomon forget --force ID')");
  size_t followed = 0;
  return MarkLive(repo, *index, records, live, problems, &followed);
}

Status RunPrune(Repository* repo, const PruneOptions& opt, PruneResult* out) {
  const int64_t start = NowMicros();
  auto step = [&](const char* what, uint64_t n) {
    if (opt.progress) opt.progress(Progress{"prune", what, n, 4});
  };
  auto finish = [&](Status s) {
    out->seconds = static_cast<double>(NowMicros() - start) / 1e6;
    return s;
  };
  // A dry run writes nothing, not even a lock (it may look at a read-only
  // copy); it only reports.
  std::unique_ptr<FileLock> gc;
  if (!opt.dry_run) GNOMON_RETURN_IF_ERROR(repo->LockGc("prune", &gc));
  step("mark", 0);
  std::vector<BackupRecord> records;
  std::vector<Status> errors;
  GNOMON_RETURN_IF_ERROR(repo->ListBackups(&records, &errors));
  for (const auto& e : errors) out->problems.push_back(e.message());
  out->backups = records.size();
  Census census;
  GNOMON_RETURN_IF_ERROR(TakeCensus(repo, &census, &out->problems));
  ChunkIndex index;
  DigestSet live;
  GNOMON_RETURN_IF_ERROR(Mark(repo, records, &index, &live, &out->problems));
  out->packs = census.present.size();
  if (!out->complete()) return finish(Status::OK());  // what it names is unknown: delete nothing

  step("plan", 1);
  Plan plan;
  MakePlan(census, index, live, opt.max_unused, &plan, out);
  DigestSet checked;  // live digests with a copy read back or written by this prune
  CheckKeepers(repo, index, &plan, &checked, out);
  for (const auto& id : plan.remove) out->plan_delete_bytes += plan.packs[id].dead;
  for (const auto& id : plan.repack) {
    out->plan_repack_live_bytes += plan.packs[id].live;
    out->plan_repack_dead_bytes += plan.packs[id].dead;
  }
  out->plan_delete = plan.remove.size();
  out->plan_repack = plan.repack.size();
  if (opt.dry_run) return finish(Status::OK());
  if (opt.cancel && opt.cancel->load()) return Status::Aborted("prune interrupted");

  step("repack", 2);
  GNOMON_RETURN_IF_ERROR(
      RepackPacks(repo, index, live, census.claims, opt.cancel, &plan.repack, &checked, out));
  if (opt.cancel && opt.cancel->load()) return Status::Aborted("prune interrupted");

  step("delete", 3);
  std::set<std::string> doomed = plan.remove;
  doomed.insert(plan.repack.begin(), plan.repack.end());
  Status s;
  if (!doomed.empty() || NeedsCleaning(repo, census))
    s = DeleteStep(repo, opt, records, &live, &checked, doomed, out);
  return finish(s);
}

}  // namespace gnomon
