#include "base/json.h"

namespace gnomon {

size_t JsonDepth(std::string_view text, size_t limit) {
  size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) deepest = depth;
      if (deepest > limit) return deepest;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

bool ParseJsonBounded(std::string_view text, nlohmann::json* out, std::string* error,
                      size_t max_bytes, size_t max_depth) {
  *out = nullptr;
  if (text.size() > max_bytes) {
    *error = "document of " + std::to_string(text.size()) + " bytes is larger than the " +
             std::to_string(max_bytes) + " allowed";
    return false;
  }
  if (JsonDepth(text, max_depth) > max_depth) {
    *error = "nesting deeper than " + std::to_string(max_depth) + " levels";
    return false;
  }
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    *error = "not valid JSON";
    return false;
  }
  *out = std::move(j);
  return true;
}

}  // namespace gnomon
