// What an encrypted repository reads before anything authenticates it: a
// key slot's body (JSON, FORMAT.md §14.1), a sealed object's envelope
// (§14.2) and a sealed pack's tail and header (§14.3), all under a fixed key.
// The first byte picks which. A hostile file must not make any of them
// allocate what its length cannot hold, or crash.
#include <cstring>
#include <string>
#include <vector>

#include "format/crypto.h"
#include "format/key_slot.h"
#include "format/pack.h"
#include "tests/fuzz/fuzz_target.h"
#include "tests/fuzz/memory_file.h"

namespace {

using gnomon::fuzz::MemoryFile;

const gnomon::MasterKey& Key() {
  static const auto key = gnomon::MasterKey::FromBytes(std::vector<uint8_t>(64, 7));
  return *key;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0: {
      gnomon::KeySlot slot;
      if (!gnomon::KeySlot::Decode("fuzz", rest, &slot).ok()) return 0;
      // A key-file slot is opened (cheap); a password slot would run a KDF
      // with the memory its (bounded) parameters ask for, which is slow, not
      // wrong.
      std::shared_ptr<const gnomon::MasterKey> out;
      const std::string file_key(32, 'k');
      (void)gnomon::OpenKeyFileSlot("repo", slot,
                                    {reinterpret_cast<const uint8_t*>(file_key.data()), 32}, &out);
      return 0;
    }
    case 1: {
      std::string plain;
      (void)gnomon::OpenObject(Key(), "backups/0123456789abcdef", "fuzz", rest, &plain);
      return 0;
    }
    default: {
      MemoryFile f(std::vector<uint8_t>(rest.begin(), rest.end()));
      std::vector<gnomon::PackEntry> entries;
      (void)gnomon::ReadPackHeader(f, &entries, &Key(), std::string(32, 'a'));
      uint64_t bytes = 0;
      (void)gnomon::ScrubSealedPack(f, &bytes);
      return 0;
    }
  }
}
