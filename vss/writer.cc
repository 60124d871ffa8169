#include "vss/writer.h"

#include <exception>

namespace gnomon::vss {

namespace detail {
EventContext*& CurrentEvent() {
  static thread_local EventContext* ctx = nullptr;
  return ctx;
}
}  // namespace detail

namespace {
const SessionView* View() {
  auto* e = detail::CurrentEvent();
  return e ? e->session : nullptr;
}
}  // namespace

HResult Writer::Initialize(const Guid& class_id, const std::string& name, UsageType usage,
                           SourceType source, ApplicationLevel level, uint32_t freeze_timeout_ms,
                           const std::string& instance_name) {
  if (initialized_) return E_FAIL_;
  if (class_id.IsNull() || name.empty() || freeze_timeout_ms == 0) return E_INVALIDARG_;
  class_id_ = class_id;
  instance_id_ = Guid::Random();  // new at every Initialize, as in VSS
  name_ = name;
  instance_name_ = instance_name;
  usage_ = usage;
  source_ = source;
  level_ = level == ApplicationLevel::kAuto ? ApplicationLevel::kFrontEnd : level;
  freeze_timeout_ms_ = freeze_timeout_ms;
  initialized_ = true;
  return S_OK_;
}

BackupType Writer::GetBackupType() const {
  auto* v = View();
  return v ? v->backup_type : BackupType::kUndefined;
}
bool Writer::IsBootableStateBackedUp() const {
  auto* v = View();
  return v && v->bootable_system_state;
}
bool Writer::AreComponentsSelected() const {
  auto* v = View();
  return v && v->select_components;
}
bool Writer::IsPartialFileSupportEnabled() const {
  auto* v = View();
  return v && v->partial_file_support;
}
bool Writer::IsPathAffected(const std::string& path) const {
  auto* v = View();
  return v && v->path_affected && v->path_affected(path);
}
uint32_t Writer::GetContext() const {
  auto* v = View();
  return v ? v->context : ctx::kBackup;
}
Guid Writer::GetCurrentSnapshotSetId() const {
  auto* e = detail::CurrentEvent();
  return e && e->set_id_valid && e->session ? e->session->snapshot_set_id : Guid{};
}
std::vector<std::string> Writer::GetCurrentVolumeArray() const {
  auto* v = View();
  return v ? v->volumes : std::vector<std::string>{};
}
std::string Writer::GetSnapshotDeviceName(const std::string& volume) const {
  auto* v = View();
  if (!v) return "";
  for (const auto& [vol, dev] : v->snapshot_devices)
    if (vol == volume) return dev;
  return "";
}

static std::string Lookup(const std::vector<std::pair<std::string, std::string>>& m,
                          const std::string& key) {
  for (const auto& [k, v] : m)
    if (k == key) return v;
  return "";
}
std::string Writer::GetVolumeProvider(const std::string& volume) const {
  auto* v = View();
  return v ? Lookup(v->volume_providers, volume) : "";
}
std::string Writer::GetSnapshotId(const std::string& volume) const {
  auto* v = View();
  return v ? Lookup(v->snapshot_ids, volume) : "";
}

const char* WriterEventName(WriterEvent e) {
  static const char* const kNames[kWriterEventCount] = {
      "Identify", "PrepareForBackup", "PrepareForSnapshot", "Freeze", "Thaw", "PostSnapshot",
      "Abort",    "BackupComplete",   "BackupShutdown"};
  return kNames[static_cast<int>(e)];
}

bool WriterEventFromName(const std::string& name, WriterEvent* out) {
  for (int i = 0; i < kWriterEventCount; ++i)
    if (name == WriterEventName(static_cast<WriterEvent>(i))) {
      *out = static_cast<WriterEvent>(i);
      return true;
    }
  return false;
}

void Writer::StartPreparation(std::function<Status()> work) {
  (void)FinishPreparation();  // one at a time; the first one's outcome was not asked for
  preparing_ = true;
  try {
    Launch(std::move(work));
  } catch (...) {
    preparing_ = false;  // no thread (std::system_error): nothing is running
    throw;
  }
}

void Writer::Launch(std::function<Status()> work) {
  preparation_ = std::async(std::launch::async, [this, work = std::move(work)] {
    Status s;
    try {
      s = work();
    } catch (const std::exception& e) {
      s = Status::IOError(std::string("preparation threw an exception: ") + e.what());
    } catch (...) {
      s = Status::IOError("preparation threw an exception");
    }
    preparing_ = false;
    return s;
  });
}

Status Writer::FinishPreparation() {
  if (!preparation_.valid()) return Status::OK();
  return preparation_.get();
}

void Writer::ReportNotResponding(const std::string& message) {
  if (auto* ctx = detail::CurrentEvent()) {
    ctx->not_responding = true;
    ctx->failure_message = message;
  }
}

HResult Writer::SetWriterFailure(HResult hr, const std::string& message) {
  auto* e = detail::CurrentEvent();
  if (!e) return VSS_E_BAD_STATE;  // not on a delivering thread
  switch (hr) {
    case VSS_E_WRITERERROR_INCONSISTENTSNAPSHOT:
    case VSS_E_WRITERERROR_OUTOFRESOURCES:
    case VSS_E_WRITERERROR_TIMEOUT:
    case VSS_E_WRITERERROR_RETRYABLE:
    case VSS_E_WRITERERROR_NONRETRYABLE:
      e->failure = hr;
      e->failure_message = message;
      return S_OK_;
    default:
      return E_INVALIDARG_;
  }
}

}  // namespace gnomon::vss
