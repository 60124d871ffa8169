// Adaptive compression: while the source, not compression, limits a backup
// (a disk slower than the cores), spend the idle CPU on a higher zstd level,
// as `zstd --adapt` does for a stream. The serial read stage reports how
// much of the time it spends reading: always busy means the compressors
// wait for it, and the level goes up; often idle means it waits for them
// (no free token), and the level comes down, never below the repository's.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "format/codec.h"

namespace gnomon {

class LevelGovernor {
 public:
  using Clock = std::chrono::steady_clock;
  // floor: the repository's level; ceiling <= floor: a fixed level.
  LevelGovernor(int floor, int ceiling);
  int floor() const { return floor_; }
  int level() const { return level_.load(std::memory_order_relaxed); }

  // Read stage only (serial): brackets each read; every kPeriod of wall
  // time the share spent between the two moves the level.
  void ReadStarted(Clock::time_point now);
  void ReadDone(Clock::time_point now);
  // The decision itself, for one period: busy of wall spent reading.
  void Observe(Clock::duration busy, Clock::duration wall);

  static constexpr Clock::duration kPeriod = std::chrono::milliseconds(100);
  static constexpr int kMaxLevel = 19;  // zstd's highest without --ultra
  // Measured (bench/RESULTS.md, "Adaptive compression"): from the page cache
  // the reader is busy 3-60 % of the time; from a disk slower than
  // compression, 75-99 %. On 2 cores the thread that reads also compresses,
  // so even a source that limits the backup leaves the reader idle now and
  // then.
  static constexpr double kRaiseAbove = 0.75;  // the reader seldom waits
  static constexpr double kLowerBelow = 0.50;  // the reader waits for a token half the time

 private:
  const int floor_, ceiling_;
  std::atomic<int> level_;
  Clock::time_point period_start_{}, read_start_{};
  Clock::duration busy_{};
};

// Compresses raw at the governor's level if a sample of it compresses, at
// the floor if not. *level: the level of what *out holds (0: stored raw).
Codec CompressAdaptive(ChunkCompressor* c, const LevelGovernor& g, std::span<const uint8_t> raw,
                       std::vector<uint8_t>* out, std::vector<uint8_t>* scratch, int* level);

}  // namespace gnomon
