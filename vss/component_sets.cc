#include "vss/component_sets.h"

#include <algorithm>

namespace gnomon::vss {

bool IsBelow(const std::string& logical_path, const std::string& full_path) {
  if (logical_path == full_path) return true;
  return logical_path.size() > full_path.size() &&
         logical_path.compare(0, full_path.size(), full_path) == 0 &&
         logical_path[full_path.size()] == '\\';
}

std::string ComponentRoleName(ComponentRole r) {
  switch (r) {
    case ComponentRole::kRequired:
      return "required";
    case ComponentRole::kOptional:
      return "optional";
    case ComponentRole::kSubcomponent:
      return "subcomponent";
    case ComponentRole::kSelectableSubcomponent:
      return "selectable subcomponent";
  }
  return "unknown";
}

std::vector<size_t> AncestorsOf(const WriterMetadata& md, size_t i) {
  const std::string& path = md.components[i].logical_path;
  std::vector<size_t> out;
  for (size_t k = 0; k < md.components.size(); ++k)
    if (k != i && IsBelow(path, md.components[k].FullPath())) out.push_back(k);
  // Outermost first: an ancestor's full path is shorter than the next one's.
  std::sort(out.begin(), out.end(), [&](size_t a, size_t b) {
    return md.components[a].FullPath().size() < md.components[b].FullPath().size();
  });
  return out;
}

std::vector<size_t> SetMembersOf(const WriterMetadata& md, size_t i) {
  std::vector<size_t> out;
  if (!md.components[i].selectable) return out;
  const std::string root = md.components[i].FullPath();
  for (size_t k = 0; k < md.components.size(); ++k)
    if (k != i && IsBelow(md.components[k].logical_path, root)) out.push_back(k);
  return out;
}

size_t SetOf(const WriterMetadata& md, size_t i) {
  size_t nearest = kNoComponent;
  for (size_t a : AncestorsOf(md, i))
    if (md.components[a].selectable) nearest = a;
  return nearest;
}

ComponentRole RoleOf(const WriterMetadata& md, size_t i) {
  const bool in_set = SetOf(md, i) != kNoComponent;
  if (md.components[i].selectable)
    return in_set ? ComponentRole::kSelectableSubcomponent : ComponentRole::kOptional;
  return in_set ? ComponentRole::kSubcomponent : ComponentRole::kRequired;
}

size_t FindComponent(const WriterMetadata& md, const std::string& logical_path,
                     const std::string& name) {
  for (size_t k = 0; k < md.components.size(); ++k)
    if (md.components[k].logical_path == logical_path && md.components[k].name == name) return k;
  return kNoComponent;
}

}  // namespace gnomon::vss
