// Which writers and components take part in the session: the requester's
// component selection (AddComponent, backup options, previous stamps,
// SetBackupSucceeded) and the questions the rest of the session asks of it
// (is this writer included, who are the participants, by freeze level,
// does any included file set need a snapshot).
#include <string>

#include "vss/backup_components_internal.h"

namespace gnomon::vss {

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

}  // namespace gnomon::vss
