#include "vss/backup_components.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <set>

namespace gnomon::vss {

using Clock = std::chrono::steady_clock;

// One writer as the session sees it.
struct BackupComponents::Slot {
  std::shared_ptr<Writer> writer;
  WriterMetadata md;
  bool identified = false;
  WriterState state = WriterState::kStable;
  HResult failure = S_OK_;
  std::string message;
  bool responsive = true;
  bool got_post_snapshot = false;
  // The freeze window: armed when Freeze is delivered, cancelled when Thaw
  // is, both under mu_ so the watchdog never sees one without the other
  // (the timer race of KB 915331).
  bool armed = false;
  Clock::time_point deadline;
  std::shared_ptr<Job> freeze_job;
};

// One handler call in flight. Shared with the handler's thread, which may
// outlive the session if the writer hangs: it owns everything it touches.
struct BackupComponents::Job {
  std::mutex mu;
  std::atomic<bool> done{false};  // read by the watchdog without the batch lock
  bool ok = false;
  std::string exception;
  detail::EventContext ctx;
  std::shared_ptr<SessionView> view;
  std::vector<ComponentRecord> comps;
  bool read_only = false;
  WriterMetadata md;  // Identify: arrives with the identity, leaves as the WMD
};

namespace {

const char* EventName(int ev) { return WriterEventName(static_cast<WriterEvent>(ev)); }

WriterState FailedStateFor(int ev) {
  static const WriterState s[] = {WriterState::kFailedAtIdentify,
                                  WriterState::kFailedAtPrepareBackup,
                                  WriterState::kFailedAtPrepareSnapshot,
                                  WriterState::kFailedAtFreeze,
                                  WriterState::kFailedAtThaw,
                                  WriterState::kFailedAtPostSnapshot,
                                  WriterState::kStable /* abort */,
                                  WriterState::kFailedAtBackupComplete,
                                  WriterState::kFailedAtBackupShutdown};
  return s[ev];
}

WriterState SuccessStateFor(int ev) {
  static const WriterState s[] = {WriterState::kStable,
                                  WriterState::kStable,
                                  WriterState::kWaitingForFreeze,
                                  WriterState::kWaitingForThaw,
                                  WriterState::kWaitingForPostSnapshot,
                                  WriterState::kWaitingForBackupComplete,
                                  WriterState::kStable,
                                  WriterState::kStable,
                                  WriterState::kStable};
  return s[ev];
}

// Shared by the handler threads of one delivery and its waiter.
struct Batch {
  std::mutex mu;
  std::condition_variable cv;
};

}  // namespace

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
  if (running) {
    running->Cancel();
    running->Wait();
  }
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

std::shared_ptr<SessionView> BackupComponents::MakeView() const {
  auto v = std::make_shared<SessionView>();
  v->backup_type = bcd_.backup_type;
  v->select_components = bcd_.select_components;
  v->bootable_system_state = bcd_.bootable_system_state;
  v->partial_file_support = bcd_.partial_file_support;
  v->context = bcd_.context;
  v->snapshot_set_id = bcd_.snapshot_set_id;
  std::vector<VolumeIdentity> vols;
  for (const auto& m : set_) {
    v->volumes.push_back(m.volume.path);
    v->volume_providers.emplace_back(m.volume.path, m.provider->name());
    v->snapshot_ids.emplace_back(m.volume.path, m.snapshot_id.ToString());
    vols.push_back(m.volume);
  }
  for (const auto& s : bcd_.snapshots) v->snapshot_devices.emplace_back(s.volume, s.device);
  v->path_affected = [vols](const std::string& p) { return PathOnVolumes(p, false, vols); };
  return v;
}

void BackupComponents::MarkFailed(Slot* s, Event ev, HResult hr, const std::string& msg) {
  // Caller holds mu_. A writer keeps its first failure.
  if (IsFailedState(s->state) && s->failure != S_OK_) return;
  s->state = FailedStateFor(static_cast<int>(ev));
  s->failure = hr;
  s->message = msg;
  if (!last_error_.empty()) last_error_ += "; ";
  last_error_ += "writer '" + s->writer->name() + "' failed at " + EventName(static_cast<int>(ev)) +
                 ": " + DescribeHResult(hr) + (msg.empty() ? "" : ": " + msg);
}

bool BackupComponents::Deliver(Event ev, const std::vector<Slot*>& slots) {
  if (slots.empty()) return true;
  const int evi = static_cast<int>(ev);
  auto batch = std::make_shared<Batch>();
  std::vector<std::shared_ptr<Job>> jobs(slots.size());
  std::vector<Clock::time_point> deadlines(slots.size());
  std::vector<bool> sent(slots.size(), false);
  std::shared_ptr<SessionView> view;
  {
    std::lock_guard<std::mutex> g(mu_);
    view = MakeView();
  }
  for (size_t i = 0; i < slots.size(); ++i) {
    Slot* s = slots[i];
    auto job = std::make_shared<Job>();
    job->view = view;
    job->ctx.session = view.get();
    job->ctx.set_id_valid = ev == Event::kPrepareSnapshot || ev == Event::kFreeze ||
                            ev == Event::kThaw || ev == Event::kPostSnapshot;
    {
      std::lock_guard<std::mutex> g(mu_);
      if (ev == Event::kFreeze) {
        if (aborted_) continue;
        s->armed = true;
        s->deadline = Clock::now() + std::chrono::milliseconds(s->writer->freeze_timeout_ms());
        s->freeze_job = job;
        deadlines[i] = s->deadline;
      } else if (ev == Event::kThaw) {
        if (aborted_) continue;  // the abort thaws instead
        deadlines[i] = s->deadline;
        s->armed = false;
      } else {
        deadlines[i] = Clock::now() + std::chrono::milliseconds(opt_.event_timeout_ms);
      }
      if (ev == Event::kPostSnapshot) s->got_post_snapshot = true;
      if (ev == Event::kPrepareBackup || ev == Event::kPostSnapshot ||
          ev == Event::kBackupComplete) {
        for (const auto& c : bcd_.components)
          if (c.class_id == s->writer->class_id() && c.instance_id == s->writer->instance_id())
            job->comps.push_back(c);
        job->read_only = bcd_read_only_;
      }
      log_.push_back({EventName(evi), s->writer->name()});
    }
    jobs[i] = job;
    sent[i] = true;
    std::shared_ptr<Writer> w = s->writer;
    if (ev == Event::kIdentify) {
      job->md.class_id = w->class_id();
      job->md.instance_id = w->instance_id();
      job->md.name = w->name();
      job->md.instance_name = w->instance_name();
      job->md.usage = w->usage();
      job->md.source = w->source();
      job->md.level = w->level();
    }
    Guid set_id = view->snapshot_set_id;
    std::thread([job, w, ev, batch, set_id] {
      detail::CurrentEvent() = &job->ctx;
      bool ok = false;
      std::string exc;
      WriterComponents comps;
      for (auto& c : job->comps) comps.emplace_back(&c, &job->read_only);
      try {
        switch (ev) {
          case Event::kIdentify:
            ok = w->OnIdentify(&job->md);
            break;
          case Event::kPrepareBackup:
            ok = w->OnPrepareBackup(&comps);
            break;
          case Event::kPrepareSnapshot:
            ok = w->OnPrepareSnapshot();
            break;
          case Event::kFreeze:
            ok = w->OnFreeze();
            break;
          case Event::kThaw:
            ok = w->OnThaw();
            break;
          case Event::kPostSnapshot:
            ok = w->OnPostSnapshot(&comps);
            break;
          case Event::kAbort:
            ok = w->OnAbort();
            break;
          case Event::kBackupComplete:
            ok = w->OnBackupComplete(&comps);
            break;
          case Event::kBackupShutdown:
            ok = w->OnBackupShutdown(set_id);
            break;
        }
      } catch (const std::exception& e) {
        ok = false;
        exc = e.what();
      } catch (...) {
        ok = false;
        exc = "unknown exception";
      }
      detail::CurrentEvent() = nullptr;
      {
        std::lock_guard<std::mutex> g(batch->mu);
        job->ok = ok;
        job->exception = exc;
        job->done = true;
      }
      batch->cv.notify_all();
    }).detach();
  }

  // Wait for every handler, its deadline, or (for Freeze/Thaw) an abort:
  // the watchdog has then already marked the late writer.
  {
    std::unique_lock<std::mutex> l(batch->mu);
    for (;;) {
      bool pending = false;
      auto now = Clock::now();
      for (size_t i = 0; i < jobs.size(); ++i)
        if (sent[i] && !jobs[i]->done && now < deadlines[i]) pending = true;
      if (!pending) break;
      bool stop = false;
      if (ev == Event::kFreeze || ev == Event::kThaw) {
        l.unlock();
        {
          std::lock_guard<std::mutex> g(mu_);
          stop = aborted_;
        }
        l.lock();
      }
      if (stop) break;
      batch->cv.wait_for(l, std::chrono::milliseconds(20));
    }
  }

  bool all_ok = true;
  std::lock_guard<std::mutex> bl(batch->mu);
  std::lock_guard<std::mutex> g(mu_);
  for (size_t i = 0; i < slots.size(); ++i) {
    if (!sent[i]) continue;
    Slot* s = slots[i];
    Job* job = jobs[i].get();
    if (!job->done) {
      all_ok = false;
      s->responsive = false;
      if (ev == Event::kFreeze || ev == Event::kThaw)
        MarkFailed(s, ev, VSS_E_WRITERERROR_TIMEOUT,
                   "the freeze window of " + std::to_string(s->writer->freeze_timeout_ms()) +
                       " ms ran out");
      else
        MarkFailed(s, ev, VSS_E_WRITER_NOT_RESPONDING,
                   "no answer within " + std::to_string(opt_.event_timeout_ms) + " ms");
      continue;
    }
    if (job->ctx.not_responding) {
      // A writer in another process that died or dropped its connection.
      all_ok = false;
      s->responsive = false;
      if (ev != Event::kIdentify)
        MarkFailed(s, ev, VSS_E_WRITER_NOT_RESPONDING, job->ctx.failure_message);
      continue;
    }
    if (ev == Event::kIdentify) {
      if (job->ok) {
        s->md = job->md;
        s->identified = true;
        s->state = WriterState::kStable;
      } else {
        all_ok = false;  // absent from metadata and status, as in VSS
      }
      continue;
    }
    if (!job->read_only && !job->comps.empty()) {
      for (const auto& c : job->comps)
        if (auto* rec = bcd_.Find(c.class_id, c.logical_path, c.name)) *rec = c;
    }
    if (ev == Event::kAbort || ev == Event::kBackupShutdown) {
      if (!job->ok && ev == Event::kBackupShutdown)
        MarkFailed(s, ev, job->ctx.failure ? job->ctx.failure : VSS_E_WRITERERROR_NONRETRYABLE,
                   job->ctx.failure_message);
      else if (!IsFailedState(s->state))
        s->state = WriterState::kStable;
      continue;
    }
    if (job->ok && job->ctx.failure == S_OK_) {
      if (!IsFailedState(s->state)) s->state = SuccessStateFor(evi);
      continue;
    }
    if (job->ok) {
      // A non-fatal failure: reported, the writer carries on (§2.2).
      if (s->message.empty()) s->message = job->ctx.failure_message;
      s->failure = job->ctx.failure;
      if (!IsFailedState(s->state)) s->state = SuccessStateFor(evi);
      continue;
    }
    all_ok = false;
    std::string msg = !job->exception.empty()
                          ? "handler threw an exception: " + job->exception
                          : (job->ctx.failure_message.empty() ? "handler returned false"
                                                              : job->ctx.failure_message);
    HResult hr = job->ctx.failure != S_OK_ ? job->ctx.failure : VSS_E_WRITERERROR_NONRETRYABLE;
    MarkFailed(s, ev, hr, msg);
  }
  return all_ok;
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

HResult BackupComponents::AddComponent(const Guid& instance_id, const Guid& class_id,
                                       ComponentType type, const std::string& logical_path,
                                       const std::string& name) {
  std::lock_guard<std::mutex> g(mu_);
  if ((state_ != State::kMeta && state_ != State::kSet) || CheckIdle() != S_OK_)
    return VSS_E_BAD_STATE;
  if (bcd_.context & ctx::kNoWritersBit) return VSS_E_BAD_STATE;
  Slot* slot = nullptr;
  for (auto& s : slots_)
    if (s->identified && s->md.instance_id == instance_id && s->md.class_id == class_id)
      slot = s.get();
  if (!slot) return VSS_E_OBJECT_NOT_FOUND;
  const ComponentInfo* info = nullptr;
  for (const auto& c : slot->md.components)
    if (c.logical_path == logical_path && c.name == name && c.type == type) info = &c;
  if (!info) return VSS_E_OBJECT_NOT_FOUND;
  if (bcd_.Find(class_id, logical_path, name)) return VSS_E_OBJECT_ALREADY_EXISTS;
  ComponentRecord r;
  r.class_id = class_id;
  r.instance_id = instance_id;
  r.writer_name = slot->md.name;
  r.type = type;
  r.logical_path = logical_path;
  r.name = name;
  bcd_.components.push_back(r);
  return S_OK_;
}

HResult BackupComponents::StartSnapshotSet(Guid* set_id) {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ != State::kMeta || CheckIdle() != S_OK_) return VSS_E_BAD_STATE;
  // One snapshot set in creation per system, as the VSS service enforces.
  ::mkdir(opt_.runtime_dir.c_str(), 0755);
  std::string path = opt_.runtime_dir + "/snapshot-set.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) {
    last_error_ = "cannot open " + path + ": " + std::strerror(errno);
    return errno == EACCES ? E_ACCESSDENIED_ : VSS_E_UNEXPECTED;
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    last_error_ = "another snapshot set is being created on this system (" + path + ")";
    return VSS_E_SNAPSHOT_SET_IN_PROGRESS;
  }
  set_lock_fd_ = fd;
  bcd_.snapshot_set_id = Guid::Random();
  *set_id = bcd_.snapshot_set_id;
  state_ = State::kSet;
  return S_OK_;
}

void BackupComponents::ReleaseSetLock() {
  if (set_lock_fd_ >= 0) {
    ::close(set_lock_fd_);
    set_lock_fd_ = -1;
  }
}

HResult BackupComponents::AddToSnapshotSet(const std::string& volume, const std::string& provider,
                                           Guid* snapshot_id) {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ != State::kSet || CheckIdle() != S_OK_) return VSS_E_BAD_STATE;
  if (set_.size() >= 64) return VSS_E_MAXIMUM_NUMBER_OF_VOLUMES_REACHED;
  Member m;
  std::string err;
  if (!IdentifyVolume(volume, &m.volume, &err)) {
    last_error_ = err;
    return VSS_E_OBJECT_NOT_FOUND;
  }
  for (const auto& o : set_)
    if (o.volume.real_path == m.volume.real_path) return VSS_E_OBJECT_ALREADY_EXISTS;
  std::string reasons;
  for (const auto& p : providers_) {
    if (!provider.empty() && p->name() != provider) continue;
    std::string why;
    if (p->IsVolumeSupported(m.volume, &why)) {
      m.provider = p;
      break;
    }
    reasons += (reasons.empty() ? "" : "; ") + p->name() + " provider: " + why;
  }
  if (!m.provider) {
    if (!provider.empty() && reasons.empty()) {
      last_error_ = "no provider named '" + provider + "'";
      return VSS_E_PROVIDER_NOT_REGISTERED;
    }
    last_error_ = volume + ": no provider can snapshot this volume (" + reasons + ")";
    return provider.empty() ? VSS_E_VOLUME_NOT_SUPPORTED : VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER;
  }
  m.snapshot_id = Guid::Random();
  *snapshot_id = m.snapshot_id;
  set_.push_back(std::move(m));
  return S_OK_;
}

HResult BackupComponents::SetBackupOptions(const Guid& class_id, ComponentType type,
                                           const std::string& logical_path, const std::string& name,
                                           const std::string& options) {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ != State::kSet || CheckIdle() != S_OK_) return VSS_E_BAD_STATE;
  auto* r = bcd_.Find(class_id, logical_path, name);
  if (!r || r->type != type) return VSS_E_OBJECT_NOT_FOUND;
  r->backup_options = options;
  return S_OK_;
}

HResult BackupComponents::SetPreviousBackupStamp(const Guid& class_id, ComponentType type,
                                                 const std::string& logical_path,
                                                 const std::string& name,
                                                 const std::string& stamp) {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ != State::kSet || CheckIdle() != S_OK_) return VSS_E_BAD_STATE;
  auto* r = bcd_.Find(class_id, logical_path, name);
  if (!r || r->type != type) return VSS_E_OBJECT_NOT_FOUND;
  r->previous_backup_stamp = stamp;
  return S_OK_;
}

bool BackupComponents::Included(const Slot& s) const {
  if (!s.identified) return false;
  if (!bcd_.select_components) return true;  // volume mode: every writer takes part
  for (const auto& c : bcd_.components)
    if (c.class_id == s.md.class_id && c.instance_id == s.md.instance_id) return true;
  return false;
}

std::vector<BackupComponents::Slot*> BackupComponents::Participants() const {
  std::vector<Slot*> out;
  for (auto& s : slots_)
    if (Included(*s) && s->responsive && !IsFailedState(s->state)) out.push_back(s.get());
  return out;
}

std::vector<BackupComponents::Slot*> BackupComponents::AtLevel(ApplicationLevel level) const {
  // Levels other than back-end and system (unknown, system-rm) go with the
  // front end: frozen first, thawed last.
  auto group_of = [](ApplicationLevel l) {
    return l == ApplicationLevel::kBackEnd || l == ApplicationLevel::kSystem
               ? l
               : ApplicationLevel::kFrontEnd;
  };
  std::vector<Slot*> out;
  for (Slot* s : Participants())
    if (group_of(s->writer->level()) == level) out.push_back(s);
  return out;
}

HResult BackupComponents::PrepareForBackup(std::shared_ptr<Async>* async) {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ != State::kSet || !backup_state_set_ || CheckIdle() != S_OK_) return VSS_E_BAD_STATE;
  if (bcd_.context & ctx::kNoWritersBit) return VSS_E_BAD_STATE;
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

bool BackupComponents::IsSnapshotRequired() const {
  std::lock_guard<std::mutex> g(mu_);
  return SnapshotRequiredLocked();
}

bool BackupComponents::SnapshotRequiredLocked() const {
  const uint32_t bit = fsbt::SnapshotBitFor(bcd_.backup_type);
  for (auto& s : slots_) {
    if (!Included(*s)) continue;
    for (const auto& c : s->md.components) {
      bool included = !bcd_.select_components;
      for (const auto& r : bcd_.components) {
        if (r.class_id != s->md.class_id) continue;
        // Explicitly added, or implicitly as part of an added component set.
        const std::string set_path = r.FullPath();
        if ((r.logical_path == c.logical_path && r.name == c.name) || c.logical_path == set_path ||
            c.logical_path.rfind(set_path + "\\", 0) == 0)
          included = true;
      }
      if (!included) continue;
      for (const auto& f : c.files)
        if (f.mask & bit) return true;
    }
  }
  return false;
}

HResult BackupComponents::RunProviders(const char* step, HResult (Provider::*fn)(const Guid&)) {
  std::vector<std::shared_ptr<Provider>> distinct;
  for (const auto& m : set_)
    if (std::find(distinct.begin(), distinct.end(), m.provider) == distinct.end())
      distinct.push_back(m.provider);
  for (const auto& p : distinct) {
    Log(step, p->name());
    HResult hr = ((*p).*fn)(bcd_.snapshot_set_id);
    if (Failed(hr)) {
      std::lock_guard<std::mutex> g(mu_);
      last_error_ += (last_error_.empty() ? "" : "; ") + p->name() + " provider failed at " + step +
                     ": " + DescribeHResult(hr) +
                     (p->last_error().empty() ? "" : ": " + p->last_error());
      // Codes outside a provider's documented set are reported as such.
      switch (hr) {
        case VSS_E_PROVIDER_VETO:
        case VSS_E_INSUFFICIENT_STORAGE:
        case VSS_E_VOLUME_NOT_SUPPORTED_BY_PROVIDER:
        case VSS_E_OBJECT_NOT_FOUND:
          return hr;
        default:
          return VSS_E_UNEXPECTED_PROVIDER_ERROR;
      }
    }
  }
  return S_OK_;
}

void BackupComponents::AbortWriters(const std::string& why) {
  std::vector<Slot*> targets;
  bool reached;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (aborted_) return;
    aborted_ = true;
    if (!why.empty()) last_error_ += (last_error_.empty() ? "" : "; ") + why;
    for (auto& s : slots_)
      if (Included(*s) && !s->got_post_snapshot && s->responsive) targets.push_back(s.get());
    for (auto& s : slots_) s->armed = false;
    reached = snapshot_set_reached_;
  }
  Deliver(Event::kAbort, targets);
  if (reached) RunProviders("AbortSnapshots", &Provider::AbortSnapshots);
}

void BackupComponents::Watchdog() {
  std::unique_lock<std::mutex> l(mu_);
  while (!watchdog_stop_) {
    cv_.wait_for(l, std::chrono::milliseconds(20));
    if (watchdog_stop_ || aborted_) continue;
    std::string why;
    if (CancelRequested()) why = "backup cancelled";
    auto now = Clock::now();
    for (auto& s : slots_) {
      if (!s->armed || now < s->deadline) continue;
      s->armed = false;
      bool freeze_returned = false;
      if (s->freeze_job) {
        // Lock order: mu_ then a job's batch mutex is never taken here; the
        // job's done flag is read racily but only ever goes false -> true.
        freeze_returned = s->freeze_job->done;
      }
      if (IsFailedState(s->state) && s->failure != S_OK_) continue;
      s->state = freeze_returned ? WriterState::kFailedAtThaw : WriterState::kFailedAtFreeze;
      s->failure = VSS_E_WRITERERROR_TIMEOUT;
      s->message = "the freeze window of " + std::to_string(s->writer->freeze_timeout_ms()) +
                   " ms ran out before Thaw";
      why += (why.empty() ? "" : "; ") + std::string("writer '") + s->writer->name() +
             "': " + s->message;
    }
    if (!why.empty()) {
      l.unlock();
      AbortWriters(why);  // thaws now, whatever the snapshot thread is doing
      l.lock();
    }
  }
}

HResult BackupComponents::DoSnapshotSet(std::shared_ptr<Async>* async) {
  std::lock_guard<std::mutex> g(mu_);
  bool no_writers = bcd_.context & ctx::kNoWritersBit;
  if (!(state_ == State::kPrepared || (no_writers && state_ == State::kSet)) ||
      CheckIdle() != S_OK_)
    return VSS_E_BAD_STATE;
  do_snapshot_running_ = true;
  watchdog_stop_ = false;
  watchdog_ = std::thread([this] { Watchdog(); });
  *async = Run([this](const std::atomic<bool>& cancelled) {
    HResult hr = DoSnapshotSetWork(cancelled);
    {
      std::lock_guard<std::mutex> g2(mu_);
      watchdog_stop_ = true;
      cv_.notify_all();
      state_ = hr == S_OK_ ? State::kSnapped : State::kFailed;
      do_snapshot_running_ = false;
    }
    if (watchdog_.joinable()) watchdog_.join();
    ReleaseSetLock();  // the set is created (or failed): others may start theirs
    return hr;
  });
  return S_OK_;
}

HResult BackupComponents::DoSnapshotSetWork(const std::atomic<bool>& cancelled) {
  auto stop = [&](HResult hr, const std::string& why) {
    AbortWriters(why);
    return hr;
  };
  auto interrupted = [&] {
    std::lock_guard<std::mutex> g(mu_);
    return aborted_ || cancelled.load() || CancelRequested();
  };
  // The first failing writer's code: what the requester should show.
  auto writer_failure = [&]() -> HResult {
    std::lock_guard<std::mutex> g(mu_);
    for (auto& s : slots_)
      if (IsFailedState(s->state) && s->failure != S_OK_) return s->failure;
    return VSS_E_UNEXPECTED_WRITER_ERROR;
  };

  std::vector<Slot*> parts;
  {
    std::lock_guard<std::mutex> g(mu_);
    parts = Participants();
  }
  // 1. PrepareForSnapshot. A failure fails the set (design choice: that
  //    writer will not freeze).
  if (!Deliver(Event::kPrepareSnapshot, parts)) return stop(writer_failure(), "");
  if (interrupted()) return stop(VSS_S_ASYNC_CANCELLED, "backup cancelled");

  // 2. Providers prepare each volume.
  {
    std::lock_guard<std::mutex> g(mu_);
    snapshot_set_reached_ = true;
  }
  for (const auto& m : set_) {
    Log("BeginPrepareSnapshot", m.provider->name());
    HResult hr = m.provider->BeginPrepareSnapshot(bcd_.snapshot_set_id, m.snapshot_id, m.volume);
    if (Failed(hr))
      return stop(hr, m.provider->name() + " provider cannot prepare " + m.volume.path + ": " +
                          m.provider->last_error());
  }
  if (HResult hr = RunProviders("EndPrepareSnapshots", &Provider::EndPrepareSnapshots); Failed(hr))
    return stop(hr, "");

  // 3. Freeze, front-end writers first, the system level (filesystems) last.
  const auto freeze_start = Clock::now();
  struct FrozenTimer {  // however this function leaves the frozen period
    BackupComponents* bc;
    Clock::time_point start;
    ~FrozenTimer() {
      std::lock_guard<std::mutex> g(bc->mu_);
      bc->frozen_ms_ = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    }
  };
  std::optional<FrozenTimer> frozen_timer(std::in_place, this, freeze_start);
  for (ApplicationLevel level :
       {ApplicationLevel::kFrontEnd, ApplicationLevel::kBackEnd, ApplicationLevel::kSystem}) {
    std::vector<Slot*> group;
    {
      std::lock_guard<std::mutex> g(mu_);
      group = AtLevel(level);
    }
    if (!Deliver(Event::kFreeze, group)) return stop(writer_failure(), "");
    if (interrupted()) return stop(writer_failure(), "backup cancelled during freeze");
  }

  // 4. The provider commit, inside the flush-and-hold window.
  if (HResult hr = RunProviders("PreCommitSnapshots", &Provider::PreCommitSnapshots); Failed(hr))
    return stop(hr, "");
  auto commit = Async::Start([this](const std::atomic<bool>&) {
    return RunProviders("CommitSnapshots", &Provider::CommitSnapshots);
  });
  const auto hold_end = Clock::now() + std::chrono::milliseconds(opt_.hold_window_ms);
  while (commit->Wait(20) == VSS_S_ASYNC_PENDING) {
    if (interrupted()) {
      AbortWriters("backup cancelled during the provider commit");
      commit->Wait();
      return writer_failure();
    }
    if (Clock::now() >= hold_end) {
      AbortWriters("the provider commit overran the flush-and-hold window of " +
                   std::to_string(opt_.hold_window_ms) + " ms");
      commit->Wait();  // the clone must end before its files are removed
      RunProviders("AbortSnapshots", &Provider::AbortSnapshots);
      return VSS_E_HOLD_WRITES_TIMEOUT;
    }
  }
  if (HResult hr = commit->QueryStatus(); hr != VSS_S_ASYNC_FINISHED) return stop(hr, "");
  if (HResult hr = RunProviders("PostCommitSnapshots", &Provider::PostCommitSnapshots); Failed(hr))
    return stop(hr, "");

  // 5. Thaw, in reverse: filesystems first, front-end applications last.
  for (ApplicationLevel level :
       {ApplicationLevel::kSystem, ApplicationLevel::kBackEnd, ApplicationLevel::kFrontEnd}) {
    std::vector<Slot*> group;
    {
      std::lock_guard<std::mutex> g(mu_);
      if (aborted_) return writer_failure();
      group = AtLevel(level);
    }
    if (!Deliver(Event::kThaw, group)) return stop(writer_failure(), "");
  }
  frozen_timer.reset();  // everything is thawed
  {
    std::lock_guard<std::mutex> g(mu_);
    if (aborted_) return writer_failure();
  }
  if (HResult hr = RunProviders("PreFinalCommitSnapshots", &Provider::PreFinalCommitSnapshots);
      Failed(hr))
    return stop(hr, "");

  // 6. PostSnapshot: the snapshot exists; a failure here is the requester's
  //    call (no Abort).
  {
    std::lock_guard<std::mutex> g(mu_);
    for (const auto& m : set_) {
      SnapshotProperties p;
      if (m.provider->GetSnapshotProperties(m.snapshot_id, &p) == S_OK_)
        bcd_.snapshots.push_back(
            {m.snapshot_id, m.volume.path, m.provider->name(), p.device, p.offset, p.size});
    }
    parts = Participants();
  }
  Deliver(Event::kPostSnapshot, parts);
  if (HResult hr = RunProviders("PostFinalCommitSnapshots", &Provider::PostFinalCommitSnapshots);
      Failed(hr))
    return stop(hr, "");
  return S_OK_;
}

HResult BackupComponents::GetSnapshotProperties(const Guid& snapshot_id,
                                                SnapshotProperties* out) const {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ != State::kSnapped && state_ != State::kCompleted) return VSS_E_BAD_STATE;
  for (const auto& m : set_)
    if (m.snapshot_id == snapshot_id) return m.provider->GetSnapshotProperties(snapshot_id, out);
  return VSS_E_OBJECT_NOT_FOUND;
}

HResult BackupComponents::CheckSnapshotsIntact(std::string* why) const {
  std::lock_guard<std::mutex> g(mu_);
  for (const auto& m : set_)
    if (HResult hr = m.provider->CheckSnapshotIntact(m.snapshot_id); Failed(hr)) {
      *why = m.provider->last_error();
      return hr;
    }
  return S_OK_;
}

HResult BackupComponents::SetBackupSucceeded(const Guid& instance_id, const Guid& class_id,
                                             ComponentType type, const std::string& logical_path,
                                             const std::string& name, bool succeeded) {
  std::lock_guard<std::mutex> g(mu_);
  bool skipped = state_ == State::kPrepared && !do_snapshot_running_;
  if ((state_ != State::kSnapped && !skipped) || bcd_read_only_ || CheckIdle() != S_OK_)
    return VSS_E_BAD_STATE;
  auto* r = bcd_.Find(class_id, logical_path, name);
  if (!r || r->type != type || r->instance_id != instance_id) return VSS_E_OBJECT_NOT_FOUND;
  r->backup_succeeded = succeeded;
  return S_OK_;
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

HResult BackupComponents::KeepSnapshot(const Guid& snapshot_id, const std::string& backup_id,
                                       BackupType backup_type, const std::string& volume_key) {
  std::lock_guard<std::mutex> g(mu_);
  if (state_ != State::kCompleted && state_ != State::kSnapped) return VSS_E_BAD_STATE;
  for (auto& m : set_) {
    if (m.snapshot_id != snapshot_id) continue;
    HResult hr = m.provider->RetainSnapshot(snapshot_id, backup_id, backup_type, volume_key);
    if (hr == S_OK_)
      m.keep = true;
    else
      last_error_ = m.provider->last_error();
    return hr;
  }
  return VSS_E_OBJECT_NOT_FOUND;
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
  if (running && running->QueryStatus() == VSS_S_ASYNC_PENDING) {
    running->Cancel();
    running->Wait();
  }
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
