// The libFuzzer entry point every fuzz target defines. Built with
// -DGNOMON_FUZZ=ON (clang, tools/fuzz.sh) a target is a libFuzzer binary;
// otherwise it links replay_main.cc and runs the committed corpus once, as a
// CTest test, so every input that ever crashed stays a regression test.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
