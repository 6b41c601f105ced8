// Address parsing and formatting via getaddrinfo/inet_ntop.
#include "transport/socket_address.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>

#include <charconv>
#include <cstring>

namespace stoker {

Result<SocketAddress> SocketAddress::resolve(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    return invalid_argument(fmt::format("cannot resolve '{}': {}", host, gai_strerror(rc)));
  }
  SocketAddress out;
  std::memcpy(&out.storage, found->ai_addr, found->ai_addrlen);
  out.length = found->ai_addrlen;
  freeaddrinfo(found);
  return out;
}

Result<SocketAddress> SocketAddress::parse(std::string_view host_port, uint16_t default_port) {
  std::string_view host = host_port;
  std::string_view port_text;
  if (host_port.starts_with('[')) {  // [v6]:port
    const size_t close = host_port.find(']');
    if (close == std::string_view::npos) {
      return invalid_argument(fmt::format("'{}': missing ']' after an IPv6 address", host_port));
    }
    host = host_port.substr(1, close - 1);
    if (close + 1 < host_port.size()) {
      if (host_port[close + 1] != ':') {
        return invalid_argument(fmt::format("'{}': expected ':' after ']'", host_port));
      }
      port_text = host_port.substr(close + 2);
    }
  } else if (size_t colon = host_port.rfind(':'); colon != std::string_view::npos) {
    host = host_port.substr(0, colon);
    port_text = host_port.substr(colon + 1);
  }
  uint16_t port = default_port;
  if (!port_text.empty()) {
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc() || end != port_text.data() + port_text.size()) {
      return invalid_argument(
          fmt::format("'{}': port '{}' is not a number from 0 to 65535", host_port, port_text));
    }
  } else if (default_port == 0) {
    return invalid_argument(fmt::format("'{}': expected host:port", host_port));
  }
  if (host.empty()) return invalid_argument(fmt::format("'{}': empty host", host_port));
  return resolve(std::string(host), port);
}

uint16_t SocketAddress::port() const {
  if (storage.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
  }
  return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
}

std::string SocketAddress::to_string() const { return to_string(storage); }

std::string SocketAddress::to_string(const sockaddr_storage& storage) {
  char text[INET6_ADDRSTRLEN] = "?";
  if (storage.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&storage);
    inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
    return fmt::format("[{}]:{}", text, ntohs(a->sin6_port));
  }
  const auto* a = reinterpret_cast<const sockaddr_in*>(&storage);
  inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
  return fmt::format("{}:{}", text, ntohs(a->sin_port));
}

}  // namespace stoker
