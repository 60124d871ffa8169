#include "engine/overlay.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "format/coding.h"
#include "format/digest.h"

namespace gnomon {
namespace {

constexpr char kMagic[17] = "gnomon overlay 1";
constexpr size_t kHeader = 4096;

// Bytes the overlay must hold: its end coming first means it was cut short.
Status Pread(int fd, const std::string& path, uint8_t* out, size_t len, uint64_t off) {
  while (len > 0) {
    ssize_t n = ::pread(fd, out, len, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(path, errno);
    if (n == 0)
      return Status::Corruption("overlay " + path + " ends at " + std::to_string(off) +
                                ", before a block it says was written");
    out += n;
    off += static_cast<uint64_t>(n);
    len -= static_cast<size_t>(n);
  }
  return Status::OK();
}

Status Pwrite(int fd, const std::string& path, const uint8_t* in, size_t len, uint64_t off) {
  while (len > 0) {
    ssize_t n = ::pwrite(fd, in, len, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(path, errno);
    in += n;
    off += static_cast<uint64_t>(n);
    len -= static_cast<size_t>(n);
  }
  return Status::OK();
}

std::string Header(uint64_t size, const std::string& backup, const std::string& volume) {
  std::string h(kMagic, 16);
  PutU64(&h, size);
  PutU32(&h, Overlay::kBlock);
  PutU32(&h, 0);
  h += backup;  // 16 characters (checked by Open)
  h += static_cast<char>(volume.size());
  h += volume;
  h.resize(kHeader - 8, '\0');
  PutU64(&h, Checksum64({reinterpret_cast<const uint8_t*>(h.data()), h.size()}));
  return h;
}

}  // namespace

uint64_t Overlay::DataOffset() const {
  return kHeader + (map_.size() * 8 + kHeader - 1) / kHeader * kHeader;
}

Status Overlay::Open(const std::string& path, const BlockView* base, const std::string& backup,
                     const std::string& volume, std::unique_ptr<Overlay>* out) {
  if (backup.size() != 16 || volume.empty() || volume.size() > 200)
    return Status::InvalidArgument("overlay: bad backup id or volume name");
  bool made = true;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0 && errno == EEXIST) {
    made = false;
    fd = ::open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  }
  if (fd < 0) return Status::FromErrno("overlay " + path, errno);
  std::unique_ptr<Overlay> o(new Overlay(base, fd, path));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0)
    return Status::Locked("overlay " + path + " is in use by another gnomon serve");
  // Another user's file would decide what the VM reads: only our own,
  // private, single-linked file is taken.
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
    return Status::InvalidArgument("overlay " + path + " is not a regular file");
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0 || st.st_nlink != 1)
    return Status::InvalidArgument("overlay " + path +
                                   " must be this user's own file, mode 0600, with one link");
  const uint64_t blocks = (base->size() + kBlock - 1) / kBlock;
  o->map_.assign((blocks + 63) / 64, 0);
  const std::string want = Header(base->size(), backup, volume);
  if (made) {
    GNOMON_RETURN_IF_ERROR(
        Pwrite(fd, path, reinterpret_cast<const uint8_t*>(want.data()), want.size(), 0));
    if (::fsync(fd) != 0) return Status::FromErrno(path, errno);
  } else {
    std::string have(kHeader, '\0');
    GNOMON_RETURN_IF_ERROR(Pread(fd, path, reinterpret_cast<uint8_t*>(have.data()), kHeader, 0));
    if (have != want)
      return Status::InvalidArgument("overlay " + path + " was not made for backup " + backup +
                                     " volume '" + volume + "' of " + std::to_string(base->size()) +
                                     " bytes (or is damaged); name a new file");
    std::vector<uint8_t> raw(o->map_.size() * 8);
    GNOMON_RETURN_IF_ERROR(Pread(fd, path, raw.data(), raw.size(), kHeader));
    for (size_t i = 0; i < o->map_.size(); ++i) o->map_[i] = GetU64(raw.data() + i * 8);
  }
  *out = std::move(o);
  return Status::OK();
}

Overlay::~Overlay() {
  (void)Flush();
  ::close(fd_);
}

uint64_t Overlay::blocks_written() const {
  std::lock_guard lock(mu_);
  uint64_t n = 0;
  for (uint64_t w : map_) n += static_cast<uint64_t>(__builtin_popcountll(w));
  return n;
}

// Whole blocks [first, first + count): from the overlay where written, else
// from the base (the last block may be short of kBlock at the end).
Status Overlay::ReadBlocks(uint64_t first, uint64_t count, uint8_t* out) const {
  uint64_t b = first;
  while (b < first + count) {
    bool written;
    {
      std::lock_guard lock(mu_);
      written = Written(b);
    }
    uint64_t e = b + 1;
    while (e < first + count) {
      std::lock_guard lock(mu_);
      if (Written(e) != written) break;
      ++e;
    }
    const uint64_t off = b * kBlock, len = std::min(e * kBlock, size()) - off;
    uint8_t* at = out + (b - first) * kBlock;
    GNOMON_RETURN_IF_ERROR(written ? Pread(fd_, path_, at, len, DataOffset() + off)
                                   : base_->Read(off, len, at));
    b = e;
  }
  return Status::OK();
}

Status Overlay::Read(uint64_t off, size_t len, uint8_t* out) const {
  const uint64_t first = off / kBlock, last = (off + len + kBlock - 1) / kBlock;
  if (off % kBlock == 0 && (len % kBlock == 0 || off + len == size()))
    return ReadBlocks(first, last - first, out);
  std::vector<uint8_t> buf((last - first) * kBlock);
  GNOMON_RETURN_IF_ERROR(ReadBlocks(first, last - first, buf.data()));
  std::memcpy(out, buf.data() + (off - first * kBlock), len);
  return Status::OK();
}

void Overlay::Extent(uint64_t off, bool* zero, uint64_t* end) const {
  std::lock_guard lock(mu_);
  uint64_t b = off / kBlock;
  const uint64_t blocks = (size() + kBlock - 1) / kBlock;
  if (Written(b)) {
    *zero = false;
    while (b + 1 < blocks && Written(b + 1)) ++b;
    *end = std::min((b + 1) * kBlock, size());
    return;
  }
  base_->Extent(off, zero, end);
  // Up to the next written block, a map word at a time.
  const uint64_t stop = (*end + kBlock - 1) / kBlock;
  for (uint64_t n = b + 1; n < stop;) {
    const uint64_t word = map_[n / 64] >> (n % 64);
    if (word != 0) {
      n += static_cast<uint64_t>(__builtin_ctzll(word));
      if (n < stop) *end = std::min(*end, n * kBlock);
      break;
    }
    n = (n / 64 + 1) * 64;
  }
}

Status Overlay::Write(uint64_t off, size_t len, const uint8_t* in) {
  if (off > size() || len > size() - off) return Status::InvalidArgument("write past the end");
  if (len == 0) return Status::OK();
  std::lock_guard lock(mu_);
  const uint64_t first = off / kBlock, last = (off + len + kBlock - 1) / kBlock;
  std::vector<uint8_t> buf((last - first) * kBlock);
  // Partial blocks at either end keep the bytes around the write.
  const bool head = off % kBlock != 0, tail = (off + len) % kBlock != 0 && off + len != size();
  auto fill = [&](uint64_t b) -> Status {
    const uint64_t boff = b * kBlock, blen = std::min(boff + kBlock, size()) - boff;
    uint8_t* at = buf.data() + (b - first) * kBlock;
    return Written(b) ? Pread(fd_, path_, at, blen, DataOffset() + boff)
                      : base_->Read(boff, blen, at);
  };
  if (head) GNOMON_RETURN_IF_ERROR(fill(first));
  if (tail && (last - 1 != first || !head)) GNOMON_RETURN_IF_ERROR(fill(last - 1));
  std::memcpy(buf.data() + (off - first * kBlock), in, len);
  const uint64_t bytes = std::min(last * kBlock, size()) - first * kBlock;
  GNOMON_RETURN_IF_ERROR(Pwrite(fd_, path_, buf.data(), bytes, DataOffset() + first * kBlock));
  for (uint64_t b = first; b < last; ++b) map_[b / 64] |= 1ull << (b % 64);
  dirty_lo_ = std::min(dirty_lo_, first / 64);
  dirty_hi_ = std::max(dirty_hi_, (last - 1) / 64 + 1);
  return Status::OK();
}

Status Overlay::Flush() {
  std::lock_guard lock(mu_);
  // The data first: a block is marked written only once its bytes are
  // durable, so a crash never shows a marked block with stale bytes.
  if (::fdatasync(fd_) != 0) return Status::FromErrno(path_, errno);
  if (dirty_lo_ >= dirty_hi_) return Status::OK();
  // Only the words writes touched since the last flush.
  std::string raw;
  for (uint64_t i = dirty_lo_; i < dirty_hi_; ++i) PutU64(&raw, map_[i]);
  GNOMON_RETURN_IF_ERROR(Pwrite(fd_, path_, reinterpret_cast<const uint8_t*>(raw.data()),
                                raw.size(), kHeader + dirty_lo_ * 8));
  if (::fdatasync(fd_) != 0) return Status::FromErrno(path_, errno);
  dirty_lo_ = ~0ull;
  dirty_hi_ = 0;
  return Status::OK();
}

}  // namespace gnomon
