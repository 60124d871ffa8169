// Runs a fuzz target over every file of the directories (or files) it is
// given, once each, without libFuzzer: the committed corpus as a regression
// test under any compiler, with the sanitizers of the build. A crash is the
// test's failure; the name of the input is printed first, so it is known.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_target.h"

namespace fs = std::filesystem;

static int RunOne(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "cannot read %s\n", p.c_str());
    return 1;
  }
  std::vector<uint8_t> data((std::istreambuf_iterator<char>(f)), {});
  std::fprintf(stderr, "%s\n", p.c_str());
  LLVMFuzzerTestOneInput(data.data(), data.size());
  return 0;
}

int main(int argc, char** argv) {
  int inputs = 0, errors = 0;
  for (int i = 1; i < argc; ++i) {
    std::error_code ec;
    if (fs::is_directory(argv[i], ec)) {
      std::vector<fs::path> files;
      for (const auto& e : fs::directory_iterator(argv[i]))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const auto& p : files) errors += RunOne(p), ++inputs;
    } else {
      errors += RunOne(argv[i]), ++inputs;
    }
  }
  if (inputs == 0) {
    std::fprintf(stderr, "no inputs: a corpus that is empty tests nothing\n");
    return 1;
  }
  std::fprintf(stderr, "%d inputs replayed\n", inputs);
  return errors ? 1 : 0;
}
