// The VSS documents a backup record carries (extra.vss, FORMAT.md §7), read
// into typed values once, with every field's shape checked: `show` prints
// this, `verify` checks it, and a damaged or hostile record is an error that
// names the field, never a crash.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/status.h"

namespace gnomon {

struct VssSummary {
  bool present = false;  // the record has extra.vss at all
  std::string snapshot_set_id, schema, backup_type;
  bool select_components = false, snapshot_skipped = false;
  double frozen_ms = 0;
  struct Source {
    std::string volume, provider, device;
  };
  std::vector<Source> sources;
  struct Component {
    std::string writer_name, logical_path, name, backup_stamp, previous_backup_stamp,
        backup_metadata, backup_options;
  };
  std::vector<Component> components;
  // Members of the explicit components' sets (bcd.implicit_components).
  struct ImplicitComponent {
    std::string writer_name, logical_path, name, included_with;
  };
  std::vector<ImplicitComponent> implicit_components;
  struct Writer {
    std::string name, class_id;
    size_t components = 0;
  };
  std::vector<Writer> writers;
  struct WriterState {
    std::string name, state_name, failure_name, message;
    uint64_t failure = 0;
  };
  std::vector<WriterState> writer_status;
};

// extra: the record's `extra` object.
Status SummarizeVss(const nlohmann::json& extra, VssSummary* out);

}  // namespace gnomon
