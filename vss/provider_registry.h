// The snapshot providers this build has, found by name: the engine asks
// here and never names a concrete provider, so a new provider (a block-layer
// tracker, a whole-disk provider) is a new file and a line below.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "vss/provider.h"

namespace gnomon::vss {

// Every provider, in the order the requester tries them for a volume (the
// first that supports it takes it): reflink, then offline.
std::vector<std::shared_ptr<Provider>> MakeProviders(const std::string& state_dir);
// One provider by name (for a snapshot recorded by an earlier process), or
// null if this build has none of that name.
std::shared_ptr<Provider> MakeProvider(const std::string& name, const std::string& state_dir);
// Their names, in the same order (for --provider).
std::vector<std::string> ProviderNames();

}  // namespace gnomon::vss
