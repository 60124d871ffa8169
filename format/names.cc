#include "format/names.h"

#include <algorithm>

namespace gnomon {

bool IsHexName(const std::string& s, size_t len) {
  return s.size() == len && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string VolumeIndexName(const std::string& backup_id, size_t n) {
  return "volumes/" + backup_id + "." + std::to_string(n);
}

std::string SafeHostName(const std::string& host) {
  std::string out;
  for (char c : host)
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
        c == '-')
      out.push_back(c);
  return out.empty() ? "host" : out.substr(0, 64);
}

}  // namespace gnomon
