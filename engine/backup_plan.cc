#include "engine/backup_plan.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "vss/backup_components.h"
#include "vss/contracts.h"

namespace gnomon {

ParentChoice ChooseParent(const std::vector<BackupRecord>& history, const std::string& key,
                          bool full_only) {
  for (auto it = history.rbegin(); it != history.rend(); ++it) {
    if (it->type != "full" && (full_only || it->type != "incremental")) continue;
    auto vol = std::find_if(it->volumes.begin(), it->volumes.end(),
                            [&](const VolumeRecord& v) { return v.key == key; });
    if (vol != it->volumes.end()) return {&*it, &*vol};
  }
  return {};
}

ParentChoice ChooseSourceParent(const std::vector<BackupRecord>& history, const std::string& key,
                                bool full_only) {
  for (auto it = history.rbegin(); it != history.rend(); ++it) {
    if (it->type != "full" && (full_only || it->type != "incremental")) continue;
    auto vol = std::find_if(it->volumes.begin(), it->volumes.end(), [&](const VolumeRecord& v) {
      return v.key == key || v.key.rfind(key + "#", 0) == 0;
    });
    if (vol != it->volumes.end()) return {&*it, &*vol};
  }
  return {};
}

std::string StoredStamp(const BackupRecord& r, const std::string& class_id,
                        const std::string& name) {
  const auto& extra = r.extra;
  if (!extra.is_object() || !extra.contains("vss") || !extra["vss"].is_object()) return "";
  const auto& vss = extra["vss"];
  if (!vss.contains("bcd") || !vss["bcd"].is_object()) return "";
  const auto& bcd = vss["bcd"];
  if (!bcd.contains("components") || !bcd["components"].is_array()) return "";
  for (const auto& c : bcd["components"]) {
    auto str = [&](const char* k) {
      return c.is_object() && c.contains(k) && c[k].is_string() ? c[k].get<std::string>() : "";
    };
    if (str("class_id") == class_id && str("name") == name) return str("backup_stamp");
  }
  return "";
}

std::vector<ComponentStamp> StoredStamps(const BackupRecord& r) {
  std::vector<ComponentStamp> out;
  const auto& extra = r.extra;
  if (!extra.is_object() || !extra.contains("vss") || !extra["vss"].is_object()) return out;
  const auto& vss = extra["vss"];
  if (!vss.contains("bcd") || !vss["bcd"].is_object()) return out;
  const auto& bcd = vss["bcd"];
  if (!bcd.contains("components") || !bcd["components"].is_array()) return out;
  // A writer that failed in that backup set a stamp for data that was not
  // backed up as it says: VSS requesters keep only stamps of successes.
  std::set<vss::Guid> failed;
  if (vss.contains("writer_status") && vss["writer_status"].is_array())
    for (const auto& w : vss["writer_status"]) {
      vss::WriterStatus st;
      if (vss::WriterStatusFromJson(w, &st) && vss::IsFailedState(st.state))
        failed.insert(st.instance_id);
    }
  for (const auto& c : bcd["components"]) {
    auto has = [&](const char* k) { return c.is_object() && c.contains(k) && c[k].is_string(); };
    if (!has("class_id") || !has("logical_path") || !has("name") || !has("backup_stamp")) continue;
    vss::Guid instance;
    if (has("instance_id") && vss::Guid::Parse(c["instance_id"].get<std::string>(), &instance) &&
        failed.count(instance))
      continue;
    ComponentStamp s{c["class_id"], c["logical_path"], c["name"], c["backup_stamp"], r.id};
    if (!s.stamp.empty()) out.push_back(std::move(s));
  }
  return out;
}

std::vector<ComponentStamp> ParentStamps(std::vector<const BackupRecord*> parents,
                                         const std::string& skip_class) {
  // Newest first; records sort by time (fixed-width RFC 3339), then id.
  std::sort(parents.begin(), parents.end(), [](const BackupRecord* a, const BackupRecord* b) {
    return a->time != b->time ? a->time > b->time : a->id > b->id;
  });
  std::vector<ComponentStamp> out;
  for (const BackupRecord* r : parents)
    for (auto& s : StoredStamps(*r)) {
      if (s.class_id == skip_class) continue;
      const bool known = std::any_of(out.begin(), out.end(), [&](const ComponentStamp& o) {
        return o.class_id == s.class_id && o.logical_path == s.logical_path && o.name == s.name;
      });
      if (!known) out.push_back(std::move(s));
    }
  return out;
}

std::vector<vss::ByteRange> NormalizeRanges(std::vector<vss::ByteRange> ranges, uint64_t offset,
                                            uint64_t size) {
  const uint64_t end = offset + size;
  std::vector<vss::ByteRange> clipped;
  for (const auto& r : ranges) {
    // Saturating: a length that would wrap means "to the end".
    const uint64_t r_end = r.length > UINT64_MAX - r.offset ? UINT64_MAX : r.offset + r.length;
    const uint64_t a = std::max(r.offset, offset), b = std::min(r_end, end);
    if (a < b) clipped.push_back({a, b - a});
  }
  std::sort(clipped.begin(), clipped.end(),
            [](const vss::ByteRange& x, const vss::ByteRange& y) { return x.offset < y.offset; });
  std::vector<vss::ByteRange> out;
  for (const auto& r : clipped) {
    if (!out.empty() && r.offset <= out.back().offset + out.back().length) {
      const uint64_t e = std::max(out.back().offset + out.back().length, r.offset + r.length);
      out.back().length = e - out.back().offset;
    } else {
      out.push_back(r);
    }
  }
  return out;
}

uint64_t SlotChangedBlocks(const std::vector<vss::ByteRange>& changed, uint64_t start, uint32_t len,
                           size_t* next, std::vector<PatchRange>* out) {
  const uint64_t end = start + len;
  while (*next < changed.size() && changed[*next].offset + changed[*next].length <= start) ++*next;
  out->clear();
  uint64_t total = 0;
  for (size_t k = *next; k < changed.size() && changed[k].offset < end; ++k) {
    const uint64_t a = std::max(std::max(changed[k].offset, start) & ~uint64_t{4095}, start);
    const uint64_t b =
        std::min<uint64_t>((changed[k].offset + changed[k].length + 4095) & ~uint64_t{4095}, end);
    if (b <= a) continue;  // an empty changed range changes no block
    if (!out->empty() && out->back().offset + out->back().length >= a - start) {
      const uint64_t e = std::max<uint64_t>(out->back().offset + out->back().length, b - start);
      total += e - (out->back().offset + out->back().length);
      out->back().length = static_cast<uint32_t>(e - out->back().offset);
    } else {
      out->push_back({static_cast<uint32_t>(a - start), static_cast<uint32_t>(b - a)});
      total += b - a;
    }
  }
  return total;
}

uint64_t DifferingBlocks(std::span<const uint8_t> old, std::span<const uint8_t> now,
                         std::vector<PatchRange>* out) {
  out->clear();
  uint64_t total = 0;
  const uint32_t len = static_cast<uint32_t>(std::min(old.size(), now.size()));
  for (uint32_t off = 0; off < len; off += 4096) {
    const uint32_t n = std::min<uint32_t>(4096, len - off);
    if (std::memcmp(old.data() + off, now.data() + off, n) == 0) continue;
    if (!out->empty() && out->back().offset + out->back().length == off)
      out->back().length += n;
    else
      out->push_back({off, n});
    total += n;
  }
  return total;
}

}  // namespace gnomon
