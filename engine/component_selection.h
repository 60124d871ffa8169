// Which writers' components a backup adds (the requester's choice between
// GatherWriterMetadata and PrepareForBackup; docs/vss.md, "Component
// selection"), and how `gnomon writers --components` describes them. The
// selectability rules themselves are vss/component_sets.h.
#pragma once

#include <cstddef>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/status.h"
#include "vss/documents.h"

namespace gnomon {

// The components to AddComponent for one writer: indexes into its
// WriterMetadata::components, required ones first.
struct ComponentChoice {
  const vss::WriterMetadata* writer = nullptr;
  std::vector<size_t> components;
};

// Whether a file set lies on the volumes being backed up.
using OnVolumesFn = std::function<bool(const vss::FileSpec&)>;

// A writer takes part if one of its components has a file set on the
// volumes, or has no file set at all (it cannot be told apart, so it is
// included). A writer that takes part gets its required components and the
// component sets (optional components) with a file set on the volumes;
// members of those sets come in implicitly.
//
// selectors (--component), each "WRITER" or "WRITER\LOGICAL\PATH\NAME" with
// WRITER a writer's name or class id (braces optional), narrow that to the
// writers they name: a writer alone takes part as above (even with nothing on
// the volumes, said in *notes); a component adds that component (an optional
// one, or a selectable subcomponent) and its writer's required components.
// Empty: every writer, as above. The built-in writers (filesystem freeze,
// volume image) always take part as above: without them there is no
// consistent image.
//
// InvalidArgument, naming what exists, for a selector that names no writer,
// no component of it, or a non-selectable subcomponent (which comes in only
// with its set).
Status ChooseComponents(const std::vector<const vss::WriterMetadata*>& writers,
                        const OnVolumesFn& on_volumes, const std::vector<std::string>& selectors,
                        std::vector<ComponentChoice>* out, std::vector<std::string>* notes);

// A writer's components for `gnomon writers --components`: for each, its
// path (what --component takes after WRITER\), type, selectability, role
// (required, optional, subcomponent, selectable subcomponent), the component
// set it belongs to and the one it defines, and its file specs.
nlohmann::json DescribeComponents(const vss::WriterMetadata& md);

}  // namespace gnomon
