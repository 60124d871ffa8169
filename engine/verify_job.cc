#include "engine/verify_job.h"

#include <oneapi/tbb/enumerable_thread_specific.h>
#include <oneapi/tbb/parallel_for_each.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <set>

#include "base/clock.h"
#include "base/random.h"
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
// *result (read_data only) is what the pack's check file entry says: damaged
// if any chunk's bytes were proven damaged, else unreadable if the pack or a
// chunk could not be read, else intact.
void CheckPack(Repository* repo, const std::string& id, const std::vector<PackEntry>& claimed,
               bool read_data, const std::set<BadChunk>& quarantined, ChunkDecompressor* dec,
               std::vector<std::string>* errors, std::vector<std::string>* known,
               DataFindings* found, uint64_t* bytes_read, uint32_t* result) {
  bool damaged = false, unreadable = false;
  auto bad = [&](const Digest& d, const Status& st, const std::string& msg) {
    const bool proven = read_data && st.IsCorruption();
    (proven ? damaged : unreadable) = true;
    (proven ? found->bad : found->unavailable).insert({id, d});
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
    *result = kPackUnreadable;
    return;
  }
  std::vector<PackEntry> actual;
  s = repo->ReadPackHeader(id, *f, &actual);
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
    raw.resize(e.raw_len);
    s = repo->ReadBlob(id, *f, e, &stored, raw.data(), dec, /*full_check=*/true);
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
  *result = damaged ? kPackDamaged : unreadable ? kPackUnreadable : kPackIntact;
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
                  const std::map<Digest, std::string>& since, const std::string& damaged_note,
                  VerifyResult* out) {
  for (const auto& b : backups) {
    uint64_t missing = 0, damaged = 0, repaired = 0;
    Digest first;
    for (const auto& v : b.volumes) {
      VolumeIndex vi;
      if (Status s = repo->ReadVolumeIndex(v, &vi); !s.ok()) {
        // Usually reported already, when it was first read; an error that
        // came only now (a failing disk) must not pass unseen.
        const std::string e = "backup " + b.id + ": " + s.message();
        if (std::find(out->errors.begin(), out->errors.end(), e) == out->errors.end())
          out->errors.push_back(e);
        continue;
      }
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
      out->errors.push_back("backup " + b.id + " is damaged: " + std::to_string(damaged) +
                            " chunks have no intact copy (first: " + first.Hex() +
                            "); a new backup of the same data stores them again" + damaged_note);
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
  // Not being able to look is an error: verify would otherwise pass
  // without having checked what it says it checked.
  Leftovers l;
  if (Status s = repo->FindLeftovers(&l); !s.ok())
    return out->errors.push_back("looking for leftovers: " + s.message());
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
  if (Status s = repo->ListPacks(&on_disk); !s.ok())
    return out->errors.push_back("listing the packs: " + s.message());
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

// The packs a run reads whole (FORMAT.md §5b), out of the claimed ones.
std::set<std::string> SelectPacks(const PackClaims& claims, const VerifySubset& subset,
                                  const std::map<std::string, uint64_t>& last_checked) {
  std::set<std::string> out;
  switch (subset.kind) {
    case VerifySubset::Kind::kAll:
      for (const auto& [id, entries] : claims) out.insert(id);
      break;
    case VerifySubset::Kind::kSlice:
      // Claimed ids come from index files in binary: always 32 hex.
      for (const auto& [id, entries] : claims) {
        uint32_t v = 0;
        std::from_chars(id.data(), id.data() + 8, v, 16);
        if (v % subset.t == subset.k - 1) out.insert(id);
      }
      break;
    case VerifySubset::Kind::kPercent: {
      // Never checked first, then the oldest last check; ties in random
      // order (a shuffle, then a stable sort), so packs checked together
      // are not always read together again.
      std::vector<std::string> ids;
      for (const auto& [id, entries] : claims) ids.push_back(id);
      uint64_t seed = 0;
      RandomFill(&seed, sizeof seed);
      std::mt19937_64 rng(seed);
      std::shuffle(ids.begin(), ids.end(), rng);
      auto key = [&](const std::string& id) {
        auto it = last_checked.find(id);
        return it == last_checked.end() ? std::pair<bool, uint64_t>{false, 0}
                                        : std::pair<bool, uint64_t>{true, it->second};
      };
      std::stable_sort(ids.begin(), ids.end(),
                       [&](const std::string& a, const std::string& b) { return key(a) < key(b); });
      ids.resize(PercentOfPacks(subset.percent, ids.size()));
      out.insert(ids.begin(), ids.end());
      break;
    }
  }
  return out;
}

}  // namespace

std::string VerifySubset::Spec() const {
  switch (kind) {
    case Kind::kAll:
      return "all";
    case Kind::kPercent: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%g%%", percent);
      return buf;
    }
    case Kind::kSlice:
      return std::to_string(k) + "/" + std::to_string(t);
  }
  return "";
}

std::string VerifySubset::Describe() const {
  switch (kind) {
    case Kind::kAll:
      return "all";
    case Kind::kPercent:
      return Spec() + ", least recently checked first";
    case Kind::kSlice:
      return "slice " + Spec();
  }
  return "";
}

Status ParseVerifySubset(const std::string& text, VerifySubset* out) {
  const std::string forms = "give N% (e.g. 10% or 2.5%) or K/T (e.g. 3/7)";
  auto digits = [](const std::string& s) {
    return !s.empty() && s.size() <= 20 &&
           std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (!text.empty() && text.back() == '%') {
    const std::string num = text.substr(0, text.size() - 1);
    const size_t dot = num.find('.');
    const bool well_formed = dot == std::string::npos
                                 ? digits(num)
                                 : digits(num.substr(0, dot)) && digits(num.substr(dot + 1));
    double p = 0;
    if (!well_formed ||
        std::from_chars(num.data(), num.data() + num.size(), p).ptr != num.data() + num.size())
      return Status::InvalidArgument("'" + text + "' is not a percentage: " + forms);
    if (!(p > 0 && p <= 100))
      return Status::InvalidArgument("'" + text +
                                     "': the percentage must be above 0% and at most 100%");
    *out = VerifySubset{VerifySubset::Kind::kPercent, p, 1, 1};
    return Status::OK();
  }
  if (const size_t slash = text.find('/'); slash != std::string::npos) {
    const std::string ks = text.substr(0, slash), ts = text.substr(slash + 1);
    uint64_t k = 0, t = 0;
    if (!digits(ks) || !digits(ts) ||
        std::from_chars(ks.data(), ks.data() + ks.size(), k).ec != std::errc() ||
        std::from_chars(ts.data(), ts.data() + ts.size(), t).ec != std::errc())
      return Status::InvalidArgument("'" + text + "' is not a slice K/T: " + forms);
    if (t < 1 || t > std::numeric_limits<uint32_t>::max())
      return Status::InvalidArgument("'" + text + "': T must be from 1 to 4294967295");
    if (k < 1 || k > t)
      return Status::InvalidArgument("'" + text + "': K must be from 1 to T (" + std::to_string(t) +
                                     ")");
    *out = VerifySubset{VerifySubset::Kind::kSlice, 100, static_cast<uint32_t>(k),
                        static_cast<uint32_t>(t)};
    return Status::OK();
  }
  return Status::InvalidArgument("'" + text + "' is not a subset: " + forms);
}

size_t PercentOfPacks(double percent, size_t packs) {
  if (packs == 0 || !(percent > 0)) return 0;
  if (percent >= 100) return packs;
  // The margin keeps a product that is a whole number in decimals (10% of
  // 30) from rounding up past it in binary.
  const double n = std::ceil(percent * static_cast<double>(packs) / 100 - 1e-9);
  return std::clamp<size_t>(n < 1 ? 1 : static_cast<size_t>(n), 1, packs);
}

Status RunVerify(Repository* repo, const VerifyOptions& opt, VerifyResult* out) {
  const uint64_t started = static_cast<uint64_t>(NowMicros());
  const bool reading = opt.read_data || opt.subset.kind != VerifySubset::Kind::kAll;
  if (const VerifySubset& u = opt.subset;
      (u.kind == VerifySubset::Kind::kPercent && !(u.percent > 0 && u.percent <= 100)) ||
      (u.kind == VerifySubset::Kind::kSlice && !(u.k >= 1 && u.k <= u.t)))
    return Status::InvalidArgument("verify: subset " + u.Spec() + " is out of range");
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
  // When each pack was last read whole. A damaged check file costs only its
  // schedule (its packs look older than they are): it is no damage to data.
  std::map<std::string, uint64_t> last_checked;
  std::vector<Status> cerrors;
  if (Status s = repo->ReadLastChecks(&last_checked, &cerrors); !s.ok())
    out->errors.push_back("reading check files: " + s.message());
  for (const auto& e : cerrors)
    out->warnings.push_back(e.message() +
                            " (ignored: the packs it names may only be read again sooner "
                            "than their turn)");

  // 2. Backup records, their volume indexes and VSS documents. A record's
  // index_file is not checked: garbage collection replaces index files, so
  // it is informational (FORMAT.md §5, §7); a backup whose chunks no index
  // file holds is reported by CheckBackups.
  std::vector<BackupRecord> backups;
  std::vector<Status> record_errors;
  GNOMON_RETURN_IF_ERROR(repo->ListBackups(&backups, &record_errors));
  for (const auto& e : record_errors) out->errors.push_back(e.message());
  out->backups = backups.size();
  for (const auto& b : backups) {
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

  // 3. Packs: each claimed pack must exist and hold what the index says;
  // the selected ones are read whole.
  const std::set<std::string> to_read =
      reading ? SelectPacks(claims, opt.subset, last_checked) : std::set<std::string>();
  out->claimed_packs = claims.size();
  out->packs_read = to_read.size();
  if (reading) {
    out->subset = opt.subset.Spec();
    out->subset_description = opt.subset.Describe();
  }
  std::vector<std::pair<std::string, std::vector<PackEntry>>> work(claims.begin(), claims.end());
  std::mutex mu;
  uint64_t done = 0;
  DataFindings found;
  std::vector<PackCheck> checks;
  tbb::enumerable_thread_specific<ChunkDecompressor> decs;
  tbb::task_arena arena(opt.threads > 0 ? opt.threads : DefaultThreads());
  arena.execute([&] {
    tbb::parallel_for_each(work.begin(), work.end(), [&](const auto& item) {
      if (opt.cancel && opt.cancel->load()) return;
      const bool read = to_read.count(item.first) > 0;
      std::vector<std::string> errs, known_bad;
      DataFindings f;
      uint64_t bytes = 0;
      uint32_t result = kPackIntact;
      CheckPack(repo, item.first, item.second, read, quarantined, &decs.local(), &errs, &known_bad,
                &f, &bytes, &result);
      std::lock_guard<std::mutex> g(mu);
      out->errors.insert(out->errors.end(), errs.begin(), errs.end());
      out->warnings.insert(out->warnings.end(), known_bad.begin(), known_bad.end());
      found.bad.insert(f.bad.begin(), f.bad.end());
      found.unavailable.insert(f.unavailable.begin(), f.unavailable.end());
      found.intact.insert(f.intact.begin(), f.intact.end());
      found.patch_bases.insert(f.patch_bases.begin(), f.patch_bases.end());
      found.depth.insert(f.depth.begin(), f.depth.end());
      out->bytes_read += bytes;
      if (read) {
        out->chunks_read += item.second.size();
        checks.push_back({item.first, result});
      }
      if (opt.progress) opt.progress(Progress{"verify", item.first, ++done, work.size()});
    });
  });
  if (opt.cancel && opt.cancel->load()) return Status::Aborted("verify interrupted");
  std::sort(checks.begin(), checks.end(),
            [](const PackCheck& a, const PackCheck& b) { return a.pack < b.pack; });

  // A subset reads some packs only. For the others this run knows what
  // verify without --read-data knows: their header matches the index and
  // whether they can be opened; their copies count as intact unless
  // quarantined (the last proof of damage stands until their pack's turn),
  // and their patches' bases are unknown (found.patch_bases holds only the
  // patches read now). So LostDigests follows the base chains of the
  // patches read, counting an unread base intact unless its copies are
  // quarantined or unavailable, and takes the depths of unread copies from
  // the index (the same word CheckPack records for a read one). A patch in
  // an unread pack whose base is lost is found in its own pack's turn (and
  // quarantined then, its base's copies counting as proven damaged below);
  // until then no backup builds on it unseen: while a digest has no usable
  // copy, a backup neither deduplicates against a patch nor builds on a
  // parent's chain without reading it back (FORMAT.md §5a).
  std::set<BadChunk> proven = found.bad;  // copies whose bytes are known damaged
  for (const auto& q : quarantined)
    if (reading && claims.count(q.pack) && !to_read.count(q.pack)) proven.insert(q);
  for (const auto& [pack, entries] : claims)
    if (!to_read.count(pack))
      for (const auto& e : entries) found.depth.emplace(e.digest, e.patch_depth);

  // 4. What cannot serve a restore today: the copies that failed now (a
  // quarantined copy that reads intact still serves, as restore's last
  // resort); in packs not read, every quarantined or unreadable copy.
  std::set<BadChunk> bad = found.bad;
  bad.insert(found.unavailable.begin(), found.unavailable.end());
  for (const auto& q : quarantined)
    if (!to_read.count(q.pack)) bad.insert(q);
  const std::set<Digest> lost = LostDigests(claims, bad, found);

  // 5. New damage is quarantined, so the next backup stores that data
  // again; so are the patches read whose base chain damaged bytes break
  // (found now, or quarantined earlier in a pack not read now; not a pack
  // that is merely away), which no backup may build on.
  std::vector<BadChunk> fresh;
  for (const auto& b : found.bad)
    if (!quarantined.count(b)) fresh.push_back(b);
  if (reading && !proven.empty()) {
    const std::set<Digest> broken = LostDigests(claims, proven, found);
    for (const auto& [pack, entries] : claims)  // one pass over the index
      for (const auto& e : entries)
        if (e.patch_depth && broken.count(e.digest) && !found.bad.count({pack, e.digest}) &&
            !quarantined.count({pack, e.digest}))
          fresh.push_back({pack, e.digest});
  }
  const Status qs = repo->WriteQuarantine(fresh);
  if (!qs.ok())
    out->errors.push_back("recording damaged chunks failed: " + qs.message());
  else
    out->quarantined = fresh.size();
  for (const auto& b : quarantined)
    if (found.intact.count(b))
      out->warnings.push_back(repo->PackPath(b.pack) + ": quarantined chunk " + b.digest.Hex() +
                              " reads intact now; backups still store its data anew, and "
                              "restore uses it only when no other copy exists");
  for (const auto& b : fresh) since.emplace(b.digest, NowRfc3339());

  // 6. The check file: which packs this run read whole, and what it found.
  // A damaged pack's entry says its damage is in a quarantine file of this
  // run; if that write failed, the pack is left out, so it is not taken as
  // checked until its damage is recorded.
  if (!qs.ok()) std::erase_if(checks, [](const PackCheck& c) { return c.result == kPackDamaged; });
  if (!checks.empty()) {
    if (Status s = repo->WriteCheckFile(started, checks); !s.ok()) {
      // Only the schedule suffers (a read-only copy of a repository cannot
      // record its checks): no damage to data, so a warning.
      out->warnings.push_back("recording which packs were read failed: " + s.message() +
                              " (they count as not checked by this run)");
    } else {
      for (const auto& c : checks) {
        uint64_t& t = last_checked[c.pack];
        t = std::max(t, started);
      }
    }
  }
  for (const auto& [id, entries] : claims) {
    auto it = last_checked.find(id);
    if (it == last_checked.end())
      ++out->never_checked;
    else if (out->oldest_check == 0 || it->second < out->oldest_check)
      out->oldest_check = it->second;
  }

  // 7. Which backups are whole, repaired or damaged; what runs left behind.
  std::string note;
  if (!reading)
    note = " (without --read-data a quarantined copy counts as damaged)";
  else if (opt.subset.kind != VerifySubset::Kind::kAll)
    note = " (a quarantined copy in a pack this run did not read counts as damaged)";
  CheckBackups(repo, backups, known, lost, since, note, out);
  ReportLeftovers(repo, claims, damaged_index, out);
  return Status::OK();
}

}  // namespace gnomon
