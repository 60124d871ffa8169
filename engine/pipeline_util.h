// Two small pieces every oneTBB pipeline here needs (backup, restore): a
// fixed set of reusable buffers handed from the first stage to the last, so
// steady state allocates nothing and memory is bounded by the token count;
// and a latch that keeps the first error any stage reports.
#pragma once

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
