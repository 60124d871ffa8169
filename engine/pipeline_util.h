// Two small pieces every oneTBB pipeline here needs (backup, restore): a
// fixed set of reusable buffers handed from the first stage to the last, so
// steady state allocates nothing and memory is bounded by the token count;
// and a latch that keeps the first error any stage reports.
#pragma once

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "base/status.h"

namespace gnomon {

template <class T>
class BufferPool {
 public:
  // n buffers, each set up once by init (e.g. sized to a chunk).
  BufferPool(size_t n, const std::function<void(T&)>& init) {
    for (size_t i = 0; i < n; ++i) {
      auto t = std::make_unique<T>();
      init(*t);
      free_.push_back(std::move(t));
    }
  }
  // The pipeline's token count bounds what is taken, so one is always free.
  T* Take() {
    std::lock_guard<std::mutex> g(mu_);
    T* t = free_.back().release();
    free_.pop_back();
    return t;
  }
  void Give(T* t) {
    std::lock_guard<std::mutex> g(mu_);
    free_.emplace_back(t);
  }

 private:
  std::mutex mu_;
  std::vector<std::unique_ptr<T>> free_;
};

// The threads of a job that reads a repository (restore, copy), and the
// TBB arena that runs them: `requested` if set, else one per core, and from
// a remote store at least 8 (4 per core), since more requests in flight
// than cores keep the link busy while threads wait for answers. TBB keeps
// one worker per core unless told otherwise, hence the global_control.
class ReadArena {
 public:
  ReadArena(bool remote, int requested, int cores)
      : threads_(requested > 0 ? requested
                 : remote      ? std::max(8, 4 * cores)
                               : cores),
        workers_(tbb::global_control::max_allowed_parallelism,
                 std::max<size_t>(threads_, tbb::global_control::active_value(
                                                tbb::global_control::max_allowed_parallelism))),
        arena_(threads_) {}
  int threads() const { return threads_; }
  template <class F>
  void Execute(F&& f) {
    arena_.execute(std::forward<F>(f));
  }

 private:
  int threads_;
  tbb::global_control workers_;
  tbb::task_arena arena_;
};

class FirstError {
 public:
  void Set(const Status& s) {
    std::lock_guard<std::mutex> g(mu_);
    if (error_.ok()) error_ = s;
    failed_ = true;
  }
  // Cheap enough to ask for every chunk.
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  Status status() const {
    std::lock_guard<std::mutex> g(mu_);
    return error_;
  }

 private:
  mutable std::mutex mu_;
  Status error_;
  std::atomic<bool> failed_{false};
};

}  // namespace gnomon
