#include "tools/progress_display.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace gnomon::cli {

std::string HumanBytes(double b) {
  if (b < 1024 * 1024)  // small sizes exactly: "4097 B", never a rounded "4.00 KiB"
    return fmt::format("{:.0f} B", b);
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (b >= 1024 && u < 5) {
    b /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} {}", b, units[u]) : fmt::format("{:.2f} {}", b, units[u]);
}

std::string HumanRate(double bytes, double seconds) {
  return fmt::format("{:.1f} MB/s", seconds > 0 ? bytes / seconds / 1e6 : 0.0);
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
  std::string line;
  if (p.phase == "verify") {
    line = fmt::format("{}: pack {}/{}  {:>5.1f}%", p.phase, p.done, p.total, pct);
  } else if (p.phase == "prune") {
    line = fmt::format("prune: step {}/{} ({})", p.done + 1, p.total, p.item);
  } else {
    double rate = secs > 0 ? static_cast<double>(p.done) / secs : 0;
    double eta = rate > 0 ? static_cast<double>(p.total - p.done) / rate : 0;
    line = fmt::format("{} {}: {} / {}  {:>5.1f}%  {}  ETA {}:{:02}", p.phase, p.item,
                       HumanBytes(static_cast<double>(p.done)),
                       HumanBytes(static_cast<double>(p.total)), pct,
                       HumanRate(static_cast<double>(p.done), secs), static_cast<int>(eta) / 60,
                       static_cast<int>(eta) % 60);
  }
  line.resize(std::min<size_t>(line.size(), 255));  // as long as the 256-byte buffer it had
  // Best effort, like the progress itself: a terminal that went away must
  // not fail the backup (fmt::print would throw).
  std::fputs(("\r\033[K" + line).c_str(), stderr);
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressDisplay::Finish() {
  if (drawn_) std::fputs("\r\033[K", stderr);
  drawn_ = false;
}

}  // namespace gnomon::cli
