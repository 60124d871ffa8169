#include "engine/bench_job.h"

#include <fcntl.h>
#include <oneapi/tbb/enumerable_thread_specific.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "engine/backup_job.h"
#include "engine/source_volume.h"
#include "format/codec.h"
#include "format/digest.h"
#include "format/env.h"
#include "format/repository.h"

namespace gnomon {

namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

StageResult Stage(std::string name, std::string detail, int threads, uint64_t bytes,
                  double seconds) {
  StageResult r;
  r.stage = std::move(name);
  r.detail = std::move(detail);
  r.threads = threads;
  r.bytes = bytes;
  r.seconds = seconds;
  r.mb_per_s = seconds > 0 ? static_cast<double>(bytes) / seconds / 1e6 : 0;
  return r;
}

// A scratch directory removed with everything in it, whatever happens.
struct ScratchDir {
  std::string path;
  ~ScratchDir() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
  }
};

// Volume-like data for benchmarking the engine without a source: text-like
// runs (compressible, not repetitive), random runs, and zeros, in 64 KiB
// pieces mixed about as a used filesystem mixes them.
void Generate(uint8_t* p, size_t n, uint64_t seed) {
  static const char* kWords[] = {"block ", "volume ", "snapshot ", "writer ", "freeze ",
                                 "chunk ", "index ",  "restore ",  "the ",    "of ",
                                 "and ",   "data ",   "file ",     "kernel ", "\n"};
  uint64_t x = seed | 1;
  auto next = [&x] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  for (size_t off = 0; off < n;) {
    const size_t len = std::min<size_t>(64u << 10, n - off);
    const uint64_t kind = next() % 20;
    if (kind < 9) {  // text
      size_t i = 0;
      while (i < len) {
        const char* w = kWords[next() % std::size(kWords)];
        size_t wl = std::min(std::strlen(w), len - i);
        std::memcpy(p + off + i, w, wl);
        i += wl;
        if (i < len && next() % 8 == 0) p[off + i++] = static_cast<uint8_t>('0' + next() % 10);
      }
    } else if (kind < 15) {  // random (compressed media, encrypted files)
      for (size_t i = 0; i < len; i += 8) {
        uint64_t v = next();
        std::memcpy(p + off + i, &v, std::min<size_t>(8, len - i));
      }
    } else {  // zeros
      std::memset(p + off, 0, len);
    }
    off += len;
  }
}

// Drops the page cache of a file or block device (what is clean of it), so
// the next read comes from the disk.
void DropCache(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

Status WriteGenerated(const std::string& path, uint64_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno("creating " + path, errno);
  std::vector<uint8_t> buf(4u << 20);
  Status s;
  for (uint64_t off = 0; off < size && s.ok(); off += buf.size()) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
    Generate(buf.data(), n, off / buf.size() + 1);
    if (::write(fd, buf.data(), n) != static_cast<ssize_t>(n))
      s = Status::FromErrno("writing " + path, errno ? errno : ENOSPC);
  }
  ::close(fd);
  return s;
}

class Bench {
 public:
  Bench(const BenchOptions& opt, BenchResult* out) : opt_(opt), out_(out) {
    threads_ = opt.threads > 0 ? opt.threads : DefaultThreads();
    out_->threads = threads_;
  }
  Status Run();

 private:
  bool Cancelled() const { return opt_.cancel && opt_.cancel->load(); }
  // Reads the source sequentially, keeping every k-th chunk as the sample.
  Status ReadSource(const std::string& path);
  // Runs fn(i) for every sample chunk on `threads` threads; returns seconds.
  template <typename Fn>
  double ForEachChunk(int threads, Fn fn) {
    tbb::task_arena arena(threads);
    auto t0 = Clock::now();
    arena.execute([&] { tbb::parallel_for(size_t{0}, chunks_.size(), fn); });
    return Since(t0);
  }
  Status WriteStage(const std::string& dir);
  Status PipelineStage(const std::string& dir, const std::string& path);

  const BenchOptions& opt_;
  BenchResult* out_;
  int threads_ = 1;
  std::vector<std::vector<uint8_t>> chunks_;  // the sample
  double hash_seconds_ = 0;                   // on all threads, zero test included
  double compress_seconds_ = 0;               // at the pipeline's level, on all threads
  uint64_t stored_bytes_ = 0;                 // the sample compressed at that level
};

Status Bench::ReadSource(const std::string& path) {
  uint64_t size = 0;
  GNOMON_RETURN_IF_ERROR(VolumeSize(path, &size));
  if (opt_.max_bytes) size = std::min(size, opt_.max_bytes);
  if (size == 0) return Status::InvalidArgument(path + ": nothing to read (size 0)");
  out_->source_bytes = size;
  if (opt_.drop_cache) DropCache(path);
  // As a snapshot: not O_EXCL, because a benchmark only reads, so a mounted
  // device is fine here.
  SourceVolume src;
  GNOMON_RETURN_IF_ERROR(SourceVolume::OpenSnapshot(path, 0, size, &src));
  const size_t chunk = opt_.chunk_size;
  const uint64_t total_chunks = (size + chunk - 1) / chunk;
  const uint64_t want = std::max<uint64_t>(1, opt_.sample_bytes / chunk);
  const uint64_t every = std::max<uint64_t>(1, total_chunks / want);
  std::vector<uint8_t> buf(chunk);
  Status s;
  auto t0 = Clock::now();
  for (uint64_t i = 0, off = 0; off < size && s.ok(); ++i, off += chunk) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, size - off));
    s = src.ReadAt(off, n, buf.data());
    if (s.ok() && i % every == 0 && chunks_.size() < want)
      chunks_.emplace_back(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
    if (Cancelled()) s = Status::Aborted("benchmark interrupted");
    if (opt_.progress) opt_.progress(Progress{"bench: read", path, off + n, size});
  }
  const double secs = Since(t0);
  GNOMON_RETURN_IF_ERROR(s);
  out_->stages.push_back(
      Stage("read", opt_.drop_cache ? "sequential, page cache dropped first" : "sequential", 1,
            size, secs));
  for (const auto& c : chunks_) out_->sample_bytes += c.size();
  return Status::OK();
}

Status Bench::WriteStage(const std::string& dir) {
  const std::string path = dir + "/write-test";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno("creating " + path, errno);
  Status s;
  auto t0 = Clock::now();
  for (size_t i = 0; i < chunks_.size() && s.ok(); ++i)
    if (::write(fd, chunks_[i].data(), chunks_[i].size()) !=
        static_cast<ssize_t>(chunks_[i].size()))
      s = Status::FromErrno("writing " + path, errno ? errno : ENOSPC);
  if (s.ok() && ::fdatasync(fd) != 0) s = Status::FromErrno("fdatasync " + path, errno);
  const double secs = Since(t0);
  ::close(fd);
  ::unlink(path.c_str());
  GNOMON_RETURN_IF_ERROR(s);
  out_->stages.push_back(
      Stage("write", "sequential + fdatasync, in " + dir, 1, out_->sample_bytes, secs));
  const StageResult& w = out_->stages.back();
  // The write stage sees compressed bytes: it sustains more volume MB/s.
  out_->write_limit =
      stored_bytes_ ? w.mb_per_s * static_cast<double>(out_->sample_bytes) / stored_bytes_ : 0;
  return Status::OK();
}

Status Bench::PipelineStage(const std::string& dir, const std::string& path) {
  RepoConfig cfg;
  cfg.chunk_size = opt_.chunk_size;
  cfg.compression_level = opt_.pipeline_level;
  const std::string repo_path = dir + "/repo";
  GNOMON_RETURN_IF_ERROR(Repository::Init(Env::Default(), repo_path, cfg));
  std::unique_ptr<Repository> repo;
  GNOMON_RETURN_IF_ERROR(
      Repository::Open(Env::Default(), repo_path, LockMode::kExclusive, "bench", &repo));
  if (opt_.drop_cache) DropCache(path);
  BackupOptions bo;
  bo.sources = {path};
  bo.threads = threads_;
  bo.all_blocks = opt_.all_blocks;
  bo.max_level = opt_.pipeline_level;  // the stage measures the level it reports
  bo.progress = opt_.progress;
  bo.cancel = opt_.cancel;
  BackupResult res;
  GNOMON_RETURN_IF_ERROR(RunPipelineOnly(repo.get(), bo, out_->source_bytes, &res));
  const auto& v = res.record.volumes.at(0);
  StageResult r = Stage("pipeline", "read, hash, dedup, compress, write packs", threads_,
                        v.stats.bytes, v.stats.seconds);
  r.level = opt_.pipeline_level;
  r.ratio = v.stats.new_stored_bytes
                ? static_cast<double>(v.stats.bytes) / static_cast<double>(v.stats.new_stored_bytes)
                : 0;
  out_->stages.push_back(r);
  out_->block_map = v.block_map;
  out_->pipeline_bytes_read = v.stats.bytes_read;
  return Status::OK();
}

Status Bench::Run() {
  ScratchDir scratch;
  std::string base = opt_.scratch_dir;
  if (base.empty()) base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  std::string tmpl = base + "/gnomon-bench-XXXXXX";
  if (!::mkdtemp(tmpl.data()))
    return Status::FromErrno("creating a scratch directory in " + base, errno);
  scratch.path = tmpl;

  std::string path = opt_.source;
  out_->source = path;
  if (path.empty()) {
    path = scratch.path + "/generated";
    out_->source = "generated data";
    GNOMON_RETURN_IF_ERROR(
        WriteGenerated(path, opt_.max_bytes ? opt_.max_bytes : opt_.sample_bytes));
  }
  GNOMON_RETURN_IF_ERROR(ReadSource(path));
  const uint64_t sample = out_->sample_bytes;

  std::vector<uint8_t> zero(chunks_.size());
  auto zero_secs = ForEachChunk(1, [&](size_t i) { zero[i] = IsAllZero(chunks_[i]); });
  out_->stages.push_back(
      Stage("zero-test", "stops at the first non-zero byte", 1, sample, zero_secs));
  std::vector<int> thread_counts = {1};
  if (threads_ > 1) thread_counts.push_back(threads_);
  for (int t : thread_counts) {
    volatile uint64_t sink = 0;
    double secs = ForEachChunk(t, [&](size_t i) {
      if (!IsAllZero(chunks_[i])) sink = sink + Digest::Of(chunks_[i]).bytes[0];
    });
    out_->stages.push_back(Stage("hash", "XXH3-128, zero test included", t, sample, secs));
    if (t == threads_) hash_seconds_ = secs;
  }
  std::vector<int> levels = opt_.levels;
  if (std::find(levels.begin(), levels.end(), opt_.pipeline_level) == levels.end())
    levels.push_back(opt_.pipeline_level);
  for (int level : levels) {
    for (int t : thread_counts) {
      if (Cancelled()) return Status::Aborted("benchmark interrupted");
      tbb::enumerable_thread_specific<ChunkCompressor> comp(level);
      tbb::enumerable_thread_specific<std::vector<uint8_t>> outbuf;
      std::vector<uint64_t> stored(chunks_.size());
      double secs = ForEachChunk(t, [&](size_t i) {
        if (zero[i]) return;  // the pipeline never compresses a zero chunk
        comp.local().Compress(chunks_[i], &outbuf.local());
        stored[i] = outbuf.local().size();
      });
      uint64_t total = 0;
      for (uint64_t s : stored) total += s;
      StageResult r = Stage("compress", "zstd", t, sample, secs);
      r.level = level;
      r.ratio = total ? static_cast<double>(sample) / static_cast<double>(total) : 0;
      out_->stages.push_back(r);
      if (level == opt_.pipeline_level && t == threads_) {
        compress_seconds_ = secs;
        stored_bytes_ = total;
      }
    }
  }
  GNOMON_RETURN_IF_ERROR(WriteStage(scratch.path));
  GNOMON_RETURN_IF_ERROR(PipelineStage(scratch.path, path));

  out_->read_limit = out_->stages.front().mb_per_s;
  out_->cpu_limit = hash_seconds_ + compress_seconds_ > 0
                        ? static_cast<double>(sample) / (hash_seconds_ + compress_seconds_) / 1e6
                        : 0;
  out_->bound_by = "read";
  double least = out_->read_limit;
  if (out_->cpu_limit > 0 && out_->cpu_limit < least) {
    least = out_->cpu_limit;
    out_->bound_by = "cpu";
  }
  if (out_->write_limit > 0 && out_->write_limit < least) out_->bound_by = "write";
  return Status::OK();
}

}  // namespace

Status RunBench(const BenchOptions& opt, BenchResult* out) {
  *out = BenchResult{};
  if (opt.chunk_size < 4096 || opt.sample_bytes < opt.chunk_size)
    return Status::InvalidArgument("the sample must hold at least one chunk");
  Bench b(opt, out);
  return b.Run();
}

}  // namespace gnomon
