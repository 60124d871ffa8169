// The two VSS documents, as versioned JSON schemas of gnomon's own with
// VSS's meaning (shared/vss-behaviour.md §7):
//  - the Writer Metadata Document (WMD), one per writer, built in OnIdentify;
//  - the Backup Components Document (BCD), one per session, owned by the
//    requester; writers edit their components until PostSnapshot ends.
// Both are stored with every backup: without them a VSS restore is impossible.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/status.h"
#include "vss/codes.h"
#include "vss/types.h"

namespace gnomon::vss {

inline constexpr const char* kWmdSchema = "gnomon.vss.wmd/1";
inline constexpr const char* kBcdSchema = "gnomon.vss.bcd/1";

struct FileSpec {
  std::string path;        // directory
  std::string spec = "*";  // wildcard within it
  bool recursive = false;
  std::string alternate_path;  // where to read the data at backup time, if not path
  uint32_t mask = fsbt::kDefault;
  bool is_log = false;  // a database component's log files
};

struct ComponentInfo {
  ComponentType type = ComponentType::kFileGroup;
  std::string logical_path;  // '\'-separated; "" is the root
  std::string name;
  std::string caption;
  bool selectable = false;
  bool selectable_for_restore = false;
  bool notify_on_backup_complete = false;
  std::vector<FileSpec> files;
  std::vector<std::string> dependencies;  // "{class-guid}:logical\path\name"
  // "logical_path\name", the key of a component within its writer.
  std::string FullPath() const;
};

struct WriterMetadata {
  Guid class_id, instance_id;
  std::string name, instance_name;
  UsageType usage = UsageType::kUserData;
  SourceType source = SourceType::kOther;
  ApplicationLevel level = ApplicationLevel::kFrontEnd;
  int restore_method = 0;  // VSS_RME_*
  uint32_t backup_schema = 0;
  std::vector<FileSpec> excludes;
  std::vector<ComponentInfo> components;

  nlohmann::json ToJson() const;
  // Unsupported for another schema, Corruption for a malformed document.
  static Status FromJson(const nlohmann::json& j, WriterMetadata* out);
};

struct PartialFile {
  std::string path, name, ranges, metadata;
};
struct DifferencedFile {
  std::string path, spec;
  bool recursive = false;
  int64_t last_modify_time = 0;  // seconds since the epoch, UTC; 0 = requester decides
};

// One explicitly included component in the BCD.
struct ComponentRecord {
  Guid class_id, instance_id;
  std::string writer_name;
  ComponentType type = ComponentType::kFileGroup;
  std::string logical_path, name;
  bool backup_succeeded = false;
  std::string backup_options;
  std::string backup_metadata;
  bool has_backup_metadata = false;
  std::string backup_stamp, previous_backup_stamp;
  std::vector<PartialFile> partial_files;
  std::vector<DifferencedFile> differenced_files;
  std::string prepare_backup_failure_msg, post_snapshot_failure_msg;
  std::string FullPath() const;
  nlohmann::json ToJson() const;                             // as in the BCD's "components"
  static ComponentRecord FromJson(const nlohmann::json& j);  // throws nlohmann::json::exception
};

// A component included implicitly: a member of the component set of an
// explicitly included component (§7; vss/component_sets.h). VSS keeps no
// record of these in the BCD; gnomon lists them so that a stored BCD shows
// everything that was included. A set's backup success, options, stamps and
// failure messages are those of its explicit component (`included_with`).
struct ImplicitComponent {
  Guid class_id, instance_id;
  std::string writer_name;
  ComponentType type = ComponentType::kFileGroup;
  std::string logical_path, name;
  std::string included_with;  // "path\name" of the explicit component
  std::string FullPath() const;
};

struct SnapshotDescription {
  Guid snapshot_id;
  std::string volume;    // as added to the set
  std::string provider;  // provider name
  std::string device;    // where the snapshot's data is read
  uint64_t offset = 0, size = 0;
};

struct BackupComponentsDocument {
  BackupType backup_type = BackupType::kFull;
  bool select_components = true;
  bool bootable_system_state = false;
  bool partial_file_support = false;
  uint32_t context = ctx::kBackup;
  Guid snapshot_set_id;
  std::vector<SnapshotDescription> snapshots;
  std::vector<ComponentRecord> components;
  std::vector<ImplicitComponent> implicit_components;  // absent in older documents

  ComponentRecord* Find(const Guid& class_id, const std::string& logical_path,
                        const std::string& name);
  nlohmann::json ToJson() const;
  // Unsupported for another schema, Corruption for a malformed document.
  static Status FromJson(const nlohmann::json& j, BackupComponentsDocument* out);
};

// A writer's view of its included components, handed to OnPrepareBackup,
// OnPostSnapshot and OnBackupComplete (IVssWriterComponents/IVssComponent).
// Edits are refused with VSS_E_BAD_STATE once the BCD is read-only.
class Component {
 public:
  Component(ComponentRecord* rec, const bool* read_only) : rec_(rec), read_only_(read_only) {}
  const std::string& logical_path() const { return rec_->logical_path; }
  const std::string& name() const { return rec_->name; }
  ComponentType type() const { return rec_->type; }
  bool GetBackupSucceeded() const { return rec_->backup_succeeded; }
  const std::string& GetBackupOptions() const { return rec_->backup_options; }
  const std::string& GetPreviousBackupStamp() const { return rec_->previous_backup_stamp; }
  const std::string& GetBackupStamp() const { return rec_->backup_stamp; }
  const std::string& GetBackupMetadata() const { return rec_->backup_metadata; }
  // The whole record, for proxies that send it to another process.
  const ComponentRecord& record() const { return *rec_; }
  bool read_only() const { return *read_only_; }
  HResult SetBackupStamp(const std::string& stamp);
  HResult SetBackupMetadata(const std::string& md);  // once; a second call: ALREADY_EXISTS
  HResult AddPartialFile(const std::string& path, const std::string& name,
                         const std::string& ranges, const std::string& metadata);
  HResult AddDifferencedFilesByLastModifyTime(const std::string& path, const std::string& spec,
                                              bool recursive, int64_t last_modify_time);
  HResult SetPrepareForBackupFailureMsg(const std::string& m);
  HResult SetPostSnapshotFailureMsg(const std::string& m);

 private:
  ComponentRecord* rec_;
  const bool* read_only_;
};

using WriterComponents = std::vector<Component>;

}  // namespace gnomon::vss
