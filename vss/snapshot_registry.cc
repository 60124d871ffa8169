#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <sstream>

#include "vss/provider.h"

#include "base/durable_file.h"
#include "base/json.h"

namespace gnomon::vss {

using nlohmann::json;

// Root uses the system locations; any other user gets per-user ones (the
// XDG directories), since it can neither write /run nor freeze filesystems.
std::string DefaultStateDir() {
  const char* s = std::getenv("GNOMON_STATE_DIR");
  if (s && *s) return s;
  if (::geteuid() == 0) return "/var/lib/gnomon";
  if (const char* x = std::getenv("XDG_STATE_HOME"); x && *x) return std::string(x) + "/gnomon";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.local/state/gnomon";
  return "/tmp/gnomon-state-" + std::to_string(::geteuid());
}

std::string DefaultRuntimeDir() {
  const char* s = std::getenv("GNOMON_RUNTIME_DIR");
  if (s && *s) return s;
  if (::geteuid() == 0) return "/run/gnomon";
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x) return std::string(x) + "/gnomon";
  return "/tmp/gnomon-run-" + std::to_string(::geteuid());
}

static void MakeDirs(const std::string& dir) {
  std::string cur;
  std::stringstream ss(dir);
  std::string part;
  if (!dir.empty() && dir[0] == '/') cur = "/";
  while (std::getline(ss, part, '/')) {
    if (part.empty()) continue;
    cur += part + "/";
    ::mkdir(cur.c_str(), 0700);
  }
}

SnapshotRegistry::SnapshotRegistry(std::string dir) : dir_(std::move(dir)) {}

// The record's JSON, defined once for writing and reading.
static json ToJson(const SnapshotProperties& p) {
  return json{
      {"snapshot_id", p.snapshot_id.ToString()},
      {"snapshot_set_id", p.snapshot_set_id.ToString()},
      {"volume", p.volume},
      {"provider", p.provider},
      {"device", p.device},
      {"offset", p.offset},
      {"size", p.size},
      {"created", p.created},
      {"state", p.state},
      {"pid", p.pid ? p.pid : ::getpid()},
      {"host", p.host},
      {"backup_id", p.backup_id},
      {"backup_type", p.backup_type == BackupType::kUndefined ? json("") : json(p.backup_type)},
      {"volume_key", p.volume_key},
      {"generation", p.generation},
      {"file_id", p.file_id},
      {"advances", p.advances},
      {"for_differentials", p.for_differentials}};
}

// False for a record of another shape: it names no file we could trust.
static bool FromJson(const json& j, SnapshotProperties* out) {
  SnapshotProperties p;
  auto text = [&](const char* k) { return j.value(k, std::string()); };
  try {
    if (!Guid::Parse(j.at("snapshot_id").get<std::string>(), &p.snapshot_id)) return false;
    Guid::Parse(j.at("snapshot_set_id").get<std::string>(), &p.snapshot_set_id);
    p.volume = j.at("volume");
    p.provider = j.at("provider");
    p.device = j.at("device");
    p.offset = j.at("offset");
    p.size = j.at("size");
    p.created = j.at("created");
    p.state = j.at("state").get<SnapshotState>();
    if (SnapshotStateName(p.state) != j.at("state").get<std::string>()) return false;
    p.pid = j.value("pid", 0);
    p.host = text("host");
    p.backup_id = text("backup_id");
    p.volume_key = text("volume_key");
    p.generation = text("generation");
    p.file_id = text("file_id");
    p.advances = text("advances");
    p.for_differentials = j.value("for_differentials", false);
    if (!ParseBackupType(text("backup_type"), &p.backup_type))
      p.backup_type = BackupType::kUndefined;
  } catch (const json::exception&) {  // nlohmann's way of saying "not that shape"
    return false;
  }
  *out = std::move(p);
  return true;
}

Status SnapshotRegistry::Put(const SnapshotProperties& p) {
  MakeDirs(dir_);
  json j = ToJson(p);
  std::string path = dir_ + "/" + p.snapshot_id.ToString() + ".json";
  std::string text = j.dump(1) + "\n";
  std::string error;
  if (!ReplaceFileDurably(path, text, &error)) return Status::IOError(error);
  return Status::OK();
}

bool SnapshotRegistry::Get(const Guid& id, SnapshotProperties* out) const {
  for (auto& p : List())
    if (p.snapshot_id == id) {
      *out = std::move(p);
      return true;
    }
  return false;
}

void SnapshotRegistry::Remove(const Guid& id) {
  ::unlink((dir_ + "/" + id.ToString() + ".json").c_str());
}

// A record is a small regular file: anything else in the directory (a FIFO
// that would block the open, a link to /dev/zero that never ends, a file of
// gigabytes) is skipped without reading more than kMaxRecordBytes of it.
static constexpr size_t kMaxRecordBytes = 1u << 20;

std::vector<SnapshotProperties> SnapshotRegistry::List() const {
  std::vector<SnapshotProperties> out;
  DIR* d = ::opendir(dir_.c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.size() < 6 || n.substr(n.size() - 5) != ".json") continue;
    std::string text;
    if (!ReadSmallFile(dir_ + "/" + n, kMaxRecordBytes, &text)) continue;
    json j;
    std::string err;
    if (!ParseJsonBounded(text, &j, &err, kMaxRecordBytes)) continue;  // damaged: names nothing
    // A record we cannot read names no file we could safely delete; skip.
    // So is one filed under another snapshot's name (Put writes <id>.json):
    // it could shadow that snapshot's own record.
    if (SnapshotProperties p; FromJson(j, &p) && p.snapshot_id.ToString() + ".json" == n)
      out.push_back(std::move(p));
  }
  ::closedir(d);
  return out;
}

}  // namespace gnomon::vss
