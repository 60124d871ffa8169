#include "base/clock.h"

#include <ctime>

#include <fmt/format.h>

namespace gnomon {

int64_t NowMicros() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000000 + ts.tv_nsec / 1000;
}

static std::string Seconds(time_t t) {
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return buf;
}

std::string Rfc3339FromMicros(int64_t micros) {
  return fmt::format("{}.{:06}Z", Seconds(static_cast<time_t>(micros / 1000000)), micros % 1000000);
}

std::string NowRfc3339() { return Rfc3339FromMicros(NowMicros()); }

std::string NowRfc3339Seconds() { return Seconds(std::time(nullptr)) + "Z"; }

}  // namespace gnomon
