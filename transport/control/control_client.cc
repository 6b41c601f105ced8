// ControlClient: connection, handshake, calls, and reconnection with backoff.
// One progress thread owns every UCX object after connect(); callers reach it
// through the outbox (requests to send) and the pending table (answers).
#include "transport/control/control_client.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "transport/control/control_frame.h"
#include "transport/socket_address.h"
#include "transport/ucx/am_send.h"
#include "transport/ucx/context.h"
#include "transport/ucx/endpoint.h"
#include "transport/ucx/ucx_status.h"
#include "transport/ucx/worker.h"

namespace stoker::control {
namespace {

constexpr auto kMaxSleep = std::chrono::milliseconds(100);
// How often a backoff sleep of connect() looks at ControlClientOptions::give_up.
constexpr auto kGiveUpCheck = std::chrono::milliseconds(20);

std::span<const std::byte> bytes_of(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

}  // namespace

class ControlClient::Impl : public std::enable_shared_from_this<Impl> {
 public:
  explicit Impl(ControlClientOptions options) : options_(std::move(options)) {}
  ~Impl() { stop(); }

  Status init();  // the first connection, on the caller's thread
  void start() {
    thread_ = std::thread([this] { run(); });
  }
  void stop();
  Result<Message> call(const Message& request, std::chrono::milliseconds timeout);
  void call_async(const Message& request, std::function<void(Result<Message>)> done);

  bool connected() const { return connected_.load(); }
  uint32_t heartbeat_interval_ms() const { return heartbeat_interval_ms_.load(); }
  const std::string& server_address() const { return server_; }
  uint64_t reconnects() const { return reconnects_.load(); }

 private:
  struct Pending {
    uint64_t id = 0;
    std::vector<std::byte> header;
    std::vector<std::byte> body;
    bool done = false;
    Result<Message> result = cancelled("not answered");
    // call_async: run with the answer instead of waking a waiting caller.
    std::function<void(Result<Message>)> callback;
  };

  void run();
  Status establish();
  // Sends one handshake/session message and progresses until its answer.
  Result<Message> exchange(const Message& message, std::chrono::steady_clock::time_point deadline,
                           std::string_view what);
  void send_outbox();
  void lose_connection(const Status& why);
  void sleep_backoff(std::chrono::milliseconds duration);
  static ucs_status_t on_frame(void* arg, const void* header, size_t header_length, void* data,
                               size_t length, const ucp_am_recv_param_t* param);
  void complete(uint64_t id, Result<Message> result);
  // Hands a pending call its outcome: to its callback, or to its waiting caller.
  void finish(const std::shared_ptr<Pending>& pending, Result<Message> result);
  std::shared_ptr<Pending> enqueue(const Message& request,
                                   std::function<void(Result<Message>)> callback);

  ControlClientOptions options_;
  std::string server_;
  SocketAddress address_;
  std::shared_ptr<ucx::Context> context_;
  std::unique_ptr<ucx::Worker> worker_;
  std::unique_ptr<ucx::Endpoint> ep_;

  // Progress-thread state (also the caller's thread during init()).
  bool ep_lost_ = false;
  ucs_status_t lost_status_ = UCS_OK;
  uint64_t exchange_id_ = 0;
  std::optional<Result<Message>> exchange_answer_;
  Status transport_error_;  // a frame we could not read (e.g. another version)

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Pending>> outbox_;
  std::unordered_map<uint64_t, std::shared_ptr<Pending>> in_flight_;
  std::atomic<uint64_t> next_id_{1};
  std::atomic<bool> connected_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<uint32_t> heartbeat_interval_ms_{1000};
  std::atomic<uint64_t> reconnects_{0};
  std::thread thread_;
};

Status ControlClient::Impl::init() {
  STOKER_ASSIGN_OR_RETURN(address_, SocketAddress::parse(options_.server_address));
  server_ = address_.to_string();
  if (options_.context) {
    context_ = options_.context.ucx();
  } else {
    STOKER_ASSIGN_OR_RETURN(context_, ucx::Context::create());
  }
  STOKER_ASSIGN_OR_RETURN(worker_, ucx::Worker::create(context_));
  STOKER_RETURN_IF_ERROR(worker_->set_am_handler(kControlAmId, &Impl::on_frame, this));
  // The coordinator may not be up yet, or drop a connection while it starts:
  // retry what a retry can cure, for as long as the caller allows.
  const auto give_up_at = std::chrono::steady_clock::now() + options_.retry_for;
  auto backoff = options_.reconnect_min;
  while (true) {
    Status st = establish();
    const bool transient =
        st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kTimedOut;
    if (st.is_ok() || !transient || std::chrono::steady_clock::now() + backoff > give_up_at) {
      return st;
    }
    spdlog::info("control client: {}; retrying in {} ms", st.to_string(), backoff.count());
    for (auto slept = std::chrono::milliseconds(0); slept < backoff; slept += kGiveUpCheck) {
      if (options_.give_up && options_.give_up()) {
        return cancelled(
            fmt::format("gave up connecting to the coordinator at {}: stopping", server_));
      }
      std::this_thread::sleep_for(std::min(kGiveUpCheck, backoff - slept));
    }
    backoff = std::min(backoff * 2, options_.reconnect_max);
  }
}

void ControlClient::Impl::stop() {
  if (!stopping_.exchange(true)) {
    if (worker_) worker_->signal();
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  std::deque<std::shared_ptr<Pending>> unsent;
  std::unordered_map<uint64_t, std::shared_ptr<Pending>> unanswered;
  {
    std::lock_guard lock(mu_);
    unsent.swap(outbox_);
    unanswered.swap(in_flight_);
  }
  for (auto& p : unsent) finish(p, cancelled("the control client is stopping"));
  for (auto& [id, p] : unanswered) finish(p, cancelled("the control client is stopping"));
}

Result<Message> ControlClient::Impl::exchange(const Message& message,
                                              std::chrono::steady_clock::time_point deadline,
                                              std::string_view what) {
  STOKER_ASSIGN_OR_RETURN(auto body, encode_body(message));
  exchange_id_ = next_id_.fetch_add(1);
  exchange_answer_.reset();
  STOKER_RETURN_IF_ERROR(ucx::send_control_am(
      ep_->get(), kControlAmId,
      encode_frame_header({.kind = FrameKind::kRequest, .request_id = exchange_id_}),
      std::move(body)));
  while (true) {
    worker_->progress();
    if (!transport_error_.is_ok()) return transport_error_;
    if (exchange_answer_) break;
    if (ep_lost_) {
      return ucx::from_ucs(lost_status_, fmt::format("{}: connection to the coordinator", what));
    }
    if (stopping_.load()) return cancelled("the client is stopping");
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return timed_out(fmt::format("{}: no answer in time", what));
    STOKER_RETURN_IF_ERROR(worker_->wait(
        std::min(kMaxSleep, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) +
                                std::chrono::milliseconds(1))));
  }
  Result<Message> answer = std::move(*exchange_answer_);
  exchange_answer_.reset();
  if (!answer.is_ok()) return answer;
  if (answer->has_refusal()) {
    const auto code = static_cast<StatusCode>(answer->refusal().code());
    return Status(code == StatusCode::kOk ? StatusCode::kProtocolError : code,
                  fmt::format("refused: {}", answer->refusal().reason()));
  }
  if (answer->has_error()) return status_from_error(answer->error());
  return answer;
}

Status ControlClient::Impl::establish() {
  ep_.reset();
  ep_lost_ = false;
  transport_error_ = Status::ok();
  const auto deadline = std::chrono::steady_clock::now() + options_.connect_timeout;
  auto fail = [&](const Status& st) {
    if (ep_) ep_->abandon();  // not established: nothing to flush
    ep_.reset();
    return st.with_context(fmt::format("coordinator at {}", server_));
  };
  STOKER_ASSIGN_OR_RETURN(ep_, ucx::Endpoint::connect(*worker_, address_, [this](ucs_status_t st) {
                            ep_lost_ = true;
                            lost_status_ = st;
                          }));
  const auto client_nonce = random_nonce();
  Message hello;
  hello.mutable_hello()->set_protocol_version(kControlProtocolVersion);
  hello.mutable_hello()->set_role(options_.role);
  hello.mutable_hello()->set_name(options_.name);
  hello.mutable_hello()->set_client_nonce(client_nonce.data(), client_nonce.size());
  auto challenge = exchange(hello, deadline, "handshake");
  if (!challenge.is_ok()) return fail(challenge.status());
  if (!challenge->has_challenge()) {
    return fail(
        protocol_error(fmt::format("expected a challenge, got {}", body_name(challenge.value()))));
  }
  const Challenge& c = challenge->challenge();
  Message authenticate;
  // Giving up: an empty proof first, so the coordinator logs the refusal too.
  const auto give_up = [&](const std::string& why) {
    Message empty;
    empty.mutable_authenticate();
    if (auto body = encode_body(empty); body.is_ok()) {
      (void)ucx::send_control_am(
          ep_->get(), kControlAmId,
          encode_frame_header({.kind = FrameKind::kRequest, .request_id = next_id_.fetch_add(1)}),
          std::move(body).value());
      worker_->progress();
    }
    ep_.reset();  // established: closing flushes the empty proof
    return fail(unauthorized(why));
  };
  if (c.secret_required() && !options_.secret) {
    return give_up("it requires the cluster secret and this process has none (pass --secret-file)");
  }
  if (options_.secret) {
    if (!c.secret_required()) {
      return give_up(
          "it does not use a cluster secret, so it cannot prove it knows ours: refusing to "
          "talk to it");
    }
    const auto expected = options_.secret->server_proof(client_nonce, bytes_of(c.server_nonce()));
    if (!ClusterSecret::proofs_equal(expected, bytes_of(c.server_proof()))) {
      return give_up(
          "it could not prove it knows the cluster secret: an impostor, or a different "
          "--secret-file");
    }
    auto proof = options_.secret->client_proof(bytes_of(c.server_nonce()), client_nonce);
    authenticate.mutable_authenticate()->set_client_proof(proof.data(), proof.size());
  } else {
    authenticate.mutable_authenticate();
  }
  auto welcome = exchange(authenticate, deadline, "handshake");
  if (!welcome.is_ok()) return fail(welcome.status());
  if (!welcome->has_welcome()) {
    return fail(
        protocol_error(fmt::format("expected a welcome, got {}", body_name(welcome.value()))));
  }
  if (welcome->welcome().heartbeat_interval_ms() > 0) {
    heartbeat_interval_ms_ = welcome->welcome().heartbeat_interval_ms();
  }
  if (options_.session_request) {
    if (auto request = options_.session_request()) {
      auto answer = exchange(*request, deadline, body_name(*request));
      if (options_.on_session) {
        if (Status st = options_.on_session(answer); !st.is_ok()) return fail(st);
      } else if (!answer.is_ok()) {
        return fail(answer.status());
      }
    }
  }
  connected_ = true;
  cv_.notify_all();
  return Status::ok();
}

void ControlClient::Impl::run() {
  auto backoff = options_.reconnect_min;
  auto last_event = std::chrono::steady_clock::now();
  while (!stopping_.load()) {
    if (!connected_.load()) {
      if (Status st = establish(); !st.is_ok()) {
        spdlog::debug("control client: reconnecting: {}", st.to_string());
        sleep_backoff(backoff);
        backoff = std::min(backoff * 2, options_.reconnect_max);
        continue;
      }
      backoff = options_.reconnect_min;
      reconnects_.fetch_add(1);
      spdlog::info("control client: reconnected to the coordinator at {}", server_);
    }
    const unsigned events = worker_->progress();
    if (!transport_error_.is_ok()) {
      spdlog::warn("control client: {}", transport_error_.to_string());
      transport_error_ = Status::ok();
    }
    if (ep_lost_) {
      lose_connection(ucx::from_ucs(lost_status_, fmt::format("coordinator at {}", server_)));
      continue;
    }
    send_outbox();
    const auto now = std::chrono::steady_clock::now();
    if (events != 0) {
      last_event = now;
      continue;
    }
    if (now - last_event < options_.spin) continue;
    const auto work_queued = [this] {
      std::lock_guard lock(mu_);
      return !outbox_.empty() || stopping_.load();
    };
    if (work_queued()) continue;
    if (Status st = worker_->wait(kMaxSleep, work_queued); !st.is_ok()) {
      spdlog::error("control client: {}", st.to_string());
    }
  }
  ep_.reset();
}

void ControlClient::Impl::send_outbox() {
  std::deque<std::shared_ptr<Pending>> sending;
  {
    std::lock_guard lock(mu_);
    sending.swap(outbox_);
    for (auto& p : sending) in_flight_[p->id] = p;
  }
  for (auto& p : sending) {
    if (Status st = ucx::send_control_am(ep_->get(), kControlAmId, std::move(p->header),
                                         std::move(p->body));
        !st.is_ok()) {
      complete(p->id, st.with_context(fmt::format("sending to the coordinator at {}", server_)));
    }
  }
}

void ControlClient::Impl::lose_connection(const Status& why) {
  connected_ = false;
  spdlog::warn("control client: lost the connection: {}", why.to_string());
  std::unordered_map<uint64_t, std::shared_ptr<Pending>> lost;
  {
    std::lock_guard lock(mu_);
    lost.swap(in_flight_);
  }
  for (auto& [id, p] : lost) finish(p, why);
  if (options_.on_disconnect) options_.on_disconnect(why);
  ep_.reset();
}

void ControlClient::Impl::sleep_backoff(std::chrono::milliseconds duration) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, duration, [&] { return stopping_.load(); });
}

ucs_status_t ControlClient::Impl::on_frame(void* arg, const void* header, size_t header_length,
                                           void* data, size_t length,
                                           const ucp_am_recv_param_t* param) {
  auto* self = static_cast<Impl*>(arg);
  auto h = decode_frame_header({static_cast<const std::byte*>(header), header_length});
  if (!h.is_ok()) {
    self->transport_error_ = h.status().with_context(
        fmt::format("reading a frame from the coordinator at {}", self->server_));
    return UCS_OK;
  }
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0) {
    self->transport_error_ = protocol_error("the coordinator sent a rendezvous control frame");
    return UCS_OK;
  }
  auto message = decode_body({static_cast<const std::byte*>(data), length}, kMaxBodyBytes);
  switch (h->kind) {
    case FrameKind::kResponse:
      if (h->request_id == self->exchange_id_ && self->exchange_id_ != 0) {
        self->exchange_answer_ = std::move(message);
        self->exchange_id_ = 0;
      } else {
        self->complete(h->request_id, std::move(message));
      }
      break;
    case FrameKind::kNotice:
      if (message.is_ok() && self->options_.on_notice) self->options_.on_notice(*message);
      break;
    case FrameKind::kRequest:
      break;  // the coordinator never asks
  }
  return UCS_OK;
}

void ControlClient::Impl::complete(uint64_t id, Result<Message> result) {
  std::shared_ptr<Pending> pending;
  {
    std::lock_guard lock(mu_);
    auto it = in_flight_.find(id);
    if (it == in_flight_.end()) return;  // the caller gave up
    pending = std::move(it->second);
    in_flight_.erase(it);
  }
  finish(pending, std::move(result));
}

void ControlClient::Impl::finish(const std::shared_ptr<Pending>& pending, Result<Message> result) {
  if (pending->callback) {
    if (result.is_ok() && result->has_error()) result = status_from_error(result->error());
    auto callback = std::move(pending->callback);
    callback(std::move(result));
    return;
  }
  {
    std::lock_guard lock(mu_);
    pending->result = std::move(result);
    pending->done = true;
  }
  cv_.notify_all();
}

std::shared_ptr<ControlClient::Impl::Pending> ControlClient::Impl::enqueue(
    const Message& request, std::function<void(Result<Message>)> callback) {
  auto pending = std::make_shared<Pending>();
  pending->id = next_id_.fetch_add(1);
  pending->header = encode_frame_header({.kind = FrameKind::kRequest, .request_id = pending->id});
  pending->callback = std::move(callback);
  auto body = encode_body(request);
  if (!body.is_ok()) {
    finish(pending, body.status());
    return pending;
  }
  pending->body = std::move(body).value();
  bool queued = false;
  {
    // Checked under the lock stop() drains the outbox with: a request queued
    // after that drain would never be answered, nor its callback run.
    std::lock_guard lock(mu_);
    queued = !stopping_.load();
    if (queued) outbox_.push_back(pending);
  }
  if (!queued) {
    finish(pending, cancelled("the control client is stopping"));
    return pending;
  }
  worker_->signal();
  return pending;
}

void ControlClient::Impl::call_async(const Message& request,
                                     std::function<void(Result<Message>)> done) {
  if (stopping_.load()) {
    done(cancelled("the control client is stopping"));
    return;
  }
  enqueue(request, std::move(done));
}

Result<Message> ControlClient::Impl::call(const Message& request,
                                          std::chrono::milliseconds timeout) {
  if (stopping_.load()) return cancelled("the control client is stopping");
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pending = enqueue(request, nullptr);
  std::unique_lock lock(mu_);
  cv_.wait_until(lock, deadline, [&] { return pending->done || stopping_.load(); });
  if (!pending->done) {
    std::erase(outbox_, pending);
    in_flight_.erase(pending->id);
    if (stopping_.load()) return cancelled("the control client is stopping");
    return timed_out(fmt::format("{} to the coordinator at {}: no answer within {} ms{}",
                                 body_name(request), server_, timeout.count(),
                                 connected_.load() ? "" : " (not connected)"));
  }
  Result<Message> result = std::move(pending->result);
  if (result.is_ok() && result->has_error()) return status_from_error(result->error());
  return result;
}

ControlClient::ControlClient(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
ControlClient::~ControlClient() { impl_->stop(); }

Result<std::unique_ptr<ControlClient>> ControlClient::connect(ControlClientOptions options) {
  auto impl = std::make_shared<Impl>(std::move(options));
  STOKER_RETURN_IF_ERROR(impl->init());
  impl->start();
  return std::unique_ptr<ControlClient>(new ControlClient(std::move(impl)));
}

Result<Message> ControlClient::call(const Message& request, std::chrono::milliseconds timeout) {
  return impl_->call(request, timeout);
}
void ControlClient::shutdown() { impl_->stop(); }
void ControlClient::call_async(const Message& request, std::function<void(Result<Message>)> done) {
  impl_->call_async(request, std::move(done));
}
bool ControlClient::connected() const { return impl_->connected(); }
uint32_t ControlClient::heartbeat_interval_ms() const { return impl_->heartbeat_interval_ms(); }
const std::string& ControlClient::server_address() const { return impl_->server_address(); }
uint64_t ControlClient::reconnects() const { return impl_->reconnects(); }

}  // namespace stoker::control
