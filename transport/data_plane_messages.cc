// Encoding and validation of the data-plane control messages.
#include "transport/data_plane_messages.h"

#include <fmt/format.h>
#include <algorithm>

#include "stoker/memory.h"

#include "common/byte_codec.h"

namespace stoker {

std::string_view push_mode_name(PushMode mode) {
  switch (mode) {
    case PushMode::kActiveMessage:
      return "am";
    case PushMode::kPut:
      return "put";
    case PushMode::kAuto:
      return "auto";
  }
  return "unknown";
}

std::optional<PushMode> parse_push_mode(std::string_view name) {
  for (auto mode : {PushMode::kActiveMessage, PushMode::kPut, PushMode::kAuto}) {
    if (name == push_mode_name(mode)) return mode;
  }
  return std::nullopt;
}

PushMode auto_push_mode(SlotReach reach, uint64_t slot_bytes) {
  switch (reach) {
    case SlotReach::kMapped:
      return PushMode::kPut;
    case SlotReach::kSharedMemory:
      return slot_bytes < kSharedMemoryActiveMessageSlotBytes ? PushMode::kPut
                                                              : PushMode::kActiveMessage;
    case SlotReach::kNetwork:
      break;
  }
  return PushMode::kActiveMessage;
}

namespace wire {
namespace {

void put_string(ByteWriter& w, const std::string& s) {
  w.put(static_cast<uint16_t>(s.size()));
  w.put_bytes(std::as_bytes(std::span(s)));
}

Result<std::string> get_string(ByteReader& r, size_t max, std::string_view what) {
  const auto n = r.get<uint16_t>();
  if (n > max) return protocol_error(fmt::format("{} of {} bytes exceeds {}", what, n, max));
  auto bytes = r.get_bytes(n);
  if (r.underflowed()) return protocol_error(fmt::format("{} is truncated", what));
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

std::vector<std::byte> finish(std::vector<std::byte> buf, const ByteWriter& w) {
  buf.resize(w.size());
  return buf;
}

Status expect_end(const ByteReader& r, std::string_view what) {
  if (r.underflowed()) return protocol_error(fmt::format("{} is truncated", what));
  if (r.remaining() != 0) {
    return protocol_error(fmt::format("{} has {} trailing bytes", what, r.remaining()));
  }
  return Status::ok();
}

}  // namespace

std::vector<std::byte> Hello::encode() const {
  std::vector<std::byte> buf(32 + name.size() + access_token.size());
  ByteWriter w(buf);
  w.put(kHelloMagic);
  w.put(version);
  w.put(producer_id);
  put_string(w, name.substr(0, kMaxNameBytes));
  put_string(w, access_token.substr(0, kMaxAccessTokenBytes));
  return finish(std::move(buf), w);
}

Result<Hello> Hello::decode(std::span<const std::byte> in) {
  ByteReader r(in);
  Hello h;
  if (r.get<uint32_t>() != kHelloMagic || r.underflowed()) {
    return protocol_error("hello does not start with the stoker magic: not a stoker sender");
  }
  h.version = r.get<uint16_t>();
  if (r.underflowed()) return protocol_error("hello is truncated");
  if (h.version != kDataPlaneVersion) {
    // The rest of the message may be laid out differently; stop here.
    return Status(
        StatusCode::kVersionMismatch,
        fmt::format("sender speaks data-plane protocol version {}, this receiver speaks {}",
                    h.version, kDataPlaneVersion));
  }
  h.producer_id = r.get<uint64_t>();
  STOKER_ASSIGN_OR_RETURN(h.name, get_string(r, kMaxNameBytes, "hello: sender name"));
  STOKER_ASSIGN_OR_RETURN(h.access_token,
                          get_string(r, kMaxAccessTokenBytes, "hello: access token"));
  STOKER_RETURN_IF_ERROR(expect_end(r, "hello"));
  return h;
}

std::vector<std::byte> Welcome::encode() const {
  std::vector<std::byte> buf(64 + pool_rkey.size() + worker_address.size() + host_identity.size());
  ByteWriter w(buf);
  w.put(version);
  w.put(sender_id);
  w.put(slot_bytes);
  w.put(slot_count);
  w.put(pool_address);
  w.put(attach_token);
  w.put(static_cast<uint16_t>(pool_rkey.size()));
  w.put_bytes(pool_rkey);
  w.put(static_cast<uint16_t>(worker_address.size()));
  w.put_bytes(worker_address);
  put_string(w, host_identity.substr(0, kMaxHostIdentityBytes));
  w.put(memory_kind);
  return finish(std::move(buf), w);
}

Result<Welcome> Welcome::decode(std::span<const std::byte> in) {
  ByteReader r(in);
  Welcome m;
  m.version = r.get<uint16_t>();
  if (r.underflowed()) return protocol_error("welcome is truncated");
  if (m.version != kDataPlaneVersion) {
    return Status(
        StatusCode::kVersionMismatch,
        fmt::format("receiver speaks data-plane protocol version {}, this sender speaks {}",
                    m.version, kDataPlaneVersion));
  }
  m.sender_id = r.get<uint32_t>();
  m.slot_bytes = r.get<uint64_t>();
  m.slot_count = r.get<uint32_t>();
  m.pool_address = r.get<uint64_t>();
  m.attach_token = r.get<uint64_t>();
  const auto rkey_len = r.get<uint16_t>();
  if (rkey_len > kMaxRkeyBytes) {
    return protocol_error(fmt::format("welcome: remote key of {} bytes", rkey_len));
  }
  auto rkey = r.get_bytes(rkey_len);
  m.pool_rkey.assign(rkey.begin(), rkey.end());
  const auto address_len = r.get<uint16_t>();
  if (address_len == 0 || address_len > kMaxWorkerAddressBytes) {
    return protocol_error(fmt::format("welcome: worker address of {} bytes", address_len));
  }
  auto address = r.get_bytes(address_len);
  m.worker_address.assign(address.begin(), address.end());
  STOKER_ASSIGN_OR_RETURN(m.host_identity,
                          get_string(r, kMaxHostIdentityBytes, "welcome: host identity"));
  m.memory_kind = r.get<uint8_t>();
  STOKER_RETURN_IF_ERROR(expect_end(r, "welcome"));
  if (m.memory_kind > static_cast<uint8_t>(MemoryKind::kDevice)) {
    return protocol_error(fmt::format("welcome: unknown memory kind {}", m.memory_kind));
  }
  if (m.slot_bytes == 0 || m.slot_count == 0) {
    return protocol_error("welcome: receiver advertises no landing slots");
  }
  return m;
}

std::vector<std::byte> Attach::encode() const {
  std::vector<std::byte> buf(13);
  ByteWriter w(buf);
  w.put(sender_id);
  w.put(token);
  w.put(static_cast<uint8_t>(mode));
  return finish(std::move(buf), w);
}

Result<Attach> Attach::decode(std::span<const std::byte> in) {
  ByteReader r(in);
  Attach m;
  m.sender_id = r.get<uint32_t>();
  m.token = r.get<uint64_t>();
  const auto mode = r.get<uint8_t>();
  STOKER_RETURN_IF_ERROR(expect_end(r, "attach"));
  if (mode > static_cast<uint8_t>(PushMode::kPut)) {
    return protocol_error(fmt::format("attach: push mode {} is not am (0) or put (1)", mode));
  }
  m.mode = static_cast<PushMode>(mode);
  return m;
}

std::vector<std::byte> Refusal::encode() const {
  std::vector<std::byte> buf(8 + reason.size());
  ByteWriter w(buf);
  w.put(version);
  put_string(w, reason.substr(0, kMaxRefusalBytes));
  return finish(std::move(buf), w);
}

Result<Refusal> Refusal::decode(std::span<const std::byte> in) {
  ByteReader r(in);
  Refusal m;
  m.version = r.get<uint16_t>();
  STOKER_ASSIGN_OR_RETURN(m.reason, get_string(r, kMaxRefusalBytes, "refusal reason"));
  STOKER_RETURN_IF_ERROR(expect_end(r, "refusal"));
  return m;
}

std::vector<std::byte> Credit::encode() const {
  std::vector<std::byte> buf(8 + 4 + 4 * slots.size());
  ByteWriter w(buf);
  w.put(window_bytes);
  w.put(static_cast<uint32_t>(slots.size()));
  for (uint32_t s : slots) w.put(s);
  return finish(std::move(buf), w);
}

Result<Credit> Credit::decode(std::span<const std::byte> in, uint32_t slot_count) {
  ByteReader r(in);
  const auto window_bytes = r.get<uint64_t>();
  const auto n = r.get<uint32_t>();
  if (n > kMaxCreditsPerMessage) {
    return protocol_error(fmt::format("credit message grants {} slots (at most {} allowed)", n,
                                      kMaxCreditsPerMessage));
  }
  Credit m;
  m.window_bytes = window_bytes;
  m.slots.resize(n);
  for (uint32_t& s : m.slots) {
    s = r.get<uint32_t>();
    if (s >= slot_count && !r.underflowed()) {
      return protocol_error(fmt::format("credit for slot {} of a {}-slot pool", s, slot_count));
    }
  }
  STOKER_RETURN_IF_ERROR(expect_end(r, "credit"));
  return m;
}

Result<size_t> BatchReady::encode(std::span<std::byte> out) const {
  if (out.size() < 4) return invalid_argument("ready buffer too small");
  ByteWriter w(out.first(4));
  w.put(slot);
  STOKER_ASSIGN_OR_RETURN(size_t n, descriptor.encode(out.subspan(4)));
  return 4 + n;
}

Result<BatchReady> BatchReady::decode(std::span<const std::byte> in) {
  ByteReader r(in);
  BatchReady m;
  m.slot = r.get<uint32_t>();
  if (r.underflowed()) return protocol_error("ready message shorter than its slot id");
  STOKER_ASSIGN_OR_RETURN(m.descriptor, BatchDescriptor::decode(in.subspan(4)));
  return m;
}

Result<std::vector<BatchReady>> BatchReady::decode_list(std::span<const std::byte> in) {
  ByteReader r(in);
  const auto count = r.get<uint16_t>();
  if (r.underflowed() || count == 0) return protocol_error("ready notice without entries");
  std::vector<BatchReady> out;
  // The count is the peer's word: reserve no more entries than the bytes hold.
  out.reserve(std::min<size_t>(count, (in.size() - 2) / (4 + kDescriptorHeaderBytes)));
  size_t pos = 2;
  for (uint16_t i = 0; i < count; ++i) {
    // An entry is a slot (4 bytes) and a descriptor whose header gives its size.
    auto descriptor_bytes = in.size() - pos < 4
                                ? Result<size_t>(protocol_error("no room for a slot id"))
                                : BatchDescriptor::encoded_size_of(in.subspan(pos + 4));
    if (!descriptor_bytes.is_ok()) {
      return descriptor_bytes.status().with_context(
          fmt::format("ready notice entry {} of {}", i, count));
    }
    const size_t entry = 4 + *descriptor_bytes;
    if (in.size() - pos < entry) {
      return protocol_error(fmt::format("ready notice entry {} of {} is truncated", i, count));
    }
    STOKER_ASSIGN_OR_RETURN(auto ready, decode(in.subspan(pos, entry)));
    out.push_back(std::move(ready));
    pos += entry;
  }
  if (pos != in.size()) {
    return protocol_error(fmt::format("ready notice has {} trailing bytes", in.size() - pos));
  }
  return out;
}

}  // namespace wire
}  // namespace stoker
