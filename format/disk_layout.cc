#include "format/disk_layout.h"

#include <algorithm>
#include <cctype>
#include <set>

namespace gnomon {

using nlohmann::json;

json DiskLayout::ToJson() const {
  json parts = json::array();
  for (const auto& p : partitions)
    parts.push_back({{"number", p.number},
                     {"start", p.start},
                     {"size", p.size},
                     {"kind", p.kind},
                     {"type", p.type},
                     {"uuid", p.uuid},
                     {"name", p.name},
                     {"attrs", p.attrs},
                     {"bootable", p.bootable},
                     {"fs_type", p.fs_type},
                     {"fs_uuid", p.fs_uuid},
                     {"fs_label", p.fs_label},
                     {"volume", p.volume}});
  return json{{"label", label},
              {"size", size},
              {"sector_size", sector_size},
              {"disk_id", disk_id},
              {"table_length", table_length},
              {"first_lba", first_lba},
              {"gaps_volume", gaps_volume},
              {"partitions", parts}};
}

Status DiskLayout::FromJson(const json& j, const std::string& where, DiskLayout* out) {
  try {
    DiskLayout d;
    d.label = j.at("label").get<std::string>();
    d.size = j.at("size").get<uint64_t>();
    d.sector_size = j.at("sector_size").get<uint32_t>();
    d.disk_id = j.at("disk_id").get<std::string>();
    d.table_length = j.at("table_length").get<uint32_t>();
    d.first_lba = j.at("first_lba").get<uint64_t>();
    d.gaps_volume = j.at("gaps_volume").get<int>();
    for (const auto& pj : j.at("partitions")) {
      DiskPartition p;
      p.number = pj.at("number").get<uint32_t>();
      p.start = pj.at("start").get<uint64_t>();
      p.size = pj.at("size").get<uint64_t>();
      p.kind = pj.at("kind").get<std::string>();
      p.type = pj.at("type").get<std::string>();
      p.uuid = pj.at("uuid").get<std::string>();
      p.name = pj.at("name").get<std::string>();
      p.attrs = pj.at("attrs").get<std::string>();
      p.bootable = pj.at("bootable").get<bool>();
      p.fs_type = pj.at("fs_type").get<std::string>();
      p.fs_uuid = pj.at("fs_uuid").get<std::string>();
      p.fs_label = pj.at("fs_label").get<std::string>();
      p.volume = pj.at("volume").get<int>();
      d.partitions.push_back(std::move(p));
    }
    *out = std::move(d);
    return Status::OK();
  } catch (const json::exception& e) {
    return Status::Corruption(where + ": disk layout is malformed (" + e.what() + ")");
  }
}

namespace {

bool IsGuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

bool IsHex(const std::string& s, size_t min, size_t max) {
  return s.size() >= min && s.size() <= max && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isxdigit(static_cast<unsigned char>(c));
         });
}

// Free text that goes into a partition table script between quotes.
bool IsPlainText(const std::string& s, size_t max) {
  return s.size() <= max && std::none_of(s.begin(), s.end(), [](char c) {
           return static_cast<unsigned char>(c) < 0x20 || c == '"' || c == '\\' || c == 0x7f;
         });
}

// libfdisk's GPT attribute words: names and GUID:<bit> lists, comma- or
// space-separated.
bool IsAttrs(const std::string& s) {
  return s.size() <= 256 && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) || c == ':' || c == ',' || c == ' ';
         });
}

}  // namespace

Status DiskLayout::Validate(size_t volumes) const {
  auto bad = [](const std::string& what) {
    return Status::Corruption("disk layout is malformed (" + what + ")");
  };
  if (label != "gpt" && label != "dos") return bad("label '" + label + "'");
  if (sector_size < 512 || sector_size > 65536 || (sector_size & (sector_size - 1)))
    return bad("sector size " + std::to_string(sector_size));
  if (size == 0 || size % sector_size) return bad("disk size " + std::to_string(size));
  if (label == "gpt" ? !IsGuid(disk_id)
                     : !(disk_id.size() == 10 && disk_id.rfind("0x", 0) == 0 &&
                         IsHex(disk_id.substr(2), 8, 8)))
    return bad("disk id '" + disk_id + "'");
  if (label == "gpt" ? table_length < 1 || table_length > 4096 : table_length != 0)
    return bad("table length " + std::to_string(table_length));
  const uint64_t entries = (uint64_t{table_length} * 128 + sector_size - 1) / sector_size;
  if (label == "gpt" ? first_lba < 2 + entries || first_lba > size / sector_size : first_lba != 0)
    return bad("first LBA " + std::to_string(first_lba));
  if (gaps_volume < 0 || static_cast<size_t>(gaps_volume) >= volumes) return bad("gaps volume");
  std::set<uint32_t> numbers;
  std::set<int> used_volumes{gaps_volume};
  const DiskPartition* extended = nullptr;
  for (const auto& p : partitions) {
    const std::string n = "partition " + std::to_string(p.number);
    if (p.number < 1 || p.number > 4096 || !numbers.insert(p.number).second)
      return bad(n + " number");
    if (p.size == 0 || p.start % sector_size || p.size % sector_size || p.start >= size ||
        p.size > size - p.start || p.start < first_lba * sector_size)
      return bad(n + " lies outside the disk");
    if (label == "gpt") {
      if (p.kind != "primary" || !IsGuid(p.type) || !IsGuid(p.uuid) || p.bootable)
        return bad(n + " kind, type or GUID");
      if (!IsPlainText(p.name, 108) || !IsAttrs(p.attrs)) return bad(n + " name or attributes");
    } else {
      if ((p.kind != "primary" && p.kind != "extended" && p.kind != "logical") ||
          !IsHex(p.type, 1, 2) || !p.uuid.empty() || !p.name.empty() || !p.attrs.empty())
        return bad(n + " kind, type or GUID");
      if ((p.kind == "logical") != (p.number > 4)) return bad(n + " number for its kind");
    }
    if (p.kind == "extended") {
      if (extended || p.volume != -1)
        return bad(n + ": a second extended partition, or one with a volume");
      extended = &p;
      continue;
    }
    if (p.volume < 0 || static_cast<size_t>(p.volume) >= volumes ||
        !used_volumes.insert(p.volume).second)
      return bad(n + " volume");
  }
  // Partitions that hold data do not overlap; logical ones lie inside the extended one.
  std::vector<const DiskPartition*> data;
  for (const auto& p : partitions)
    if (p.kind != "extended") data.push_back(&p);
  std::sort(data.begin(), data.end(), [](auto* a, auto* b) { return a->start < b->start; });
  for (size_t i = 0; i < data.size(); ++i) {
    if (i > 0 && data[i - 1]->start + data[i - 1]->size > data[i]->start)
      return bad("partitions " + std::to_string(data[i - 1]->number) + " and " +
                 std::to_string(data[i]->number) + " overlap");
    // A logical partition starts after its EBR, the extended one's first sector.
    const bool inside = extended && data[i]->start > extended->start &&
                        data[i]->start + data[i]->size <= extended->start + extended->size;
    const bool overlaps = extended && data[i]->start < extended->start + extended->size &&
                          extended->start < data[i]->start + data[i]->size;
    if (overlaps && !inside)
      return bad("partition " + std::to_string(data[i]->number) +
                 " overlaps the extended partition");
    if ((data[i]->kind == "logical") != inside)
      return bad("partition " + std::to_string(data[i]->number) +
                 (inside ? " lies inside the extended partition" : " is logical outside it"));
  }
  return Status::OK();
}

std::vector<DiskLayout::Range> DiskLayout::Gaps() const {
  std::vector<Range> taken;
  for (const auto& p : partitions)
    if (p.kind != "extended") taken.push_back({p.start, p.size});
  std::sort(taken.begin(), taken.end(), [](auto& a, auto& b) { return a.offset < b.offset; });
  std::vector<Range> out;
  uint64_t at = 0;
  for (const auto& t : taken) {
    if (t.offset > at) out.push_back({at, t.offset - at});
    at = std::max(at, t.offset + t.length);
  }
  if (at < size) out.push_back({at, size - at});
  return out;
}

}  // namespace gnomon
