#include "engine/backup_tree.h"

#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <set>

namespace gnomon {
namespace {

std::vector<std::string> Split(const std::string& path) {
  std::vector<std::string> parts;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string::npos) slash = path.size();
    if (slash > pos) parts.push_back(path.substr(pos, slash - pos));
    pos = slash + 1;
  }
  return parts;
}

int64_t Seconds(const std::string& rfc3339) {
  std::tm tm{};
  if (std::sscanf(rfc3339.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
    return 0;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return timegm(&tm);
}

std::string Join(const std::vector<std::string>& parts, size_t from) {
  std::string s;
  for (size_t i = from; i < parts.size(); ++i) s += (s.empty() ? "" : "/") + parts[i];
  return s;
}

}  // namespace

std::string BackupTree::Component(const std::string& s) {
  if (s.empty()) return "%00";
  if (s == ".") return "%2E";
  if (s == "..") return "%2E%2E";
  std::string out;
  for (char c : s) {
    if (c == '/')
      out += "%2F";
    else if (c == '%')
      out += "%25";
    else if (c == '\0')
      out += "%00";
    else
      out += c;
  }
  return out;
}

Status BackupTree::Load(std::vector<Status>* skipped) {
  GNOMON_RETURN_IF_ERROR(repo_->LoadChunkIndex(&index_, &health_, IndexUse::kRead));
  cache_ = std::make_unique<ChunkCache>(repo_, &index_, cache_bytes_);
  std::vector<BackupRecord> recs;
  GNOMON_RETURN_IF_ERROR(repo_->ListBackups(&recs, skipped));
  for (auto& r : recs) {
    const std::string id = r.id;
    times_[id] = Seconds(r.time);
    hosts_[Component(r.host)].push_back(id);
    for (const auto& t : r.tags) tags_[Component(t)].push_back(id);
    latest_ = id;  // oldest first
    Backup& b = backups_[id];
    b.shown = ShownNames(r);
    b.views = std::make_unique<BackupViews>(repo_, cache_.get(), std::move(r));
  }
  // Like FindBackup("latest"): with a record unreadable, the newest
  // readable one may not be the latest, so nothing is called that.
  if (!skipped->empty()) latest_.clear();
  loaded_ = time(nullptr);
  return Status::OK();
}

TreeNode BackupTree::Dir(int64_t time) const {
  TreeNode n;
  n.kind = TreeNode::Kind::kDir;
  n.st.st_mode = S_IFDIR | 0555;
  n.st.st_nlink = 2;
  n.st.st_uid = getuid();
  n.st.st_gid = getgid();
  n.st.st_mtim.tv_sec = n.st.st_ctim.tv_sec = n.st.st_atim.tv_sec = time;
  return n;
}

TreeNode BackupTree::Link(const std::string& target, int64_t time) const {
  TreeNode n = Dir(time);
  n.kind = TreeNode::Kind::kSymlink;
  n.link = target;
  n.st.st_mode = S_IFLNK | 0777;
  n.st.st_nlink = 1;
  n.st.st_size = static_cast<off_t>(target.size());
  return n;
}

Status BackupTree::Image(const BlockView* view, int64_t time, TreeNode* out) const {
  *out = Dir(time);
  out->kind = TreeNode::Kind::kImage;
  out->image = view;
  // The raw bytes hold every file: only the mounting user reads them.
  out->st.st_mode = S_IFREG | 0400;
  out->st.st_nlink = 1;
  out->st.st_size = static_cast<off_t>(view->size());
  out->st.st_blksize = 4096;
  // Blocks count the stored data only, so du and cp --sparse see holes.
  uint64_t data = 0;
  for (uint64_t off = 0; off < view->size();) {
    bool zero = false;
    uint64_t end = 0;
    view->Extent(off, &zero, &end);
    if (!zero) data += end - off;
    off = end;
  }
  out->st.st_blocks = static_cast<blkcnt_t>((data + 511) / 512);
  return Status::OK();
}

Status BackupTree::InVolume(ExtFs* fs, uint32_t ino, TreeNode* out) const {
  *out = TreeNode{};
  GNOMON_RETURN_IF_ERROR(fs->Stat(ino, &out->st));
  {
    // Unique across the mount, equal for the names of one inode (hard links).
    std::lock_guard lock(mu_);
    out->st.st_ino = ino_base_.at(fs) | ino;
  }
  out->ext = fs;
  out->ino = ino;
  if (S_ISDIR(out->st.st_mode))
    out->kind = TreeNode::Kind::kDir;
  else if (S_ISLNK(out->st.st_mode))
    out->kind = TreeNode::Kind::kSymlink;
  else
    out->kind = TreeNode::Kind::kFile;
  return Status::OK();
}

std::vector<std::string> BackupTree::ShownNames(const BackupRecord& rec) {
  auto shown = [&](bool strip) {
    std::vector<std::string> names(rec.volumes.size());
    for (size_t i = 0; i < rec.volumes.size(); ++i) {
      if (rec.disk.present() && static_cast<int>(i) == rec.disk.gaps_volume) continue;
      std::string n = rec.volumes[i].name;
      // An image file's volume "vm.img" shows as vm.img and vm/, not vm.img.img.
      for (const char* ext : {".img", ".raw"})
        if (strip && n.size() > 4 && n.ends_with(ext)) n.resize(n.size() - 4);
      names[i] = Component(n);
    }
    return names;
  };
  // Every entry a backup directory shows must be one name: each volume's
  // NAME and NAME.img, and disk.img.
  auto unique = [&](const std::vector<std::string>& names) {
    std::set<std::string> seen;
    if (rec.disk.present()) seen.insert("disk.img");
    for (const auto& n : names)
      if (!n.empty() && ((rec.disk.present() && n == "disk") || !seen.insert(n).second ||
                         !seen.insert(n + ".img").second))
        return false;
    return true;
  };
  for (bool strip : {true, false})
    if (auto names = shown(strip); unique(names)) return names;
  // Names that still clash: each prefixed with its position.
  auto names = shown(false);
  for (size_t i = 0; i < names.size(); ++i)
    if (!names[i].empty()) names[i] = std::to_string(i) + "-" + names[i];
  return names;
}

int BackupTree::VolumeNamed(const Backup& b, const std::string& name) {
  if (b.views->record().disk.present() && name == "disk") return -2;
  for (size_t i = 0; i < b.shown.size(); ++i)
    if (!b.shown[i].empty() && b.shown[i] == name) return static_cast<int>(i);
  return -1;
}

Status BackupTree::Ext(Backup* b, size_t vol, ExtFs** out) {
  std::lock_guard lock(mu_);
  if (auto it = b->ext.find(vol); it != b->ext.end()) {
    *out = it->second.get();
    return Status::OK();
  }
  if (auto it = b->ext_failed.find(vol); it != b->ext_failed.end()) return it->second;
  const BlockView* view = nullptr;
  Status st = b->views->Volume(vol, &view);
  std::unique_ptr<ExtFs> fs;
  if (st.ok()) {
    if (!ExtFs::Detect(view)) return Status::NotFound("not ext2/3/4");
    st = ExtFs::Open(view, b->views->record().volumes[vol].name, &fs);
  }
  if (!st.ok()) {
    // A damaged filesystem stays so; an I/O error may pass.
    if (st.IsCorruption()) b->ext_failed[vol] = st;
    return st;
  }
  if (fs->needs_recovery() && log_)
    log_("volume '" + b->views->record().volumes[vol].name +
         "': its journal was not replayed (a crash-consistent image): the files shown are as "
         "of the last checkpoint");
  *out = fs.get();
  ino_base_[fs.get()] = (++next_volume_ << 32);
  b->ext[vol] = std::move(fs);
  return Status::OK();
}

Status BackupTree::ResolveBackup(Backup* b, const std::vector<std::string>& parts, TreeNode* out) {
  const BackupRecord& rec = b->views->record();
  const int64_t t = times_.at(rec.id);
  if (parts.size() == 2) {
    *out = Dir(t);
    return Status::OK();
  }
  const std::string& name = parts[2];
  const BlockView* view = nullptr;
  if (name.size() > 4 && name.ends_with(".img") && parts.size() == 3) {
    const int v = VolumeNamed(*b, name.substr(0, name.size() - 4));
    if (v == -2) GNOMON_RETURN_IF_ERROR(b->views->Disk(&view));
    if (v >= 0) GNOMON_RETURN_IF_ERROR(b->views->Volume(static_cast<size_t>(v), &view));
    if (view) return Image(view, t, out);
  }
  const int v = VolumeNamed(*b, name);
  if (v < 0) return Status::NotFound(name);
  ExtFs* fs = nullptr;
  GNOMON_RETURN_IF_ERROR(Ext(b, static_cast<size_t>(v), &fs));
  uint32_t ino = 0;
  GNOMON_RETURN_IF_ERROR(fs->Lookup(Join(parts, 3), &ino));
  return InVolume(fs, ino, out);
}

Status BackupTree::Resolve(const std::string& path, TreeNode* out) {
  const auto parts = Split(path);
  if (parts.empty()) {
    *out = Dir(loaded_);
    return Status::OK();
  }
  const std::string& top = parts[0];
  if (top == "latest" && parts.size() == 1) {
    if (latest_.empty()) return Status::NotFound(path);
    *out = Link("ids/" + latest_, times_.at(latest_));
    return Status::OK();
  }
  if (top == "ids") {
    if (parts.size() == 1) {
      *out = Dir(loaded_);
      return Status::OK();
    }
    auto it = backups_.find(parts[1]);
    if (it == backups_.end()) return Status::NotFound(path);
    return ResolveBackup(&it->second, parts, out);
  }
  if (top == "hosts" || top == "tags") {
    const auto& groups = top == "hosts" ? hosts_ : tags_;
    if (parts.size() == 1) {
      *out = Dir(loaded_);
      return Status::OK();
    }
    auto g = groups.find(parts[1]);
    if (g == groups.end() || parts.size() > 3) return Status::NotFound(path);
    if (parts.size() == 2) {
      *out = Dir(times_.at(g->second.back()));
      return Status::OK();
    }
    for (const auto& id : g->second)
      if (id == parts[2]) {
        *out = Link("../../ids/" + id, times_.at(id));
        return Status::OK();
      }
  }
  return Status::NotFound(path);
}

Status BackupTree::ListBackup(Backup* b, std::vector<std::pair<std::string, TreeNode>>* out) {
  const BackupRecord& rec = b->views->record();
  std::vector<std::string> names;
  if (rec.disk.present()) names.push_back("disk.img");
  const auto& shown = b->shown;
  for (size_t i = 0; i < rec.volumes.size(); ++i) {
    if (shown[i].empty()) continue;
    const std::string& n = shown[i];
    names.push_back(n + ".img");
    ExtFs* fs = nullptr;
    Status st = Ext(b, i, &fs);
    // A volume that holds ext2/3/4 but cannot be opened still shows, and
    // reading it says why.
    if (st.ok() || !st.IsNotFound()) names.push_back(n);
  }
  for (const auto& n : names) {
    TreeNode node;
    if (Resolve("/ids/" + rec.id + "/" + n, &node).ok())
      out->emplace_back(n, node);
    else
      out->emplace_back(n, Dir(times_.at(rec.id)));
  }
  return Status::OK();
}

Status BackupTree::List(const std::string& path,
                        std::vector<std::pair<std::string, TreeNode>>* out) {
  TreeNode dir;
  GNOMON_RETURN_IF_ERROR(Resolve(path, &dir));
  if (dir.kind != TreeNode::Kind::kDir) return Status::InvalidArgument(path + ": not a directory");
  if (dir.ext) {
    std::vector<std::pair<std::string, uint32_t>> entries;
    GNOMON_RETURN_IF_ERROR(dir.ext->ReadDir(dir.ino, &entries));
    for (const auto& [name, ino] : entries) {
      TreeNode n;
      if (InVolume(dir.ext, ino, &n).ok()) out->emplace_back(name, n);
    }
    return Status::OK();
  }
  const auto parts = Split(path);
  if (parts.empty()) {
    for (const char* n : {"ids", "hosts", "tags"}) out->emplace_back(n, Dir(loaded_));
    if (!latest_.empty()) out->emplace_back("latest", Link("ids/" + latest_, times_.at(latest_)));
  } else if (parts[0] == "ids" && parts.size() == 1) {
    for (auto& [id, b] : backups_) out->emplace_back(id, Dir(times_.at(id)));
  } else if (parts[0] == "ids") {
    return ListBackup(&backups_.at(parts[1]), out);
  } else {
    const auto& groups = parts[0] == "hosts" ? hosts_ : tags_;
    if (parts.size() == 1)
      for (const auto& [name, ids] : groups) out->emplace_back(name, Dir(times_.at(ids.back())));
    else
      for (const auto& id : groups.at(parts[1]))
        out->emplace_back(id, Link("../../ids/" + id, times_.at(id)));
  }
  return Status::OK();
}

}  // namespace gnomon
