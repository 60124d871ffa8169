#include "engine/retention.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>

#include "engine/backup_plan.h"

namespace gnomon {

Status ParseGroupBy(const std::string& text, RetentionPolicy* p) {
  p->group_by_host = p->group_by_volume = false;
  size_t start = 0;
  while (!text.empty()) {
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

std::string Duration::ToString() const {
  std::string s;
  if (years) s += std::to_string(years) + "y";
  if (months) s += std::to_string(months) + "m";
  if (days) s += std::to_string(days) + "d";
  if (hours) s += std::to_string(hours) + "h";
  return s;
}

Status ParseDuration(const std::string& text, Duration* out) {
  Duration d;
  size_t i = 0;
  bool ok = !text.empty();
  while (ok && i < text.size()) {
    size_t j = i;
    int n = 0;
    while (j < text.size() && text[j] >= '0' && text[j] <= '9' && n <= 100000)
      n = n * 10 + (text[j++] - '0');
    // A number, at most 100000 of a unit, and then the unit.
    ok = j > i && n <= 100000 && j < text.size();
    if (!ok) break;
    int* field = text[j] == 'y'   ? &d.years
                 : text[j] == 'm' ? &d.months
                 : text[j] == 'd' ? &d.days
                 : text[j] == 'w' ? &d.days
                 : text[j] == 'h' ? &d.hours
                                  : nullptr;
    ok = field && *field <= 1000000;
    if (ok) *field += text[j] == 'w' ? 7 * n : n;
    i = j + 1;
  }
  if (!ok || d.zero())
    return Status::InvalidArgument(
        "a duration is numbers with units y, m (months), w, d, h, "
        "e.g. 14d or 1y6m; not '" +
        text + "'");
  *out = d;
  return Status::OK();
}

Status ParseTagList(const std::string& text, std::vector<std::string>* out) {
  out->clear();
  size_t start = 0;
  for (;;) {
    size_t comma = text.find(',', start);
    std::string tag = text.substr(start, comma == std::string::npos ? comma : comma - start);
    if (tag.empty())
      return Status::InvalidArgument(
          "--keep-tag takes tags (T or T1,T2 for backups with both), "
          "not '" +
          text + "'");
    out->push_back(tag);
    if (comma == std::string::npos) return Status::OK();
    start = comma + 1;
  }
}

namespace {

// A record's time, read; false for one that is not RFC 3339 UTC as
// gnomon writes it ("YYYY-MM-DDTHH:MM:SS[.ffffff]Z").
bool ReadTime(const std::string& text, std::tm* tm, int64_t* micros) {
  *tm = {};
  int frac_digits = 0;
  char tail[32] = "";
  unsigned frac = 0;
  int n = std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%31s", &tm->tm_year, &tm->tm_mon,
                      &tm->tm_mday, &tm->tm_hour, &tm->tm_min, &tm->tm_sec, tail);
  if (n != 7) return false;
  std::string rest = tail;
  if (rest.size() > 1 && rest[0] == '.') {
    size_t k = 1;
    while (k < rest.size() && rest[k] >= '0' && rest[k] <= '9' && frac_digits < 6) {
      frac = frac * 10 + static_cast<unsigned>(rest[k++] - '0');
      ++frac_digits;
    }
    rest = rest.substr(k);
  }
  if (rest != "Z") return false;
  while (frac_digits++ < 6) frac *= 10;
  tm->tm_year -= 1900;
  tm->tm_mon -= 1;
  const time_t t = timegm(tm);  // also fills tm_wday and tm_yday, for the ISO week
  *micros = int64_t{t} * 1000000 + frac;
  return true;
}

std::string Period(const std::tm& tm, const char* format) {
  char buf[32];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}

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

// One decision with its time read.
struct Dated {
  RetentionDecision* d;
  std::tm tm;
  int64_t micros;
};

bool HasAll(const BackupRecord& r, const std::vector<std::string>& tags) {
  for (const auto& t : tags)
    if (std::find(r.tags.begin(), r.tags.end(), t) == r.tags.end()) return false;
  return true;
}

// --keep-within, measured back from the newest backup that is not in the
// future, in calendar units.
void KeepWithin(const Duration& within, int64_t now, std::vector<Dated>* group) {
  const Dated* ref = nullptr;
  for (const auto& x : *group)
    if (x.micros <= now * 1000000) {
      ref = &x;
      break;
    }
  if (!ref) return;
  std::tm cut = ref->tm;
  cut.tm_year -= within.years;
  cut.tm_mon -= within.months;
  cut.tm_mday -= within.days;
  cut.tm_hour -= within.hours;
  const int64_t cutoff = int64_t{timegm(&cut)} * 1000000 + ref->micros % 1000000;
  for (auto& x : *group)
    if (x.micros >= cutoff) x.d->reasons.push_back("within " + within.ToString());
}

// The policy's rules over one group (dated backups, newest first).
void KeepByPolicy(const RetentionPolicy& p, int64_t now, std::vector<Dated>* group) {
  struct Rule {
    const char* name;
    int count;
    const char* period;  // strftime format of the bucket; "" = each backup (--keep-last)
  };
  const Rule rules[] = {{"last", p.last, ""},
                        {"hourly", p.hourly, "%Y-%m-%dT%H"},
                        {"daily", p.daily, "%Y-%m-%d"},
                        {"weekly", p.weekly, "%G-W%V"},
                        {"monthly", p.monthly, "%Y-%m"},
                        {"yearly", p.yearly, "%Y"}};
  for (auto& x : *group)
    for (const auto& list : p.tags)
      if (HasAll(*x.d->record, list)) {
        std::string joined;
        for (const auto& t : list) joined += (joined.empty() ? "" : ",") + t;
        x.d->reasons.push_back("tag " + joined);
        break;
      }
  if (!p.within.zero()) KeepWithin(p.within, now, group);
  for (const Rule& rule : rules) {
    if (rule.count <= 0 || group->empty()) continue;
    int left = rule.count;
    std::string last_bucket;
    for (size_t i = 0; i < group->size() && left > 0; ++i) {
      Dated& x = (*group)[i];
      std::string bucket = *rule.period ? Period(x.tm, rule.period) : x.d->record->id;
      if (i > 0 && bucket == last_bucket) continue;
      last_bucket = bucket;
      x.d->reasons.push_back(rule.name);
      --left;
    }
    // Fewer periods than asked for: the oldest backup stands for the
    // periods before it (restic 0.17).
    Dated& oldest = group->back();
    if (left > 0 && (oldest.d->reasons.empty() || oldest.d->reasons.back() != rule.name))
      oldest.d->reasons.push_back(std::string("oldest ") + rule.name);
  }
}

// What the kept backups and the next backups build on.
void KeepNeeded(const std::vector<BackupRecord>& records, std::vector<RetentionGroup>* groups) {
  std::map<std::string, RetentionDecision*> by_id;
  for (auto& g : *groups)
    for (auto& d : g.backups) by_id[d.record->id] = &d;
  for (auto& [id, d] : by_id) {
    if (d->reasons.empty() || d->record->type != "differential") continue;
    if (auto it = by_id.find(d->record->parent); it != by_id.end())
      it->second->reasons.push_back("needed by differential " + id);
  }
  // The parents the engine itself would choose, per volume, across groups.
  std::vector<BackupRecord> history = records;
  std::sort(history.begin(), history.end(), [](const BackupRecord& a, const BackupRecord& b) {
    return a.time != b.time ? a.time < b.time : a.id < b.id;
  });
  std::set<std::string> keys;
  for (const auto& r : history)
    for (const auto& v : r.volumes)
      if (!v.key.empty()) keys.insert(v.key);
  for (const auto& key : keys)
    for (bool full_only : {false, true}) {
      const ParentChoice c = ChooseParent(history, key, full_only);
      if (!c.record) continue;
      RetentionDecision* d = by_id[c.record->id];
      const std::string why = full_only ? "needed by the next differential (its parent)"
                                        : "needed by the next incremental (its parent)";
      if (std::find(d->reasons.begin(), d->reasons.end(), why) == d->reasons.end())
        d->reasons.push_back(why);
    }
}

}  // namespace

std::vector<RetentionGroup> ApplyRetention(const std::vector<BackupRecord>& records,
                                           const RetentionPolicy& policy, int64_t now) {
  std::map<std::string, RetentionGroup> by_key;
  for (const auto& r : records) {
    std::vector<std::string> volumes;
    RetentionGroup& g = by_key[GroupKey(r, policy, &volumes)];
    g.host = policy.group_by_host ? r.host : "";
    g.volumes = volumes;
    g.backups.push_back(RetentionDecision{&r, false, {}, false});
  }
  std::vector<RetentionGroup> groups;
  for (auto& [key, g] : by_key) {
    std::vector<Dated> dated;
    for (auto& d : g.backups) {
      Dated x{&d, {}, 0};
      if (ReadTime(d.record->time, &x.tm, &x.micros)) {
        dated.push_back(x);
      } else {
        d.undated = true;
        d.reasons.push_back("undated (its time cannot be read)");
      }
    }
    // Newest first; equal times by id, so the order never depends on input.
    std::sort(dated.begin(), dated.end(), [](const Dated& a, const Dated& b) {
      return a.micros != b.micros ? a.micros > b.micros : a.d->record->id > b.d->record->id;
    });
    KeepByPolicy(policy, now, &dated);
    // Listed newest first, undated ones last (the order of `dated`).
    std::vector<RetentionDecision> ordered;
    for (const auto& x : dated) ordered.push_back(std::move(*x.d));
    for (auto& d : g.backups)
      if (d.undated) ordered.push_back(std::move(d));
    g.backups = std::move(ordered);
    groups.push_back(std::move(g));
  }
  KeepNeeded(records, &groups);
  for (auto& g : groups)
    for (auto& d : g.backups) d.keep = !d.reasons.empty();
  return groups;
}

}  // namespace gnomon
