#include "vss/contracts.h"

#include "base/json.h"
#include "vss/backup_components.h"
#include "vss/codes.h"

namespace gnomon::vss {

using nlohmann::json;

std::string TrackerName(ChangeTracker t) { return json(t).get<std::string>(); }

bool ParseTracker(const std::string& s, ChangeTracker* out) {
  // The enum mapping reads an unknown name as the first entry (kNone), so
  // check the round trip.
  ChangeTracker t = json(s).get<ChangeTracker>();
  if (TrackerName(t) != s) return false;
  *out = t;
  return true;
}

std::string SnapshotStateName(SnapshotState s) { return json(s).get<std::string>(); }

// "full-read" rather than "none" in a verdict: it says what the backup does.
static constexpr const char* kFullRead = "full-read";

std::string TrackingVerdict::Encode() const {
  if (!tracked()) return json{{"change_tracking", kFullRead}, {"reason", reason}}.dump();
  return json{
      {"change_tracking", tracker}, {"base_snapshot", base_snapshot}, {"base_device", base_device}}
      .dump();
}

TrackingVerdict TrackingVerdict::Decode(const std::string& text) {
  TrackingVerdict v;
  json j;
  std::string err;
  auto str = [&](const char* k) {
    return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string();
  };
  if (!ParseJsonBounded(text, &j, &err, 1u << 20) || !j.is_object()) {
    v.reason = "the volume writer gave no verdict";
    return v;
  }
  std::string mode = str("change_tracking");
  ChangeTracker t;
  if (mode == kFullRead || !ParseTracker(mode, &t) || t == ChangeTracker::kNone) {
    v.reason = mode == kFullRead ? str("reason")
                                 : "the volume writer's verdict is not one "
                                   "this gnomon knows ('" +
                                       mode + "')";
    return v;
  }
  v.tracker = t;
  v.base_snapshot = str("base_snapshot");
  v.base_device = str("base_device");
  return v;
}

json WriterStatusToJson(const WriterStatus& s) {
  return json{{"name", s.name},
              {"class_id", s.class_id.ToString()},
              {"instance_id", s.instance_id.ToString()},
              {"state", static_cast<int>(s.state)},
              {"state_name", WriterStateName(s.state)},
              {"failure", s.failure},
              {"failure_name", HResultName(s.failure)},
              {"message", s.message}};
}

bool WriterStatusFromJson(const json& j, WriterStatus* out) {
  if (!j.is_object()) return false;
  auto str = [&](const char* k) { return j.contains(k) && j[k].is_string(); };
  auto uint = [&](const char* k) { return j.contains(k) && j[k].is_number_unsigned(); };
  if (!str("name") || !str("class_id") || !str("message") || !uint("state") || !uint("failure") ||
      j["state"].get<uint64_t>() > 15 || j["failure"].get<uint64_t>() > 0xffffffffu)
    return false;
  WriterStatus s;
  if (!Guid::Parse(j["class_id"].get<std::string>(), &s.class_id)) return false;
  if (str("instance_id")) Guid::Parse(j["instance_id"].get<std::string>(), &s.instance_id);
  s.name = j["name"];
  s.state = static_cast<WriterState>(j["state"].get<int>());
  s.failure = j["failure"].get<HResult>();
  s.message = j["message"];
  *out = std::move(s);
  return true;
}

}  // namespace gnomon::vss
