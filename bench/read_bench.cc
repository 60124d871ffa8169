// read_bench: how the read stage should issue its reads. Reads one file
// (a volume image or a block device) with pread, one read at a time, and with
// io_uring at several queue depths, sequentially in large reads and randomly
// in 4 KiB reads (what a scattered incremental's patches read), with the
// page cache dropped before each cold run. Prints a Markdown table.
//
// Usage: read_bench FILE [SEQ_MIB] [RANDOM_READS]
//   (defaults 1024 and 10000; run as root so the cache drop also works for
//   block devices)
#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/source_volume.h"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "read_bench: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

struct Job {
  std::vector<uint64_t> offsets;
  size_t size;
};

void DropCache(int fd) {
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
}

double ReadPread(int fd, const Job& job, bool willneed_first) {
  std::vector<uint8_t> buf(job.size);
  auto t0 = Clock::now();
  if (willneed_first)
    for (uint64_t off : job.offsets)
      ::posix_fadvise(fd, static_cast<off_t>(off), static_cast<off_t>(job.size),
                      POSIX_FADV_WILLNEED);
  for (uint64_t off : job.offsets)
    if (::pread(fd, buf.data(), job.size, static_cast<off_t>(off)) < 0) Die("pread");
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double ReadUring(int fd, const Job& job, unsigned depth) {
  io_uring ring;
  if (int e = io_uring_queue_init(depth, &ring, 0); e < 0) {
    errno = -e;
    Die("io_uring_queue_init");
  }
  std::vector<std::vector<uint8_t>> bufs(depth, std::vector<uint8_t>(job.size));
  std::vector<unsigned> free_bufs;
  for (unsigned i = 0; i < depth; ++i) free_bufs.push_back(i);
  size_t next = 0, done = 0;
  auto t0 = Clock::now();
  while (done < job.offsets.size()) {
    while (next < job.offsets.size() && !free_bufs.empty()) {
      unsigned b = free_bufs.back();
      free_bufs.pop_back();
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      io_uring_prep_read(sqe, fd, bufs[b].data(), static_cast<unsigned>(job.size),
                         job.offsets[next++]);
      io_uring_sqe_set_data64(sqe, b);
    }
    io_uring_submit(&ring);
    io_uring_cqe* cqe;
    if (int e = io_uring_wait_cqe(&ring, &cqe); e < 0) {
      errno = -e;
      Die("io_uring_wait_cqe");
    }
    if (cqe->res < 0) {
      errno = -cqe->res;
      Die("io_uring read");
    }
    free_bufs.push_back(static_cast<unsigned>(io_uring_cqe_get_data64(cqe)));
    io_uring_cqe_seen(&ring, cqe);
    ++done;
  }
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  io_uring_queue_exit(&ring);
  return secs;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: read_bench FILE [SEQ_MIB] [RANDOM_READS]\n");
    return 2;
  }
  const std::string path = argv[1];
  const uint64_t seq_mib = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1024;
  const size_t nrandom = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 10000;
  uint64_t size = 0;
  if (!gnomon::VolumeSize(path, &size).ok()) Die(path);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Die(path);

  std::printf("| pattern | method | cache | MB/s | reads/s |\n|---|---|---|---:|---:|\n");
  auto report = [](const char* pattern, const std::string& method, const char* cache,
                   const Job& job, double secs) {
    std::printf("| %s | %s | %s | %.0f | %.0f |\n", pattern, method.c_str(), cache,
                static_cast<double>(job.offsets.size() * job.size) / secs / 1e6,
                static_cast<double>(job.offsets.size()) / secs);
    std::fflush(stdout);
  };

  for (size_t read_size : {size_t{1} << 20, size_t{4} << 20}) {
    Job seq{{}, read_size};
    const uint64_t limit = std::min<uint64_t>(size, seq_mib << 20);
    for (uint64_t off = 0; off + read_size <= limit; off += read_size) seq.offsets.push_back(off);
    const std::string sz = std::to_string(read_size >> 20) + " MiB reads";
    for (const char* cache : {"cold", "warm"}) {
      const bool cold = cache[0] == 'c';
      if (cold) DropCache(fd);
      report("sequential", "pread, " + sz, cache, seq, ReadPread(fd, seq, false));
      for (unsigned depth : {4u, 16u}) {
        if (cold) DropCache(fd);
        report("sequential", "io_uring depth " + std::to_string(depth) + ", " + sz, cache, seq,
               ReadUring(fd, seq, depth));
      }
    }
  }

  Job rnd{{}, 4096};
  std::mt19937_64 rng(7);
  for (size_t i = 0; i < nrandom; ++i) rnd.offsets.push_back((rng() % (size / 4096)) * 4096);
  std::sort(rnd.offsets.begin(), rnd.offsets.end());  // the pipeline reads in volume order
  DropCache(fd);
  report("random 4 KiB", "pread", "cold", rnd, ReadPread(fd, rnd, false));
  DropCache(fd);
  report("random 4 KiB", "WILLNEED all, then pread", "cold", rnd, ReadPread(fd, rnd, true));
  for (unsigned depth : {4u, 32u, 128u}) {
    DropCache(fd);
    report("random 4 KiB", "io_uring depth " + std::to_string(depth), "cold", rnd,
           ReadUring(fd, rnd, depth));
  }
  ::close(fd);
  return 0;
}
