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
// DEL become \xNN, so a name read from a file cannot move the cursor, change
// colours or retitle the window.
std::string EscapeForTerminal(const std::string& text);

}  // namespace gnomon
