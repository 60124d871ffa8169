// Micro-benchmarks of the imaging pipeline's stages and of the whole
// pipeline on an in-memory (tmpfs) volume. Sample data is real: chunks of
// $GNOMON_BENCH_VOLUME if set (e.g. the image from make-volume.sh), else the
// files in /usr/bin and /usr/share/doc, so compression sees what it would
// see on a disk. Run: build/bench/micro_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "engine/backup_job.h"
#include "engine/restore_job.h"
#include "format/codec.h"
#include "format/digest.h"

namespace gnomon {
namespace {

namespace fs = std::filesystem;
constexpr size_t kChunk = 1 << 20;
constexpr size_t kSample = 64 << 20;

// 64 MiB of non-zero 1 MiB chunks of real data.
const std::vector<uint8_t>& Sample() {
  static std::vector<uint8_t> data = [] {
    std::vector<uint8_t> d;
    d.reserve(kSample);
    std::vector<uint8_t> chunk(kChunk);
    auto take = [&](const std::string& path, size_t stride) {
      std::ifstream f(path, std::ios::binary);
      for (size_t off = 0; d.size() < kSample && f; off += stride) {
        f.seekg(static_cast<std::streamoff>(off));
        f.read(reinterpret_cast<char*>(chunk.data()), kChunk);
        if (f.gcount() == static_cast<std::streamsize>(kChunk) && !IsAllZero(chunk))
          d.insert(d.end(), chunk.begin(), chunk.end());
      }
    };
    if (const char* v = std::getenv("GNOMON_BENCH_VOLUME")) take(v, 31 * kChunk);
    std::string cat;
    for (const char* dir : {"/usr/bin", "/usr/share/doc"}) {
      std::error_code ec;
      for (auto& e : fs::recursive_directory_iterator(dir, ec)) {
        if (d.size() >= kSample) break;
        if (!e.is_regular_file(ec)) continue;
        std::ifstream f(e.path(), std::ios::binary);
        cat.append(std::istreambuf_iterator<char>(f), {});
        while (cat.size() >= kChunk && d.size() < kSample) {
          d.insert(d.end(), cat.begin(), cat.begin() + kChunk);
          cat.erase(0, kChunk);
        }
      }
    }
    d.resize(kSample);
    return d;
  }();
  return data;
}

void BM_Xxh3_128(benchmark::State& st) {
  const auto& d = Sample();
  size_t off = 0;
  for (auto _ : st) {
    benchmark::DoNotOptimize(Digest::Of({d.data() + off, kChunk}));
    off = (off + kChunk) % kSample;
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * kChunk));
}
BENCHMARK(BM_Xxh3_128);

void BM_ZeroDetect_AllZero(benchmark::State& st) {
  std::vector<uint8_t> z(kChunk, 0);
  for (auto _ : st) benchmark::DoNotOptimize(IsAllZero(z));
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * kChunk));
}
BENCHMARK(BM_ZeroDetect_AllZero);

void BM_ZstdCompress(benchmark::State& st) {
  const auto& d = Sample();
  ChunkCompressor c(static_cast<int>(st.range(0)));
  std::vector<uint8_t> out;
  size_t off = 0, in = 0, stored = 0;
  for (auto _ : st) {
    c.Compress({d.data() + off, kChunk}, &out);
    in += kChunk;
    stored += out.size();
    off = (off + kChunk) % kSample;
  }
  st.SetBytesProcessed(static_cast<int64_t>(in));
  st.counters["ratio"] = static_cast<double>(in) / static_cast<double>(stored);
}
BENCHMARK(BM_ZstdCompress)->Arg(1)->Arg(3)->Arg(6);

void BM_ZstdDecompress(benchmark::State& st) {
  const auto& d = Sample();
  ChunkCompressor c(3);
  std::vector<std::vector<uint8_t>> stored(kSample / kChunk);
  std::vector<Codec> codecs(stored.size());
  for (size_t i = 0; i < stored.size(); ++i)
    codecs[i] = c.Compress({d.data() + i * kChunk, kChunk}, &stored[i]);
  ChunkDecompressor dec;
  std::vector<uint8_t> out(kChunk);
  size_t i = 0;
  for (auto _ : st) {
    auto s = dec.Decompress(codecs[i], stored[i], out.data(), kChunk, "bench");
    benchmark::DoNotOptimize(s);
    i = (i + 1) % stored.size();
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * kChunk));
}
BENCHMARK(BM_ZstdDecompress);

// The whole backup pipeline: a 256 MiB volume (the sample four times over,
// a quarter of it zeros) on tmpfs into a repository on tmpfs, so the number
// is the engine's, not the disk's.
class PipelineFixture {
 public:
  PipelineFixture() {
    dir_ = "/dev/shm/gnomon-bench-" + std::to_string(getpid());
    fs::create_directories(dir_);
    std::ofstream f(dir_ + "/vol", std::ios::binary);
    const auto& d = Sample();
    std::vector<uint8_t> zeros(kSample, 0);
    for (int i = 0; i < 4; ++i) {
      // Vary each copy so dedup does not make copies 2-4 free.
      std::vector<uint8_t> copy = d;
      for (size_t off = 0; off < copy.size(); off += 4096) copy[off] ^= static_cast<uint8_t>(i);
      f.write(reinterpret_cast<const char*>(i == 3 ? zeros.data() : copy.data()), kSample);
    }
  }
  ~PipelineFixture() { fs::remove_all(dir_); }
  std::string dir_;
};

void BM_BackupPipeline(benchmark::State& st) {
  static PipelineFixture fx;
  for (auto _ : st) {
    st.PauseTiming();
    fs::remove_all(fx.dir_ + "/repo");
    if (!Repository::Init(Env::Default(), fx.dir_ + "/repo", RepoConfig{}).ok()) std::abort();
    std::unique_ptr<Repository> repo;
    if (!Repository::Open(Env::Default(), fx.dir_ + "/repo", LockMode::kExclusive, "bench", &repo)
             .ok())
      std::abort();
    st.ResumeTiming();
    BackupOptions o;
    o.sources = {fx.dir_ + "/vol"};
    o.threads = static_cast<int>(st.range(0));
    BackupResult r;
    if (!RunBackup(repo.get(), o, &r).ok()) st.SkipWithError("backup failed");
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * 4 * kSample));
}
BENCHMARK(BM_BackupPipeline)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_RestorePipeline(benchmark::State& st) {
  static PipelineFixture fx;
  fs::remove_all(fx.dir_ + "/repo");
  Repository::Init(Env::Default(), fx.dir_ + "/repo", RepoConfig{});
  std::unique_ptr<Repository> repo;
  Repository::Open(Env::Default(), fx.dir_ + "/repo", LockMode::kExclusive, "bench", &repo);
  BackupOptions b;
  b.sources = {fx.dir_ + "/vol"};
  BackupResult br;
  if (!RunBackup(repo.get(), b, &br).ok()) std::abort();
  for (auto _ : st) {
    RestoreOptions o;
    o.backup = br.record.id;
    o.target = fx.dir_ + "/out";
    o.overwrite = true;
    o.threads = static_cast<int>(st.range(0));
    RestoreResult r;
    if (!RunRestore(repo.get(), o, &r).ok()) st.SkipWithError("restore failed");
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * 4 * kSample));
}
BENCHMARK(BM_RestorePipeline)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace gnomon

BENCHMARK_MAIN();
