// The file tree `gnomon mount` shows, apart from FUSE itself:
//
//   latest -> ids/<newest backup>
//   ids/<backup>/<volume>.img    the raw volume, sparse, read on demand
//                                (a volume "vm.img" shows as vm.img and vm/)
//   ids/<backup>/<volume>/       the files inside an ext2/3/4 volume
//   ids/<backup>/disk.img        a disk backup's whole disk
//   hosts/<host>/<backup> -> ../../ids/<backup>
//   tags/<tag>/<backup>   -> ../../ids/<backup>
//
// Backups are those that existed when the tree was loaded.
#pragma once

#include <sys/stat.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/ext_reader.h"
#include "engine/volume_reader.h"

namespace gnomon {

struct TreeNode {
  enum class Kind { kDir, kSymlink, kImage, kFile };
  Kind kind = Kind::kDir;
  struct stat st {};
  std::string link;                  // kSymlink
  const BlockView* image = nullptr;  // kImage
  ExtFs* ext = nullptr;              // kFile, and kDir/kSymlink inside a volume
  uint32_t ino = 0;                  // inside a volume: its inode; else 0
};

class BackupTree {
 public:
  BackupTree(Repository* repo, uint64_t cache_bytes) : repo_(repo), cache_bytes_(cache_bytes) {}
  // Where warnings about a volume go (once each).
  void set_log(std::function<void(const std::string&)> log) { log_ = std::move(log); }
  // Reads the chunk index and the backup records; unreadable records are
  // left out and returned in *skipped.
  Status Load(std::vector<Status>* skipped);
  // path: absolute ("/ids/1a2b.../p1/etc/hostname"). NotFound for no entry.
  Status Resolve(const std::string& path, TreeNode* out);
  // The entries of the directory at path, with their nodes.
  Status List(const std::string& path, std::vector<std::pair<std::string, TreeNode>>* out);
  size_t backups() const { return backups_.size(); }
  // What loading the chunk index found wrong (reads of what it names fail).
  const IndexHealth& health() const { return health_; }
  // Chunks decoded and held by the cache, for the log.
  size_t cached_bytes() const { return cache_ ? cache_->bytes() : 0; }

  // A host name or tag as one path component: '/' and '%' percent-encoded,
  // and "", "." and ".." spelled so they are names.
  static std::string Component(const std::string& s);

 private:
  struct Backup {
    std::unique_ptr<BackupViews> views;
    std::vector<std::string> shown;                // ShownNames of its record, once
    std::map<size_t, std::unique_ptr<ExtFs>> ext;  // opened on first use
    std::map<size_t, Status> ext_failed;
  };
  Status ResolveBackup(Backup* b, const std::vector<std::string>& parts, TreeNode* out);
  Status ListBackup(Backup* b, std::vector<std::pair<std::string, TreeNode>>* out);
  // The name each volume shows as (its image adds ".img"): its own, less a
  // ".img" or ".raw" ending unless that makes two alike; "" for the gaps
  // volume of a disk backup, which only disk.img shows.
  static std::vector<std::string> ShownNames(const BackupRecord& rec);
  // The volume shown under this name (without ".img"), or -1; "disk" of a
  // disk backup is -2.
  static int VolumeNamed(const Backup& b, const std::string& name);
  Status Ext(Backup* b, size_t vol, ExtFs** out);
  TreeNode Dir(int64_t time) const;
  TreeNode Link(const std::string& target, int64_t time) const;
  Status Image(const BlockView* view, int64_t time, TreeNode* out) const;
  Status InVolume(ExtFs* fs, uint32_t ino, TreeNode* out) const;

  Repository* repo_;
  uint64_t cache_bytes_;
  ChunkIndex index_;
  IndexHealth health_;
  std::unique_ptr<ChunkCache> cache_;
  mutable std::mutex mu_;
  std::map<std::string, Backup> backups_;                         // by id
  std::map<std::string, std::vector<std::string>> hosts_, tags_;  // component -> ids
  std::map<std::string, int64_t> times_;                          // id -> seconds
  std::string latest_;
  int64_t loaded_ = 0;
  std::function<void(const std::string&)> log_;
  std::map<const ExtFs*, uint64_t> ino_base_;  // a volume's inode numbers: base | inode
  uint64_t next_volume_ = 0;
};

}  // namespace gnomon
