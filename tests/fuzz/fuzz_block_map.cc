// The used-block map of an ext2/3/4 image (libext2fs reading a hostile
// superblock, group descriptors and bitmaps). Beyond not crashing, the map
// must describe only bytes of the volume: sorted, disjoint extents inside
// it, adding up to used_bytes. A map that breaks that would make backup
// read past a volume or restore write past one; the target traps.
#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "engine/block_map.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = ::memfd_create("fuzz-volume", MFD_CLOEXEC);
  if (fd < 0) return 0;
  if (::write(fd, data, size) != static_cast<ssize_t>(size)) {
    ::close(fd);
    return 0;
  }
  const gnomon::BlockMap m = gnomon::ReadBlockMap("/proc/self/fd/" + std::to_string(fd), 0, size);
  ::close(fd);
  uint64_t end = 0, sum = 0;
  for (const auto& e : m.used) {
    if (e.length == 0 || e.offset < end || e.offset + e.length > size) __builtin_trap();
    end = e.offset + e.length;
    sum += e.length;
  }
  if (sum != m.used_bytes) __builtin_trap();
  return 0;
}
