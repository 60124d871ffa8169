#include "engine/component_selection.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "vss/component_sets.h"
#include "vss/fs_freeze_writer.h"
#include "vss/volume_writer.h"

namespace gnomon {

using nlohmann::json;
using vss::ComponentRole;
using vss::WriterMetadata;

namespace {

bool BuiltIn(const WriterMetadata& md) {
  return md.class_id == vss::FsFreezeWriter::ClassId() ||
         md.class_id == vss::VolumeWriter::ClassId();
}

// What a selector says of one writer: the writer alone, or some components.
struct Selected {
  bool whole = false;
  std::set<size_t> components;
};

// If `selector` names md ("NAME", "CLASS-ID", "{CLASS-ID}", each optionally
// followed by "\LOGICAL\PATH\NAME"), true with *path set to what follows.
bool Names(const std::string& selector, const WriterMetadata& md, std::string* path) {
  auto prefix = [&](const std::string& key) {
    if (selector == key) {
      path->clear();
      return true;
    }
    if (selector.size() > key.size() + 1 && selector.compare(0, key.size(), key) == 0 &&
        selector[key.size()] == '\\') {
      *path = selector.substr(key.size() + 1);
      return true;
    }
    return false;
  };
  if (prefix(md.name)) return true;
  // A class id (either case), with or without braces.
  const size_t end = selector.find('\\');
  std::string id = selector.substr(0, end);
  if (id.size() > 2 && id.front() == '{' && id.back() == '}') id = id.substr(1, id.size() - 2);
  vss::Guid g;
  if (!vss::Guid::Parse(id, &g) || g != md.class_id) return false;
  *path = end == std::string::npos ? "" : selector.substr(end + 1);
  return true;
}

std::string RoleText(const vss::ComponentSets& sets, size_t k) {
  std::string text = vss::ComponentRoleName(sets.Role(k));
  if (sets.SetOf(k) != vss::kNoComponent) text += " of " + sets.FullPath(sets.SetOf(k));
  return text;
}

std::string ListComponents(const WriterMetadata& md, const vss::ComponentSets& sets) {
  if (md.components.empty()) return "it has none";
  std::string out = "its components are: ";
  for (size_t k = 0; k < md.components.size(); ++k)
    out += (k ? ", " : "") + sets.FullPath(k) + " (" + RoleText(sets, k) + ")";
  return out;
}

// Resolves one selector against every writer into *sel.
Status Resolve(const std::string& selector, const std::vector<const WriterMetadata*>& writers,
               std::map<const WriterMetadata*, Selected>* sel) {
  bool matched = false;
  for (const WriterMetadata* md : writers) {
    std::string path;
    if (!Names(selector, *md, &path)) continue;
    matched = true;
    Selected& s = (*sel)[md];
    if (path.empty()) {
      s.whole = true;
      continue;
    }
    const vss::ComponentSets sets(*md);
    size_t k = vss::kNoComponent;
    for (size_t i = 0; i < md->components.size() && k == vss::kNoComponent; ++i)
      if (sets.FullPath(i) == path) k = i;
    if (k == vss::kNoComponent)
      return Status::InvalidArgument("--component '" + selector + "': writer '" + md->name +
                                     "' has no component '" + path + "'; " +
                                     ListComponents(*md, sets));
    if (sets.Role(k) == ComponentRole::kSubcomponent) {
      const std::string root = sets.FullPath(sets.SetOf(k));
      return Status::InvalidArgument("--component '" + selector + "': component '" + path +
                                     "' of writer '" + md->name +
                                     "' is not selectable: it comes in only with the component "
                                     "set of '" +
                                     root + "' (select '" + md->name + "\\" + root + "')");
    }
    s.components.insert(k);
  }
  if (matched) return Status::OK();
  std::string names;
  for (const WriterMetadata* md : writers)
    names += (names.empty() ? "" : ", ") + ("'" + md->name + "' {" + md->class_id.ToString() + "}");
  return Status::InvalidArgument("--component '" + selector +
                                 "': no writer has that name or class id; the writers are: " +
                                 (names.empty() ? std::string("none") : names));
}

// The writer's choice when it takes part as a whole: its required
// components and the optional ones whose set has a file on the volumes.
std::set<size_t> WholeWriter(const vss::ComponentSets& sets, const std::vector<bool>& on) {
  std::set<size_t> out;
  for (size_t k = 0; k < on.size(); ++k) {
    const ComponentRole role = sets.Role(k);
    if (role == ComponentRole::kRequired) out.insert(k);
    if (role != ComponentRole::kOptional) continue;
    bool touches = on[k];
    for (size_t m : sets.Members(k)) touches = touches || on[m];
    if (touches) out.insert(k);
  }
  return out;
}

}  // namespace

Status ChooseComponents(const std::vector<const WriterMetadata*>& writers,
                        const OnVolumesFn& on_volumes, const std::vector<std::string>& selectors,
                        std::vector<ComponentChoice>* out, std::vector<std::string>* notes) {
  std::map<const WriterMetadata*, Selected> sel;
  for (const auto& s : selectors) GNOMON_RETURN_IF_ERROR(Resolve(s, writers, &sel));
  out->clear();
  for (const WriterMetadata* md : writers) {
    // Which components have a file set on the volumes (or none at all).
    std::vector<bool> on(md->components.size());
    bool affected = false;
    for (size_t k = 0; k < md->components.size(); ++k) {
      const auto& files = md->components[k].files;
      on[k] = files.empty() ||
              std::any_of(files.begin(), files.end(), [&](const auto& f) { return on_volumes(f); });
      affected = affected || on[k];
    }
    const vss::ComponentSets sets(*md);
    std::set<size_t> chosen;
    auto it = sel.find(md);
    if (selectors.empty() || BuiltIn(*md)) {
      if (affected) chosen = WholeWriter(sets, on);
    } else if (it != sel.end()) {
      if (!affected)
        notes->push_back("writer '" + md->name +
                         "' has no file on the volumes backed up; it takes part because "
                         "--component names it");
      if (it->second.whole) chosen = WholeWriter(sets, on);
      for (size_t k = 0; k < md->components.size(); ++k)
        if (sets.Role(k) == ComponentRole::kRequired) chosen.insert(k);
      chosen.insert(it->second.components.begin(), it->second.components.end());
    }
    // A member of a chosen component's set comes in with it, never on its own.
    std::set<size_t> members;
    for (size_t k : chosen)
      for (size_t m : sets.Members(k)) members.insert(m);
    ComponentChoice c{md, {}};
    for (bool required : {true, false})
      for (size_t k : chosen)
        if (!members.count(k) && (sets.Role(k) == ComponentRole::kRequired) == required)
          c.components.push_back(k);
    if (!c.components.empty()) out->push_back(std::move(c));
  }
  return Status::OK();
}

json DescribeComponents(const WriterMetadata& md) {
  const vss::ComponentSets sets(md);
  json out = json::array();
  for (size_t k = 0; k < md.components.size(); ++k) {
    const vss::ComponentInfo& c = md.components[k];
    const ComponentRole role = sets.Role(k);
    const size_t set = sets.SetOf(k);
    json members = json::array();
    for (size_t m : sets.Members(k)) members.push_back(sets.FullPath(m));
    json files = json::array();
    for (const auto& f : c.files) {
      char mask[16];
      std::snprintf(mask, sizeof mask, "0x%x", f.mask);
      files.push_back({{"path", f.path},
                       {"spec", f.spec},
                       {"recursive", f.recursive},
                       {"alternate_path", f.alternate_path},
                       {"mask", f.mask},
                       {"mask_hex", mask},
                       {"is_log", f.is_log}});
    }
    out.push_back(
        {{"path", c.FullPath()},
         {"logical_path", c.logical_path},
         {"name", c.name},
         {"caption", c.caption},
         {"type", c.type == vss::ComponentType::kDatabase ? "database" : "file group"},
         {"selectable", c.selectable},
         {"selectable_for_restore", c.selectable_for_restore},
         {"selectability", c.selectable               ? "selectable"
                           : c.selectable_for_restore ? "selectable for restore"
                                                      : "not selectable"},
         {"role", vss::ComponentRoleName(role)},
         {"required", role == ComponentRole::kRequired},
         {"component_set", set == vss::kNoComponent ? json(nullptr) : json(sets.FullPath(set))},
         {"set_members", members},
         {"files", files}});
  }
  return out;
}

}  // namespace gnomon
