// nbdkit-gnomon-plugin.so: a backup's volume, or a whole disk backup, as an
// NBD export (`gnomon serve` runs nbdkit with it; see README, "Use a backup
// without restoring it"). Reads fetch and verify only the chunks they touch;
// block status reports zero ranges as holes; writes, only with overlay=FILE,
// go to that file and never into the repository.
//
//   nbdkit nbdkit-gnomon-plugin.so repo=DIR [backup=ID|latest] [volume=NAME]
//          [cache=SIZE] [overlay=FILE]
#define NBDKIT_API_VERSION 2
#include <limits.h>
#include <nbdkit-plugin.h>
#include <stdio.h>
#include <stdlib.h>

#include <cerrno>
#include <memory>
#include <string>

#include "engine/key_handoff.h"
#include "engine/overlay.h"
#include "engine/restore_job.h"
#include "engine/volume_reader.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

namespace gnomon {
namespace {

struct Export {
  std::string repo_path, backup = "latest", volume, overlay_path;
  uint64_t cache_bytes = 256ull << 20;
  int key_fd = -1;
  std::unique_ptr<Repository> repo;
  ChunkIndex index;
  IndexHealth health;
  std::unique_ptr<ChunkCache> cache;
  std::unique_ptr<BackupViews> views;
  const BlockView* view = nullptr;  // the overlay when there is one
  std::unique_ptr<Overlay> overlay;
};
Export* g_export = nullptr;

int Fail(const Status& st) {
  nbdkit_error("%s", st.message().c_str());
  nbdkit_set_error(st.IsNotFound() ? ENOENT : EIO);
  return -1;
}

int Config(const char* key, const char* value) {
  if (!g_export) g_export = new Export;
  const std::string k = key;
  if (k == "repo") {
    g_export->repo_path = value;
  } else if (k == "backup") {
    g_export->backup = value;
  } else if (k == "volume") {
    g_export->volume = value;
  } else if (k == "overlay") {
    g_export->overlay_path = value;
  } else if (k == "keyfd") {  // an encrypted repository's key, from gnomon serve
    if (nbdkit_parse_int("keyfd", value, &g_export->key_fd) < 0) return -1;
  } else if (k == "cache") {
    int64_t n = nbdkit_parse_size(value);
    if (n < 0) return -1;
    g_export->cache_bytes = static_cast<uint64_t>(n);
  } else {
    nbdkit_error("unknown parameter '%s'", key);
    return -1;
  }
  return 0;
}

int ConfigComplete() {
  if (!g_export || g_export->repo_path.empty()) {
    nbdkit_error("repo=DIR is required");
    return -1;
  }
  return 0;
}

// The overlay lies outside the repository: writes never reach it.
Status CheckOverlayPlace(const std::string& repo, const std::string& overlay) {
  std::string dir = overlay.substr(0, overlay.rfind('/') + 1);
  char* r = realpath(repo.c_str(), nullptr);
  char* d = realpath(dir.empty() ? "." : dir.c_str(), nullptr);
  Status st;
  if (!r || !d)
    st = Status::NotFound("overlay " + overlay + ": its directory does not exist");
  else if ((std::string(d) + "/").starts_with(std::string(r) + "/"))
    st = Status::InvalidArgument("overlay " + overlay +
                                 " lies inside the repository; put it beside it");
  free(r);
  free(d);
  return st;
}

Status Prepare(Export* e) {
  std::string warning;
  GNOMON_RETURN_IF_ERROR(OpenForReading(e->repo_path, "serve", &e->repo, &warning));
  if (!warning.empty()) fprintf(stderr, "gnomon: warning: %s\n", warning.c_str());
  if (e->key_fd >= 0) {
    std::shared_ptr<const MasterKey> key;
    GNOMON_RETURN_IF_ERROR(KeyFromPipe(e->key_fd, &key));
    e->key_fd = -1;
    if (!e->repo->encrypted())
      return Status::WrongKey(e->repo_path + ": a key was given but it is not encrypted");
    e->repo->SetKey(key);
  }
  GNOMON_RETURN_IF_ERROR(e->repo->LoadChunkIndex(&e->index, &e->health, IndexUse::kRead));
  if (!e->health.clean())
    fprintf(stderr, "gnomon: warning: %s (reading what they hold fails)\n",
            e->health.Describe().c_str());
  BackupRecord rec;
  GNOMON_RETURN_IF_ERROR(e->repo->FindBackup(e->backup, &rec));
  e->cache = std::make_unique<ChunkCache>(e->repo.get(), &e->index, e->cache_bytes);
  e->views = std::make_unique<BackupViews>(e->repo.get(), e->cache.get(), rec);
  std::string name = "disk";
  if (rec.disk.present() && e->volume.empty()) {
    GNOMON_RETURN_IF_ERROR(e->views->Disk(&e->view));
  } else {
    const VolumeRecord* vol = nullptr;
    GNOMON_RETURN_IF_ERROR(PickVolume(rec, e->volume, &vol));
    name = vol->name;
    GNOMON_RETURN_IF_ERROR(
        e->views->Volume(static_cast<size_t>(vol - rec.volumes.data()), &e->view));
  }
  if (!e->overlay_path.empty()) {
    GNOMON_RETURN_IF_ERROR(CheckOverlayPlace(e->repo_path, e->overlay_path));
    GNOMON_RETURN_IF_ERROR(Overlay::Open(e->overlay_path, e->view, rec.id, name, &e->overlay));
    e->view = e->overlay.get();
  }
  return Status::OK();
}

int GetReady() {
  Status st = Prepare(g_export);
  return st.ok() ? 0 : Fail(st);
}

void Unload() {
  delete g_export;  // the overlay's map is flushed, the repository let go
  g_export = nullptr;
}

void* Open(int readonly) {
  if (!readonly && !g_export->overlay) {
    nbdkit_error("read-only export (no overlay=FILE)");
    nbdkit_set_error(EROFS);
    return nullptr;
  }
  return g_export;
}

int64_t GetSize(void*) { return static_cast<int64_t>(g_export->view->size()); }
int CanWrite(void*) { return g_export->overlay ? 1 : 0; }
int CanFlush(void*) { return g_export->overlay ? 1 : 0; }
int CanFua(void*) { return g_export->overlay ? NBDKIT_FUA_NATIVE : NBDKIT_FUA_NONE; }
int CanMultiConn(void*) { return 1; }  // one view and one overlay for every connection
int CanExtents(void*) { return 1; }
int IsRotational(void*) { return 0; }

int Pread(void*, void* buf, uint32_t count, uint64_t offset, uint32_t) {
  Status st = g_export->view->Read(offset, count, static_cast<uint8_t*>(buf));
  return st.ok() ? 0 : Fail(st);
}

int Pwrite(void*, const void* buf, uint32_t count, uint64_t offset, uint32_t flags) {
  Status st = g_export->overlay->Write(offset, count, static_cast<const uint8_t*>(buf));
  if (st.ok() && (flags & NBDKIT_FLAG_FUA)) st = g_export->overlay->Flush();
  return st.ok() ? 0 : Fail(st);
}

int Flush(void*, uint32_t) {
  Status st = g_export->overlay->Flush();
  return st.ok() ? 0 : Fail(st);
}

int Extents(void*, uint32_t count, uint64_t offset, uint32_t flags, nbdkit_extents* out) {
  const uint64_t stop = offset + count;
  for (uint64_t at = offset; at < stop;) {
    bool zero = false;
    uint64_t end = 0;
    g_export->view->Extent(at, &zero, &end);
    if (nbdkit_add_extent(out, at, end - at, zero ? NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO : 0))
      return -1;
    if (flags & NBDKIT_FLAG_REQ_ONE) break;
    at = end;
  }
  return 0;
}

nbdkit_plugin MakePlugin() {
  nbdkit_plugin p{};
  p.name = "gnomon";
  p.longname = "gnomon backup export";
  p.description = "a volume or whole disk of a gnomon backup, read on demand";
  p.unload = Unload;
  p.config = Config;
  p.config_complete = ConfigComplete;
  p.get_ready = GetReady;
  p.open = Open;
  p.get_size = GetSize;
  p.can_write = CanWrite;
  p.can_flush = CanFlush;
  p.can_fua = CanFua;
  p.can_multi_conn = CanMultiConn;
  p.can_extents = CanExtents;
  p.is_rotational = IsRotational;
  p.pread = Pread;
  p.pwrite = Pwrite;
  p.flush = Flush;
  p.extents = Extents;
  return p;
}

nbdkit_plugin g_plugin = MakePlugin();

}  // namespace
}  // namespace gnomon

NBDKIT_REGISTER_PLUGIN(gnomon::g_plugin)
