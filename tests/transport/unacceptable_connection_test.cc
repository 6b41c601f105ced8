// Connections UCX itself cannot accept: a server whose UCX was limited to one
// network device (UCX_NET_DEVICES) gets a connection request through another
// (loopback), and ucp_ep_create refuses it. UCX 1.13 has then already
// rejected and freed the request, so the server must not touch it again:
// rejecting it a second time crashed the receiver. Both servers, the batch
// receiver and the control server, must refuse such a peer and keep serving
// the ones that come through the device UCX knows.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "stoker/batch_receiver.h"
#include "stoker/batch_sender.h"
#include "tests/support/byte_batch.h"
#include "transport/control/control_client.h"
#include "transport/control/control_server.h"

namespace stoker {
namespace {

using namespace std::chrono_literals;

struct NetworkDevice {
  std::string name;  // "eth0"
  std::string ipv4;  // "10.0.0.5"
};

// The first IPv4 device that is up and is not loopback.
std::optional<NetworkDevice> first_external_device() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return std::nullopt;
  std::optional<NetworkDevice> found;
  for (ifaddrs* a = list; a != nullptr && !found; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    if ((a->ifa_flags & IFF_UP) == 0 || (a->ifa_flags & IFF_LOOPBACK) != 0) continue;
    char text[INET_ADDRSTRLEN] = {};
    const auto* in = reinterpret_cast<const sockaddr_in*>(a->ifa_addr);
    if (inet_ntop(AF_INET, &in->sin_addr, text, sizeof text) == nullptr) continue;
    found = NetworkDevice{a->ifa_name, text};
  }
  freeifaddrs(list);
  return found;
}

// UCX reads its environment when a context is created: set while a server
// starts, the variable limits that server's context only.
class ScopedUcxDevices {
 public:
  explicit ScopedUcxDevices(const std::string& devices) {
    setenv("UCX_NET_DEVICES", devices.c_str(), 1);
  }
  ~ScopedUcxDevices() { unsetenv("UCX_NET_DEVICES"); }
  ScopedUcxDevices(const ScopedUcxDevices&) = delete;
  ScopedUcxDevices& operator=(const ScopedUcxDevices&) = delete;
};

class UnacceptableConnection : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("UCX_TLS", "tcp", 1);
    device_ = first_external_device();
    if (!device_) GTEST_SKIP() << "no network device besides loopback";
  }
  std::optional<NetworkDevice> device_;
};

TEST_F(UnacceptableConnection, TheReceiverRefusesItAndKeepsReceiving) {
  Result<std::unique_ptr<BatchReceiver>> receiver = unavailable("not started");
  {
    ScopedUcxDevices only(device_->name);
    auto context = TransportContext::create();
    ASSERT_TRUE(context.is_ok()) << context.status().to_string();
    receiver = BatchReceiver::start(
        {.listen_address = "0.0.0.0:0", .slot_bytes = 4096, .slot_count = 8, .context = *context});
  }
  ASSERT_TRUE(receiver.is_ok()) << receiver.status().to_string();
  const uint16_t port = (*receiver)->port();

  auto through_loopback = BatchSender::connect(
      {.receiver_address = fmt::format("127.0.0.1:{}", port), .connect_timeout = 3s});
  EXPECT_FALSE(through_loopback.is_ok());

  auto through_device = BatchSender::connect(
      {.receiver_address = fmt::format("{}:{}", device_->ipv4, port), .connect_timeout = 5s});
  ASSERT_TRUE(through_device.is_ok()) << through_device.status().to_string();
  std::vector<std::byte> payload(1000, std::byte{7});
  ASSERT_TRUE(
      (*through_device)->post(testing::byte_batch(payload.size()), payload, nullptr, 5s).is_ok());
  auto landed = (*receiver)->next(5s);
  ASSERT_TRUE(landed.is_ok()) << landed.status().to_string();
  EXPECT_EQ(landed->payload().size(), payload.size());
  EXPECT_EQ(landed->payload()[999], std::byte{7});
  landed->release();
  EXPECT_TRUE((*through_device)->close(5s).is_ok());
}

class Echo : public control::ControlHandler {
 public:
  Result<control::Message> on_request(control::ConnectionId, const control::PeerInfo&,
                                      const control::Message& request) override {
    return request;
  }
  void on_disconnect(control::ConnectionId, const control::PeerInfo&, const Status&) override {}
};

TEST_F(UnacceptableConnection, TheControlServerRefusesItAndKeepsServing) {
  Echo echo;
  Result<std::unique_ptr<control::ControlServer>> server = unavailable("not started");
  {
    ScopedUcxDevices only(device_->name);
    server = control::ControlServer::start({.listen_address = "0.0.0.0:0"}, &echo);
  }
  ASSERT_TRUE(server.is_ok()) << server.status().to_string();
  const auto connect = [&](const std::string& host) {
    return control::ControlClient::connect(
        {.server_address = fmt::format("{}:{}", host, (*server)->port()),
         .role = control::ROLE_WORKER,
         .name = "w",
         .connect_timeout = 3s});
  };

  EXPECT_FALSE(connect("127.0.0.1").is_ok());

  auto client = connect(device_->ipv4);
  ASSERT_TRUE(client.is_ok()) << client.status().to_string();
  control::Message ping;
  ping.mutable_describe_cluster();
  auto answer = (*client)->call(ping, 5s);
  ASSERT_TRUE(answer.is_ok()) << answer.status().to_string();
  EXPECT_TRUE(answer->has_describe_cluster());
}

}  // namespace
}  // namespace stoker
