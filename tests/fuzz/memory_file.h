// A pack file held in memory, for the fuzz targets that read packs.
#pragma once

#include <cstring>
#include <string>
#include <vector>

#include "format/env.h"

namespace gnomon::fuzz {

class MemoryFile : public RandomAccessFile {
 public:
  explicit MemoryFile(std::vector<uint8_t> data) : data_(std::move(data)) {}
  Status ReadAt(uint64_t offset, size_t n, uint8_t* dst) const override {
    if (offset > data_.size() || n > data_.size() - offset) return Status::Corruption("short read");
    std::memcpy(dst, data_.data() + offset, n);
    return Status::OK();
  }
  uint64_t Size() const override { return data_.size(); }
  const std::string& path() const override { return path_; }

 private:
  std::vector<uint8_t> data_;
  std::string path_ = "fuzz";
};

}  // namespace gnomon::fuzz
