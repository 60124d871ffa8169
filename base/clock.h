// The wall clock and its one text form: RFC 3339 UTC, fixed width, so
// times sort as strings ("latest" is the greatest record time, and two
// backups in one second must still order).
#pragma once

#include <cstdint>
#include <string>

namespace gnomon {

// Microseconds since the Unix epoch.
int64_t NowMicros();
// "2026-11-30T07:30:00.123456Z".
std::string Rfc3339FromMicros(int64_t micros);
std::string NowRfc3339();
// "2026-11-30T07:30:00Z": for what people read in a column (snapshots).
std::string NowRfc3339Seconds();

}  // namespace gnomon
