#include "engine/retention.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>

namespace gnomon {

Status ParseGroupBy(const std::string& text, RetentionPolicy* p) {
  p->group_by_host = p->group_by_volume = false;
  size_t start = 0;
  while (start <= text.size() && !text.empty()) {
    size_t comma = text.find(',', start);
    std::string part = text.substr(start, comma == std::string::npos ? comma : comma - start);
    if (part == "host")
      p->group_by_host = true;
    else if (part == "volume")
      p->group_by_volume = true;
    else
      return Status::InvalidArgument(
          "--group-by takes host, volume, both (host,volume) or '' "
          "(one group), not '" +
          text + "'");
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return Status::OK();
}

Status ParseDuration(const std::string& text, int64_t* seconds) {
  constexpr int64_t kHour = 3600, kDay = 24 * kHour;
  int64_t total = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = i;
    int64_t n = 0;
    while (j < text.size() && text[j] >= '0' && text[j] <= '9' && n < 1000000)
      n = n * 10 + (text[j++] - '0');
    if (j == i || j == text.size()) break;  // no number, or a number without a unit
    const char unit = text[j];
    const int64_t per = unit == 'y'   ? 365 * kDay
                        : unit == 'm' ? 30 * kDay
                        : unit == 'w' ? 7 * kDay
                        : unit == 'd' ? kDay
                        : unit == 'h' ? kHour
                                      : 0;
    if (per == 0) break;
    total += n * per;
    i = j + 1;
  }
  if (i != text.size() || text.empty() || total <= 0)
    return Status::InvalidArgument(
        "a duration is numbers with units y, m (months), w, d, h, "
        "e.g. 14d or 1y6m; not '" +
        text + "'");
  *seconds = total;
  return Status::OK();
}

namespace {

// A record's time broken down (UTC); false for a time that is not RFC 3339.
bool BreakDown(const std::string& rfc3339, std::tm* tm, int64_t* epoch) {
  *tm = {};
  if (std::sscanf(rfc3339.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d", &tm->tm_year, &tm->tm_mon,
                  &tm->tm_mday, &tm->tm_hour, &tm->tm_min, &tm->tm_sec) != 6)
    return false;
  tm->tm_year -= 1900;
  tm->tm_mon -= 1;
  const time_t t = timegm(tm);  // also fills tm_wday and tm_yday, for the ISO week
  *epoch = t;
  return true;
}

std::string Period(const std::tm& tm, const char* format) {
  char buf[32];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}

struct Rule {
  const char* name;
  int count;
  const char* period;  // strftime format of the bucket; "" = every backup (--keep-last)
};

std::string GroupKey(const BackupRecord& r, const RetentionPolicy& p,
                     std::vector<std::string>* volumes) {
  volumes->clear();
  if (p.group_by_volume) {
    for (const auto& v : r.volumes) volumes->push_back(v.key.empty() ? v.source : v.key);
    std::sort(volumes->begin(), volumes->end());
  }
  std::string key = p.group_by_host ? r.host : "";
  for (const auto& v : *volumes) key += '\n' + v;
  return key;
}

// The policy's rules over one group, newest first.
void KeepByPolicy(const RetentionPolicy& p, std::vector<RetentionDecision>* group) {
  const Rule rules[] = {{"last", p.last, ""},
                        {"hourly", p.hourly, "%Y-%m-%dT%H"},
                        {"daily", p.daily, "%Y-%m-%d"},
                        {"weekly", p.weekly, "%G-W%V"},
                        {"monthly", p.monthly, "%Y-%m"},
                        {"yearly", p.yearly, "%Y"}};
  std::tm tm;
  int64_t newest = 0;
  for (size_t i = 0; i < group->size(); ++i) {
    RetentionDecision& d = (*group)[i];
    int64_t t = 0;
    const bool dated = BreakDown(d.record->time, &tm, &t);
    if (i == 0) newest = t;
    for (const auto& tag : p.tags)
      if (std::find(d.record->tags.begin(), d.record->tags.end(), tag) != d.record->tags.end())
        d.reasons.push_back("tag " + tag);
    if (p.within_seconds && dated && t >= newest - p.within_seconds) d.reasons.push_back("within");
  }
  for (const Rule& rule : rules) {
    int left = rule.count;
    std::string last_bucket;
    for (size_t i = 0; i < group->size() && left > 0; ++i) {
      RetentionDecision& d = (*group)[i];
      int64_t t;
      if (!BreakDown(d.record->time, &tm, &t)) continue;  // undated: no period rule keeps it
      std::string bucket = *rule.period ? Period(tm, rule.period) : d.record->id;
      if (bucket == last_bucket) continue;
      last_bucket = bucket;
      d.reasons.push_back(rule.name);
      --left;
    }
  }
  for (auto& d : *group) d.keep = !d.reasons.empty();  // KeepNeeded reads it
}

// What the kept backups and the next backups build on.
void KeepNeeded(std::vector<RetentionDecision>* group,
                const std::map<std::string, RetentionDecision*>& by_id) {
  for (auto& d : *group) {
    if (!d.keep || d.record->type != "differential" || d.record->parent.empty()) continue;
    auto it = by_id.find(d.record->parent);
    if (it != by_id.end()) it->second->reasons.push_back("needed by differential " + d.record->id);
  }
  // Newest first: the first full, and the first full or incremental, are
  // what the next differential and incremental take as their parent.
  bool full_seen = false, base_seen = false;
  for (auto& d : *group) {
    const std::string& type = d.record->type;
    if (!base_seen && (type == "full" || type == "incremental")) {
      base_seen = true;
      d.reasons.push_back("needed by the next incremental (its parent)");
    }
    if (!full_seen && type == "full") {
      full_seen = true;
      d.reasons.push_back("needed by the next differential (its parent)");
    }
  }
}

}  // namespace

std::vector<RetentionGroup> ApplyRetention(const std::vector<BackupRecord>& records,
                                           const RetentionPolicy& policy) {
  std::map<std::string, RetentionGroup> groups;
  for (const auto& r : records) {
    std::vector<std::string> volumes;
    RetentionGroup& g = groups[GroupKey(r, policy, &volumes)];
    g.host = policy.group_by_host ? r.host : "";
    g.volumes = volumes;
    g.backups.push_back(RetentionDecision{&r, false, {}});
  }
  std::vector<RetentionGroup> out;
  for (auto& [key, g] : groups) {
    // Newest first; equal times by id, so the order never depends on input.
    std::sort(g.backups.begin(), g.backups.end(), [](const auto& a, const auto& b) {
      return a.record->time != b.record->time ? a.record->time > b.record->time
                                              : a.record->id > b.record->id;
    });
    KeepByPolicy(policy, &g.backups);
    out.push_back(std::move(g));
  }
  // A differential's full may be in another group (another volume set):
  // look parents up across every group.
  std::map<std::string, RetentionDecision*> by_id;
  for (auto& g : out)
    for (auto& d : g.backups) by_id[d.record->id] = &d;
  for (auto& g : out) KeepNeeded(&g.backups, by_id);
  for (auto& g : out)
    for (auto& d : g.backups) d.keep = !d.reasons.empty();
  return out;
}

}  // namespace gnomon
