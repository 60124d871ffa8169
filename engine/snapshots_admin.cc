#include "engine/snapshots_admin.h"

#include <algorithm>

#include "base/system.h"
#include "vss/provider_registry.h"

namespace gnomon {

static std::shared_ptr<vss::Provider> ProviderFor(
    const std::string& state_dir, const std::string& name,
    const std::vector<std::shared_ptr<vss::Provider>>& providers) {
  for (const auto& p : providers)
    if (p->name() == name) return p;
  return vss::MakeProvider(name, state_dir);
}

std::vector<SnapshotEntry> ListSnapshots(const std::string& state_dir, bool with_pinned) {
  std::vector<SnapshotEntry> out;
  const std::string host = HostName();
  for (auto& p : vss::SnapshotRegistry(state_dir + "/snapshots").List()) {
    SnapshotEntry e;
    e.in_use = p.host == host && ProcessAlive(p.pid);
    if (with_pinned)
      if (auto prov = vss::MakeProvider(p.provider, state_dir))
        e.pinned_bytes = prov->PinnedBytes(p);
    e.props = std::move(p);
    out.push_back(std::move(e));
  }
  std::sort(out.begin(), out.end(), [](const SnapshotEntry& a, const SnapshotEntry& b) {
    return a.props.created < b.props.created;
  });
  return out;
}

Status DeleteSnapshot(const std::string& state_dir, const std::string& id_prefix) {
  const SnapshotEntry* match = nullptr;
  auto all = ListSnapshots(state_dir);
  for (const auto& e : all)
    if (!id_prefix.empty() && e.props.snapshot_id.ToString().rfind(id_prefix, 0) == 0) {
      if (match) return Status::InvalidArgument("snapshot id '" + id_prefix + "' is ambiguous");
      match = &e;
    }
  if (!match) return Status::NotFound("no snapshot with id '" + id_prefix + "'");
  if (match->in_use)
    return Status::InvalidArgument("snapshot " + match->props.snapshot_id.ToString() +
                                   " is in use by pid " + std::to_string(match->props.pid) +
                                   " (a running backup); not deleting it");
  return DeleteRecorded(state_dir, match->props);
}

Status DeleteRecorded(const std::string& state_dir, const vss::SnapshotProperties& props,
                      const std::vector<std::shared_ptr<vss::Provider>>& providers) {
  std::shared_ptr<vss::Provider> p = ProviderFor(state_dir, props.provider, providers);
  if (!p)
    return Status::Unsupported("snapshot " + props.snapshot_id.ToString() +
                               " is from unknown provider '" + props.provider + "'");
  if (p->DeleteLeftover(props) != vss::S_OK_)
    return Status::IOError("deleting snapshot " + props.snapshot_id.ToString() + ": " +
                           p->last_error());
  return Status::OK();
}

std::vector<std::string> SnapshotProviderNames() { return vss::ProviderNames(); }

}  // namespace gnomon
