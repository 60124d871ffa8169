#include "engine/level_governor.h"

#include <algorithm>

namespace gnomon {

LevelGovernor::LevelGovernor(int floor, int ceiling)
    : floor_(floor), ceiling_(std::max(floor, std::min(ceiling, kMaxLevel))), level_(floor) {}

void LevelGovernor::ReadStarted(Clock::time_point now) {
  if (period_start_ == Clock::time_point{}) period_start_ = now;
  read_start_ = now;
}

void LevelGovernor::ReadDone(Clock::time_point now) {
  busy_ += now - read_start_;
  const Clock::duration wall = now - period_start_;
  if (wall < kPeriod) return;
  Observe(busy_, wall);
  busy_ = {};
  period_start_ = now;
}

void LevelGovernor::Observe(Clock::duration busy, Clock::duration wall) {
  if (wall <= Clock::duration{}) return;
  const double share = std::chrono::duration<double>(busy) / std::chrono::duration<double>(wall);
  int l = level_.load(std::memory_order_relaxed);
  if (share > kRaiseAbove && l < ceiling_)
    ++l;
  else if (share < kLowerBelow && l > floor_)
    --l;
  level_.store(l, std::memory_order_relaxed);
}

namespace {
// Whether a chunk is worth a level above the floor: eight 8 KiB slices
// spread over it, compressed together at level 1, shrink by a tenth. Wrong
// either way costs only time: a chunk judged incompressible is still
// compressed at the floor (zstd's fast levels pass over random bytes at 2
// GB/s), and one judged compressible wrongly costs a slow pass the
// governor then answers by lowering the level.
bool LooksCompressible(ChunkCompressor* c, std::span<const uint8_t> raw,
                       std::vector<uint8_t>* scratch) {
  constexpr size_t kSlices = 8, kSlice = 8 << 10;
  if (raw.size() < 2 * kSlices * kSlice) return true;
  thread_local std::vector<uint8_t> sample;
  sample.clear();
  for (size_t i = 0; i < kSlices; ++i) {
    const uint8_t* at = raw.data() + i * (raw.size() / kSlices);
    sample.insert(sample.end(), at, at + kSlice);
  }
  return c->Compress(sample, 1, scratch) == Codec::kZstd &&
         scratch->size() * 10 <= sample.size() * 9;
}
}  // namespace

Codec CompressAdaptive(ChunkCompressor* c, const LevelGovernor& g, std::span<const uint8_t> raw,
                       std::vector<uint8_t>* out, std::vector<uint8_t>* scratch, int* level) {
  // A chunk that does not compress (media, archives, encrypted data) stays
  // at the floor: a higher level gains next to nothing on it and runs 15
  // times slower on random bytes (zstd 1.5.4: 2 GB/s at level 2, 0.12 GB/s
  // at 6; bench/RESULTS.md, "Adaptive compression").
  int want = g.level();
  if (want > g.floor() && !LooksCompressible(c, raw, scratch)) want = g.floor();
  const Codec codec = c->Compress(raw, want, out);
  *level = codec == Codec::kRaw ? 0 : want;
  return codec;
}

}  // namespace gnomon
