// What reflink change tracking costs the filesystem, per operation, for one
// volume file and the base it was last snapshotted to:
//   clone_cost LIVE BASE
// Reads both extent maps (FIEMAP), compares them, then times a whole-file
// FICLONE of LIVE and a FICLONERANGE of only the changed ranges, each into a
// scratch file beside LIVE (removed afterwards). Neither file is modified.
// Run it on an otherwise idle filesystem: XFS frees a deleted clone's
// extents in the background, which slows every operation meanwhile.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "vss/extent_diff.h"

namespace {

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

int Die(const std::string& what) {
  std::fprintf(stderr, "clone_cost: %s: %s\n", what.c_str(), std::strerror(errno));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: clone_cost LIVE BASE\n");
    return 2;
  }
  const std::string live = argv[1], base = argv[2];
  std::vector<gnomon::vss::FileExtent> lm, bm;
  auto t = std::chrono::steady_clock::now();
  if (gnomon::Status s = gnomon::vss::ReadExtents(live, &lm); !s.ok()) return Die(s.message());
  double map_live = Since(t);
  t = std::chrono::steady_clock::now();
  if (gnomon::Status s = gnomon::vss::ReadExtents(base, &bm); !s.ok()) return Die(s.message());
  double map_base = Since(t);
  struct stat st;
  if (::stat(live.c_str(), &st) != 0) return Die(live);
  auto ranges = gnomon::vss::DiffRanges(bm, lm, 0, static_cast<uint64_t>(st.st_size));

  int src = ::open(live.c_str(), O_RDONLY | O_CLOEXEC);
  if (src < 0) return Die(live);
  const std::string scratch = live + ".clone-cost";
  int dst = ::open(scratch.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (dst < 0 || ::ftruncate(dst, st.st_size) != 0) return Die(scratch);
  t = std::chrono::steady_clock::now();
  for (const auto& r : ranges) {
    struct file_clone_range c {};
    c.src_fd = src;
    c.src_offset = r.offset;
    c.src_length = r.length;
    c.dest_offset = r.offset;
    if (::ioctl(dst, FICLONERANGE, &c) != 0) return Die("FICLONERANGE");
  }
  double changed = Since(t);
  ::close(dst);
  // Freeing a clone's extents goes on in the background after unlink, and
  // would be timed with the next clone: let it finish first.
  auto settle = [&] {
    ::unlink(scratch.c_str());
    ::syncfs(src);
    ::sleep(3);
  };
  settle();

  dst = ::open(scratch.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (dst < 0) return Die(scratch);
  t = std::chrono::steady_clock::now();
  if (::ioctl(dst, FICLONE, src) != 0) return Die("FICLONE");
  double whole = Since(t);
  ::close(dst);
  settle();
  ::close(src);

  std::printf("extents: live %zu, base %zu; changed ranges %zu\n", lm.size(), bm.size(),
              ranges.size());
  std::printf("FIEMAP live        %8.4f s  %6.2f us/extent\n", map_live,
              1e6 * map_live / lm.size());
  std::printf("FIEMAP base        %8.4f s  %6.2f us/extent\n", map_base,
              1e6 * map_base / bm.size());
  std::printf("FICLONE whole file %8.4f s  %6.2f us/extent\n", whole, 1e6 * whole / lm.size());
  std::printf("FICLONERANGE changed %6.4f s  %6.2f us/range\n", changed,
              ranges.empty() ? 0.0 : 1e6 * changed / ranges.size());
  return 0;
}
