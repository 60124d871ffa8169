// Which backups a retention policy keeps (`gnomon forget --keep-...`), with
// the semantics restic and borg users know: backups are grouped (by host
// and volumes unless told otherwise); within a group, each --keep-daily N
// (hourly, weekly, ...) keeps the newest backup of each of the N most
// recent days that have one; a backup kept by any rule is kept, and every
// rule that kept it is named. As in restic (0.17), a rule whose count is
// not used up also keeps the group's oldest backup ("oldest daily").
// Periods are UTC calendar periods (record times are UTC); weeks are ISO
// 8601 weeks. --keep-within is measured back, in calendar units, from the
// group's newest backup that is not in the future, not from now: a backup
// job that stopped does not age everything out, and one record from a
// wrong clock cannot push the others out of the window. A record whose
// time cannot be read is always kept, and said.
//
// On top of the policy, what later backups build on is kept: a kept
// differential's full, and for every volume the backups the next
// incremental and differential would take as their parent
// (engine/backup_plan.h ChooseParent, across all groups). An incremental's
// patches name their base chunks by digest: a future prune must keep those
// chunks by following patch bases, not by keeping the parent's record.
// Pure: no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "format/backup_record.h"

namespace gnomon {

// A span in calendar units, as --keep-within takes it: "1y6m" is a year and
// six months back from a time, whatever their lengths in days.
struct Duration {
  int years = 0, months = 0, days = 0, hours = 0;
  bool zero() const { return !years && !months && !days && !hours; }
  std::string ToString() const;  // "1y6m2d"
};

struct RetentionPolicy {
  int last = 0, hourly = 0, daily = 0, weekly = 0, monthly = 0, yearly = 0;
  Duration within;  // zero: no --keep-within
  // Keep every backup that has all the tags of any one of these lists.
  std::vector<std::vector<std::string>> tags;
  bool group_by_host = true, group_by_volume = true;
  bool empty() const {
    return !last && !hourly && !daily && !weekly && !monthly && !yearly && within.zero() &&
           tags.empty();
  }
};

// "host,volume", "host", "volume" or "" (one group).
Status ParseGroupBy(const std::string& text, RetentionPolicy* p);
// restic's form: a sequence of <number><unit>, units y, m (months), w
// (7 days), d, h; e.g. "1y6m", "14d", "36h". Repeated units add up.
Status ParseDuration(const std::string& text, Duration* out);
// "a,b" -> {"a", "b"}: one --keep-tag list (all must match). Empty tags,
// or an empty list, are an error: an unset variable must not match
// untagged backups.
Status ParseTagList(const std::string& text, std::vector<std::string>* out);

struct RetentionDecision {
  const BackupRecord* record = nullptr;
  bool keep = false;
  std::vector<std::string> reasons;  // "daily", "within 14d", "needed by differential 1a2b..."
  bool undated = false;              // its time cannot be read: kept, and said
};

struct RetentionGroup {
  std::string host;                  // "" when not grouped by host
  std::vector<std::string> volumes;  // volume keys (or sources); empty when not grouped by volume
  std::vector<RetentionDecision> backups;  // newest first
};

// records: every readable backup record. The decisions point into it.
// now: seconds since the epoch (times after it are not the reference of
// --keep-within).
std::vector<RetentionGroup> ApplyRetention(const std::vector<BackupRecord>& records,
                                           const RetentionPolicy& policy, int64_t now);

}  // namespace gnomon
