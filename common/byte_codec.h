// Little-endian readers and writers over byte spans: the one place where wire
// integers are packed, whatever the host byte order. Bounds are checked; a
// short buffer turns into a failed read, never an overrun.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>

namespace stoker::wire {

class ByteWriter {
 public:
  explicit ByteWriter(std::span<std::byte> out) : out_(out) {}

  template <typename T>
  requires std::is_unsigned_v<T>
  void put(T value) {
    if (!reserve(sizeof(T))) return;
    for (size_t i = 0; i < sizeof(T); ++i) {
      out_[pos_ + i] = static_cast<std::byte>((value >> (8 * i)) & 0xFF);
    }
    pos_ += sizeof(T);
  }
  void put_bytes(std::span<const std::byte> bytes) {
    if (!reserve(bytes.size())) return;
    if (!bytes.empty()) std::memcpy(out_.data() + pos_, bytes.data(), bytes.size());
    pos_ += bytes.size();
  }
  // Writes exactly `width` bytes: the string, then NUL padding.
  void put_fixed_string(std::string_view s, size_t width) {
    if (s.size() > width || !reserve(width)) {
      overflow_ = true;
      return;
    }
    std::memcpy(out_.data() + pos_, s.data(), s.size());
    std::memset(out_.data() + pos_ + s.size(), 0, width - s.size());
    pos_ += width;
  }

  size_t size() const { return pos_; }
  bool overflowed() const { return overflow_; }

 private:
  bool reserve(size_t n) {
    if (overflow_ || n > out_.size() - pos_) {
      overflow_ = true;
      return false;
    }
    return true;
  }
  std::span<std::byte> out_;
  size_t pos_ = 0;
  bool overflow_ = false;
};

class ByteReader {
 public:
  explicit ByteReader(std::span<const std::byte> in) : in_(in) {}

  // Reads a T; on a short buffer returns 0 and sets underflowed().
  template <typename T>
  requires std::is_unsigned_v<T> T get() {
    if (!take(sizeof(T))) return 0;
    T value = 0;
    for (size_t i = 0; i < sizeof(T); ++i) {
      value = static_cast<T>(value | (static_cast<T>(in_[pos_ + i]) << (8 * i)));
    }
    pos_ += sizeof(T);
    return value;
  }
  // A view of the next n bytes (empty on a short buffer).
  std::span<const std::byte> get_bytes(size_t n) {
    if (!take(n)) return {};
    auto view = in_.subspan(pos_, n);
    pos_ += n;
    return view;
  }

  size_t remaining() const { return underflow_ ? 0 : in_.size() - pos_; }
  bool underflowed() const { return underflow_; }

 private:
  bool take(size_t n) {
    if (underflow_ || n > in_.size() - pos_) {
      underflow_ = true;
      return false;
    }
    return true;
  }
  std::span<const std::byte> in_;
  size_t pos_ = 0;
  bool underflow_ = false;
};

}  // namespace stoker::wire
