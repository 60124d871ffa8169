#include "engine/writer_options.h"

#include "vss/backup_options.h"

namespace gnomon {

Status ParseWriterOption(const std::string& text, WriterOption* out) {
  const size_t colon = text.find(':');
  const size_t eq = colon == std::string::npos ? std::string::npos : text.find('=', colon + 1);
  if (colon == std::string::npos || eq == std::string::npos || colon == 0)
    return Status::InvalidArgument("'" + text +
                                   "' is not WRITER:KEY=VALUE (WRITER: a name or class id "
                                   "as 'gnomon writers' shows them)");
  WriterOption o{text.substr(0, colon), text.substr(colon + 1, eq - colon - 1),
                 text.substr(eq + 1)};
  if (!vss::IsBackupOptionKey(o.key))
    return Status::InvalidArgument("'" + text + "': the key '" + o.key +
                                   "' is not 1 to 64 of A-Z a-z 0-9 _ . -");
  if (!vss::IsBackupOptionValue(o.value))
    return Status::InvalidArgument("the value of --writer-option " + o.writer + ":" + o.key +
                                   " holds a newline, a NUL or bytes that are not UTF-8");
  *out = std::move(o);
  return Status::OK();
}

bool NamesWriter(const std::string& spec, const WriterIdentity& w) {
  if (spec == w.name) return true;
  std::string id = spec;
  if (id.size() > 2 && id.front() == '{' && id.back() == '}') id = id.substr(1, id.size() - 2);
  vss::Guid g;
  return id.size() == 36 && vss::Guid::Parse(id, &g) && g == w.class_id;
}

Status ResolveWriterOptions(const std::vector<WriterOption>& opts,
                            const std::vector<WriterIdentity>& writers,
                            std::map<vss::Guid, std::string>* by_instance) {
  std::map<vss::Guid, vss::BackupOptionList> lists;
  std::map<vss::Guid, std::string> names;
  for (const auto& o : opts) {
    bool found = false;
    for (const auto& w : writers)
      if (NamesWriter(o.writer, w)) {
        lists[w.instance_id].emplace_back(o.key, o.value);
        names[w.instance_id] = w.name;
        found = true;
      }
    if (!found) {
      std::string known;
      for (const auto& w : writers)
        known += (known.empty() ? "" : ", ") + ("'" + w.name + "' {" + w.class_id.ToString() + "}");
      return Status::InvalidArgument("--writer-option " + o.writer + ":" + o.key +
                                     ": no writer is named '" + o.writer + "'; the writers are " +
                                     (known.empty() ? "none" : known));
    }
  }
  std::map<vss::Guid, std::string> out;
  for (const auto& [instance, list] : lists) {
    std::string text;
    if (Status s = vss::FormatBackupOptions(list, &text); !s.ok())
      return s.WithContext("--writer-option for writer '" + names[instance] + "'");
    out[instance] = std::move(text);
  }
  *by_instance = std::move(out);
  return Status::OK();
}

}  // namespace gnomon
