// Parsing JSON that came from a file or a socket: bounded in size and in
// nesting depth before the parser sees it, so a hostile document (200,000
// nested arrays, say) is an error and never a stack overflow in the parser,
// in dump() or in a destructor.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace gnomon {

inline constexpr size_t kMaxJsonDepth = 64;

// Parses text into *out. On failure returns false with *error saying why
// (too deep, too large, not JSON, or a number no field can hold: over
// 9.2e18, which an integer field could not be read from without undefined
// behaviour); *out is then null.
bool ParseJsonBounded(std::string_view text, nlohmann::json* out, std::string* error,
                      size_t max_bytes = 64u << 20, size_t max_depth = kMaxJsonDepth);

// The deepest nesting of arrays and objects in text, ignoring brackets
// inside strings; stops counting past `limit`.
size_t JsonDepth(std::string_view text, size_t limit);

}  // namespace gnomon
