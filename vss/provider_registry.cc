#include "vss/provider_registry.h"

#include "vss/offline_provider.h"
#include "vss/reflink_provider.h"

namespace gnomon::vss {

std::vector<std::shared_ptr<Provider>> MakeProviders(const std::string& state_dir) {
  return {std::make_shared<ReflinkProvider>(state_dir), std::make_shared<OfflineProvider>()};
}

std::shared_ptr<Provider> MakeProvider(const std::string& name, const std::string& state_dir) {
  for (auto& p : MakeProviders(state_dir))
    if (p->name() == name) return p;
  return nullptr;
}

std::vector<std::string> ProviderNames() {
  std::vector<std::string> names;
  for (auto& p : MakeProviders(DefaultStateDir())) names.push_back(p->name());
  return names;
}

}  // namespace gnomon::vss
