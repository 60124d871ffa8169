#include "engine/writers_admin.h"

#include <sys/stat.h>

#include <map>

#include "base/durable_file.h"
#include "base/json.h"
#include "engine/component_selection.h"
#include "vss/contracts.h"
#include "vss/fs_freeze_writer.h"
#include "vss/remote_writer.h"
#include "vss/volume_writer.h"

namespace gnomon {

using nlohmann::json;

std::vector<std::shared_ptr<vss::Writer>> GatherWriters(
    const std::vector<std::string>& volumes, const SnapshotOptions& opt,
    const std::vector<std::shared_ptr<vss::Provider>>& providers, std::vector<std::string>* notes) {
  std::map<std::string, vss::ChangeTracker> trackers;
  for (const auto& p : providers) trackers[p->name()] = p->tracker();
  std::vector<std::shared_ptr<vss::Writer>> writers = {
      std::make_shared<vss::FsFreezeWriter>(opt.freeze_timeout_ms),
      std::make_shared<vss::VolumeWriter>(volumes, opt.state_dir, std::move(trackers))};
  writers.insert(writers.end(), opt.extra_writers.begin(), opt.extra_writers.end());
  if (!opt.writer_dir.empty())
    for (auto& w : vss::DiscoverRemoteWriters(opt.writer_dir, 5000, notes)) writers.push_back(w);
  if (!opt.hooks_dir.empty())
    for (auto& w : vss::DiscoverScriptWriters(opt.hooks_dir, opt.freeze_timeout_ms, notes))
      writers.push_back(w);
  return writers;
}

void SaveWriterStatus(const std::string& state_dir, const std::vector<vss::WriterStatus>& status) {
  json j{{"time", NowRfc3339Seconds()}, {"writers", json::array()}};
  for (const auto& s : status) j["writers"].push_back(vss::WriterStatusToJson(s));
  ::mkdir(state_dir.c_str(), 0700);
  std::string err;
  ReplaceFileDurably(state_dir + "/writers.json",
                     j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                     &err);  // best effort
}

LastWriterStatus LoadWriterStatus(const std::string& state_dir) {
  LastWriterStatus out;
  std::string text, err;
  json j;
  if (!ReadSmallFile(state_dir + "/writers.json", 4u << 20, &text) ||
      !ParseJsonBounded(text, &j, &err, 4u << 20) || !j.is_object())
    return out;
  if (j.contains("time") && j["time"].is_string()) out.time = j["time"];
  if (!j.contains("writers") || !j["writers"].is_array()) return out;
  for (const auto& w : j["writers"])
    if (vss::WriterStatus s; vss::WriterStatusFromJson(w, &s)) out.writers.push_back(std::move(s));
  return out;
}

json DescribeWriters(const SnapshotOptions& opt, std::vector<std::string>* notes, bool components) {
  std::vector<std::shared_ptr<vss::Writer>> writers = GatherWriters({}, opt, {}, notes);
  vss::RequesterOptions ro;
  ro.runtime_dir = opt.runtime_dir;
  ro.event_timeout_ms = 10000;
  vss::BackupComponents bc(writers, {}, ro);
  std::shared_ptr<vss::Async> a;
  bc.InitializeForBackup();
  bc.GatherWriterMetadata(&a);
  vss::WaitForAsync(a);
  const LastWriterStatus last = LoadWriterStatus(opt.state_dir);
  json out = json::array();
  for (size_t i = 0; i < bc.GetWriterMetadataCount(); ++i) {
    const vss::WriterMetadata* md = bc.GetWriterMetadata(i);
    vss::WriterStatus st;
    st.name = md->name;
    st.class_id = md->class_id;
    st.instance_id = md->instance_id;
    st.state = vss::WriterState::kStable;
    json w = vss::WriterStatusToJson(st);
    w["last_backup"] = nullptr;
    for (const auto& s : last.writers)
      if (s.class_id == md->class_id) {
        st.state = s.state;
        st.failure = s.failure;
        st.message = s.message;
        w = vss::WriterStatusToJson(st);
        w["last_backup"] = last.time;
      }
    w["level"] = vss::ApplicationLevelName(md->level);
    w["kind"] = "built-in";
    w["detail"] = "";
    for (const auto& wr : writers)
      if (wr->instance_id() == md->instance_id) {
        w["kind"] = wr->kind();
        w["detail"] = wr->detail();
      }
    w["state_text"] = vss::WriterStateText(st.state);
    if (components) w["components"] = DescribeComponents(*md);
    out.push_back(w);
  }
  return out;
}

}  // namespace gnomon
