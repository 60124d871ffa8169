#define FUSE_USE_VERSION 35
#include "engine/fuse_mount.h"

#include <fuse.h>
#include <sys/statvfs.h>

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstring>
#include <functional>

#include "engine/backup_tree.h"

namespace gnomon {
namespace {

struct Mount {
  BackupTree tree;
  const MountOptions* opt;
};

Mount* Self() { return static_cast<Mount*>(fuse_get_context()->private_data); }

// The errno for a failed call; problems other than "no such entry" are
// logged, since the caller only sees EIO.
int Errno(const Status& st) {
  if (st.IsNotFound()) return -ENOENT;
  if (st.code() == Status::Code::kInvalidArgument) return -EINVAL;
  if (Self()->opt->log) Self()->opt->log(st.message());
  return -EIO;
}

void* Init(fuse_conn_info* conn, fuse_config* cfg) {
  // Nothing in a backup changes: let the kernel keep what it read.
  cfg->kernel_cache = 1;
  // Our inode numbers: hard links keep one number (cp -a, rsync -H).
  cfg->use_ino = 1;
  cfg->readdir_ino = 1;
  // With --allow-other the kernel checks stored ACLs too, not only modes.
  if (Self()->opt->allow_other && (conn->capable & FUSE_CAP_POSIX_ACL))
    conn->want |= FUSE_CAP_POSIX_ACL;
  cfg->entry_timeout = cfg->attr_timeout = 3600;
  cfg->negative_timeout = 3600;
  return fuse_get_context()->private_data;
}

// Nodes that are no inode of a volume are numbered by their path.
void Number(const std::string& path, struct stat* st) {
  if (st->st_ino == 0) st->st_ino = (std::hash<std::string>()(path) >> 1) | (1ull << 63);
}

int GetAttr(const char* path, struct stat* st, fuse_file_info*) {
  TreeNode n;
  Status s = Self()->tree.Resolve(path, &n);
  if (!s.ok()) return Errno(s);
  *st = n.st;
  Number(path, st);
  return 0;
}

int ReadLink(const char* path, char* buf, size_t size) {
  TreeNode n;
  Status s = Self()->tree.Resolve(path, &n);
  if (!s.ok()) return Errno(s);
  if (n.kind != TreeNode::Kind::kSymlink) return -EINVAL;
  std::string target = n.link;
  if (n.ext) {
    s = n.ext->ReadLink(n.ino, &target);
    if (!s.ok()) return Errno(s);
  }
  if (size == 0) return -EINVAL;
  const size_t len = std::min(size - 1, target.size());
  std::memcpy(buf, target.data(), len);
  buf[len] = '\0';
  return 0;
}

int ReadDir(const char* path, void* buf, fuse_fill_dir_t fill, off_t, fuse_file_info*,
            fuse_readdir_flags) {
  std::vector<std::pair<std::string, TreeNode>> entries;
  Status s = Self()->tree.List(path, &entries);
  if (!s.ok()) return Errno(s);
  fill(buf, ".", nullptr, 0, fuse_fill_dir_flags{});
  fill(buf, "..", nullptr, 0, fuse_fill_dir_flags{});
  const std::string dir = path;
  for (auto& [name, node] : entries) {
    Number(dir + (dir == "/" ? "" : "/") + name, &node.st);
    if (fill(buf, name.c_str(), &node.st, 0, FUSE_FILL_DIR_PLUS)) break;
  }
  return 0;
}

int Open(const char* path, fuse_file_info* fi) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
  TreeNode n;
  Status s = Self()->tree.Resolve(path, &n);
  if (!s.ok()) return Errno(s);
  if (n.kind != TreeNode::Kind::kImage && n.kind != TreeNode::Kind::kFile) return -EISDIR;
  fi->fh = reinterpret_cast<uint64_t>(new TreeNode(n));
  fi->keep_cache = 1;
  return 0;
}

int Release(const char*, fuse_file_info* fi) {
  delete reinterpret_cast<TreeNode*>(fi->fh);
  return 0;
}

int Read(const char*, char* buf, size_t size, off_t off, fuse_file_info* fi) {
  const auto* n = reinterpret_cast<const TreeNode*>(fi->fh);
  if (off < 0) return -EINVAL;
  size = std::min<size_t>(size, INT_MAX);
  auto* out = reinterpret_cast<uint8_t*>(buf);
  if (n->kind == TreeNode::Kind::kFile) {
    size_t got = 0;
    Status s = n->ext->Read(n->ino, static_cast<uint64_t>(off), size, out, &got);
    return s.ok() ? static_cast<int>(got) : Errno(s);
  }
  const uint64_t total = n->image->size(), at = static_cast<uint64_t>(off);
  if (at >= total) return 0;
  const size_t len = static_cast<size_t>(std::min<uint64_t>(size, total - at));
  Status s = n->image->Read(at, len, out);
  return s.ok() ? static_cast<int>(len) : Errno(s);
}

// SEEK_DATA and SEEK_HOLE over an image's stored and zero ranges (a file
// inside a volume is all data). Never ENOSYS: that would turn lseek off for
// the whole mount.
off_t Lseek(const char*, off_t off, int whence, fuse_file_info* fi) {
  const auto* n = reinterpret_cast<const TreeNode*>(fi->fh);
  const uint64_t size = static_cast<uint64_t>(n->st.st_size);
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return -EINVAL;
  if (off < 0) return -EINVAL;
  uint64_t at = static_cast<uint64_t>(off);
  if (at >= size) return -ENXIO;
  if (n->kind == TreeNode::Kind::kFile) return whence == SEEK_DATA ? off : static_cast<off_t>(size);
  while (at < size) {
    bool zero = false;
    uint64_t end = 0;
    n->image->Extent(at, &zero, &end);
    if (zero == (whence == SEEK_HOLE)) return static_cast<off_t>(at);
    at = end;
  }
  return whence == SEEK_HOLE ? static_cast<off_t>(size) : -ENXIO;
}

int ListXattr(const char* path, char* list, size_t size) {
  TreeNode n;
  Status s = Self()->tree.Resolve(path, &n);
  if (!s.ok()) return Errno(s);
  std::string names;
  if (n.ext) {
    std::vector<std::pair<std::string, std::string>> xs;
    s = n.ext->Xattrs(n.ino, &xs);
    if (!s.ok()) return Errno(s);
    for (const auto& x : xs) names += x.first + '\0';
  }
  if (size == 0) return static_cast<int>(names.size());
  if (size < names.size()) return -ERANGE;
  std::memcpy(list, names.data(), names.size());
  return static_cast<int>(names.size());
}

int GetXattr(const char* path, const char* name, char* value, size_t size) {
  TreeNode n;
  Status s = Self()->tree.Resolve(path, &n);
  if (!s.ok()) return Errno(s);
  if (!n.ext) return -ENODATA;
  std::vector<std::pair<std::string, std::string>> xs;
  s = n.ext->Xattrs(n.ino, &xs);
  if (!s.ok()) return Errno(s);
  for (const auto& [k, v] : xs) {
    if (k != name) continue;
    if (size == 0) return static_cast<int>(v.size());
    if (size < v.size()) return -ERANGE;
    std::memcpy(value, v.data(), v.size());
    return static_cast<int>(v.size());
  }
  return -ENODATA;
}

int StatFs(const char*, struct statvfs* st) {
  *st = {};
  st->f_bsize = st->f_frsize = 4096;
  st->f_namemax = 255;
  return 0;
}

fuse_operations Operations() {
  fuse_operations ops{};
  ops.init = Init;
  ops.getattr = GetAttr;
  ops.readlink = ReadLink;
  ops.readdir = ReadDir;
  ops.open = Open;
  ops.release = Release;
  ops.read = Read;
  ops.lseek = Lseek;
  ops.listxattr = ListXattr;
  ops.getxattr = GetXattr;
  ops.statfs = StatFs;
  return ops;
}

}  // namespace

Status RunMount(Repository* repo, const MountOptions& opt) {
  Mount m{BackupTree(repo, opt.cache_bytes), &opt};
  if (opt.log) m.tree.set_log(opt.log);
  std::vector<Status> skipped;
  GNOMON_RETURN_IF_ERROR(m.tree.Load(&skipped));
  if (opt.log) {
    for (const auto& s : skipped) opt.log("left out: " + s.message());
    if (!m.tree.health().clean())
      opt.log("warning: " + m.tree.health().Describe() + " (reading what they hold fails)");
  }
  std::vector<std::string> argv = {"gnomon", "-o", "ro,fsname=gnomon,subtype=gnomon"};
  // Others let in meet the stored owners and modes, checked by the kernel.
  if (opt.allow_other) argv.insert(argv.end(), {"-o", "allow_other,default_permissions"});
  if (opt.debug) argv.push_back("-d");
  std::vector<char*> raw;
  for (auto& a : argv) raw.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(raw.size()), raw.data());
  const fuse_operations ops = Operations();
  fuse* f = fuse_new(&args, &ops, sizeof ops, &m);
  fuse_opt_free_args(&args);
  if (!f) return Status::InvalidArgument("cannot set up FUSE (see the message above)");
  if (fuse_mount(f, opt.mountpoint.c_str()) != 0) {
    fuse_destroy(f);
    return Status::IOError(opt.mountpoint +
                           ": cannot mount (is it an empty directory you own, and is /dev/fuse "
                           "there? see the message above)");
  }
  fuse_session* se = fuse_get_session(f);
  Status st;
  // libfuse installs its handlers (which end the loop, then unmount) only
  // over the default action; the CLI's own would leave SIGTERM unheard.
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) std::signal(sig, SIG_DFL);
  if (fuse_set_signal_handlers(se) != 0) {
    st = Status::IOError("cannot install signal handlers");
  } else {
    if (opt.ready) opt.ready(opt.mountpoint, m.tree.backups());
    fuse_loop_config cfg{};
    cfg.clone_fd = 0;
    cfg.max_idle_threads = 10;
    // A signal ends the loop with its number: an ordinary unmount.
    if (fuse_loop_mt(f, &cfg) < 0) st = Status::IOError("the FUSE session ended with an error");
    fuse_remove_signal_handlers(se);
  }
  fuse_unmount(f);
  fuse_destroy(f);
  return st;
}

}  // namespace gnomon
