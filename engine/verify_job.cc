#include "engine/verify_job.h"

#include <oneapi/tbb/enumerable_thread_specific.h>
#include <oneapi/tbb/parallel_for_each.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <set>

#include "engine/backup_job.h"
#include "engine/vss_summary.h"
#include "format/patch.h"

namespace gnomon {

namespace {

// What the index files say a pack holds, keyed by pack id.
using PackClaims = std::map<std::string, std::vector<PackEntry>>;

// What reading the packs found.
struct DataFindings {
  std::set<BadChunk> bad;                // copies whose bytes are damaged: quarantined
  std::set<BadChunk> unavailable;        // copies that could not be read (missing pack, I/O)
  std::set<BadChunk> intact;             // quarantined copies that read intact now
  std::map<Digest, Digest> patch_bases;  // patch digest -> base digest (read_data only)
  std::map<Digest, uint8_t> depth;       // digest -> patch depth, for the closure
};

// Checks one pack against its claims. With read_data every claimed chunk is
// read at the location the index gives (where restore reads it), decoded and
// hashed; a failure is recorded as a bad location.
// Damage already quarantined is known, not news: it goes to *known. Only
// bytes proven damaged (a failed digest, decode or truncation: Corruption)
// are quarantined; a pack that cannot be opened or read may be back
// tomorrow, so its copies are only unavailable today.
void CheckPack(Repository* repo, const std::string& id, const std::vector<PackEntry>& claimed,
               bool read_data, const std::set<BadChunk>& quarantined, ChunkDecompressor* dec,
               std::vector<std::string>* errors, std::vector<std::string>* known,
               DataFindings* found, uint64_t* bytes_read) {
  auto bad = [&](const Digest& d, const Status& st, const std::string& msg) {
    (read_data && st.IsCorruption() ? found->bad : found->unavailable).insert({id, d});
    if (quarantined.count({id, d}))
      known->push_back(msg + " (quarantined earlier; never used again)");
    else
      errors->push_back(msg);
  };
  std::shared_ptr<RandomAccessFile> f;
  Status s = repo->OpenPack(id, &f);
  if (!s.ok()) {
    for (const auto& c : claimed)
      bad(c.digest, Status::IOError(""), s.message() + ": chunk " + c.digest.Hex());
    return;
  }
  std::vector<PackEntry> actual;
  s = ReadPackHeader(*f, &actual);
  if (!s.ok()) {
    errors->push_back(s.message());
  } else {
    std::map<Digest, PackEntry> by_digest;
    for (const auto& e : actual) by_digest.emplace(e.digest, e);
    for (const auto& c : claimed) {
      auto it = by_digest.find(c.digest);
      if (it == by_digest.end() || it->second.offset != c.offset ||
          it->second.stored_len != c.stored_len || it->second.raw_len != c.raw_len ||
          it->second.codec != c.codec)
        errors->push_back(f->path() + ": chunk " + c.digest.Hex() +
                          " is not where the chunk index says it is");
    }
  }
  if (!read_data) return;
  std::vector<uint8_t> stored, raw;
  for (const auto& e : claimed) {
    std::string where =
        f->path() + ": chunk " + e.digest.Hex() + " at offset " + std::to_string(e.offset);
    stored.resize(e.stored_len);
    raw.resize(e.raw_len);
    s = f->ReadAt(e.offset, e.stored_len, stored.data());
    if (s.ok()) s = dec->Decompress(e.codec, stored, raw.data(), e.raw_len, where);
    if (s.ok() && Digest::Of(raw) != e.digest)
      s = Status::Corruption(where + ": content does not match its digest (data is damaged)");
    PatchView pv;
    if (s.ok() && e.patch_depth) s = DecodePatch(raw, where, &pv);
    *bytes_read += e.stored_len;
    if (!s.ok()) {
      bad(e.digest, s, s.message());
      continue;
    }
    if (quarantined.count({id, e.digest})) found->intact.insert({id, e.digest});
    found->depth[e.digest] = e.patch_depth;
    if (e.patch_depth) found->patch_bases[e.digest] = pv.base;
  }
}

// Digests that no intact copy serves: every location is bad, or (a patch)
// its base is lost, absent or no shallower than itself.
std::set<Digest> LostDigests(const PackClaims& claims, const std::set<BadChunk>& bad,
                             const DataFindings& found) {
  std::map<Digest, bool> good;  // digest -> has an intact location
  for (const auto& [pack, entries] : claims)
    for (const auto& e : entries) good[e.digest] |= !bad.count({pack, e.digest});
  std::set<Digest> lost;
  for (const auto& [d, ok] : good)
    if (!ok) lost.insert(d);
  // Patches in order of depth, so a base is decided before its patches.
  std::vector<std::pair<uint8_t, Digest>> patches;
  for (const auto& [d, base] : found.patch_bases) patches.push_back({found.depth.at(d), d});
  std::sort(patches.begin(), patches.end());
  for (const auto& [depth, d] : patches) {
    const Digest& base = found.patch_bases.at(d);
    if (base.IsZero()) continue;
    auto bd = found.depth.find(base);
    if (!good.count(base) || lost.count(base) || (bd != found.depth.end() && bd->second >= depth))
      lost.insert(d);
  }
  return lost;
}

// Every backup's slots against what is known lost: each backup is whole,
// repaired (it names data that was damaged and now has an intact copy), or
// damaged, and is reported as such.
// since: when each quarantined digest was first found damaged; a backup
// made later stored that data anew and was never damaged.
void CheckBackups(Repository* repo, const std::vector<BackupRecord>& backups,
                  const std::set<Digest>& known, const std::set<Digest>& lost,
                  const std::map<Digest, std::string>& since, bool read_data, VerifyResult* out) {
  for (const auto& b : backups) {
    uint64_t missing = 0, damaged = 0, repaired = 0;
    Digest first;
    for (const auto& v : b.volumes) {
      VolumeIndex vi;
      if (!repo->ReadVolumeIndex(v, &vi).ok()) continue;  // reported already
      for (const auto& d : vi.slots) {
        if (d.IsZero()) continue;
        if (!known.count(d)) {
          if (missing++ + damaged == 0) first = d;
        } else if (lost.count(d)) {
          if (missing + damaged++ == 0) first = d;
        } else if (auto q = since.find(d); q != since.end() && b.time < q->second) {
          ++repaired;
        }
      }
    }
    if (missing)
      out->errors.push_back("backup " + b.id + ": " + std::to_string(missing) +
                            " chunks are in no index (first: " + first.Hex() + ")");
    if (damaged) {
      out->errors.push_back(
          "backup " + b.id + " is damaged: " + std::to_string(damaged) +
          " chunks have no intact copy (first: " + first.Hex() +
          "); a new backup of the same data stores them again" +
          (read_data ? "" : " (without --read-data a quarantined copy counts as damaged)"));
    }
    if (missing || damaged) out->damaged_backups.push_back(b.id);
    if (repaired && !missing && !damaged) {
      out->repaired_backups.push_back(b.id);
      out->warnings.push_back("backup " + b.id + " restores: " + std::to_string(repaired) +
                              " of its chunks were found damaged once and are now read from "
                              "copies that check out");
    }
  }
}

// Leftovers of interrupted runs, and packs no index names, explained.
void ReportLeftovers(Repository* repo, const PackClaims& claims, bool damaged_index,
                     VerifyResult* out) {
  Leftovers l;
  if (!repo->FindLeftovers(&l).ok()) return;
  std::map<std::string, std::string> journaled;  // pack -> journal
  for (const auto& j : l.journals)
    for (const auto& p : j.packs) journaled[p] = j.name;
  for (const auto& t : l.temporaries)
    out->warnings.push_back(t + ": left by an interrupted run (the next backup removes it)");
  for (const auto& v : l.journaled_orphans)
    out->warnings.push_back(v +
                            ": volume index of a backup that never committed (the next "
                            "backup removes it)");
  for (const auto& v : l.orphan_indexes)
    out->warnings.push_back(v +
                            ": volume index that no backup record names (kept: if its "
                            "record was moved away, put it back)");
  std::vector<std::string> on_disk;
  if (!repo->ListPacks(&on_disk).ok()) return;
  out->packs = on_disk.size();
  for (const auto& id : on_disk) {
    if (claims.count(id)) continue;
    std::string why;
    if (damaged_index)
      why = "named by no readable index file; a damaged index file may name it, so it is kept";
    else if (journaled.count(id))
      why = "left by an interrupted backup (tmp/" + journaled[id] + "); the next backup removes it";
    else
      why = "named by no index file and by no interrupted run gnomon knows of";
    out->warnings.push_back(repo->PackPath(id) + ": pack is " + why);
  }
}

}  // namespace

Status RunVerify(Repository* repo, const VerifyOptions& opt, VerifyResult* out) {
  // 1. Index files: each must decode; together they say what each pack holds.
  std::vector<std::string> index_files;
  GNOMON_RETURN_IF_ERROR(repo->ListIndexFiles(&index_files));
  out->index_files = index_files.size();
  PackClaims claims;
  std::set<Digest> known;
  bool damaged_index = false;
  for (const auto& n : index_files) {
    std::vector<PackSummary> packs;
    Status s = repo->ReadIndexFile(n, &packs);
    if (!s.ok()) {
      out->errors.push_back(s.message());
      damaged_index = true;
      continue;
    }
    for (const auto& p : packs) {
      auto& c = claims[p.id];
      c.insert(c.end(), p.entries.begin(), p.entries.end());
      for (const auto& e : p.entries) known.insert(e.digest);
    }
  }
  out->chunks = known.size();
  std::set<BadChunk> quarantined;
  std::vector<Status> qerrors;
  std::map<Digest, std::string> since;
  GNOMON_RETURN_IF_ERROR(repo->ReadQuarantine(&quarantined, &qerrors, &since));
  for (const auto& e : qerrors) out->errors.push_back(e.message());

  // 2. Backup records, their volume indexes and VSS documents.
  std::vector<BackupRecord> backups;
  std::vector<Status> record_errors;
  GNOMON_RETURN_IF_ERROR(repo->ListBackups(&backups, &record_errors));
  for (const auto& e : record_errors) out->errors.push_back(e.message());
  out->backups = backups.size();
  std::set<std::string> named_index_files(index_files.begin(), index_files.end());
  for (const auto& b : backups) {
    if (!b.index_file.empty() && !named_index_files.count(b.index_file))
      out->errors.push_back("backup " + b.id + ": its chunk index file index/" + b.index_file +
                            " is missing");
    VssSummary vss;
    if (Status s = SummarizeVss(b.extra, &vss); !s.ok())
      out->errors.push_back("backup " + b.id + ": " + s.message());
    for (const auto& v : b.volumes) {
      ++out->volumes;
      VolumeIndex vi;
      Status s = repo->ReadVolumeIndex(v, &vi);
      if (!s.ok()) out->errors.push_back("backup " + b.id + ": " + s.message());
    }
  }

  // 3. Packs: each claimed pack must exist and hold what the index says.
  std::vector<std::pair<std::string, std::vector<PackEntry>>> work(claims.begin(), claims.end());
  std::mutex mu;
  uint64_t done = 0;
  DataFindings found;
  tbb::enumerable_thread_specific<ChunkDecompressor> decs;
  tbb::task_arena arena(opt.threads > 0 ? opt.threads : DefaultThreads());
  arena.execute([&] {
    tbb::parallel_for_each(work.begin(), work.end(), [&](const auto& item) {
      if (opt.cancel && opt.cancel->load()) return;
      std::vector<std::string> errs, known_bad;
      DataFindings f;
      uint64_t bytes = 0;
      CheckPack(repo, item.first, item.second, opt.read_data, quarantined, &decs.local(), &errs,
                &known_bad, &f, &bytes);
      std::lock_guard<std::mutex> g(mu);
      out->errors.insert(out->errors.end(), errs.begin(), errs.end());
      out->warnings.insert(out->warnings.end(), known_bad.begin(), known_bad.end());
      found.bad.insert(f.bad.begin(), f.bad.end());
      found.unavailable.insert(f.unavailable.begin(), f.unavailable.end());
      found.intact.insert(f.intact.begin(), f.intact.end());
      found.patch_bases.insert(f.patch_bases.begin(), f.patch_bases.end());
      found.depth.insert(f.depth.begin(), f.depth.end());
      out->bytes_read += bytes;
      if (opt.read_data) out->chunks_read += item.second.size();
      if (opt.progress) opt.progress(Progress{"verify", item.first, ++done, work.size()});
    });
  });
  if (opt.cancel && opt.cancel->load()) return Status::Aborted("verify interrupted");

  // 4. What cannot serve a restore today: with read_data, the copies that
  // failed now (a quarantined copy that reads intact still serves, as
  // restore's last resort); without, every quarantined or unreadable copy.
  std::set<BadChunk> bad = found.bad;
  bad.insert(found.unavailable.begin(), found.unavailable.end());
  if (!opt.read_data) bad.insert(quarantined.begin(), quarantined.end());
  const std::set<Digest> lost = LostDigests(claims, bad, found);

  // 5. New damage is quarantined, so the next backup stores that data
  // again; so are the patches whose base chain corrupt bytes break (not a
  // pack that is merely away), which no backup may build on.
  std::vector<BadChunk> fresh;
  for (const auto& b : found.bad)
    if (!quarantined.count(b)) fresh.push_back(b);
  if (opt.read_data && !found.bad.empty()) {
    const std::set<Digest> broken = LostDigests(claims, found.bad, found);
    for (const auto& [pack, entries] : claims)  // one pass over the index
      for (const auto& e : entries)
        if (e.patch_depth && broken.count(e.digest) && !found.bad.count({pack, e.digest}) &&
            !quarantined.count({pack, e.digest}))
          fresh.push_back({pack, e.digest});
  }
  if (Status s = repo->WriteQuarantine(fresh); !s.ok())
    out->errors.push_back("recording damaged chunks failed: " + s.message());
  else
    out->quarantined = fresh.size();
  for (const auto& b : quarantined)
    if (found.intact.count(b))
      out->warnings.push_back(repo->PackPath(b.pack) + ": quarantined chunk " + b.digest.Hex() +
                              " reads intact now; backups still store its data anew, and "
                              "restore uses it only when no other copy exists");
  for (const auto& b : fresh) since.emplace(b.digest, NowRfc3339());

  // 6. Which backups are whole, repaired or damaged; what runs left behind.
  CheckBackups(repo, backups, known, lost, since, opt.read_data, out);
  ReportLeftovers(repo, claims, damaged_index, out);
  return Status::OK();
}

}  // namespace gnomon
