// A writer program for the consistency tests: appends numbered records
// ("000000001\n", one write() each) to a file until SIGTERM, at about
// `rate` records per second, and prints the count it wrote when it stops.
// Usage: record_writer FILE [RATE]
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>

static std::atomic<bool> stop{false};
static void OnTerm(int) { stop = true; }

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: record_writer FILE [RATE]\n");
    return 2;
  }
  long rate = argc > 2 ? std::atol(argv[2]) : 2000;
  std::signal(SIGTERM, OnTerm);
  std::signal(SIGINT, OnTerm);
  int fd = ::open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::perror(argv[1]);
    return 1;
  }
  long n = 0;
  const long batch = rate / 100 > 0 ? rate / 100 : 1;  // records per 10 ms
  while (!stop) {
    for (long i = 0; i < batch && !stop; ++i) {
      char rec[16];
      int len = std::snprintf(rec, sizeof rec, "%09ld\n", n + 1);
      if (::write(fd, rec, static_cast<size_t>(len)) != len) {
        std::perror("write");
        return 1;
      }
      ++n;
    }
    struct timespec ts = {0, 10 * 1000 * 1000};
    ::nanosleep(&ts, nullptr);
  }
  ::close(fd);
  std::printf("%ld\n", n);
  return 0;
}
