// BackupComponents, the session itself: construction and release, the call
// order of the simple requester calls (initialize, context, backup state,
// metadata, PrepareForBackup, status, BackupComplete, AbortBackup) and the
// session's log. The heavy steps live beside it, one job a file (see
// vss/backup_components_internal.h for the map and the lock order).
#include "vss/backup_components_internal.h"

namespace gnomon::vss {

BackupComponents::BackupComponents(std::vector<std::shared_ptr<Writer>> writers,
                                   std::vector<std::shared_ptr<Provider>> providers,
                                   RequesterOptions options)
    : providers_(std::move(providers)), opt_(std::move(options)) {
  for (auto& w : writers) {
    auto s = std::make_unique<Slot>();
    s->writer = std::move(w);
    slots_.push_back(std::move(s));
  }
}

BackupComponents::~BackupComponents() { Release(); }

void BackupComponents::Release() {
  std::shared_ptr<Async> running;
  State state;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (released_) return;
    released_ = true;
    running = running_;
    state = state_;
  }
  if (running) CancelAndWait(running);
  {
    std::lock_guard<std::mutex> g(mu_);
    state = state_;
  }
  if (state == State::kPrepared || state == State::kSnapped || state == State::kFailed)
    AbortBackup();
  // BackupShutdown to every identified, responsive writer.
  std::vector<Slot*> shut;
  Guid set_id;
  {
    std::lock_guard<std::mutex> g(mu_);
    for (auto& s : slots_)
      if (s->identified && s->responsive) shut.push_back(s.get());
    if (snapshot_set_reached_) set_id = bcd_.snapshot_set_id;
  }
  if (state_ != State::kNew && state_ != State::kInit) Deliver(Event::kBackupShutdown, shut);
  // Auto-release: the snapshots go with the session.
  if (snapshot_set_reached_ && !aborted_) {
    for (auto& m : set_) {
      if (m.keep) continue;  // retained as a base for change tracking
      Log("DeleteSnapshot", m.provider->name());
      m.provider->DeleteSnapshot(m.snapshot_id);
    }
  }
  {
    std::lock_guard<std::mutex> g(mu_);
    watchdog_stop_ = true;
    cv_.notify_all();
  }
  if (watchdog_.joinable()) watchdog_.join();
  ReleaseSetLock();
}

void BackupComponents::CancelAndWait(const std::shared_ptr<Async>& running) {
  running->Cancel();
  {
    // A DoSnapshotSet waiting for the provider commit sleeps on cv_ and
    // checks its cancel flag when woken.
    std::lock_guard<std::mutex> g(mu_);
    cv_.notify_all();
  }
  running->Wait();
}

void BackupComponents::Log(const std::string& event, const std::string& target) {
  std::lock_guard<std::mutex> g(mu_);
  log_.push_back({event, target});
}

std::vector<EventRecord> BackupComponents::event_log() const {
  std::lock_guard<std::mutex> g(mu_);
  return log_;
}

double BackupComponents::frozen_ms() const {
  std::lock_guard<std::mutex> g(mu_);
  return frozen_ms_;
}

std::string BackupComponents::last_error() const {
  std::lock_guard<std::mutex> g(mu_);
  return last_error_;
}

bool BackupComponents::CancelRequested() const { return opt_.cancel && opt_.cancel->load(); }

HResult BackupComponents::CheckIdle() const {
  if (running_ && running_->QueryStatus() == VSS_S_ASYNC_PENDING) return VSS_E_BAD_STATE;
  return S_OK_;
}

std::shared_ptr<Async> BackupComponents::Run(std::function<HResult(const std::atomic<bool>&)> op) {
  auto a = Async::Start(std::move(op));
  running_ = a;
  return a;
}

HResult BackupComponents::InitializeForBackup() {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ != State::kNew) return VSS_E_BAD_STATE;
  state_ = State::kInit;
  return S_OK_;
}

HResult BackupComponents::SetContext(uint32_t context) {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ != State::kInit || context_set_) return VSS_E_BAD_STATE;
  if (context == ctx::kAll) return E_INVALIDARG_;  // for queries only
  bcd_.context = context;
  context_set_ = true;
  return S_OK_;
}

HResult BackupComponents::SetBackupState(bool select_components, bool bootable_system_state,
                                         BackupType type, bool partial_file_support) {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ != State::kInit && state_ != State::kMeta) return VSS_E_BAD_STATE;
  if (type == BackupType::kUndefined) return E_INVALIDARG_;
  bcd_.select_components = select_components;
  bcd_.bootable_system_state = bootable_system_state;
  bcd_.backup_type = type;
  bcd_.partial_file_support = partial_file_support;
  backup_state_set_ = true;
  return S_OK_;
}

HResult BackupComponents::GatherWriterMetadata(std::shared_ptr<Async>* async) {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ != State::kInit || CheckIdle() != S_OK_) return VSS_E_BAD_STATE;
  state_ = State::kMeta;
  if (bcd_.context & ctx::kNoWritersBit) {  // no writers take part in this context
    *async = Async::Finished(S_OK_);
    return S_OK_;
  }
  *async = Run([this](const std::atomic<bool>&) {
    std::vector<Slot*> all;
    for (auto& s : slots_)
      if (s->writer->initialized()) all.push_back(s.get());
    Deliver(Event::kIdentify, all);
    return S_OK_;  // writers that failed are simply absent
  });
  return S_OK_;
}

size_t BackupComponents::GetWriterMetadataCount() const {
  std::lock_guard<std::mutex> g(mu_);
  size_t n = 0;
  for (auto& s : slots_) n += s->identified;
  return n;
}

const WriterMetadata* BackupComponents::GetWriterMetadata(size_t i) const {
  std::lock_guard<std::mutex> g(mu_);
  for (auto& s : slots_)
    if (s->identified && i-- == 0) return &s->md;
  return nullptr;
}

HResult BackupComponents::PrepareForBackup(std::shared_ptr<Async>* async) {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ != State::kSet || !backup_state_set_ || CheckIdle() != S_OK_) return VSS_E_BAD_STATE;
  if (bcd_.context & ctx::kNoWritersBit) return VSS_E_BAD_STATE;
  // Like SetBackupState, every required component is a call the requester
  // must have made before PrepareForBackup.
  if (HResult hr = CheckRequiredLocked(); hr != S_OK_) return hr;
  state_ = State::kPrepared;
  *async = Run([this](const std::atomic<bool>&) {
    std::vector<Slot*> all;
    {
      std::lock_guard<std::mutex> g2(mu_);
      for (auto& s : slots_)
        if (s->identified && s->responsive) all.push_back(s.get());
    }
    // Vetoes here are seen through writer status; the requester decides.
    Deliver(Event::kPrepareBackup, all);
    return S_OK_;
  });
  return S_OK_;
}

HResult BackupComponents::GatherWriterStatus(std::shared_ptr<Async>* async) {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ == State::kNew || state_ == State::kInit || CheckIdle() != S_OK_)
    return VSS_E_BAD_STATE;
  gathered_.clear();
  for (auto& s : slots_) {
    if (!s->identified) continue;
    WriterStatus st;
    st.instance_id = s->md.instance_id;
    st.class_id = s->md.class_id;
    st.name = s->md.name;
    st.state = s->state;
    st.failure = s->failure;
    st.message = s->message;
    if (!s->responsive && st.failure == S_OK_) st.failure = VSS_E_WRITER_NOT_RESPONDING;
    gathered_.push_back(st);
  }
  *async = Async::Finished(S_OK_);
  return S_OK_;
}

size_t BackupComponents::GetWriterStatusCount() const {
  std::lock_guard<std::mutex> g(mu_);
  return gathered_.size();
}

HResult BackupComponents::GetWriterStatus(size_t i, WriterStatus* out) const {
  std::lock_guard<std::mutex> g(mu_);
  if (i >= gathered_.size()) return E_INVALIDARG_;
  *out = gathered_[i];
  return S_OK_;  // even for a failed writer: read state and failure
}

HResult BackupComponents::BackupComplete(std::shared_ptr<Async>* async) {
  {
    std::lock_guard<std::mutex> g(mu_);
    if (CheckIdle() != S_OK_) return VSS_E_BAD_STATE;
    if (bcd_.context & ctx::kNoWritersBit) return VSS_E_BAD_STATE;
    bool skipped = state_ == State::kPrepared;
    if (state_ != State::kSnapped && !skipped) return VSS_E_BAD_STATE;
    // Skipping DoSnapshotSet is legal only when no included file set needs
    // a snapshot (§5.4).
    if (skipped && SnapshotRequiredLocked()) return VSS_E_BAD_STATE;
    bcd_read_only_ = true;  // BackupComplete sees a read-only BCD
    state_ = State::kCompleted;
  }
  *async = Run([this](const std::atomic<bool>&) {
    std::vector<Slot*> parts;
    {
      std::lock_guard<std::mutex> g(mu_);
      parts = Participants();
    }
    Deliver(Event::kBackupComplete, parts);
    return S_OK_;
  });
  return S_OK_;
}

HResult BackupComponents::AbortBackup() {
  std::shared_ptr<Async> running;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (state_ == State::kNew) return VSS_E_BAD_STATE;
    if (state_ == State::kInit || state_ == State::kMeta || state_ == State::kCompleted ||
        state_ == State::kAborted)
      return S_OK_;  // nothing in progress
    running = running_;
  }
  if (running && running->QueryStatus() == VSS_S_ASYNC_PENDING) CancelAndWait(running);
  State state;
  {
    std::lock_guard<std::mutex> g(mu_);
    state = state_;
  }
  if (state == State::kPrepared || state == State::kSnapped || state == State::kFailed)
    AbortWriters("backup aborted by the requester");
  std::lock_guard<std::mutex> g(mu_);
  state_ = State::kAborted;
  ReleaseSetLock();
  return S_OK_;
}

}  // namespace gnomon::vss
