// Which writers and components take part in the session: the requester's
// component selection (AddComponent with the selectability rules of
// vss/component_sets.h, the required components PrepareForBackup checks,
// backup options, previous stamps, SetBackupSucceeded) and the questions the
// rest of the session asks of it (is this writer included, who are the
// participants, by freeze level, does any included file set need a
// snapshot).
#include <set>
#include <string>

#include "vss/backup_components_internal.h"
#include "vss/component_sets.h"

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
  const WriterMetadata& md = slot->md;
  const ComponentSets& sets = slot->Sets();
  const size_t i = sets.Find(logical_path, name);
  if (i == kNoComponent || md.components[i].type != type) return VSS_E_OBJECT_NOT_FOUND;
  if (bcd_.Find(class_id, logical_path, name)) return VSS_E_OBJECT_ALREADY_EXISTS;
  const std::string what = "component '" + sets.FullPath(i) + "' of writer '" + md.name + "'";
  // A non-selectable subcomponent comes in only with its component set.
  // VSS leaves adding one undefined; gnomon refuses it with the code
  // AddComponent documents for a parameter that is not valid.
  if (sets.Role(i) == ComponentRole::kSubcomponent) {
    last_error_ = what + " is not selectable: it belongs to the component set of '" +
                  sets.FullPath(sets.SetOf(i)) + "' and is included with it";
    return E_INVALIDARG_;
  }
  // A component and a member of its set are never both explicit: the set
  // already includes the member (VSS: "do not add a selectable subcomponent
  // whose ancestor is already added"), whichever comes first.
  for (const auto& r : bcd_.components) {
    if (r.class_id != class_id || r.instance_id != instance_id) continue;
    const size_t k = sets.Find(r.logical_path, r.name);
    if (k == kNoComponent) continue;
    if (sets.InSetOf(i, k)) {
      last_error_ = what + " is already included with the component set of '" + r.FullPath() + "'";
      return VSS_E_OBJECT_ALREADY_EXISTS;
    }
    if (sets.InSetOf(k, i)) {
      last_error_ = what + " defines a component set that holds '" + r.FullPath() +
                    "', which was added on its own";
      return VSS_E_OBJECT_ALREADY_EXISTS;
    }
  }
  ComponentRecord r;
  r.class_id = class_id;
  r.instance_id = instance_id;
  r.writer_name = md.name;
  r.type = type;
  r.logical_path = logical_path;
  r.name = name;
  bcd_.components.push_back(r);
  // Its set's members are included implicitly, nested sets and all.
  for (size_t k : sets.Members(i)) {
    const ComponentInfo& c = md.components[k];
    bcd_.implicit_components.push_back(
        {class_id, instance_id, md.name, c.type, c.logical_path, c.name, r.FullPath()});
  }
  return S_OK_;
}

std::set<std::string> BackupComponents::IncludedLocked(const Slot& s) const {
  std::set<std::string> out;
  for (const auto& r : bcd_.components)
    if (r.class_id == s.md.class_id && r.instance_id == s.md.instance_id) out.insert(r.FullPath());
  for (const auto& r : bcd_.implicit_components)
    if (r.class_id == s.md.class_id && r.instance_id == s.md.instance_id) out.insert(r.FullPath());
  return out;
}

HResult BackupComponents::CheckRequiredLocked() {
  if (!bcd_.select_components) return S_OK_;  // volume mode: every component takes part
  for (const auto& s : slots_) {
    if (!Included(*s)) continue;
    const ComponentSets& sets = s->Sets();
    const std::set<std::string> included = IncludedLocked(*s);
    for (size_t k = 0; k < s->md.components.size(); ++k) {
      if (sets.Role(k) != ComponentRole::kRequired || included.count(sets.FullPath(k))) continue;
      last_error_ = "writer '" + s->md.name + "' takes part, but its required component '" +
                    sets.FullPath(k) +
                    "' was not added (AddComponent every required component of a writer "
                    "that takes part)";
      return VSS_E_BAD_STATE;
    }
  }
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
  // §5.4: every file set of every included component, explicit or implicit.
  const uint32_t bit = fsbt::SnapshotBitFor(bcd_.backup_type);
  for (auto& s : slots_) {
    if (!Included(*s)) continue;
    const std::set<std::string> included = IncludedLocked(*s);
    for (const auto& c : s->md.components) {
      if (bcd_.select_components && !included.count(c.FullPath())) continue;
      for (const auto& f : c.files)
        if (f.mask & bit) return true;
    }
  }
  return false;
}

}  // namespace gnomon::vss
