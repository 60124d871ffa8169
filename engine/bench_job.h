// `gnomon bench`: throughput of a source and of the engine on it. Reads the
// source (read-only, never written), keeps an evenly spread sample in
// memory, times each pipeline stage on that sample alone, runs the whole
// pipeline into a scratch repository, and names the stage that bounds it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/progress.h"
#include "format/config.h"

namespace gnomon {

struct BenchOptions {
  std::string source;                                   // file or block device; "" = generated data
  uint64_t max_bytes = 0;                               // bytes of the source to use; 0 = all
  uint64_t sample_bytes = 256ull << 20;                 // held in memory for the CPU stages
  std::vector<int> levels = {1, 3};                     // zstd levels for the compress stage
  int pipeline_level = RepoConfig{}.compression_level;  // the repository default
  uint32_t chunk_size = 4u << 20;
  int threads = 0;          // 0 = all cores
  bool all_blocks = false;  // pipeline: image every byte, not only used blocks
  bool drop_cache = false;  // drop the source's page cache before each read
  std::string scratch_dir;  // scratch repository and write test; "" = $TMPDIR or /tmp
  ProgressFn progress;
  const std::atomic<bool>* cancel = nullptr;
};

struct StageResult {
  std::string stage;  // read, zero-test, hash, compress, write, pipeline
  std::string detail;
  int threads = 1;
  int level = 0;  // compress and pipeline
  uint64_t bytes = 0;
  double seconds = 0;
  double mb_per_s = 0;
  double ratio = 0;  // compress and pipeline: input bytes / output bytes
};

struct BenchResult {
  std::string source;
  uint64_t source_bytes = 0;  // bytes of the source used
  uint64_t sample_bytes = 0;
  int threads = 1;
  std::vector<StageResult> stages;
  // What each part of the pipeline could sustain, in MB/s of volume, from
  // the stage measurements: read (serial), cpu (hash and compress on every
  // thread), write (serial, of compressed bytes); and the least of them.
  double read_limit = 0, cpu_limit = 0, write_limit = 0;
  std::string bound_by;   // read | cpu | write
  std::string block_map;  // what the pipeline run used
  uint64_t pipeline_bytes_read = 0;
};

Status RunBench(const BenchOptions& opt, BenchResult* out);

}  // namespace gnomon
