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

ComponentSets::ComponentSets(const WriterMetadata& md) : md_(md) {
  const size_t n = md.components.size();
  full_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    full_.push_back(md.components[i].FullPath());
    by_full_.emplace(full_.back(), i);  // keeps the first of a (malformed) duplicate
  }
  ancestors_.resize(n);
  members_.resize(n);
  set_of_.assign(n, kNoComponent);
  for (size_t i = 0; i < n; ++i) {
    const std::string& lp = md.components[i].logical_path;
    if (lp.empty()) continue;
    // Each leading part of the logical path that ends at a '\', then all
    // of it: outermost first, so the last selectable one is the nearest.
    for (size_t end = lp.find('\\');; end = lp.find('\\', end + 1)) {
      auto it = by_full_.find(end == std::string::npos ? lp : lp.substr(0, end));
      if (it != by_full_.end() && it->second != i) {
        ancestors_[i].push_back(it->second);
        if (md.components[it->second].selectable) {
          set_of_[i] = it->second;
          members_[it->second].push_back(i);
        }
      }
      if (end == std::string::npos) break;
    }
  }
}

size_t ComponentSets::Find(const std::string& logical_path, const std::string& name) const {
  auto it = by_full_.find(logical_path.empty() ? name : logical_path + "\\" + name);
  auto is = [&](size_t k) {
    return md_.components[k].logical_path == logical_path && md_.components[k].name == name;
  };
  if (it != by_full_.end() && is(it->second)) return it->second;
  // A name with a '\' in it (VSS forbids them) can share a full path with
  // another component: look the slow way.
  for (size_t k = 0; k < md_.components.size(); ++k)
    if (is(k)) return k;
  return kNoComponent;
}

ComponentRole ComponentSets::Role(size_t i) const {
  const bool in_set = set_of_[i] != kNoComponent;
  if (md_.components[i].selectable)
    return in_set ? ComponentRole::kSelectableSubcomponent : ComponentRole::kOptional;
  return in_set ? ComponentRole::kSubcomponent : ComponentRole::kRequired;
}

bool ComponentSets::InSetOf(size_t i, size_t k) const {
  return md_.components[k].selectable &&
         std::find(ancestors_[i].begin(), ancestors_[i].end(), k) != ancestors_[i].end();
}

ComponentRole RoleOf(const WriterMetadata& md, size_t i) { return ComponentSets(md).Role(i); }
size_t SetOf(const WriterMetadata& md, size_t i) { return ComponentSets(md).SetOf(i); }
std::vector<size_t> SetMembersOf(const WriterMetadata& md, size_t i) {
  return ComponentSets(md).Members(i);
}
size_t FindComponent(const WriterMetadata& md, const std::string& logical_path,
                     const std::string& name) {
  return ComponentSets(md).Find(logical_path, name);
}

}  // namespace gnomon::vss
