// Control frame header codec and protobuf body (de)serialization with bounds.
#include "transport/control/control_frame.h"

#include <fmt/format.h>

#include "common/byte_codec.h"

namespace stoker::control {

std::vector<std::byte> encode_frame_header(const FrameHeader& header) {
  std::vector<std::byte> out(kFrameHeaderBytes);
  wire::ByteWriter w(out);
  w.put(kFrameMagic);
  w.put(header.version);
  w.put(static_cast<uint8_t>(header.kind));
  w.put(uint8_t{0});  // reserved
  w.put(header.request_id);
  return out;
}

Result<FrameHeader> decode_frame_header(std::span<const std::byte> bytes) {
  if (bytes.size() != kFrameHeaderBytes) {
    return protocol_error(fmt::format("control frame header of {} bytes, expected {}", bytes.size(),
                                      kFrameHeaderBytes));
  }
  wire::ByteReader r(bytes);
  const auto magic = r.get<uint32_t>();
  FrameHeader h;
  h.version = r.get<uint16_t>();
  const auto kind = r.get<uint8_t>();
  const auto reserved = r.get<uint8_t>();
  h.request_id = r.get<uint64_t>();
  if (magic != kFrameMagic) {
    return protocol_error(
        fmt::format("control frame magic {:#010x} is not {:#010x}: not a stoker "
                    "control peer",
                    magic, kFrameMagic));
  }
  if (h.version != kControlProtocolVersion) {
    return Status(StatusCode::kVersionMismatch,
                  fmt::format("peer speaks control protocol version {}, this build speaks {}",
                              h.version, kControlProtocolVersion));
  }
  if (kind < static_cast<uint8_t>(FrameKind::kRequest) ||
      kind > static_cast<uint8_t>(FrameKind::kNotice)) {
    return protocol_error(fmt::format("control frame of unknown kind {}", kind));
  }
  if (reserved != 0) {
    return protocol_error(fmt::format("control frame with reserved byte {} (must be 0)", reserved));
  }
  h.kind = static_cast<FrameKind>(kind);
  return h;
}

Result<std::vector<std::byte>> encode_body(const Message& message) {
  const size_t size = message.ByteSizeLong();
  if (size > kMaxBodyBytes) {
    return resource_exhausted(fmt::format("{} message of {} bytes exceeds the {}-byte limit",
                                          body_name(message), size, kMaxBodyBytes));
  }
  std::vector<std::byte> out(size);
  if (!message.SerializeToArray(out.data(), static_cast<int>(size))) {
    return internal_error(fmt::format("serializing a {} message failed", body_name(message)));
  }
  return out;
}

Result<Message> decode_body(std::span<const std::byte> bytes, size_t max_bytes) {
  if (bytes.size() > max_bytes) {
    return protocol_error(fmt::format("control message of {} bytes exceeds the {}-byte limit",
                                      bytes.size(), max_bytes));
  }
  Message message;
  if (!message.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return protocol_error(
        fmt::format("control message of {} bytes is not a valid protobuf Message", bytes.size()));
  }
  if (message.body_case() == Message::BODY_NOT_SET) {
    const auto& unknown = message.GetReflection()->GetUnknownFields(message);
    if (unknown.field_count() > 0) {
      return unsupported(
          fmt::format("unknown control message type (field {}): the peer is newer than this build",
                      unknown.field(0).number()));
    }
    return protocol_error("empty control message");
  }
  return message;
}

Status status_from_error(const Error& error) {
  auto code = static_cast<StatusCode>(error.code());
  if (code == StatusCode::kOk || error.code() > static_cast<uint32_t>(StatusCode::kOutOfRange)) {
    code = StatusCode::kInternal;
  }
  return {code, error.message()};
}

Error error_of(const Status& status) {
  Error error;
  error.set_code(static_cast<uint32_t>(status.code()));
  error.set_message(status.message());
  return error;
}

std::string_view body_name(const Message& message) {
  if (message.body_case() == Message::BODY_NOT_SET) return "empty";
  const auto* field = Message::descriptor()->FindFieldByNumber(message.body_case());
  return field != nullptr ? std::string_view(field->name()) : std::string_view("unknown");
}

}  // namespace stoker::control
