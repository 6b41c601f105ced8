// "host:port" <-> sockaddr, for UCX listeners and client endpoints.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "stoker/result.h"

namespace stoker {

struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;

  // Resolves "host:port", "[v6]:port" or "host" + default port (IPv4 or IPv6).
  static Result<SocketAddress> parse(std::string_view host_port, uint16_t default_port = 0);
  static Result<SocketAddress> resolve(const std::string& host, uint16_t port);

  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
  uint16_t port() const;
  std::string to_string() const;  // "127.0.0.1:4000", "[::1]:4000"
  static std::string to_string(const sockaddr_storage& storage);
};

}  // namespace stoker
