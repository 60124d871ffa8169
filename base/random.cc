#include "base/random.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace gnomon {

namespace {
std::mutex g_source_mu;
IdSource g_source;  // empty: the CSPRNG
}  // namespace

void RandomFill(void* p, size_t n) {
  auto* out = static_cast<unsigned char*>(p);
  while (n > 0) {
    ssize_t got = ::getrandom(out, n, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      std::perror("gnomon: getrandom");
      std::abort();
    }
    out += got;
    n -= static_cast<size_t>(got);
  }
}

std::string RandomHexId(size_t bytes) {
  IdSource source;
  {
    std::lock_guard<std::mutex> g(g_source_mu);
    source = g_source;
  }
  if (source) return source(bytes);  // called unlocked: it may reset itself
  static const char* kHex = "0123456789abcdef";
  std::string raw(bytes, '\0'), s;
  RandomFill(raw.data(), bytes);
  s.reserve(bytes * 2);
  for (unsigned char b : raw) {
    s.push_back(kHex[b >> 4]);
    s.push_back(kHex[b & 15]);
  }
  return s;
}

void SetIdSourceForTesting(IdSource source) {
  std::lock_guard<std::mutex> g(g_source_mu);
  g_source = std::move(source);
}

}  // namespace gnomon
