// Random bytes and identifiers from the kernel's CSPRNG (getrandom(2)).
// Every id gnomon writes (repository, pack, index file, backup, snapshot
// GUID, temporary-file suffix) comes from here, with all of its bits
// random, so two ids collide only with the odds their length gives.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace gnomon {

// Fills n bytes from getrandom(2). The kernel never fails this once its pool
// is initialised; if the call itself fails, the process aborts rather than
// hand out a predictable id.
void RandomFill(void* p, size_t n);

// `bytes` random bytes as 2*bytes lowercase hex characters.
std::string RandomHexId(size_t bytes);

// Tests only: makes RandomHexId return what `source` returns (for instance
// an id that already exists); an empty function restores the CSPRNG.
using IdSource = std::function<std::string(size_t bytes)>;
void SetIdSourceForTesting(IdSource source);

}  // namespace gnomon
