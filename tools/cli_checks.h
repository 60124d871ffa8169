// Option checks shared by gnomon and the writer programs.
#pragma once

#include <CLI/CLI.hpp>
#include <cmath>
#include <string>

namespace gnomon::cli {

// A duration in seconds within [lo, hi]. CLI::Range lets "nan" through
// (every comparison with NaN is false), which disabled the freeze check:
// this refuses NaN, infinities and anything out of range.
inline CLI::Validator Seconds(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& in) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(in, v) || !std::isfinite(v) || v < lo || v > hi)
          return "'" + in + "' is not a number of seconds from " + CLI::detail::to_string(lo) +
                 " to " + CLI::detail::to_string(hi);
        return "";
      },
      "SECONDS in [" + CLI::detail::to_string(lo) + " - " + CLI::detail::to_string(hi) + "]");
}

// A power of two within [lo, hi].
inline CLI::Validator PowerOfTwo(uint64_t lo, uint64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& in) -> std::string {
        uint64_t v = 0;
        if (!CLI::detail::lexical_cast(in, v) || v < lo || v > hi || (v & (v - 1)) != 0)
          return "'" + in + "' is not a power of two from " + std::to_string(lo) + " to " +
                 std::to_string(hi);
        return "";
      },
      "a power of two in [" + std::to_string(lo) + " - " + std::to_string(hi) + "]");
}

}  // namespace gnomon::cli
