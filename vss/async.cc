#include "vss/async.h"

#include <chrono>

namespace gnomon::vss {

std::shared_ptr<Async> Async::Start(std::function<HResult(const std::atomic<bool>&)> op) {
  std::shared_ptr<Async> a(new Async());
  Async* raw = a.get();
  a->thread_ = std::thread([raw, op = std::move(op)] {
    HResult hr = op(raw->cancelled_);
    std::lock_guard<std::mutex> g(raw->mu_);
    raw->result_ = hr;
    raw->done_ = true;
    raw->cv_.notify_all();
  });
  return a;
}

std::shared_ptr<Async> Async::Finished(HResult hr) {
  std::shared_ptr<Async> a(new Async());
  a->result_ = hr;
  a->done_ = true;
  return a;
}

Async::~Async() {
  if (thread_.joinable()) thread_.join();
}

HResult Async::Wait(uint32_t timeout_ms) {
  std::unique_lock<std::mutex> l(mu_);
  if (timeout_ms == UINT32_MAX) {
    cv_.wait(l, [&] { return done_; });
  } else if (!cv_.wait_for(l, std::chrono::milliseconds(timeout_ms), [&] { return done_; })) {
    return VSS_S_ASYNC_PENDING;
  }
  return S_OK_;
}

HResult Async::QueryStatus() const {
  std::lock_guard<std::mutex> g(mu_);
  if (!done_) return VSS_S_ASYNC_PENDING;
  if (result_ == S_OK_) return VSS_S_ASYNC_FINISHED;
  return result_;
}

HResult Async::Cancel() {
  std::lock_guard<std::mutex> g(mu_);
  if (done_) return result_ == S_OK_ ? VSS_S_ASYNC_FINISHED : result_;
  cancelled_ = true;
  return S_OK_;
}

HResult WaitForAsync(const std::shared_ptr<Async>& a) {
  a->Wait();  // woken by the operation's end; its own steps have the deadlines
  const HResult hr = a->QueryStatus();
  return hr == VSS_S_ASYNC_FINISHED ? S_OK_ : hr;
}

}  // namespace gnomon::vss
