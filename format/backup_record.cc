#include "format/backup_record.h"

#include <ctime>

#include "base/json.h"
#include "format/names.h"

namespace gnomon {

using nlohmann::json;

void VolumeStats::Add(const VolumeStats& o) {
  bytes += o.bytes;
  bytes_read += o.bytes_read;
  chunks += o.chunks;
  zero_chunks += o.zero_chunks;
  dup_chunks += o.dup_chunks;
  new_chunks += o.new_chunks;
  new_raw_bytes += o.new_raw_bytes;
  new_stored_bytes += o.new_stored_bytes;
  changed_chunks += o.changed_chunks;
  unchanged_chunks += o.unchanged_chunks;
  patched_chunks += o.patched_chunks;
  unused_bytes += o.unused_bytes;
  for (const auto& [level, n] : o.levels) levels[level] += n;
}

json VolumeStats::ToJson() const {
  const VolumeStats& s = *this;
  json out{{"bytes", s.bytes},
           {"bytes_read", s.bytes_read},
           {"chunks", s.chunks},
           {"zero_chunks", s.zero_chunks},
           {"dup_chunks", s.dup_chunks},
           {"new_chunks", s.new_chunks},
           {"new_raw_bytes", s.new_raw_bytes},
           {"new_stored_bytes", s.new_stored_bytes},
           {"changed_chunks", s.changed_chunks},
           {"unchanged_chunks", s.unchanged_chunks},
           {"patched_chunks", s.patched_chunks},
           {"unused_bytes", s.unused_bytes},
           {"seconds", s.seconds}};
  // Absent: unknown (a record copied from a version-15 repository).
  for (const auto& [level, n] : s.levels) out["compression_levels"][std::to_string(level)] = n;
  return out;
}

// Format version 16. Informational, so a malformed object (a later
// writer's negative levels, say) leaves the counts unknown rather than the
// record unreadable.
static std::map<int, uint64_t> LevelsFromJson(const json& j) {
  std::map<int, uint64_t> levels;
  if (!j.is_object()) return {};
  for (const auto& [key, n] : j.items()) {
    const bool digits =
        !key.empty() && key.size() <= 2 && key.find_first_not_of("0123456789") == std::string::npos;
    const int level = digits ? std::atoi(key.c_str()) : -1;
    if (level < 0 || level > 22 || key != std::to_string(level) || !n.is_number_unsigned())
      return {};
    levels[level] = n.get<uint64_t>();
  }
  return levels;
}

static VolumeStats StatsFromJson(const json& j) {
  VolumeStats s;
  s.bytes = j.at("bytes").get<uint64_t>();
  s.bytes_read = j.at("bytes_read").get<uint64_t>();
  s.chunks = j.at("chunks").get<uint64_t>();
  s.zero_chunks = j.at("zero_chunks").get<uint64_t>();
  s.dup_chunks = j.at("dup_chunks").get<uint64_t>();
  s.new_chunks = j.at("new_chunks").get<uint64_t>();
  s.new_raw_bytes = j.at("new_raw_bytes").get<uint64_t>();
  s.new_stored_bytes = j.at("new_stored_bytes").get<uint64_t>();
  s.seconds = j.at("seconds").get<double>();
  s.changed_chunks = j.value("changed_chunks", uint64_t{0});  // version 2
  s.unchanged_chunks = j.value("unchanged_chunks", uint64_t{0});
  s.patched_chunks = j.value("patched_chunks", uint64_t{0});
  s.unused_bytes = j.value("unused_bytes", uint64_t{0});  // version 3
  if (j.contains("compression_levels")) s.levels = LevelsFromJson(j.at("compression_levels"));
  return s;
}

std::string BackupRecord::Encode() const {
  json vols = json::array();
  for (const auto& v : volumes) {
    vols.push_back({{"name", v.name},
                    {"source", v.source},
                    {"size", v.size},
                    {"chunk_size", v.chunk_size},
                    {"index", v.index},
                    {"index_checksum", v.index_checksum},
                    {"stats", v.stats.ToJson()},
                    {"key", v.key},
                    {"parent", v.parent},
                    {"tracking", v.tracking},
                    {"tracking_reason", v.tracking_reason},
                    {"block_map", v.block_map},
                    {"block_map_reason", v.block_map_reason}});
  }
  json j{{"id", id},
         {"time", time},
         {"host", host},
         {"type", type},
         {"parent", parent},
         {"tags", tags},
         {"volumes", vols},
         {"totals", totals.ToJson()},
         {"index_file", index_file},
         {"extra", extra}};
  if (disk.present()) j["disk"] = disk.ToJson();
  // Never throw after the writers ran: bytes that are not UTF-8 (a name a
  // writer sent) are stored as U+FFFD rather than lose the backup.
  return j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Every name that later becomes a path has exactly the form FORMAT.md gives
// it; a record that says otherwise is damaged or hostile.
static Status CheckNames(const std::string& path, const BackupRecord& r) {
  auto bad = [&](const std::string& what) {
    return Status::Corruption(path + ": backup record is malformed (" + what + ")");
  };
  if (!IsBackupId(r.id)) return bad("id '" + r.id + "' is not 16 hex characters");
  if (!r.parent.empty() && !IsBackupId(r.parent)) return bad("parent id is malformed");
  if (!r.index_file.empty() && !IsObjectId(r.index_file))
    return bad("index_file '" + r.index_file + "' is not 32 hex characters");
  for (size_t i = 0; i < r.volumes.size(); ++i) {
    const VolumeRecord& v = r.volumes[i];
    if (v.index != VolumeIndexName(r.id, i))
      return bad("volume " + std::to_string(i) + " names index '" + v.index + "', not '" +
                 VolumeIndexName(r.id, i) + "'");
    if (!v.parent.empty() && !IsBackupId(v.parent)) return bad("a volume's parent is malformed");
    if (v.chunk_size < 4096 || (v.chunk_size & (v.chunk_size - 1)) != 0 ||
        v.chunk_size > (64u << 20))
      return bad("volume chunk size " + std::to_string(v.chunk_size) + " is impossible");
  }
  return Status::OK();
}

Status BackupRecord::Decode(const std::string& path, const std::string& body, BackupRecord* out) {
  json j;
  std::string err;
  if (!ParseJsonBounded(body, &j, &err))
    return Status::Corruption(path + ": backup record is malformed (" + err + ")");
  try {
    BackupRecord r;
    r.id = j.at("id").get<std::string>();
    r.time = j.at("time").get<std::string>();
    r.host = j.at("host").get<std::string>();
    r.type = j.at("type").get<std::string>();
    r.parent = j.at("parent").get<std::string>();
    r.tags = j.at("tags").get<std::vector<std::string>>();
    for (const auto& v : j.at("volumes")) {
      VolumeRecord vr;
      vr.name = v.at("name").get<std::string>();
      vr.source = v.at("source").get<std::string>();
      vr.size = v.at("size").get<uint64_t>();
      vr.chunk_size = v.at("chunk_size").get<uint32_t>();
      vr.index = v.at("index").get<std::string>();
      vr.index_checksum = v.at("index_checksum").get<uint64_t>();
      vr.stats = StatsFromJson(v.at("stats"));
      vr.key = v.value("key", std::string());  // version 2 fields
      vr.parent = v.value("parent", std::string());
      vr.tracking = v.value("tracking", std::string("full-read"));
      vr.tracking_reason = v.value("tracking_reason", std::string());
      vr.block_map = v.value("block_map", std::string("all"));  // version 3
      vr.block_map_reason = v.value("block_map_reason", std::string());
      r.volumes.push_back(std::move(vr));
    }
    r.totals = StatsFromJson(j.at("totals"));
    r.index_file = j.at("index_file").get<std::string>();
    r.extra = j.at("extra");
    if (!r.extra.is_object())
      return Status::Corruption(path + ": backup record's extra is not an object");
    if (j.contains("disk")) {
      GNOMON_RETURN_IF_ERROR(DiskLayout::FromJson(j["disk"], path, &r.disk));
      GNOMON_RETURN_IF_ERROR(r.disk.Validate(r.volumes.size()).WithContext(path));
      // Restore writes each volume at its partition's start: a volume of
      // another size would write into the next partition.
      auto sized = [&](int v, uint64_t size) {
        return r.volumes[static_cast<size_t>(v)].size == size;
      };
      if (!sized(r.disk.gaps_volume, r.disk.size))
        return Status::Corruption(
            path + ": disk layout is malformed (the gaps volume is not the disk's size)");
      for (const auto& p : r.disk.partitions)
        if (p.volume >= 0 && !sized(p.volume, p.size))
          return Status::Corruption(path + ": disk layout is malformed (partition " +
                                    std::to_string(p.number) + "'s volume is not its size)");
    }
    GNOMON_RETURN_IF_ERROR(CheckNames(path, r));
    *out = std::move(r);
    return Status::OK();
  } catch (const json::exception& e) {
    return Status::Corruption(path + ": backup record is malformed (" + e.what() + ")");
  }
}

}  // namespace gnomon
