// A one-line progress display on a terminal: bytes, rate, percentage, ETA.
// Redrawn at most 8 times a second; silent when stderr is not a terminal.
#pragma once

#include <chrono>
#include <string>

#include "engine/progress.h"

namespace gnomon::cli {

std::string HumanBytes(double bytes);                 // 1.50 GiB
std::string HumanRate(double bytes, double seconds);  // 812.3 MB/s

class ProgressDisplay {
 public:
  explicit ProgressDisplay(bool enabled);
  ~ProgressDisplay() { Finish(); }
  void Update(const Progress& p);
  void Finish();  // clears the line
  ProgressFn Callback() {
    return [this](const Progress& p) { Update(p); };
  }

 private:
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace gnomon::cli
