// Frames of the control channel: a fixed 16-byte little-endian header (magic,
// protocol version, kind, request id) travelling as the active message's
// header, and one protobuf Message as its data. The header layout never
// changes between versions, so peers of different versions can always tell
// each other which version they speak.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "stoker/result.h"
#include "transport/control/control.pb.h"

namespace stoker::control {

inline constexpr uint32_t kFrameMagic = 0x50435453;  // "STCP" little-endian
inline constexpr uint16_t kControlProtocolVersion = 1;
inline constexpr size_t kFrameHeaderBytes = 16;
// Active-message id of control frames (ids below 16 belong to the data plane).
inline constexpr uint16_t kControlAmId = 16;
// Largest body accepted from an authenticated peer, and from one that is not
// yet (a handshake message is small: a stranger cannot make us parse much).
inline constexpr size_t kMaxBodyBytes = size_t{4} << 20;
inline constexpr size_t kMaxHandshakeBodyBytes = 4096;

enum class FrameKind : uint8_t {
  kRequest = 1,   // expects exactly one kResponse with the same request id
  kResponse = 2,  // the answer: a response message or an Error
  kNotice = 3,    // one-way
};

struct FrameHeader {
  uint16_t version = kControlProtocolVersion;
  FrameKind kind = FrameKind::kRequest;
  uint64_t request_id = 0;
};

std::vector<std::byte> encode_frame_header(const FrameHeader& header);
// Checks magic, version (kVersionMismatch naming both) and kind.
Result<FrameHeader> decode_frame_header(std::span<const std::byte> bytes);

// Serializes a message, refusing one larger than kMaxBodyBytes.
Result<std::vector<std::byte>> encode_body(const Message& message);
// Parses a body of at most `max_bytes`; a body with no known message type
// (from a newer peer) is kUnsupported and names the field number it used.
Result<Message> decode_body(std::span<const std::byte> bytes, size_t max_bytes);

// "register_worker", "get_split", ...: for logs and errors.
std::string_view body_name(const Message& message);

// The Status an Error message carries (an unknown code becomes kInternal),
// and the Error message of a Status.
Status status_from_error(const Error& error);
Error error_of(const Status& status);

}  // namespace stoker::control
