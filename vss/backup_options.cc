#include "vss/backup_options.h"

#include <algorithm>
#include <set>

#include "base/system.h"

namespace gnomon::vss {

bool IsBackupOptionKey(const std::string& key) {
  if (key.empty() || key.size() > 64) return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

bool IsBackupOptionValue(const std::string& value) {
  // Options travel in JSON documents (the BCD, the writer protocol): UTF-8 only.
  return value.find('\n') == std::string::npos && value.find('\0') == std::string::npos &&
         IsUtf8(value);
}

Status FormatBackupOptions(const BackupOptionList& opts, std::string* out) {
  std::string text;
  std::set<std::string> seen;
  for (const auto& [key, value] : opts) {
    if (!IsBackupOptionKey(key))
      return Status::InvalidArgument("backup option key '" + key +
                                     "' is not 1 to 64 of A-Z a-z 0-9 _ . -");
    if (!IsBackupOptionValue(value))
      return Status::InvalidArgument("the value of backup option '" + key +
                                     "' holds a newline, a NUL or bytes that are not UTF-8");
    if (!seen.insert(key).second)
      return Status::InvalidArgument("backup option '" + key + "' is given twice");
    text += key + "=" + value + "\n";
  }
  *out = std::move(text);
  return Status::OK();
}

Status ParseBackupOptions(const std::string& text, BackupOptionList* out) {
  BackupOptionList opts;
  std::set<std::string> seen;
  size_t pos = 0, line = 0;
  while (pos < text.size()) {
    ++line;
    const size_t end = text.find('\n', pos);
    if (end == std::string::npos)
      return Status::InvalidArgument("backup options: line " + std::to_string(line) +
                                     " does not end in a newline");
    const std::string l = text.substr(pos, end - pos);
    pos = end + 1;
    const size_t eq = l.find('=');
    const std::string key = l.substr(0, eq);
    if (eq == std::string::npos || !IsBackupOptionKey(key))
      return Status::InvalidArgument("backup options: line " + std::to_string(line) +
                                     " is not KEY=VALUE");
    std::string value = l.substr(eq + 1);
    if (!IsBackupOptionValue(value))
      return Status::InvalidArgument("backup options: line " + std::to_string(line) +
                                     " holds a NUL byte");
    if (!seen.insert(key).second)
      return Status::InvalidArgument("backup option '" + key + "' is given twice");
    opts.emplace_back(key, std::move(value));
  }
  *out = std::move(opts);
  return Status::OK();
}

std::string DescribeBackupOptions(const std::vector<BackupOptionSpec>& spec) {
  std::string s;
  for (const auto& o : spec) {
    if (!s.empty()) s += ", ";
    s += o.key + "=";
    if (o.values.empty()) s += "TEXT";
    for (size_t i = 0; i < o.values.size(); ++i) s += (i ? "|" : "") + o.values[i];
  }
  return s.empty() ? "none" : s;
}

Status ReadBackupOptions(const std::string& text, const std::vector<BackupOptionSpec>& spec,
                         std::map<std::string, std::string>* out) {
  BackupOptionList given;
  GNOMON_RETURN_IF_ERROR(ParseBackupOptions(text, &given));
  std::map<std::string, std::string> opts;
  for (const auto& o : spec) opts[o.key] = o.default_value;
  const std::string understood = " (this writer understands: " + DescribeBackupOptions(spec) + ")";
  for (const auto& kv : given) {
    const std::string &key = kv.first, &value = kv.second;  // (clang 14 cannot capture bindings)
    auto it = std::find_if(spec.begin(), spec.end(),
                           [&](const BackupOptionSpec& o) { return o.key == key; });
    if (it == spec.end())
      return Status::InvalidArgument("unknown backup option '" + key + "'" + understood);
    if (!it->values.empty() &&
        std::find(it->values.begin(), it->values.end(), value) == it->values.end())
      return Status::InvalidArgument("backup option " + key + "='" + value +
                                     "' is not an allowed value" + understood);
    opts[key] = value;
  }
  *out = std::move(opts);
  return Status::OK();
}

}  // namespace gnomon::vss
