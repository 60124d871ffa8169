#include "engine/verify_job.h"

#include <oneapi/tbb/enumerable_thread_specific.h>
#include <oneapi/tbb/parallel_for_each.h>
#include <oneapi/tbb/task_arena.h>

#include <map>
#include <mutex>
#include <set>

#include "engine/backup_job.h"
#include "format/patch.h"

namespace gnomon {

namespace {

// What the index files say a pack holds, keyed by pack id.
using PackClaims = std::map<std::string, std::vector<PackEntry>>;

void CheckPack(Repository* repo, const ChunkIndex& index, const std::string& id,
               const std::vector<PackEntry>& claimed, bool read_data, ChunkDecompressor* dec,
               std::vector<std::string>* errors, uint64_t* bytes_read) {
  std::shared_ptr<RandomAccessFile> f;
  Status s = repo->OpenPack(id, &f);
  if (!s.ok()) {
    errors->push_back(s.message());
    return;
  }
  std::vector<PackEntry> actual;
  s = ReadPackHeader(*f, &actual);
  if (!s.ok()) {
    errors->push_back(s.message());
    return;
  }
  std::map<Digest, PackEntry> by_digest;
  for (const auto& e : actual) by_digest.emplace(e.digest, e);
  for (const auto& c : claimed) {
    auto it = by_digest.find(c.digest);
    if (it == by_digest.end() || it->second.offset != c.offset ||
        it->second.stored_len != c.stored_len || it->second.raw_len != c.raw_len ||
        it->second.codec != c.codec) {
      errors->push_back(f->path() + ": chunk " + c.digest.Hex() +
                        " is not where the chunk index says it is");
    }
  }
  if (!read_data) return;
  std::vector<uint8_t> stored, raw;
  for (const auto& e : actual) {
    std::string where =
        f->path() + ": chunk " + e.digest.Hex() + " at offset " + std::to_string(e.offset);
    stored.resize(e.stored_len);
    raw.resize(e.raw_len);
    s = f->ReadAt(e.offset, e.stored_len, stored.data());
    if (s.ok()) s = dec->Decompress(e.codec, stored, raw.data(), e.raw_len, where);
    if (s.ok() && Digest::Of(raw) != e.digest)
      s = Status::Corruption(where + ": content does not match its digest (data is damaged)");
    if (s.ok() && e.patch_depth) {
      // A patch is only as good as its base: it must exist and be shallower.
      PatchView pv;
      s = DecodePatch(raw, where, &pv);
      const ChunkLocation* base = pv.base.IsZero() ? nullptr : index.Find(pv.base);
      if (s.ok() && !pv.base.IsZero() && !base)
        s = Status::Corruption(where + ": its base chunk " + pv.base.Hex() + " is missing");
      if (s.ok() && base && base->patch_depth >= e.patch_depth)
        s = Status::Corruption(where + ": its base does not descend in depth");
    }
    if (!s.ok()) errors->push_back(s.message());
    *bytes_read += e.stored_len;
  }
}

}  // namespace

Status RunVerify(Repository* repo, const VerifyOptions& opt, VerifyResult* out) {
  // 1. Index files: each must decode; together they say what each pack holds.
  std::vector<std::string> index_files;
  GNOMON_RETURN_IF_ERROR(repo->ListIndexFiles(&index_files));
  out->index_files = index_files.size();
  PackClaims claims;
  ChunkIndex index;
  for (const auto& n : index_files) {
    std::vector<PackSummary> packs;
    Status s = repo->ReadIndexFile(n, &packs);
    if (!s.ok()) {
      out->errors.push_back(s.message());
      continue;
    }
    for (const auto& p : packs) {
      auto& c = claims[p.id];
      c.insert(c.end(), p.entries.begin(), p.entries.end());
      index.AddPack(p);
    }
  }
  out->chunks = index.size();

  // 2. Backup records and their volume indexes: every chunk must be indexed.
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
    for (const auto& v : b.volumes) {
      ++out->volumes;
      VolumeIndex vi;
      Status s = repo->ReadVolumeIndex(v, &vi);
      if (!s.ok()) {
        out->errors.push_back("backup " + b.id + ": " + s.message());
        continue;
      }
      uint64_t missing = 0;
      Digest first;
      for (const auto& d : vi.slots)
        if (!d.IsZero() && !index.Contains(d) && missing++ == 0) first = d;
      if (missing)
        out->errors.push_back("backup " + b.id + " volume '" + v.name +
                              "': " + std::to_string(missing) +
                              " chunks are in no index (first: " + first.Hex() + ")");
    }
  }

  // 3. Packs: each claimed pack must exist and hold what the index says.
  std::vector<std::string> on_disk;
  GNOMON_RETURN_IF_ERROR(repo->ListPacks(&on_disk));
  out->packs = on_disk.size();
  for (const auto& id : on_disk)
    if (!claims.count(id))
      out->warnings.push_back(repo->PackPath(id) +
                              ": pack is referenced by no index (left by an interrupted backup)");
  std::vector<std::pair<std::string, std::vector<PackEntry>>> work(claims.begin(), claims.end());
  std::mutex mu;
  uint64_t done = 0;
  tbb::enumerable_thread_specific<ChunkDecompressor> decs;
  tbb::task_arena arena(opt.threads > 0 ? opt.threads : DefaultThreads());
  arena.execute([&] {
    tbb::parallel_for_each(work.begin(), work.end(), [&](const auto& item) {
      if (opt.cancel && opt.cancel->load()) return;
      std::vector<std::string> errs;
      uint64_t bytes = 0;
      CheckPack(repo, index, item.first, item.second, opt.read_data, &decs.local(), &errs, &bytes);
      std::lock_guard<std::mutex> g(mu);
      out->errors.insert(out->errors.end(), errs.begin(), errs.end());
      out->bytes_read += bytes;
      if (opt.read_data) out->chunks_read += item.second.size();
      if (opt.progress) opt.progress(Progress{"verify", item.first, ++done, work.size()});
    });
  });
  if (opt.cancel && opt.cancel->load()) return Status::Aborted("verify interrupted");
  return Status::OK();
}

}  // namespace gnomon
