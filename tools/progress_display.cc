#include "tools/progress_display.h"

#include <unistd.h>

#include <cstdio>

namespace gnomon::cli {

std::string HumanBytes(double b) {
  char exact[32];
  if (b < 1024 * 1024) {  // small sizes exactly: "4097 B", never a rounded "4.00 KiB"
    std::snprintf(exact, sizeof exact, "%.0f B", b);
    return exact;
  }
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (b >= 1024 && u < 5) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", b, units[u]);
  return buf;
}

std::string HumanRate(double bytes, double seconds) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB/s", seconds > 0 ? bytes / seconds / 1e6 : 0.0);
  return buf;
}

ProgressDisplay::ProgressDisplay(bool enabled)
    : enabled_(enabled && ::isatty(STDERR_FILENO)),
      start_(std::chrono::steady_clock::now()),
      last_() {}

void ProgressDisplay::Update(const Progress& p) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_ < std::chrono::milliseconds(125) && p.done < p.total) return;
  last_ = now;
  double secs = std::chrono::duration<double>(now - start_).count();
  double pct = p.total ? 100.0 * static_cast<double>(p.done) / static_cast<double>(p.total) : 100;
  char line[256];
  if (p.phase == "verify") {
    std::snprintf(line, sizeof line, "%s: pack %llu/%llu  %5.1f%%", p.phase.c_str(),
                  static_cast<unsigned long long>(p.done), static_cast<unsigned long long>(p.total),
                  pct);
  } else {
    double rate = secs > 0 ? static_cast<double>(p.done) / secs : 0;
    double eta = rate > 0 ? static_cast<double>(p.total - p.done) / rate : 0;
    std::snprintf(line, sizeof line, "%s %s: %s / %s  %5.1f%%  %s  ETA %d:%02d", p.phase.c_str(),
                  p.item.c_str(), HumanBytes(static_cast<double>(p.done)).c_str(),
                  HumanBytes(static_cast<double>(p.total)).c_str(), pct,
                  HumanRate(static_cast<double>(p.done), secs).c_str(), static_cast<int>(eta) / 60,
                  static_cast<int>(eta) % 60);
  }
  std::fprintf(stderr, "\r\033[K%s", line);
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressDisplay::Finish() {
  if (drawn_) std::fprintf(stderr, "\r\033[K");
  drawn_ = false;
}

}  // namespace gnomon::cli
