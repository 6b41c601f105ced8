// The control channel over real UCX endpoints on loopback: handshake, calls,
// the cluster secret both ways, version and bad-input handling, and
// reconnection to a restarted server.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "transport/control/control_client.h"
#include "transport/control/control_frame.h"
#include "transport/control/control_server.h"
#include "transport/socket_address.h"
#include "transport/ucx/am_send.h"
#include "transport/ucx/endpoint.h"
#include "transport/ucx/worker.h"

namespace stoker::control {
namespace {

using namespace std::chrono_literals;

// Answers register_worker with worker id 1000 + its threads field, and
// describe_cluster with its coordinator field set to the peer's name.
class EchoHandler : public ControlHandler {
 public:
  Result<Message> on_request(ConnectionId, const PeerInfo& peer, const Message& request) override {
    requests.fetch_add(1);
    Message answer;
    if (request.has_register_worker()) {
      answer.mutable_worker_registered()->set_worker_id(1000 + request.register_worker().threads());
      return answer;
    }
    if (request.has_describe_cluster()) {
      answer.mutable_cluster_description()->set_coordinator(peer.name);
      return answer;
    }
    return invalid_argument("not for this test");
  }
  void on_disconnect(ConnectionId, const PeerInfo& peer, const Status&) override {
    std::lock_guard lock(mu);
    disconnected.push_back(peer.name);
  }
  std::atomic<int> requests{0};
  std::mutex mu;
  std::vector<std::string> disconnected;
};

Message register_worker(uint32_t threads) {
  Message m;
  m.mutable_register_worker()->set_threads(threads);
  return m;
}

class ControlChannel : public ::testing::Test {
 protected:
  void SetUp() override { setenv("UCX_TLS", "tcp", 1); }
  void start(std::optional<ClusterSecret> secret = std::nullopt, uint16_t port = 0) {
    auto s = ControlServer::start(
        {.listen_address = fmt::format("127.0.0.1:{}", port), .secret = std::move(secret)},
        &handler_);
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    server_ = std::move(s).value();
  }
  Result<std::unique_ptr<ControlClient>> connect(std::optional<ClusterSecret> secret,
                                                 std::string name = "w") {
    return ControlClient::connect({.server_address = fmt::format("127.0.0.1:{}", server_->port()),
                                   .role = ROLE_WORKER,
                                   .name = std::move(name),
                                   .secret = std::move(secret),
                                   .connect_timeout = 3s});
  }
  EchoHandler handler_;
  std::unique_ptr<ControlServer> server_;
};

ClusterSecret secret(const char* s) { return ClusterSecret::from_string(s).value(); }

TEST_F(ControlChannel, CallsAreAnsweredInOrderFromManyThreads) {
  start();
  auto client = connect(std::nullopt);
  ASSERT_TRUE(client.is_ok()) << client.status().to_string();
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (uint32_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint32_t i = 0; i < 200; ++i) {
        auto answer = (*client)->call(register_worker(t * 1000 + i), 5s);
        ASSERT_TRUE(answer.is_ok()) << answer.status().to_string();
        EXPECT_EQ(answer->worker_registered().worker_id(), 1000 + t * 1000 + i);
        ok.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 800);
  EXPECT_EQ(handler_.requests.load(), 800);
}

TEST_F(ControlChannel, HandlerErrorsComeBackAsTheirStatus) {
  start();
  auto client = connect(std::nullopt);
  ASSERT_TRUE(client.is_ok());
  Message leave;
  leave.mutable_leave_job()->set_consumer_id(1);
  auto answer = (*client)->call(leave, 5s);
  EXPECT_EQ(answer.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(answer.status().message(), "not for this test");
}

TEST_F(ControlChannel, TheSecretIsCheckedBothWays) {
  start(secret("correct horse battery staple"));
  auto none = connect(std::nullopt);
  EXPECT_EQ(none.status().code(), StatusCode::kUnauthorized) << none.status().to_string();
  EXPECT_NE(none.status().message().find("--secret-file"), std::string::npos);
  auto wrong = connect(secret("incorrect horse battery staple"));
  EXPECT_EQ(wrong.status().code(), StatusCode::kUnauthorized) << wrong.status().to_string();
  auto right = connect(secret("correct horse battery staple"));
  ASSERT_TRUE(right.is_ok()) << right.status().to_string();
  EXPECT_TRUE((*right)->call(register_worker(1), 5s).is_ok());
  // Both peers that gave up sent an empty proof on their way out, which the
  // server refused; the second may still be on its way.
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (server_->stats().handshakes_refused < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(server_->stats().handshakes_refused, 2u);
  EXPECT_EQ(handler_.requests.load(), 1);
}

TEST_F(ControlChannel, APeerWithASecretRefusesAServerWithout) {
  start();
  auto client = connect(secret("correct horse battery staple"));
  EXPECT_EQ(client.status().code(), StatusCode::kUnauthorized);
  EXPECT_NE(client.status().message().find("cannot prove"), std::string::npos)
      << client.status().to_string();
}

TEST_F(ControlChannel, ShortSecretsAreRefused) {
  auto s = ClusterSecret::from_string("short");
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("at least 16"), std::string::npos);
}

// A raw UCX peer that sends whatever frames a test wants.
class RawPeer {
 public:
  explicit RawPeer(uint16_t port) {
    context_ = ucx::Context::create().value();
    worker_ = ucx::Worker::create(context_).value();
    EXPECT_TRUE(worker_->set_am_handler(kControlAmId, &on_frame, this).is_ok());
    ep_ = ucx::Endpoint::connect(*worker_,
                                 SocketAddress::parse(fmt::format("127.0.0.1:{}", port)).value(),
                                 [this](ucs_status_t) { closed_ = true; })
              .value();
  }
  void send(const FrameHeader& header, std::vector<std::byte> body) {
    ASSERT_TRUE(try_send(header, std::move(body)).is_ok());
  }
  // For a send that may find the connection closed already.
  Status try_send(const FrameHeader& header, std::vector<std::byte> body) {
    return ucx::send_control_am(ep_->get(), kControlAmId, encode_frame_header(header),
                                std::move(body));
  }
  void send_raw_header(std::vector<std::byte> header, std::vector<std::byte> body) {
    ASSERT_TRUE(
        ucx::send_control_am(ep_->get(), kControlAmId, std::move(header), std::move(body)).is_ok());
  }
  // Waits for the next answer frame.
  std::optional<std::pair<std::vector<std::byte>, std::vector<std::byte>>> next(
      std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (frames_.empty() && std::chrono::steady_clock::now() < deadline) {
      if (worker_->progress() == 0) (void)worker_->wait(10ms);
    }
    if (frames_.empty()) return std::nullopt;
    auto f = std::move(frames_.front());
    frames_.erase(frames_.begin());
    return f;
  }
  bool wait_closed(std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!closed_ && std::chrono::steady_clock::now() < deadline) {
      if (worker_->progress() == 0) (void)worker_->wait(10ms);
    }
    return closed_;
  }
  Message hello(uint32_t version = kControlProtocolVersion) {
    Message m;
    m.mutable_hello()->set_protocol_version(version);
    m.mutable_hello()->set_role(ROLE_ADMIN);
    m.mutable_hello()->set_name("raw");
    auto nonce = random_nonce();
    m.mutable_hello()->set_client_nonce(nonce.data(), nonce.size());
    return m;
  }
  // Completes the handshake (server without secret).
  void handshake() {
    send({.request_id = 1}, encode_body(hello()).value());
    ASSERT_TRUE(next().has_value());
    Message auth;
    auth.mutable_authenticate();
    send({.request_id = 2}, encode_body(auth).value());
    auto welcome = next();
    ASSERT_TRUE(welcome.has_value());
    ASSERT_TRUE(decode_body(welcome->second, kMaxBodyBytes)->has_welcome());
  }

 private:
  static ucs_status_t on_frame(void* arg, const void* h, size_t hn, void* d, size_t dn,
                               const ucp_am_recv_param_t*) {
    auto* self = static_cast<RawPeer*>(arg);
    const auto* hb = static_cast<const std::byte*>(h);
    const auto* db = static_cast<const std::byte*>(d);
    self->frames_.emplace_back(std::vector<std::byte>(hb, hb + hn),
                               std::vector<std::byte>(db, db + dn));
    return UCS_OK;
  }
  std::shared_ptr<ucx::Context> context_;
  std::unique_ptr<ucx::Worker> worker_;
  std::unique_ptr<ucx::Endpoint> ep_;
  bool closed_ = false;
  std::vector<std::pair<std::vector<std::byte>, std::vector<std::byte>>> frames_;
};

TEST(ControlFrame, ABadKindAndANonZeroReservedByteAreTellingErrors) {
  // Magic (4 bytes), version (2), kind (1), reserved (1), request id (8).
  auto header = encode_frame_header({.kind = FrameKind::kRequest, .request_id = 5});
  ASSERT_TRUE(decode_frame_header(header).is_ok());
  auto bad_kind = header;
  bad_kind[6] = std::byte{9};
  EXPECT_NE(decode_frame_header(bad_kind).status().message().find("unknown kind 9"),
            std::string::npos)
      << decode_frame_header(bad_kind).status().to_string();
  auto reserved = header;
  reserved[7] = std::byte{1};
  EXPECT_NE(decode_frame_header(reserved).status().message().find("reserved byte 1"),
            std::string::npos)
      << decode_frame_header(reserved).status().to_string();
}

TEST_F(ControlChannel, AForgedProofIsRefusedAndServesNothing) {
  start(secret("correct horse battery staple"));
  RawPeer peer(server_->port());
  peer.send({.request_id = 1}, encode_body(peer.hello()).value());
  auto challenge = peer.next();
  ASSERT_TRUE(challenge.has_value());
  ASSERT_TRUE(decode_body(challenge->second, kMaxBodyBytes)->challenge().secret_required());
  // A proof of the right length that was not made with the secret.
  const auto forged = random_nonce();
  std::vector<std::byte> proof(32);
  for (size_t i = 0; i < proof.size(); ++i) proof[i] = forged[i % forged.size()];
  Message auth;
  auth.mutable_authenticate()->set_client_proof(proof.data(), proof.size());
  peer.send({.request_id = 2}, encode_body(auth).value());
  auto answer = peer.next();
  ASSERT_TRUE(answer.has_value());
  auto body = decode_body(answer->second, kMaxBodyBytes);
  ASSERT_TRUE(body.is_ok() && body->has_refusal()) << body.status().to_string();
  EXPECT_EQ(body->refusal().code(), static_cast<uint32_t>(StatusCode::kUnauthorized));
  // Whatever it sends next is not served (the server may have closed the
  // connection before it goes).
  (void)peer.try_send({.request_id = 3}, encode_body(register_worker(1)).value());
  EXPECT_TRUE(peer.wait_closed());
  EXPECT_EQ(server_->stats().handshakes_refused, 1u);
  EXPECT_EQ(handler_.requests.load(), 0);
}

TEST_F(ControlChannel, AnotherFrameVersionIsRefusedNamingBothVersions) {
  start();
  RawPeer peer(server_->port());
  peer.send({.version = 9, .kind = FrameKind::kRequest, .request_id = 1},
            encode_body(peer.hello()).value());
  auto answer = peer.next();
  ASSERT_TRUE(answer.has_value());
  auto body = decode_body(answer->second, kMaxBodyBytes);
  ASSERT_TRUE(body.is_ok() && body->has_refusal());
  EXPECT_NE(body->refusal().reason().find("version 9"), std::string::npos);
  EXPECT_NE(body->refusal().reason().find(fmt::format("speaks {}", kControlProtocolVersion)),
            std::string::npos)
      << body->refusal().reason();
  EXPECT_EQ(body->refusal().code(), static_cast<uint32_t>(StatusCode::kVersionMismatch));
  EXPECT_TRUE(peer.wait_closed());
}

TEST_F(ControlChannel, AHelloOfAnotherVersionIsRefusedNamingBothVersions) {
  start();
  RawPeer peer(server_->port());
  peer.send({.request_id = 1}, encode_body(peer.hello(7)).value());
  auto answer = peer.next();
  ASSERT_TRUE(answer.has_value());
  auto body = decode_body(answer->second, kMaxBodyBytes);
  ASSERT_TRUE(body.is_ok() && body->has_refusal());
  EXPECT_NE(body->refusal().reason().find("version 7"), std::string::npos)
      << body->refusal().reason();
}

TEST_F(ControlChannel, RequestsBeforeTheHandshakeAreRefused) {
  start();
  RawPeer peer(server_->port());
  peer.send({.request_id = 1}, encode_body(register_worker(1)).value());
  auto answer = peer.next();
  ASSERT_TRUE(answer.has_value());
  auto body = decode_body(answer->second, kMaxBodyBytes);
  ASSERT_TRUE(body.is_ok() && body->has_refusal());
  EXPECT_NE(body->refusal().reason().find("expected a hello"), std::string::npos);
  EXPECT_TRUE(peer.wait_closed());
  EXPECT_EQ(handler_.requests.load(), 0);
}

TEST_F(ControlChannel, BadInputGetsAnErrorAndOthersAreStillServed) {
  start();
  RawPeer peer(server_->port());
  peer.handshake();
  auto good = connect(std::nullopt, "good");
  ASSERT_TRUE(good.is_ok());

  // Not a protobuf at all.
  peer.send({.request_id = 10}, std::vector<std::byte>(64, std::byte{0xff}));
  auto garbage = peer.next();
  ASSERT_TRUE(garbage.has_value());
  auto error = decode_body(garbage->second, kMaxBodyBytes);
  ASSERT_TRUE(error.is_ok() && error->has_error()) << error.status().to_string();
  EXPECT_EQ(error->error().code(), static_cast<uint32_t>(StatusCode::kProtocolError));
  EXPECT_EQ(decode_frame_header(garbage->first)->request_id, 10u);

  // A message type from the future: field 999 of Message.
  std::vector<std::byte> future = {std::byte{0xba}, std::byte{0x3e},
                                   std::byte{0x00}};  // 999, len 0
  peer.send({.request_id = 11}, future);
  auto unknown = decode_body(peer.next()->second, kMaxBodyBytes);
  ASSERT_TRUE(unknown.is_ok() && unknown->has_error());
  EXPECT_EQ(unknown->error().code(), static_cast<uint32_t>(StatusCode::kUnsupported));
  EXPECT_NE(unknown->error().message().find("field 999"), std::string::npos)
      << unknown->error().message();

  // A body over the limit.
  peer.send({.request_id = 12}, std::vector<std::byte>(kMaxBodyBytes + 10, std::byte{0}));
  auto oversized = decode_body(peer.next(10s)->second, kMaxBodyBytes);
  ASSERT_TRUE(oversized.is_ok() && oversized->has_error());
  EXPECT_NE(oversized->error().message().find("exceeds"), std::string::npos);

  // A header of the wrong size is dropped (no request id to answer) and counted.
  peer.send_raw_header(std::vector<std::byte>(5), {});
  EXPECT_TRUE((*good)->call(register_worker(3), 5s).is_ok());
  EXPECT_GE(server_->stats().malformed, 3u);
  EXPECT_EQ(server_->stats().unknown_types, 1u);
}

TEST_F(ControlChannel, EveryAsyncCallbackRunsOnceEvenAcrossShutdown) {
  start();
  auto client = connect(std::nullopt);
  ASSERT_TRUE(client.is_ok()) << client.status().to_string();
  std::atomic<int> issued{0}, done{0}, twice{0};
  std::atomic<bool> stop{false};
  std::thread caller([&] {
    while (!stop.load()) {
      auto ran = std::make_shared<std::atomic<bool>>(false);
      issued.fetch_add(1);
      (*client)->call_async(register_worker(1), [&, ran](Result<Message>) {
        if (ran->exchange(true)) twice.fetch_add(1);
        done.fetch_add(1);
      });
    }
  });
  std::this_thread::sleep_for(50ms);  // calls in every state: queued, in flight, answered
  (*client)->shutdown();
  stop = true;
  caller.join();
  // Every callback has run by now: at shutdown, or at once for later calls.
  EXPECT_EQ(done.load(), issued.load());
  EXPECT_EQ(twice.load(), 0);
}

TEST_F(ControlChannel, DisconnectsAreReportedOnce) {
  start();
  {
    auto client = connect(std::nullopt, "leaving");
    ASSERT_TRUE(client.is_ok());
    ASSERT_TRUE((*client)->call(register_worker(1), 5s).is_ok());
  }
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    std::lock_guard lock(handler_.mu);
    if (!handler_.disconnected.empty()) break;
  }
  std::this_thread::sleep_for(100ms);
  std::lock_guard lock(handler_.mu);
  EXPECT_EQ(handler_.disconnected, std::vector<std::string>{"leaving"});
}

TEST_F(ControlChannel, TheClientReconnectsToARestartedServerAndReplaysItsSession) {
  start();
  const uint16_t port = server_->port();
  std::atomic<int> sessions{0};
  auto client = ControlClient::connect({.server_address = fmt::format("127.0.0.1:{}", port),
                                        .role = ROLE_WORKER,
                                        .name = "w",
                                        .connect_timeout = 2s,
                                        .reconnect_min = 20ms,
                                        .reconnect_max = 200ms,
                                        .session_request = [] { return register_worker(7); },
                                        .on_session =
                                            [&](const Result<Message>& m) {
                                              EXPECT_TRUE(m.is_ok());
                                              EXPECT_EQ(m->worker_registered().worker_id(), 1007u);
                                              sessions.fetch_add(1);
                                              return Status::ok();
                                            }});
  ASSERT_TRUE(client.is_ok()) << client.status().to_string();
  EXPECT_EQ(sessions.load(), 1);
  server_.reset();  // the coordinator dies
  auto during = (*client)->call(register_worker(1), 300ms);
  EXPECT_FALSE(during.is_ok());
  start(std::nullopt, port);  // and comes back on the same port
  auto after = (*client)->call(register_worker(2), 10s);
  ASSERT_TRUE(after.is_ok()) << after.status().to_string();
  EXPECT_EQ(after->worker_registered().worker_id(), 1002u);
  EXPECT_EQ(sessions.load(), 2);
  EXPECT_EQ((*client)->reconnects(), 1u);
}

TEST_F(ControlChannel, ConnectingToNobodyFailsPromptlyNamingTheAddress) {
  const auto start_time = std::chrono::steady_clock::now();
  auto client = ControlClient::connect(
      {.server_address = "127.0.0.1:1", .role = ROLE_ADMIN, .connect_timeout = 3s});
  ASSERT_FALSE(client.is_ok());
  EXPECT_NE(client.status().message().find("127.0.0.1:1"), std::string::npos)
      << client.status().to_string();
  EXPECT_LT(std::chrono::steady_clock::now() - start_time, 3500ms);
}

}  // namespace
}  // namespace stoker::control
