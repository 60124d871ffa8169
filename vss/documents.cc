#include "vss/documents.h"

namespace gnomon::vss {

using nlohmann::json;

std::string ComponentInfo::FullPath() const {
  return logical_path.empty() ? name : logical_path + "\\" + name;
}
std::string ComponentRecord::FullPath() const {
  return logical_path.empty() ? name : logical_path + "\\" + name;
}
std::string ImplicitComponent::FullPath() const {
  return logical_path.empty() ? name : logical_path + "\\" + name;
}

namespace {

json FileSpecJson(const FileSpec& f) {
  return json{{"path", f.path},           {"spec", f.spec},
              {"recursive", f.recursive}, {"alternate_path", f.alternate_path},
              {"mask", f.mask},           {"is_log", f.is_log}};
}
FileSpec FileSpecFrom(const json& j) {
  FileSpec f;
  f.path = j.at("path");
  f.spec = j.at("spec");
  f.recursive = j.at("recursive");
  f.alternate_path = j.at("alternate_path");
  f.mask = j.at("mask");
  f.is_log = j.at("is_log");
  return f;
}
// Throws what the rest of the reading throws, nlohmann::json::exception:
// ComponentRecord::FromJson promises only that, and the writer server and
// RemoteWriter catch only that around untrusted input.
Guid GuidFrom(const json& j) {
  Guid g;
  if (!Guid::Parse(j.get<std::string>(), &g))
    throw json::other_error::create(501, "bad guid " + j.dump(), &j);
  return g;
}

}  // namespace

json WriterMetadata::ToJson() const {
  json comps = json::array();
  for (const auto& c : components) {
    json files = json::array();
    for (const auto& f : c.files) files.push_back(FileSpecJson(f));
    comps.push_back({{"type", static_cast<int>(c.type)},
                     {"logical_path", c.logical_path},
                     {"name", c.name},
                     {"caption", c.caption},
                     {"selectable", c.selectable},
                     {"selectable_for_restore", c.selectable_for_restore},
                     {"notify_on_backup_complete", c.notify_on_backup_complete},
                     {"files", files},
                     {"dependencies", c.dependencies}});
  }
  json ex = json::array();
  for (const auto& f : excludes) ex.push_back(FileSpecJson(f));
  return json{{"schema", kWmdSchema},
              {"class_id", class_id.ToString()},
              {"instance_id", instance_id.ToString()},
              {"name", name},
              {"instance_name", instance_name},
              {"usage", static_cast<int>(usage)},
              {"source", static_cast<int>(source)},
              {"level", static_cast<int>(level)},
              {"restore_method", restore_method},
              {"backup_schema", backup_schema},
              {"excludes", ex},
              {"components", comps}};
}

Status WriterMetadata::FromJson(const json& j, WriterMetadata* out) {
  try {
    if (j.at("schema") != kWmdSchema)
      return Status::Unsupported("unknown writer metadata schema " + j.at("schema").dump());
    WriterMetadata m;
    m.class_id = GuidFrom(j.at("class_id"));
    m.instance_id = GuidFrom(j.at("instance_id"));
    m.name = j.at("name");
    m.instance_name = j.at("instance_name");
    m.usage = static_cast<UsageType>(j.at("usage").get<int>());
    m.source = static_cast<SourceType>(j.at("source").get<int>());
    m.level = static_cast<ApplicationLevel>(j.at("level").get<int>());
    m.restore_method = j.at("restore_method");
    m.backup_schema = j.at("backup_schema");
    for (const auto& f : j.at("excludes")) m.excludes.push_back(FileSpecFrom(f));
    for (const auto& cj : j.at("components")) {
      ComponentInfo c;
      c.type = static_cast<ComponentType>(cj.at("type").get<int>());
      c.logical_path = cj.at("logical_path");
      c.name = cj.at("name");
      c.caption = cj.at("caption");
      c.selectable = cj.at("selectable");
      c.selectable_for_restore = cj.at("selectable_for_restore");
      c.notify_on_backup_complete = cj.at("notify_on_backup_complete");
      for (const auto& f : cj.at("files")) c.files.push_back(FileSpecFrom(f));
      c.dependencies = cj.at("dependencies").get<std::vector<std::string>>();
      m.components.push_back(std::move(c));
    }
    *out = std::move(m);
    return Status::OK();
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("malformed writer metadata: ") + e.what());
  }
}

ComponentRecord* BackupComponentsDocument::Find(const Guid& class_id,
                                                const std::string& logical_path,
                                                const std::string& name) {
  for (auto& c : components)
    if (c.class_id == class_id && c.logical_path == logical_path && c.name == name) return &c;
  return nullptr;
}

json ComponentRecord::ToJson() const {
  json partial = json::array(), diff = json::array();
  for (const auto& p : partial_files)
    partial.push_back(
        {{"path", p.path}, {"name", p.name}, {"ranges", p.ranges}, {"metadata", p.metadata}});
  for (const auto& d : differenced_files)
    diff.push_back({{"path", d.path},
                    {"spec", d.spec},
                    {"recursive", d.recursive},
                    {"last_modify_time", d.last_modify_time}});
  return json{{"class_id", class_id.ToString()},
              {"instance_id", instance_id.ToString()},
              {"writer_name", writer_name},
              {"type", static_cast<int>(type)},
              {"logical_path", logical_path},
              {"name", name},
              {"backup_succeeded", backup_succeeded},
              {"backup_options", backup_options},
              {"backup_metadata", backup_metadata},
              {"has_backup_metadata", has_backup_metadata},
              {"backup_stamp", backup_stamp},
              {"previous_backup_stamp", previous_backup_stamp},
              {"partial_files", partial},
              {"differenced_files", diff},
              {"prepare_backup_failure_msg", prepare_backup_failure_msg},
              {"post_snapshot_failure_msg", post_snapshot_failure_msg}};
}

ComponentRecord ComponentRecord::FromJson(const json& cj) {
  ComponentRecord c;
  c.class_id = GuidFrom(cj.at("class_id"));
  c.instance_id = GuidFrom(cj.at("instance_id"));
  c.writer_name = cj.at("writer_name");
  c.type = static_cast<ComponentType>(cj.at("type").get<int>());
  c.logical_path = cj.at("logical_path");
  c.name = cj.at("name");
  c.backup_succeeded = cj.at("backup_succeeded");
  c.backup_options = cj.at("backup_options");
  c.backup_metadata = cj.at("backup_metadata");
  c.has_backup_metadata = cj.at("has_backup_metadata");
  c.backup_stamp = cj.at("backup_stamp");
  c.previous_backup_stamp = cj.at("previous_backup_stamp");
  for (const auto& p : cj.at("partial_files"))
    c.partial_files.push_back({p.at("path"), p.at("name"), p.at("ranges"), p.at("metadata")});
  for (const auto& df : cj.at("differenced_files"))
    c.differenced_files.push_back(
        {df.at("path"), df.at("spec"), df.at("recursive"), df.at("last_modify_time")});
  c.prepare_backup_failure_msg = cj.at("prepare_backup_failure_msg");
  c.post_snapshot_failure_msg = cj.at("post_snapshot_failure_msg");
  return c;
}

json BackupComponentsDocument::ToJson() const {
  json snaps = json::array();
  for (const auto& s : snapshots)
    snaps.push_back({{"snapshot_id", s.snapshot_id.ToString()},
                     {"volume", s.volume},
                     {"provider", s.provider},
                     {"device", s.device},
                     {"offset", s.offset},
                     {"size", s.size}});
  json comps = json::array();
  for (const auto& c : components) comps.push_back(c.ToJson());
  json implicit = json::array();
  for (const auto& c : implicit_components)
    implicit.push_back({{"class_id", c.class_id.ToString()},
                        {"instance_id", c.instance_id.ToString()},
                        {"writer_name", c.writer_name},
                        {"type", static_cast<int>(c.type)},
                        {"logical_path", c.logical_path},
                        {"name", c.name},
                        {"included_with", c.included_with}});
  return json{{"schema", kBcdSchema},
              {"backup_type", BackupTypeName(backup_type)},
              {"select_components", select_components},
              {"bootable_system_state", bootable_system_state},
              {"partial_file_support", partial_file_support},
              {"context", context},
              {"snapshot_set_id", snapshot_set_id.ToString()},
              {"snapshots", snaps},
              {"components", comps},
              {"implicit_components", implicit}};
}

Status BackupComponentsDocument::FromJson(const json& j, BackupComponentsDocument* out) {
  try {
    if (j.at("schema") != kBcdSchema)
      return Status::Unsupported("unknown backup components document schema " +
                                 j.at("schema").dump());
    BackupComponentsDocument d;
    if (!ParseBackupType(j.at("backup_type"), &d.backup_type))
      return Status::Corruption("unknown backup type " + j.at("backup_type").dump());
    d.select_components = j.at("select_components");
    d.bootable_system_state = j.at("bootable_system_state");
    d.partial_file_support = j.at("partial_file_support");
    d.context = j.at("context");
    d.snapshot_set_id = GuidFrom(j.at("snapshot_set_id"));
    for (const auto& s : j.at("snapshots")) {
      SnapshotDescription sd;
      sd.snapshot_id = GuidFrom(s.at("snapshot_id"));
      sd.volume = s.at("volume");
      sd.provider = s.at("provider");
      sd.device = s.at("device");
      sd.offset = s.at("offset");
      sd.size = s.at("size");
      d.snapshots.push_back(sd);
    }
    for (const auto& cj : j.at("components")) d.components.push_back(ComponentRecord::FromJson(cj));
    // Optional: documents written before gnomon listed implicit components.
    if (j.contains("implicit_components"))
      for (const auto& ij : j.at("implicit_components")) {
        ImplicitComponent c;
        c.class_id = GuidFrom(ij.at("class_id"));
        c.instance_id = GuidFrom(ij.at("instance_id"));
        c.writer_name = ij.at("writer_name");
        c.type = static_cast<ComponentType>(ij.at("type").get<int>());
        c.logical_path = ij.at("logical_path");
        c.name = ij.at("name");
        c.included_with = ij.at("included_with");
        d.implicit_components.push_back(std::move(c));
      }
    *out = std::move(d);
    return Status::OK();
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("malformed backup components document: ") + e.what());
  }
}

HResult Component::SetBackupStamp(const std::string& stamp) {
  if (*read_only_) return VSS_E_BAD_STATE;
  rec_->backup_stamp = stamp;
  return S_OK_;
}
HResult Component::SetBackupMetadata(const std::string& md) {
  if (*read_only_) return VSS_E_BAD_STATE;
  if (rec_->has_backup_metadata) return VSS_E_OBJECT_ALREADY_EXISTS;
  rec_->backup_metadata = md;
  rec_->has_backup_metadata = true;
  return S_OK_;
}
HResult Component::AddPartialFile(const std::string& path, const std::string& name,
                                  const std::string& ranges, const std::string& metadata) {
  if (*read_only_) return VSS_E_BAD_STATE;
  rec_->partial_files.push_back({path, name, ranges, metadata});
  return S_OK_;
}
HResult Component::AddDifferencedFilesByLastModifyTime(const std::string& path,
                                                       const std::string& spec, bool recursive,
                                                       int64_t last_modify_time) {
  if (*read_only_) return VSS_E_BAD_STATE;
  rec_->differenced_files.push_back({path, spec, recursive, last_modify_time});
  return S_OK_;
}
HResult Component::SetPrepareForBackupFailureMsg(const std::string& m) {
  if (*read_only_) return VSS_E_BAD_STATE;
  rec_->prepare_backup_failure_msg = m;
  return S_OK_;
}
HResult Component::SetPostSnapshotFailureMsg(const std::string& m) {
  if (*read_only_) return VSS_E_BAD_STATE;
  rec_->post_snapshot_failure_msg = m;
  return S_OK_;
}

}  // namespace gnomon::vss
