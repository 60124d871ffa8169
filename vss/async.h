// Async: the handle long requester operations return (IVssAsync). Wait
// returns once the operation has ended *whether or not it succeeded*;
// QueryStatus gives VSS_S_ASYNC_PENDING, VSS_S_ASYNC_FINISHED,
// VSS_S_ASYNC_CANCELLED or the operation's failure code.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "vss/codes.h"

namespace gnomon::vss {

class Async {
 public:
  // Runs op on its own thread. op polls `cancelled` between steps and returns
  // its result (S_OK, a failure, or VSS_S_ASYNC_CANCELLED).
  static std::shared_ptr<Async> Start(
      std::function<HResult(const std::atomic<bool>& cancelled)> op);
  // An operation that has already ended with hr.
  static std::shared_ptr<Async> Finished(HResult hr);
  ~Async();

  // S_OK once ended; VSS_S_ASYNC_PENDING if timeout_ms passed first.
  HResult Wait(uint32_t timeout_ms = UINT32_MAX);
  HResult QueryStatus() const;
  // S_OK if a running operation was asked to stop; else its final status.
  HResult Cancel();

 private:
  Async() = default;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  HResult result_ = S_OK_;
  std::atomic<bool> cancelled_{false};
  std::thread thread_;
};

// Wait until the operation ends, then QueryStatus, as the QEMU requester's
// WaitForAsync does; returns the final status mapped so that FINISHED is
// S_OK.
HResult WaitForAsync(const std::shared_ptr<Async>& a);

}  // namespace gnomon::vss
