// Which backups a retention policy keeps (`gnomon forget --keep-...`), with
// the semantics restic and borg users know: backups are grouped (by host
// and volumes unless told otherwise); within a group, each --keep-daily N
// (hourly, weekly, ...) keeps the newest backup of each of the N most
// recent days that have one; a backup kept by any rule is kept, and every
// rule that kept it is named. Periods are UTC calendar periods (record
// times are UTC); weeks are ISO 8601 weeks. --keep-within is measured back
// from the group's newest backup, not from now, so a backup job that
// stopped running does not age everything out.
//
// On top of the policy, a backup that a kept one builds on is kept: a
// differential's full, and in each group the newest full and the newest
// full-or-incremental, whose stamps and retained snapshots the next
// differential and incremental build on. (An incremental's patches name
// their base chunks by digest; those chunks are kept by prune's mark, not
// by keeping the parent's record.) Pure: no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "format/backup_record.h"

namespace gnomon {

struct RetentionPolicy {
  int last = 0, hourly = 0, daily = 0, weekly = 0, monthly = 0, yearly = 0;
  int64_t within_seconds = 0;     // 0: no --keep-within
  std::vector<std::string> tags;  // keep every backup with any of these
  bool group_by_host = true, group_by_volume = true;
  bool empty() const {
    return !last && !hourly && !daily && !weekly && !monthly && !yearly && !within_seconds &&
           tags.empty();
  }
};

// "host,volume", "host", "volume" or "" (one group).
Status ParseGroupBy(const std::string& text, RetentionPolicy* p);
// restic's form: a sequence of <number><unit>, units y (365 days), m (30
// days), w, d, h; e.g. "1y6m", "14d", "36h".
Status ParseDuration(const std::string& text, int64_t* seconds);

struct RetentionDecision {
  const BackupRecord* record = nullptr;
  bool keep = false;
  std::vector<std::string> reasons;  // "daily", "within 14d", "needed by differential 1a2b..."
};

struct RetentionGroup {
  std::string host;                  // "" when not grouped by host
  std::vector<std::string> volumes;  // volume keys (or sources); empty when not grouped by volume
  std::vector<RetentionDecision> backups;  // newest first
};

// records: every readable backup record. The decisions point into it.
std::vector<RetentionGroup> ApplyRetention(const std::vector<BackupRecord>& records,
                                           const RetentionPolicy& policy);

}  // namespace gnomon
