// The two questions about a path that state files and repositories ask,
// answered once (with std::filesystem) so every folder agrees on the edge
// cases: which directory holds it ("." for a bare name, which
// std::filesystem calls ""), and its last component.
#pragma once

#include <filesystem>
#include <string>

namespace gnomon {

// The directory whose entry a create or rename of `path` changes: the one
// to fsync, and the one a file's siblings live in.
inline std::string ParentDir(const std::string& path) {
  std::string d = std::filesystem::path(path).parent_path().string();
  return d.empty() ? "." : d;
}

inline std::string FileName(const std::string& path) {
  return std::filesystem::path(path).filename().string();
}

}  // namespace gnomon
