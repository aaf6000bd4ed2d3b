#pragma once
// A growable byte buffer for the data plane's hot path: the bytes [data(), data() + size()) of
// one allocation. Unlike std::vector<std::byte>, making room does not zero it: the room is
// written right after (records sealed or opened into it), and zeroing would be one more pass
// over every byte carried. Consuming from the front is O(1); the content moves to the front only
// when room() needs the space.

#include <cstddef>
#include <cstring>
#include <memory>
#include <span>

namespace weft::transport {

class ByteBuffer {
 public:
  ByteBuffer() = default;
  ByteBuffer(const ByteBuffer&) = delete;
  ByteBuffer& operator=(const ByteBuffer&) = delete;
  ByteBuffer(ByteBuffer&&) noexcept = default;
  ByteBuffer& operator=(ByteBuffer&&) noexcept = default;

  [[nodiscard]] std::byte* data() { return buf_.get() + head_; }
  [[nodiscard]] const std::byte* data() const { return buf_.get() + head_; }
  [[nodiscard]] std::size_t size() const { return tail_ - head_; }
  [[nodiscard]] bool empty() const { return tail_ == head_; }
  [[nodiscard]] std::size_t capacity() const { return cap_; }
  [[nodiscard]] std::span<const std::byte> bytes() const { return {data(), size()}; }

  // Uninitialised room for `n` more bytes after the content (moved or reallocated as needed);
  // valid until the next call that changes the buffer. commit(k) appends its first k bytes.
  [[nodiscard]] std::span<std::byte> room(std::size_t n) {
    if (cap_ - tail_ < n) {
      const std::size_t used = size();
      if (cap_ - used >= n && used <= cap_ / 2) {
        if (used > 0) std::memmove(buf_.get(), data(), used);
      } else {
        std::size_t cap = cap_ < 4096 ? 4096 : cap_;
        while (cap - used < n) cap *= 2;
        // new[] of std::byte default-initialises: no zeroing.
        std::unique_ptr<std::byte[]> grown(new std::byte[cap]);
        if (used > 0) std::memcpy(grown.get(), data(), used);
        buf_ = std::move(grown);
        cap_ = cap;
      }
      head_ = 0;
      tail_ = used;
    }
    return {buf_.get() + tail_, n};
  }
  void commit(std::size_t n) { tail_ += n; }  // n <= the last room()
  void append(std::span<const std::byte> bytes) {
    if (bytes.empty()) return;
    std::memcpy(room(bytes.size()).data(), bytes.data(), bytes.size());
    commit(bytes.size());
  }
  // Drops `n` <= size() bytes from the front.
  void consume(std::size_t n) {
    head_ += n;
    if (head_ == tail_) head_ = tail_ = 0;
  }
  // Keeps the first `n` <= size() bytes.
  void truncate(std::size_t n) { tail_ = head_ + n; }
  void clear() { head_ = tail_ = 0; }  // keeps the allocation
  void release() {
    buf_.reset();
    cap_ = head_ = tail_ = 0;
  }

 private:
  std::unique_ptr<std::byte[]> buf_;
  std::size_t cap_ = 0;
  std::size_t head_ = 0;
  std::size_t tail_ = 0;
};

}  // namespace weft::transport
