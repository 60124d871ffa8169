// Backup options as gnomon hands them to writers (IVssBackupComponents::
// SetBackupOptions, IVssComponent::GetBackupOptions). VSS leaves the format
// of the string to each writer; gnomon fixes one, so that the requester can
// pass what the user asked for (`gnomon backup --writer-option
// WRITER:KEY=VALUE`) and a writer can refuse what it does not understand:
//
//   one KEY=VALUE per line, each line ending in '\n', in the order given;
//   KEY is 1 to 64 characters of [A-Za-z0-9_.-]; VALUE is any bytes but
//   '\n' and NUL, possibly none; a key appears at most once; "" means no
//   options.
//
// The text is stored in the BCD's `backup_options` (format/FORMAT.md §7).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace gnomon::vss {

using BackupOptionList = std::vector<std::pair<std::string, std::string>>;

bool IsBackupOptionKey(const std::string& key);
bool IsBackupOptionValue(const std::string& value);

// The text for opts; InvalidArgument naming a bad key or value, or a key
// given twice.
Status FormatBackupOptions(const BackupOptionList& opts, std::string* out);
// The options a text holds; InvalidArgument (naming the line) for text
// that is not in the format above.
Status ParseBackupOptions(const std::string& text, BackupOptionList* out);

// For writers: an option a writer understands.
struct BackupOptionSpec {
  std::string key;
  std::vector<std::string> values;  // the values allowed; empty = any
  std::string default_value;        // taken when the option is not given
};

// "checkpoint=fast|spread, label=TEXT", for messages and --help.
std::string DescribeBackupOptions(const std::vector<BackupOptionSpec>& spec);

// The options in text, checked against what a writer understands: every
// key must be in spec and have an allowed value; every key of spec not
// given takes its default. InvalidArgument naming the option and what the
// writer understands otherwise, for the writer to fail PrepareForBackup
// with (an option silently ignored would be a backup the user did not ask
// for).
Status ReadBackupOptions(const std::string& text, const std::vector<BackupOptionSpec>& spec,
                         std::map<std::string, std::string>* out);

}  // namespace gnomon::vss
