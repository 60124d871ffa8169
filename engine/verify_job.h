// VerifyJob: checks a repository's structure (every file parses, every
// reference resolves) and, with read_data, re-reads and re-hashes every chunk,
// or only the chunks of a subset of the packs (FORMAT.md §5b). It reports
// every problem it finds rather than stopping at the first.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/progress.h"
#include "format/repository.h"

namespace gnomon {

// Which packs a verify reads whole (FORMAT.md §5b). Whatever it picks, the
// structure checks (every index file, record, volume index, and every
// claimed pack's header against the index) cover the whole repository.
struct VerifySubset {
  enum class Kind {
    kAll,      // every pack the index files name
    kPercent,  // ceil(percent % of them), least recently checked first
    kSlice,    // the packs whose id's first 8 hex digits, as a number, are ≡ k-1 (mod t)
  };
  Kind kind = Kind::kAll;
  double percent = 100;   // kPercent: 0 < percent <= 100
  uint32_t k = 1, t = 1;  // kSlice: 1 <= k <= t

  // As the command line spells it: "all", "10%", "2.5%", "3/7".
  std::string Spec() const;
  // For people: "10%, least recently checked first", "slice 3/7", "all".
  std::string Describe() const;
};

// Parses "N%" (a decimal number 0 < N <= 100: "10%", "2.5%") or "K/T"
// (1 <= K <= T < 2^32). Anything else is InvalidArgument saying what is wrong.
Status ParseVerifySubset(const std::string& text, VerifySubset* out);

// How many of `packs` packs a percentage reads: ceil(percent % × packs), at
// least one if there are any.
size_t PercentOfPacks(double percent, size_t packs);

struct VerifyOptions {
  // Read every pack whole (decode and re-hash each chunk the index files
  // place there). A subset other than kAll reads only the packs it picks,
  // whether or not read_data is set.
  bool read_data = false;
  VerifySubset subset;
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

  // Data checks (FORMAT.md §5b). subset: VerifySubset::Spec() of what this
  // run read, "" if it read no data. claimed_packs: the packs the index
  // files name (what a subset picks from); packs_read: those read whole.
  std::string subset, subset_description;
  size_t claimed_packs = 0, packs_read = 0;
  // Coverage after this run, over the claimed packs: how many no check file
  // names, and the oldest last check of the others (microseconds since the
  // epoch; 0 when none has been checked).
  size_t never_checked = 0;
  uint64_t oldest_check = 0;

  bool ok() const { return errors.empty(); }
};

// Returns a non-OK status only when verification itself could not run (the
// repository cannot be opened, say); damage found is reported in *out.
// A run that reads data writes one check file naming every pack it read
// whole and what it found there; failing to write it is an error in *out.
Status RunVerify(Repository* repo, const VerifyOptions& opt, VerifyResult* out);

}  // namespace gnomon
