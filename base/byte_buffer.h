// A byte vector that grows without zeroing. Pipeline buffers are sized for a
// whole chunk once and then written before they are read; zeroing them
// touched every page of every buffer up front, which an incremental that
// reads a few 4 KiB blocks a chunk paid for in page faults and memset
// (about a tenth of its CPU).
#pragma once

#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace gnomon {

// std::allocator, except that value-initialising an element (what resize()
// does) default-initialises it: for bytes, leaves it as it is.
template <typename T>
struct DefaultInitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() noexcept = default;
  template <typename U>
  DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}
  template <typename U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

using ByteBuffer = std::vector<uint8_t, DefaultInitAllocator<uint8_t>>;

}  // namespace gnomon
