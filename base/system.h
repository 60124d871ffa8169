// Facts about this machine and its processes that several layers need.
#pragma once

#include <string>

namespace gnomon {

// This machine's host name, or "unknown".
std::string HostName();
// True if a process with this pid exists on this machine (EPERM counts as
// alive: it exists, we just may not signal it).
bool ProcessAlive(int pid);
// A control-free rendering of text for a terminal: control characters and
// DEL become \xNN, the C1 controls (UTF-8 of U+0080..U+009F) \u0080..\u009f,
// and bytes that are not UTF-8 \xNN; other UTF-8 is left as it is. So a name
// read from a file cannot move the cursor, change colours or retitle the
// window.
std::string EscapeForTerminal(const std::string& text);
// Whether text is well-formed UTF-8 (what a JSON document can carry).
bool IsUtf8(const std::string& text);

}  // namespace gnomon
