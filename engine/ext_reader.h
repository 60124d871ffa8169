// The files inside an ext2/3/4 volume of a backup, read with libext2fs
// through an I/O manager that reads a BlockView: no kernel mount, no loop
// device, no privilege, and only the chunks a read touches are fetched.
#pragma once

#include <sys/stat.h>

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/volume_reader.h"

struct struct_ext2_filsys;

namespace gnomon {

class ExtFs {
 public:
  // True if the view's superblock carries the ext2/3/4 magic number.
  static bool Detect(const BlockView* view);
  // label names the volume in errors.
  static Status Open(const BlockView* view, const std::string& label, std::unique_ptr<ExtFs>* out);
  ~ExtFs();

  static constexpr uint32_t kRoot = 2;
  // The journal holds transactions not yet written to their places (the
  // image is crash-consistent, not frozen): files show as of before them.
  bool needs_recovery() const;
  // path: "/"-separated, relative to the root ("" is the root); symlinks
  // are not followed.
  Status Lookup(const std::string& path, uint32_t* ino);
  Status Stat(uint32_t ino, struct stat* st);
  // Entries other than "." and "..", with their inode numbers.
  Status ReadDir(uint32_t ino, std::vector<std::pair<std::string, uint32_t>>* entries);
  // Up to len bytes at off (fewer at the end of the file) into out.
  Status Read(uint32_t ino, uint64_t off, size_t len, uint8_t* out, size_t* got);
  Status ReadLink(uint32_t ino, std::string* target);
  // Extended attributes as stored (POSIX ACLs in the kernel's form).
  Status Xattrs(uint32_t ino, std::vector<std::pair<std::string, std::string>>* out);

 private:
  ExtFs(const BlockView* view, std::string label) : view_(view), label_(std::move(label)) {}
  Status Err(const std::string& what, long code) const;
  // The physical byte ranges of [off, off + len) of a file, in order;
  // a range at kZeroRange reads as zeros (a hole or unwritten extent).
  struct Run {
    uint64_t phys, len;
  };
  static constexpr uint64_t kZeroRange = ~0ull;
  Status MapLocked(uint32_t ino, void* inode, uint64_t off, uint64_t len, std::vector<Run>* runs);

  // Directory entries seen, "dir-inode/name" -> inode: libext2fs looks a
  // name up by scanning its directory, so a walk over a tree (find, ls -l)
  // would be quadratic in directory size without it. Bounded.
  bool CachedLocked(uint32_t dir, const std::string& name, uint32_t* ino) const;
  void RememberLocked(uint32_t dir, const std::string& name, uint32_t ino);
  std::unordered_map<std::string, uint32_t> names_;
  static constexpr size_t kMaxNames = 1u << 20;

  const BlockView* view_;
  std::string label_;
  std::string channel_;  // the name the I/O manager knows the view by
  struct_ext2_filsys* fs_ = nullptr;
  std::mutex mu_;  // libext2fs is not thread-safe; data reads run outside it
};

}  // namespace gnomon
