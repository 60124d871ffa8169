#include "engine/ext_reader.h"

// com_err's header declares no C linkage of its own.
extern "C" {
#include <et/com_err.h>
}
#include <ext2fs/ext2fs.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstring>
#include <map>

namespace gnomon {
namespace {

// libext2fs opens a device by name: the views it may open, by the names
// handed to it (nothing else can be opened through this manager).
std::mutex g_views_mu;
std::map<std::string, const BlockView*> g_views;

errcode_t ViewOpen(const char* name, int flags, io_channel* out);

errcode_t ViewClose(io_channel ch) {
  if (--ch->refcount > 0) return 0;
  free(ch->name);
  delete ch;
  return 0;
}

errcode_t ViewSetBlksize(io_channel ch, int blksize) {
  if (blksize <= 0) return EXT2_ET_INVALID_ARGUMENT;
  ch->block_size = blksize;
  return 0;
}

errcode_t ViewRead64(io_channel ch, unsigned long long block, int count, void* data) {
  const auto* view = static_cast<const BlockView*>(ch->private_data);
  const uint64_t len = count < 0 ? static_cast<uint64_t>(-static_cast<int64_t>(count))
                                 : static_cast<uint64_t>(count) * ch->block_size;
  const uint64_t bs = static_cast<uint64_t>(ch->block_size);
  // A block number from a hostile image may point past the end.
  if (block > view->size() / bs || len > view->size() - block * bs) return EXT2_ET_SHORT_READ;
  Status st = view->Read(block * bs, len, static_cast<uint8_t*>(data));
  if (!st.ok()) {
    fprintf(stderr, "gnomon: %s\n", st.message().c_str());
    return EIO;
  }
  return 0;
}

errcode_t ViewRead(io_channel ch, unsigned long block, int count, void* data) {
  return ViewRead64(ch, block, count, data);
}
errcode_t ViewWrite(io_channel, unsigned long, int, const void*) { return EROFS; }
errcode_t ViewWrite64(io_channel, unsigned long long, int, const void*) { return EROFS; }
errcode_t ViewWriteByte(io_channel, unsigned long, int, const void*) { return EROFS; }
errcode_t ViewFlush(io_channel) { return 0; }

struct_io_manager g_manager = [] {
  struct_io_manager m{};
  m.magic = EXT2_ET_MAGIC_IO_MANAGER;
  m.name = "gnomon backup view";
  m.open = ViewOpen;
  m.close = ViewClose;
  m.set_blksize = ViewSetBlksize;
  m.read_blk = ViewRead;
  m.write_blk = ViewWrite;
  m.flush = ViewFlush;
  m.write_byte = ViewWriteByte;
  m.read_blk64 = ViewRead64;
  m.write_blk64 = ViewWrite64;
  return m;
}();

errcode_t ViewOpen(const char* name, int flags, io_channel* out) {
  if (flags & IO_FLAG_RW) return EROFS;
  const BlockView* view = nullptr;
  {
    std::lock_guard lock(g_views_mu);
    auto it = g_views.find(name);
    if (it == g_views.end()) return ENOENT;
    view = it->second;
  }
  auto* ch = new struct_io_channel{};
  ch->magic = EXT2_ET_MAGIC_IO_CHANNEL;
  ch->manager = &g_manager;
  ch->name = strdup(name);
  ch->block_size = 1024;
  ch->refcount = 1;
  ch->private_data = const_cast<BlockView*>(view);
  *out = ch;
  return 0;
}

}  // namespace

bool ExtFs::Detect(const BlockView* view) {
  uint8_t magic[2];
  if (view->size() < 2048 || !view->Read(1024 + 56, 2, magic).ok()) return false;
  return magic[0] == 0x53 && magic[1] == 0xEF;
}

Status ExtFs::Err(const std::string& what, long code) const {
  return Status::Corruption("volume '" + label_ + "': " + what + ": " + error_message(code));
}

Status ExtFs::Open(const BlockView* view, const std::string& label, std::unique_ptr<ExtFs>* out) {
  std::unique_ptr<ExtFs> fs(new ExtFs(view, label));
  char name[64];
  snprintf(name, sizeof name, "gnomon-view-%p", static_cast<const void*>(view));
  fs->channel_ = name;
  {
    std::lock_guard lock(g_views_mu);
    g_views[name] = view;
  }
  ext2_filsys raw = nullptr;
  errcode_t e = ext2fs_open2(name, nullptr, EXT2_FLAG_64BITS, 0, 0, &g_manager, &raw);
  if (e) return fs->Err("not a readable ext2/3/4 filesystem", e);
  fs->fs_ = raw;
  *out = std::move(fs);
  return Status::OK();
}

bool ExtFs::needs_recovery() const { return ext2fs_has_feature_journal_needs_recovery(fs_->super); }

ExtFs::~ExtFs() {
  if (fs_) ext2fs_close_free(&fs_);
  std::lock_guard lock(g_views_mu);
  g_views.erase(channel_);
}

Status ExtFs::Lookup(const std::string& path, uint32_t* ino) {
  std::lock_guard lock(mu_);
  ext2_ino_t cur = kRoot;
  size_t pos = 0;
  while (pos < path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string::npos) slash = path.size();
    const std::string part = path.substr(pos, slash - pos);
    pos = slash + 1;
    if (part.empty()) continue;
    uint32_t next = 0;
    if (!CachedLocked(cur, part, &next)) {
      ext2_ino_t found = 0;
      errcode_t e =
          ext2fs_lookup(fs_, cur, part.c_str(), static_cast<int>(part.size()), nullptr, &found);
      if (e == EXT2_ET_FILE_NOT_FOUND) return Status::NotFound(path);
      if (e) return Err("looking up " + path, e);
      next = found;
      RememberLocked(cur, part, next);
    }
    cur = next;
  }
  *ino = cur;
  return Status::OK();
}

Status ExtFs::Stat(uint32_t ino, struct stat* st) {
  std::lock_guard lock(mu_);
  struct ext2_inode_large in {};
  errcode_t e = ext2fs_read_inode_full(fs_, ino, reinterpret_cast<ext2_inode*>(&in), sizeof in);
  if (e) return Err("inode " + std::to_string(ino), e);
  auto* small = reinterpret_cast<ext2_inode*>(&in);
  *st = {};
  st->st_ino = ino;
  st->st_mode = in.i_mode;
  st->st_nlink = in.i_links_count;
  st->st_uid = inode_uid(in);
  st->st_gid = inode_gid(in);
  st->st_size = static_cast<off_t>(EXT2_I_SIZE(small));
  st->st_blocks = static_cast<blkcnt_t>(ext2fs_get_stat_i_blocks(fs_, small));
  st->st_blksize = static_cast<blksize_t>(fs_->blocksize);
  const bool extra = in.i_extra_isize >= 24;  // the *_extra time fields are there
  auto ts = [&](uint32_t sec, uint32_t ext) {
    struct timespec t {};
    t.tv_sec = static_cast<int32_t>(sec);
    if (extra) {
      t.tv_sec += static_cast<int64_t>(ext & 3) << 32;
      t.tv_nsec = ext >> 2;
    }
    return t;
  };
  st->st_atim = ts(in.i_atime, in.i_atime_extra);
  st->st_mtim = ts(in.i_mtime, in.i_mtime_extra);
  st->st_ctim = ts(in.i_ctime, in.i_ctime_extra);
  if (LINUX_S_ISCHR(in.i_mode) || LINUX_S_ISBLK(in.i_mode)) {
    // Old encoding in i_block[0], new in i_block[1] (as the kernel reads it).
    const uint32_t old = in.i_block[0], nw = in.i_block[1];
    st->st_rdev = old ? makedev((old >> 8) & 255, old & 255)
                      : makedev((nw & 0xfff00) >> 8, (nw & 0xff) | ((nw >> 12) & 0xfff00));
  }
  return Status::OK();
}

namespace {
struct DirList {
  std::vector<std::pair<std::string, uint32_t>>* out;
};
int DirEntry(ext2_ino_t, int, ext2_dir_entry* d, int, int, char*, void* priv) {
  auto* l = static_cast<DirList*>(priv);
  const int len = ext2fs_dirent_name_len(d);
  std::string name(d->name, static_cast<size_t>(len));
  // A name no path can carry (a damaged or hostile directory) is left out.
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos || d->inode == 0)
    return 0;
  l->out->emplace_back(std::move(name), d->inode);
  return 0;
}
}  // namespace

Status ExtFs::ReadDir(uint32_t ino, std::vector<std::pair<std::string, uint32_t>>* entries) {
  std::lock_guard lock(mu_);
  DirList l{entries};
  errcode_t e = ext2fs_dir_iterate2(fs_, ino, 0, nullptr, DirEntry, &l);
  if (e) return Err("directory inode " + std::to_string(ino), e);
  for (const auto& [name, child] : *entries) RememberLocked(ino, name, child);
  return Status::OK();
}

bool ExtFs::CachedLocked(uint32_t dir, const std::string& name, uint32_t* ino) const {
  auto it = names_.find(std::to_string(dir) + "/" + name);
  if (it == names_.end()) return false;
  *ino = it->second;
  return true;
}

void ExtFs::RememberLocked(uint32_t dir, const std::string& name, uint32_t ino) {
  if (names_.size() >= kMaxNames) names_.clear();  // a tree larger than this: start over
  names_.emplace(std::to_string(dir) + "/" + name, ino);
}

Status ExtFs::MapLocked(uint32_t ino, void* inode, uint64_t off, uint64_t len,
                        std::vector<Run>* runs) {
  const uint64_t bs = fs_->blocksize;
  for (uint64_t lblk = off / bs; lblk * bs < off + len; ++lblk) {
    blk64_t phys = 0;
    int flags = 0;
    errcode_t e =
        ext2fs_bmap2(fs_, ino, static_cast<ext2_inode*>(inode), nullptr, 0, lblk, &flags, &phys);
    if (e)
      return Err("mapping block " + std::to_string(lblk) + " of inode " + std::to_string(ino), e);
    const uint64_t from = std::max(off, lblk * bs), to = std::min(off + len, (lblk + 1) * bs);
    uint64_t at = (phys == 0 || (flags & BMAP_RET_UNINIT)) ? kZeroRange : phys * bs + (from % bs);
    Run* last = runs->empty() ? nullptr : &runs->back();
    if (last && ((at == kZeroRange && last->phys == kZeroRange) ||
                 (at != kZeroRange && last->phys != kZeroRange && last->phys + last->len == at)))
      last->len += to - from;
    else
      runs->push_back({at, to - from});
  }
  return Status::OK();
}

Status ExtFs::Read(uint32_t ino, uint64_t off, size_t len, uint8_t* out, size_t* got) {
  std::vector<Run> runs;
  {
    std::lock_guard lock(mu_);
    struct ext2_inode_large in {};
    auto* small = reinterpret_cast<ext2_inode*>(&in);
    errcode_t e = ext2fs_read_inode_full(fs_, ino, small, sizeof in);
    if (e) return Err("inode " + std::to_string(ino), e);
    const uint64_t size = EXT2_I_SIZE(small);
    *got = off >= size ? 0 : static_cast<size_t>(std::min<uint64_t>(len, size - off));
    if (*got == 0) return Status::OK();
    if (in.i_flags & EXT4_INLINE_DATA_FL) {
      // The whole inline area is copied out (i_block's 60 bytes at least,
      // whatever the file's size): size the buffer by it.
      size_t n = 0;
      e = ext2fs_inline_data_size(fs_, ino, &n);
      if (e) return Err("inline data of inode " + std::to_string(ino), e);
      std::vector<uint8_t> all(std::max<size_t>(n, EXT4_MIN_INLINE_DATA_SIZE));
      e = ext2fs_inline_data_get(fs_, ino, small, all.data(), &n);
      if (e) return Err("inline data of inode " + std::to_string(ino), e);
      std::memset(out, 0, *got);
      if (off < n) std::memcpy(out, all.data() + off, std::min<size_t>(*got, n - off));
      return Status::OK();
    }
    GNOMON_RETURN_IF_ERROR(MapLocked(ino, &in, off, *got, &runs));
  }
  for (const Run& r : runs) {
    if (r.phys == kZeroRange) {
      std::memset(out, 0, r.len);
    } else {
      if (r.phys > view_->size() || r.len > view_->size() - r.phys)
        return Status::Corruption("volume '" + label_ + "': inode " + std::to_string(ino) +
                                  " points past the end of the volume");
      GNOMON_RETURN_IF_ERROR(view_->Read(r.phys, r.len, out));
    }
    out += r.len;
  }
  return Status::OK();
}

Status ExtFs::ReadLink(uint32_t ino, std::string* target) {
  struct ext2_inode_large in {};
  auto* small = reinterpret_cast<ext2_inode*>(&in);
  {
    std::lock_guard lock(mu_);
    errcode_t e = ext2fs_read_inode_full(fs_, ino, small, sizeof in);
    if (e) return Err("inode " + std::to_string(ino), e);
    if (!LINUX_S_ISLNK(in.i_mode)) return Status::InvalidArgument("not a symlink");
    const uint64_t size = EXT2_I_SIZE(small);
    if (size >= fs_->blocksize || size >= 4096)
      return Status::Corruption("volume '" + label_ + "': symlink inode " + std::to_string(ino) +
                                " is " + std::to_string(size) + " bytes long");
    if (ext2fs_is_fast_symlink(small)) {
      target->assign(reinterpret_cast<const char*>(in.i_block),
                     std::min<size_t>(size, sizeof in.i_block));
      return Status::OK();
    }
  }
  std::vector<uint8_t> buf(4096);
  size_t got = 0;
  GNOMON_RETURN_IF_ERROR(Read(ino, 0, buf.size(), buf.data(), &got));
  target->assign(reinterpret_cast<const char*>(buf.data()), got);
  return Status::OK();
}

namespace {
int XattrEntry(char* name, char* value, size_t len, void* priv) {
  // Where inline data lives: the kernel does not show it as an attribute.
  if (std::strcmp(name, "system.data") == 0) return 0;
  static_cast<std::vector<std::pair<std::string, std::string>>*>(priv)->emplace_back(
      name, std::string(value, len));
  return 0;
}
}  // namespace

Status ExtFs::Xattrs(uint32_t ino, std::vector<std::pair<std::string, std::string>>* out) {
  std::lock_guard lock(mu_);
  ext2_xattr_handle* h = nullptr;
  errcode_t e = ext2fs_xattrs_open(fs_, ino, &h);
  if (e) return Err("xattrs of inode " + std::to_string(ino), e);
  e = ext2fs_xattrs_read(h);
  if (!e) e = ext2fs_xattrs_iterate(h, XattrEntry, out);
  ext2fs_xattrs_close(&h);
  if (e) return Err("xattrs of inode " + std::to_string(ino), e);
  return Status::OK();
}

}  // namespace gnomon
