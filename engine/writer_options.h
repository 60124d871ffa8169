// `gnomon backup --writer-option WRITER:KEY=VALUE`: which writer's
// components get which backup options (SetBackupOptions), in the text
// vss/backup_options.h fixes. Pure functions, unit-tested without writers
// (tests/backup_plan_test.cc); engine/snapshot_session.cc applies them.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "base/status.h"
#include "vss/types.h"

namespace gnomon {

struct WriterOption {
  std::string writer;  // a writer's name, or its class id ({} optional, any case)
  std::string key, value;
};

// "WRITER:KEY=VALUE", split at the first ':' and the first '=' after it;
// InvalidArgument saying what is wrong. A writer whose name holds ':' is
// named by its class id.
Status ParseWriterOption(const std::string& text, WriterOption* out);

// A writer as `gnomon writers` shows it.
struct WriterIdentity {
  std::string name;
  vss::Guid class_id;
  vss::Guid instance_id;  // two instances of one writer class are two writers
};

// Whether spec names the writer: its name exactly, or its class id (which
// names every instance of that class).
bool NamesWriter(const std::string& spec, const WriterIdentity& w);

// The backup options text for each writer instance the options name.
// InvalidArgument if an option names no writer of `writers` (the message
// names those there are), or gives one writer the same key twice.
Status ResolveWriterOptions(const std::vector<WriterOption>& opts,
                            const std::vector<WriterIdentity>& writers,
                            std::map<vss::Guid, std::string>* by_instance);

}  // namespace gnomon
