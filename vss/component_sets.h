// Selectability and component sets: which of a writer's components a
// requester adds with AddComponent, which it must add, and which come in
// implicitly (shared/vss-behaviour.md §7; Microsoft's "Working with
// Selectability for Backup", "Logical Pathing of Components" and
// IVssBackupComponents::AddComponent).
//
// A component's ancestors are the writer's components whose "path\name" is
// its logical path or a leading part of it (at a '\'). Then:
//  - required: not selectable, no selectable ancestor. Added explicitly, and
//    whenever any component of its writer takes part;
//  - optional: selectable, no selectable ancestor. Added explicitly if the
//    requester chooses it;
//  - subcomponent: not selectable, with a selectable ancestor. Never added:
//    it comes in implicitly with that ancestor's component set;
//  - selectable subcomponent: selectable, with a selectable ancestor. Comes in
//    with an included ancestor, or is added explicitly on its own.
// A selectable component with components below it defines a component set:
// itself and every component below it. Sets nest. A non-selectable
// component defines no set (the components below it with no selectable
// ancestor are required in their own right).
#pragma once

#include <cstddef>
#include <string>
#include <unordered_map>
#include <vector>

#include "vss/documents.h"

namespace gnomon::vss {

// Whether a component with this logical path lies below the component whose
// "path\name" is full_path.
bool IsBelow(const std::string& logical_path, const std::string& full_path);

enum class ComponentRole { kRequired, kOptional, kSubcomponent, kSelectableSubcomponent };
// "required", "optional", "subcomponent", "selectable subcomponent".
std::string ComponentRoleName(ComponentRole r);

inline constexpr size_t kNoComponent = static_cast<size_t>(-1);

// The relations between one writer's components, computed once from its
// metadata (which must outlive this): a lookup per level of each logical
// path, so writers with thousands of components cost little. Indexes are
// into md.components.
class ComponentSets {
 public:
  explicit ComponentSets(const WriterMetadata& md);
  // kNoComponent if the writer has no such component.
  size_t Find(const std::string& logical_path, const std::string& name) const;
  const std::vector<size_t>& Ancestors(size_t i) const { return ancestors_[i]; }  // outermost first
  // The nearest selectable ancestor (the set i is a member of), or kNoComponent.
  size_t SetOf(size_t i) const { return set_of_[i]; }
  ComponentRole Role(size_t i) const;
  // The component set i defines: every component below it, nested sets
  // included, in metadata order. Empty if i is not selectable or nothing
  // lies below it.
  const std::vector<size_t>& Members(size_t i) const { return members_[i]; }
  // Whether i is a member of k's set (k selectable, i below it).
  bool InSetOf(size_t i, size_t k) const;
  const std::string& FullPath(size_t i) const { return full_[i]; }

 private:
  const WriterMetadata& md_;
  std::vector<std::string> full_;
  std::unordered_map<std::string, size_t> by_full_;  // the first component of each full path
  std::vector<std::vector<size_t>> ancestors_, members_;
  std::vector<size_t> set_of_;
};

// One-off conveniences over ComponentSets.
ComponentRole RoleOf(const WriterMetadata& md, size_t i);
size_t SetOf(const WriterMetadata& md, size_t i);
std::vector<size_t> SetMembersOf(const WriterMetadata& md, size_t i);
size_t FindComponent(const WriterMetadata& md, const std::string& logical_path,
                     const std::string& name);

}  // namespace gnomon::vss
