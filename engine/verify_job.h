// VerifyJob: checks a repository's structure (every file parses, every
// reference resolves) and, with read_data, re-reads and re-hashes every chunk.
// It reports every problem it finds rather than stopping at the first.
#pragma once

#include <string>
#include <vector>

#include "engine/progress.h"
#include "format/repository.h"

namespace gnomon {

struct VerifyOptions {
  bool read_data = false;
  int threads = 0;
  ProgressFn progress;
  const CancelFlag* cancel = nullptr;
};

struct VerifyResult {
  std::vector<std::string> errors;    // damage: the repository cannot be trusted as is
  std::vector<std::string> warnings;  // harmless: e.g. packs no index refers to
  size_t backups = 0, volumes = 0, index_files = 0, packs = 0, chunks = 0;
  size_t quarantined = 0;                     // damaged chunk copies newly quarantined
  std::vector<std::string> damaged_backups;   // backups that cannot restore whole
  std::vector<std::string> repaired_backups;  // named damaged data, now served by intact copies
  uint64_t chunks_read = 0, bytes_read = 0;
  bool ok() const { return errors.empty(); }
};

// Returns a non-OK status only when verification itself could not run (the
// repository cannot be opened, say); damage found is reported in *out.
Status RunVerify(Repository* repo, const VerifyOptions& opt, VerifyResult* out);

}  // namespace gnomon
