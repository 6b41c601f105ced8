// ControlServer: listener, handshake, request dispatch and answers. UCX
// callbacks only queue what arrived; everything else happens on the progress
// loop, outside UCX callbacks, so handlers may take their time and endpoints
// can be closed safely.
#include "transport/control/control_server.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdlib>
#include <deque>
#include <thread>
#include <unordered_map>
#include <vector>

#include "transport/control/control_frame.h"
#include "transport/socket_address.h"
#include "transport/ucx/am_send.h"
#include "transport/ucx/context.h"
#include "transport/ucx/endpoint.h"
#include "transport/ucx/listener.h"
#include "transport/ucx/worker.h"

namespace stoker::control {
namespace {

constexpr auto kSpinBeforeSleep = std::chrono::microseconds(50);
constexpr auto kMaxSleep = std::chrono::milliseconds(100);

std::span<const std::byte> bytes_of(const void* p, size_t n) {
  return {static_cast<const std::byte*>(p), n};
}

std::string_view role_name(Role role) {
  switch (role) {
    case ROLE_WORKER:
      return "worker";
    case ROLE_CONSUMER:
      return "consumer";
    case ROLE_ADMIN:
      return "admin";
    default:
      return "unknown role";
  }
}

}  // namespace

class ControlServer::Impl {
 public:
  Impl(ControlServerOptions options, ControlHandler* handler)
      : options_(std::move(options)), handler_(handler) {}
  ~Impl() { stop(); }

  Status init();
  void stop();
  void notify(ConnectionId id, const Message& message);

  std::string address_;
  uint16_t port_ = 0;

  ControlServerStats stats() const {
    ControlServerStats s;
    s.connections_accepted = accepted_.load(std::memory_order_relaxed);
    s.handshakes_refused = refused_.load(std::memory_order_relaxed);
    s.requests = requests_.load(std::memory_order_relaxed);
    s.malformed = malformed_.load(std::memory_order_relaxed);
    s.unknown_types = unknown_types_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  enum class Stage { kAwaitHello, kAwaitAuthenticate, kReady, kClosing };
  struct Connection {
    ConnectionId id = 0;
    std::unique_ptr<ucx::Endpoint> ep;
    PeerInfo peer;
    Stage stage = Stage::kAwaitHello;
    std::vector<std::byte> client_nonce;
    std::vector<std::byte> server_nonce;
    std::chrono::steady_clock::time_point accepted_at;
  };
  struct Arrival {
    ucp_ep_h ep;
    std::vector<std::byte> header;
    std::vector<std::byte> body;
    bool rendezvous;
  };
  struct Answer {
    ConnectionId connection;
    std::vector<std::byte> header;
    std::vector<std::byte> body;
  };

  void run();
  static ucs_status_t on_frame(void* arg, const void* header, size_t header_length, void* data,
                               size_t length, const ucp_am_recv_param_t* param);
  void accept(ucp_conn_request_h request);
  void handle(const Arrival& arrival);
  void handshake(Connection& c, const FrameHeader& header, const Message& message);
  void answer(Connection& c, uint64_t request_id, const Message& message);
  void answer_error(Connection& c, uint64_t request_id, const Status& error);
  void refuse(Connection& c, uint64_t request_id, const Status& why);
  void close(Connection& c);
  void process_disconnects();
  void send_answers();
  void expire_handshakes();
  Connection* find(ucp_ep_h ep);
  Connection* find(ConnectionId id);

  ControlServerOptions options_;
  ControlHandler* handler_;
  std::shared_ptr<ucx::Context> context_;
  std::unique_ptr<ucx::Worker> worker_;
  std::unique_ptr<ucx::Listener> listener_;

  // Progress-thread state.
  std::unordered_map<ConnectionId, std::unique_ptr<Connection>> connections_;
  std::unordered_map<ucp_ep_h, ConnectionId> by_endpoint_;
  std::vector<std::unique_ptr<Connection>> closing_;
  std::vector<Arrival> arrivals_;
  std::vector<std::pair<ConnectionId, ucs_status_t>> disconnects_;
  std::vector<Answer> answers_;
  ConnectionId next_id_ = 1;

  std::atomic<bool> stopping_{false};
  std::thread thread_;
  std::atomic<uint64_t> accepted_{0}, refused_{0}, requests_{0}, malformed_{0}, unknown_types_{0};
};

Status ControlServer::Impl::init() {
  // A restarted coordinator listens on its old port while the previous
  // incarnation's connections linger in TIME_WAIT: allow the rebind, as every
  // TCP server does. UCX reads this only from the environment (not through
  // ucp_config_modify in 1.13); a value the user set is kept.
  setenv("UCX_TCP_CM_REUSEADDR", "y", /*overwrite=*/0);
  STOKER_ASSIGN_OR_RETURN(context_, ucx::Context::create());
  STOKER_ASSIGN_OR_RETURN(worker_, ucx::Worker::create(context_));
  STOKER_RETURN_IF_ERROR(worker_->set_am_handler(kControlAmId, &Impl::on_frame, this));
  STOKER_ASSIGN_OR_RETURN(auto listen_at, SocketAddress::parse(options_.listen_address));
  STOKER_ASSIGN_OR_RETURN(
      listener_,
      ucx::Listener::create(*worker_, listen_at, [this](ucp_conn_request_h r) { accept(r); }));
  port_ = listener_->address().port();
  address_ = listener_->address().to_string();
  thread_ = std::thread([this] { run(); });
  return Status::ok();
}

void ControlServer::Impl::stop() {
  if (stopping_.exchange(true)) {
    if (thread_.joinable()) thread_.join();
    return;
  }
  if (worker_) worker_->signal();
  if (thread_.joinable()) thread_.join();
}

void ControlServer::Impl::run() {
  auto last_event = std::chrono::steady_clock::now();
  auto next_tick = last_event + options_.tick;
  while (!stopping_.load(std::memory_order_acquire)) {
    const unsigned events = worker_->progress();
    const bool busy = events != 0 || !arrivals_.empty() || !disconnects_.empty();
    for (const Arrival& arrival : std::exchange(arrivals_, {})) handle(arrival);
    process_disconnects();
    auto now = std::chrono::steady_clock::now();
    if (now >= next_tick) {
      handler_->on_tick();
      expire_handshakes();
      next_tick = now + options_.tick;
    }
    send_answers();
    closing_.clear();  // endpoint destructors close (bounded), outside UCX callbacks
    if (busy) {
      last_event = now;
      continue;
    }
    if (now - last_event < kSpinBeforeSleep) continue;
    const auto until_tick = std::chrono::duration_cast<std::chrono::milliseconds>(next_tick - now) +
                            std::chrono::milliseconds(1);
    if (Status st = worker_->wait(std::min(until_tick, kMaxSleep)); !st.is_ok()) {
      spdlog::error("control server: {}", st.to_string());
    }
  }
  // Stop accepting first: closing endpoints progresses the worker, and a
  // peer reconnecting meanwhile would otherwise be accepted after the loop.
  // Then close every connection on this thread (UCX objects are
  // single-threaded), including any accepted while closing the others, and
  // let handshakes in flight finish (Worker::flush).
  listener_.reset();
  while (!connections_.empty()) {
    for (auto& [id, c] : connections_) closing_.push_back(std::move(c));
    connections_.clear();
    by_endpoint_.clear();
    closing_.clear();
  }
  if (Status st = worker_->flush(ucx::Endpoint::kCloseTimeout); !st.is_ok()) {
    spdlog::warn("control server: {}", st.to_string());
  }
}

void ControlServer::Impl::accept(ucp_conn_request_h request) {
  if (stopping_.load()) {
    listener_->reject(request);
    return;
  }
  auto c = std::make_unique<Connection>();
  c->id = next_id_++;
  c->accepted_at = std::chrono::steady_clock::now();
  auto ep = ucx::Endpoint::accept(*worker_, request, [this, id = c->id](ucs_status_t st) {
    disconnects_.emplace_back(id, st);
  });
  if (!ep.is_ok()) {
    // UCX has rejected and freed the request already (Endpoint::accept).
    spdlog::warn("control server: refused a connection: {}", ep.status().to_string());
    return;
  }
  c->ep = std::move(ep).value();
  c->peer.address = c->ep->peer();
  accepted_.fetch_add(1, std::memory_order_relaxed);
  by_endpoint_[c->ep->get()] = c->id;
  connections_[c->id] = std::move(c);
}

ucs_status_t ControlServer::Impl::on_frame(void* arg, const void* header, size_t header_length,
                                           void* data, size_t length,
                                           const ucp_am_recv_param_t* param) {
  auto* self = static_cast<Impl*>(arg);
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) == 0) return UCS_OK;
  const bool rendezvous = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
  Arrival arrival{param->reply_ep, {}, {}, rendezvous};
  auto h = bytes_of(header, header_length);
  arrival.header.assign(h.begin(), h.end());
  if (!rendezvous) {
    // Bound the copy: an oversized body is rejected without being kept.
    auto d = bytes_of(data, std::min(length, kMaxBodyBytes + 1));
    arrival.body.assign(d.begin(), d.end());
  }
  self->arrivals_.push_back(std::move(arrival));
  // Control frames are sent eager; a rendezvous one is a misbehaving peer,
  // and UCS_OK releases its data descriptor.
  return UCS_OK;
}

ControlServer::Impl::Connection* ControlServer::Impl::find(ucp_ep_h ep) {
  auto it = by_endpoint_.find(ep);
  return it == by_endpoint_.end() ? nullptr : find(it->second);
}

ControlServer::Impl::Connection* ControlServer::Impl::find(ConnectionId id) {
  auto it = connections_.find(id);
  return it == connections_.end() ? nullptr : it->second.get();
}

void ControlServer::Impl::handle(const Arrival& arrival) {
  Connection* c = find(arrival.ep);
  if (c == nullptr || c->stage == Stage::kClosing) return;
  const bool ready = c->stage == Stage::kReady;
  auto header = decode_frame_header(arrival.header);
  if (!header.is_ok()) {
    malformed_.fetch_add(1, std::memory_order_relaxed);
    if (!ready) {
      // A stranger speaking another version (or no stoker at all): tell it
      // which version we speak, then hang up.
      spdlog::warn("control server: refusing {}: {}", c->peer.address, header.status().message());
      refuse(*c, 0, header.status());
      return;
    }
    spdlog::warn("control server: bad frame from {} {}: {}", role_name(c->peer.role), c->peer.name,
                 header.status().message());
    return;  // no request id to answer
  }
  if (header->kind != FrameKind::kRequest) {
    malformed_.fetch_add(1, std::memory_order_relaxed);
    if (!ready) refuse(*c, header->request_id, protocol_error("expected a request frame"));
    return;
  }
  if (arrival.rendezvous) {
    malformed_.fetch_add(1, std::memory_order_relaxed);
    if (!ready) {
      return refuse(*c, header->request_id, protocol_error("control frames must be sent eager"));
    }
    return answer_error(*c, header->request_id,
                        protocol_error("control frames must be sent eager"));
  }
  const size_t limit = ready ? kMaxBodyBytes : kMaxHandshakeBodyBytes;
  auto message = decode_body(arrival.body, limit);
  if (!message.is_ok()) {
    if (message.status().code() == StatusCode::kUnsupported) {
      unknown_types_.fetch_add(1, std::memory_order_relaxed);
    } else {
      malformed_.fetch_add(1, std::memory_order_relaxed);
    }
    if (!ready) return refuse(*c, header->request_id, message.status());
    return answer_error(*c, header->request_id, message.status());
  }
  if (!ready) return handshake(*c, *header, *message);
  requests_.fetch_add(1, std::memory_order_relaxed);
  auto result = handler_->on_request(c->id, c->peer, *message);
  // The handler may have closed the connection; look it up again.
  if ((c = find(arrival.ep)) == nullptr) return;
  if (result.is_ok()) {
    answer(*c, header->request_id, *result);
  } else {
    answer_error(*c, header->request_id, result.status());
  }
}

void ControlServer::Impl::handshake(Connection& c, const FrameHeader& header,
                                    const Message& message) {
  if (c.stage == Stage::kAwaitHello) {
    if (!message.has_hello()) {
      return refuse(
          c, header.request_id,
          protocol_error(fmt::format("expected a hello first, got {}", body_name(message))));
    }
    const Hello& hello = message.hello();
    if (hello.protocol_version() != kControlProtocolVersion) {
      return refuse(c, header.request_id,
                    Status(StatusCode::kVersionMismatch,
                           fmt::format("peer speaks control protocol version {}, this "
                                       "coordinator speaks {}",
                                       hello.protocol_version(), kControlProtocolVersion)));
    }
    if (hello.role() == ROLE_UNSPECIFIED || !Role_IsValid(hello.role()) ||
        hello.client_nonce().size() != kNonceBytes || hello.name().size() > 256) {
      return refuse(c, header.request_id, protocol_error("malformed hello (role, nonce or name)"));
    }
    c.peer.role = hello.role();
    c.peer.name = hello.name();
    c.client_nonce.assign(reinterpret_cast<const std::byte*>(hello.client_nonce().data()),
                          reinterpret_cast<const std::byte*>(hello.client_nonce().data()) +
                              hello.client_nonce().size());
    c.server_nonce = random_nonce();
    Message reply;
    Challenge* challenge = reply.mutable_challenge();
    challenge->set_protocol_version(kControlProtocolVersion);
    challenge->set_secret_required(options_.secret.has_value());
    challenge->set_server_nonce(c.server_nonce.data(), c.server_nonce.size());
    if (options_.secret) {
      auto proof = options_.secret->server_proof(c.client_nonce, c.server_nonce);
      challenge->set_server_proof(proof.data(), proof.size());
    }
    c.stage = Stage::kAwaitAuthenticate;
    return answer(c, header.request_id, reply);
  }
  // kAwaitAuthenticate
  if (!message.has_authenticate()) {
    return refuse(c, header.request_id,
                  protocol_error(fmt::format("expected authenticate, got {}", body_name(message))));
  }
  if (options_.secret) {
    const auto& proof = message.authenticate().client_proof();
    const auto expected = options_.secret->client_proof(c.server_nonce, c.client_nonce);
    if (!ClusterSecret::proofs_equal(
            expected, std::span(reinterpret_cast<const std::byte*>(proof.data()), proof.size()))) {
      spdlog::warn("control server: {} {} at {} could not prove it knows the cluster secret",
                   role_name(c.peer.role), c.peer.name, c.peer.address);
      return refuse(c, header.request_id,
                    unauthorized("this coordinator requires the cluster secret, and the proof "
                                 "was wrong or missing (check --secret-file)"));
    }
  }
  Message reply;
  reply.mutable_welcome()->set_server_name(options_.name);
  reply.mutable_welcome()->set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
  c.stage = Stage::kReady;
  spdlog::debug("control server: {} {} connected from {}", role_name(c.peer.role), c.peer.name,
                c.peer.address);
  answer(c, header.request_id, reply);
}

void ControlServer::Impl::answer(Connection& c, uint64_t request_id, const Message& message) {
  auto body = encode_body(message);
  if (!body.is_ok()) return answer_error(c, request_id, body.status());
  answers_.push_back({c.id,
                      encode_frame_header({.kind = FrameKind::kResponse, .request_id = request_id}),
                      std::move(body).value()});
}

void ControlServer::Impl::answer_error(Connection& c, uint64_t request_id, const Status& error) {
  Message reply;
  reply.mutable_error()->set_code(static_cast<uint32_t>(error.code()));
  reply.mutable_error()->set_message(error.message());
  answer(c, request_id, reply);
}

void ControlServer::Impl::refuse(Connection& c, uint64_t request_id, const Status& why) {
  refused_.fetch_add(1, std::memory_order_relaxed);
  Message reply;
  reply.mutable_refusal()->set_reason(why.message());
  reply.mutable_refusal()->set_code(static_cast<uint32_t>(why.code()));
  answer(c, request_id, reply);
  c.stage = Stage::kClosing;  // closed once the refusal has gone out (send_answers)
}

void ControlServer::Impl::notify(ConnectionId id, const Message& message) {
  Connection* c = find(id);
  if (c == nullptr || c->stage != Stage::kReady) return;
  auto body = encode_body(message);
  if (!body.is_ok()) {
    spdlog::error("control server: notice to {}: {}", c->peer.name, body.status().to_string());
    return;
  }
  answers_.push_back({id, encode_frame_header({.kind = FrameKind::kNotice, .request_id = 0}),
                      std::move(body).value()});
}

void ControlServer::Impl::send_answers() {
  if (answers_.empty()) return;
  handler_->before_answers();
  for (Answer& a : std::exchange(answers_, {})) {
    Connection* c = find(a.connection);
    if (c == nullptr) continue;
    if (Status st = ucx::send_control_am(c->ep->get(), kControlAmId, std::move(a.header),
                                         std::move(a.body));
        !st.is_ok()) {
      spdlog::debug("control server: answering {}: {}", c->peer.address, st.to_string());
    }
  }
  // Refused connections close after their refusal was queued for sending.
  std::vector<ConnectionId> refused;
  for (auto& [id, c] : connections_) {
    if (c->stage == Stage::kClosing) refused.push_back(id);
  }
  for (ConnectionId id : refused) close(*find(id));
}

void ControlServer::Impl::close(Connection& c) {
  by_endpoint_.erase(c.ep->get());
  auto it = connections_.find(c.id);
  closing_.push_back(std::move(it->second));
  connections_.erase(it);
}

void ControlServer::Impl::process_disconnects() {
  for (auto [id, status] : std::exchange(disconnects_, {})) {
    Connection* c = find(id);
    if (c == nullptr) continue;
    const bool was_ready = c->stage == Stage::kReady;
    const PeerInfo peer = c->peer;
    close(*c);
    if (was_ready) {
      handler_->on_disconnect(
          id, peer,
          unavailable(fmt::format("{} {} at {}: {}", role_name(peer.role), peer.name, peer.address,
                                  ucs_status_string(status))));
    }
  }
}

void ControlServer::Impl::expire_handshakes() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<ConnectionId> expired;
  for (auto& [id, c] : connections_) {
    if (c->stage != Stage::kReady && now - c->accepted_at > options_.handshake_timeout) {
      expired.push_back(id);
    }
  }
  for (ConnectionId id : expired) {
    Connection* c = find(id);
    spdlog::warn("control server: {} did not complete the handshake in {} ms; closing",
                 c->peer.address, options_.handshake_timeout.count());
    close(*c);
  }
}

ControlServer::ControlServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ControlServer::~ControlServer() { stop(); }

Result<std::unique_ptr<ControlServer>> ControlServer::start(ControlServerOptions options,
                                                            ControlHandler* handler) {
  if (handler == nullptr) return invalid_argument("a control server needs a handler");
  auto impl = std::make_unique<Impl>(std::move(options), handler);
  STOKER_RETURN_IF_ERROR(impl->init());
  return std::unique_ptr<ControlServer>(new ControlServer(std::move(impl)));
}

void ControlServer::stop() { impl_->stop(); }
std::string ControlServer::address() const { return impl_->address_; }
uint16_t ControlServer::port() const { return impl_->port_; }
ControlServerStats ControlServer::stats() const { return impl_->stats(); }
void ControlServer::notify(ConnectionId connection, const Message& message) {
  impl_->notify(connection, message);
}

}  // namespace stoker::control
