// `gnomon mount`: a BackupTree as a read-only FUSE file system (libfuse3).
#pragma once

#include <functional>
#include <string>

#include "format/repository.h"

namespace gnomon {

struct MountOptions {
  std::string mountpoint;
  uint64_t cache_bytes = 256ull << 20;  // decoded chunks held for all readers
  bool allow_other = false;             // other users may look (needs user_allow_other)
  bool debug = false;                   // libfuse's request log on stderr
  // Told once the file system is mounted and serving.
  std::function<void(const std::string& mountpoint, size_t backups)> ready;
  // Told each problem a read met (a damaged chunk, say), one line each.
  std::function<void(const std::string&)> log;
};

// Mounts and serves until unmounted (fusermount3 -u, umount) or SIGINT,
// SIGTERM or SIGHUP arrive; then unmounts. Reads fail with EIO, never
// with wrong bytes, where a chunk cannot be read or fails its digest.
Status RunMount(Repository* repo, const MountOptions& opt);

}  // namespace gnomon
