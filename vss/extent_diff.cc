#include "vss/extent_diff.h"

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

namespace gnomon::vss {

Status ReadExtents(const std::string& path, std::vector<FileExtent>* out) {
  out->clear();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(path, errno);
  Status s = ReadExtents(fd, path, out);
  ::close(fd);
  return s;
}

Status ReadExtents(int fd, const std::string& name, std::vector<FileExtent>* out) {
  out->clear();
  constexpr unsigned kBatch = 512;
  std::unique_ptr<uint8_t[]> buf(
      new uint8_t[sizeof(struct fiemap) + kBatch * sizeof(struct fiemap_extent)]());
  auto* fm = reinterpret_cast<struct fiemap*>(buf.get());
  uint64_t start = 0;
  bool last = false;
  while (!last) {
    std::memset(fm, 0, sizeof(struct fiemap));
    fm->fm_start = start;
    fm->fm_length = FIEMAP_MAX_OFFSET - start;
    fm->fm_flags = FIEMAP_FLAG_SYNC;  // delayed allocations get real addresses first
    fm->fm_extent_count = kBatch;
    if (::ioctl(fd, FS_IOC_FIEMAP, fm) != 0) return Status::FromErrno(name + ": FIEMAP", errno);
    if (fm->fm_mapped_extents == 0) break;
    for (unsigned i = 0; i < fm->fm_mapped_extents; ++i) {
      const auto& e = fm->fm_extents[i];
      start = e.fe_logical + e.fe_length;
      if (e.fe_flags & FIEMAP_EXTENT_LAST) last = true;
      FileExtent x;
      x.logical = e.fe_logical;
      x.physical = e.fe_physical;
      x.length = e.fe_length;
      x.certain = !(e.fe_flags & (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC |
                                  FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_NOT_ALIGNED |
                                  FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_DATA_TAIL));
      x.unwritten = e.fe_flags & FIEMAP_EXTENT_UNWRITTEN;
      out->push_back(x);
    }
  }
  return Status::OK();
}

namespace {

// Walks a sorted extent list, answering "what maps position p, and until
// where does that answer hold".
class Cursor {
 public:
  explicit Cursor(const std::vector<FileExtent>& e) : e_(e) {}
  // At position p: the extent covering p (or null for a hole), and the end
  // of the run over which that holds.
  const FileExtent* At(uint64_t p, uint64_t* run_end) {
    while (i_ < e_.size() && e_[i_].logical + e_[i_].length <= p) ++i_;
    if (i_ == e_.size()) {
      *run_end = UINT64_MAX;
      return nullptr;
    }
    if (e_[i_].logical > p) {
      *run_end = e_[i_].logical;
      return nullptr;
    }
    *run_end = e_[i_].logical + e_[i_].length;
    return &e_[i_];
  }

 private:
  const std::vector<FileExtent>& e_;
  size_t i_ = 0;
};

}  // namespace

std::vector<ByteRange> DiffRanges(const std::vector<FileExtent>& base,
                                  const std::vector<FileExtent>& current, uint64_t offset,
                                  uint64_t size) {
  std::vector<ByteRange> out;
  Cursor b(base), c(current);
  const uint64_t end = offset + size;
  for (uint64_t p = offset; p < end;) {
    uint64_t bend, cend;
    const FileExtent* be = b.At(p, &bend);
    const FileExtent* ce = c.At(p, &cend);
    // Preallocated and never written: it reads as zeros, as a hole does,
    // and counts as one. XFS clones such an extent as a hole, so compared
    // by address it would differ from every base and be cloned and read
    // again by every incremental. A write into it keeps its address but
    // makes it written, which then differs from the base's hole.
    if (be && be->unwritten) be = nullptr;
    if (ce && ce->unwritten) ce = nullptr;
    uint64_t run_end = std::min({bend, cend, end});
    bool same;
    if (!be && !ce) {
      same = true;  // a hole in both
    } else if (!be || !ce) {
      same = false;
    } else {
      same = be->certain && ce->certain &&
             be->physical + (p - be->logical) == ce->physical + (p - ce->logical);
    }
    if (!same) {
      if (!out.empty() && out.back().offset + out.back().length == p)
        out.back().length += run_end - p;
      else
        out.push_back({p, run_end - p});
    }
    p = run_end;
  }
  return out;
}

void MarkChangedChunks(const std::vector<ByteRange>& file_ranges, uint64_t offset, uint64_t size,
                       uint32_t chunk_size, std::vector<bool>* changed,
                       std::vector<ByteRange>* volume_ranges) {
  changed->assign((size + chunk_size - 1) / chunk_size, false);
  if (volume_ranges) volume_ranges->clear();
  for (const auto& r : file_ranges) {
    uint64_t s = std::max(r.offset, offset), e = std::min(r.offset + r.length, offset + size);
    if (s >= e) continue;
    s -= offset, e -= offset;
    for (uint64_t i = s / chunk_size; i <= (e - 1) / chunk_size; ++i) (*changed)[i] = true;
    if (volume_ranges) volume_ranges->push_back({s, e - s});
  }
}

void DiffExtents(const std::vector<FileExtent>& base, const std::vector<FileExtent>& current,
                 uint64_t offset, uint64_t size, uint32_t chunk_size, std::vector<bool>* changed,
                 std::vector<ByteRange>* volume_ranges) {
  MarkChangedChunks(DiffRanges(base, current, offset, size), offset, size, chunk_size, changed,
                    volume_ranges);
}

uint64_t PinnedBytes(const std::vector<FileExtent>& base, const std::vector<FileExtent>& current) {
  uint64_t pinned = 0;
  Cursor c(current);
  for (const auto& be : base) {
    for (uint64_t p = be.logical, end = be.logical + be.length; p < end;) {
      uint64_t cend;
      const FileExtent* ce = c.At(p, &cend);
      uint64_t run_end = std::min(cend, end);
      bool shared = ce && ce->physical + (p - ce->logical) == be.physical + (p - be.logical);
      if (!shared) pinned += run_end - p;
      p = run_end;
    }
  }
  return pinned;
}

}  // namespace gnomon::vss
