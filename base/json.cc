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

namespace {

// Whether every floating-point number in j converts to a 64-bit integer
// without undefined behaviour: nlohmann's get<uint64_t>() on a float is a
// plain cast, and a reader asking an integer field for its value must not
// be the one to find out (fuzz_backup_record found 5e39 in a size). No
// field gnomon writes holds a float that large.
bool FloatsFitIntegers(const nlohmann::json& j) {
  if (j.is_number_float()) {
    const double v = j.get<double>();
    return v > -9.2e18 && v < 9.2e18;  // inside int64, so inside uint64 when positive; NaN fails
  }
  if (j.is_structured())
    for (const auto& e : j)
      if (!FloatsFitIntegers(e)) return false;
  return true;
}

}  // namespace

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
  if (!FloatsFitIntegers(j)) {
    *error = "a number too large for any field (over 9.2e18)";
    return false;
  }
  *out = std::move(j);
  return true;
}

}  // namespace gnomon
