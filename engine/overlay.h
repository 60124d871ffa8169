// A copy-on-write overlay over a read-only BlockView: writes to an exported
// backup (`gnomon serve --overlay FILE`) land in FILE, never in the
// repository, and the backup reads through wherever nothing was written.
// FILE's bytes are specified in FORMAT.md §13.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/volume_reader.h"

namespace gnomon {

class Overlay : public BlockView {
 public:
  static constexpr uint32_t kBlock = 4096;
  // Opens FILE for base (identified by backup id and volume name), or makes
  // it (O_EXCL|O_NOFOLLOW, 0600). An existing FILE made for another backup,
  // volume or size is refused; FILE is locked against a second server.
  static Status Open(const std::string& path, const BlockView* base, const std::string& backup,
                     const std::string& volume, std::unique_ptr<Overlay>* out);
  ~Overlay() override;

  uint64_t size() const override { return base_->size(); }
  Status Read(uint64_t off, size_t len, uint8_t* out) const override;
  // Written blocks are data; elsewhere, the base's extents.
  void Extent(uint64_t off, bool* zero, uint64_t* end) const override;
  Status Write(uint64_t off, size_t len, const uint8_t* in);
  // Written data, then the map of written blocks, made durable.
  Status Flush();
  uint64_t blocks_written() const;

 private:
  Overlay(const BlockView* base, int fd, std::string path)
      : base_(base), fd_(fd), path_(std::move(path)) {}
  bool Written(uint64_t block) const { return (map_[block / 64] >> (block % 64)) & 1; }
  uint64_t DataOffset() const;
  Status ReadBlocks(uint64_t first, uint64_t count, uint8_t* out) const;

  const BlockView* base_;
  int fd_;
  std::string path_;
  mutable std::mutex mu_;  // the map and read-modify-write of partial blocks
  std::vector<uint64_t> map_;
  uint64_t dirty_lo_ = ~0ull, dirty_hi_ = 0;  // map words written since the last flush
};

}  // namespace gnomon
