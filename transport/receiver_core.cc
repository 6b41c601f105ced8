// BatchReceiver's progress thread, landing path and credit accounting.
#include "transport/receiver_core.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "transport/data_plane_messages.h"
#include "transport/host_identity.h"
#include "transport/ucx/am_send.h"
#include "transport/ucx/ucx_status.h"

namespace stoker::detail {
namespace {

constexpr auto kIdleWait = std::chrono::milliseconds(100);
// Under a steady stream the worker is never idle; a disconnect is settled
// after this long anyway (a goodbye sent before it has arrived by then).
constexpr auto kDisconnectGrace = std::chrono::milliseconds(20);

std::span<const std::byte> bytes_of(const void* p, size_t n) {
  return {static_cast<const std::byte*>(p), n};
}

// Compares without an early exit, so the time taken does not tell how much
// of a guessed token was right.
bool tokens_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

RejectReason reason_for(const Status& status) {
  return status.code() == StatusCode::kVersionMismatch ? RejectReason::kUnsupportedVersion
                                                       : RejectReason::kMalformedDescriptor;
}

}  // namespace

Result<std::shared_ptr<ReceiverCore>> ReceiverCore::create(ReceiverOptions options,
                                                           Placement placement) {
  if (options.slot_count == 0 || options.slot_bytes == 0 || options.credits_per_sender == 0) {
    return invalid_argument("receiver needs slot_count, slot_bytes and credits_per_sender > 0");
  }
  if (options.credits_per_sender > options.slot_count) {
    return invalid_argument(fmt::format("credits_per_sender ({}) exceeds slot_count ({})",
                                        options.credits_per_sender, options.slot_count));
  }
  if (!placement.streaming) placement.streaming = std::make_shared<std::atomic<uint32_t>>(0);
  std::shared_ptr<ReceiverCore> core(new ReceiverCore(std::move(options), std::move(placement)));
  STOKER_RETURN_IF_ERROR(core->init());
  core->thread_ = std::thread([raw = core.get()] { raw->run(); });
  return core;
}

Status ReceiverCore::init() {
  if (options_.context) {
    context_ = options_.context.ucx();
  } else {
    STOKER_ASSIGN_OR_RETURN(context_, ucx::Context::create());
  }
  const MemoryKind kind =
      options_.landing_memory ? options_.landing_memory->kind() : MemoryKind::kHost;
  if (kind == MemoryKind::kDevice && !context_->supports_cuda()) {
    return unsupported(fmt::format(
        "cannot land in device memory: {} was built without CUDA support. Land in pinned "
        "memory and copy to the device (plan_landing() does this), or load a CUDA-enabled UCX",
        ucx::Context::version_string()));
  }
  STOKER_ASSIGN_OR_RETURN(worker_, ucx::Worker::create(context_));
  if (worker_->max_am_header() < 4 + kDescriptorHeaderBytes + kMaxTensors * kTensorEntryBytes) {
    spdlog::warn(
        "UCX allows {}-byte active-message headers: descriptors with many tensors "
        "will not fit",
        worker_->max_am_header());
  }
  STOKER_RETURN_IF_ERROR(allocate_pool(options_.slot_bytes * options_.slot_count));
  STOKER_ASSIGN_OR_RETURN(pool_rkey_, pool_region_->pack_rkey());
  STOKER_ASSIGN_OR_RETURN(worker_address_, worker_->address());

  slots_.resize(options_.slot_count);
  for (uint32_t i = 0; i < options_.slot_count; ++i) {
    slots_[i].core = this;
    slots_[i].index = i;
    free_slots_.push_back(options_.slot_count - 1 - i);  // pop_back hands out slot 0 first
  }
  slots_free_ = options_.slot_count;

  using wire::AmId;
  for (auto [id, cb] : {std::pair{AmId::kHello, &ReceiverCore::on_hello},
                        std::pair{AmId::kAttach, &ReceiverCore::on_attach},
                        std::pair{AmId::kBatch, &ReceiverCore::on_batch},
                        std::pair{AmId::kBatchReady, &ReceiverCore::on_ready},
                        std::pair{AmId::kGoodbye, &ReceiverCore::on_goodbye}}) {
    STOKER_RETURN_IF_ERROR(worker_->set_am_handler(static_cast<uint16_t>(id), cb, this));
  }
  if (placement_.shard != 0) return Status::ok();
  STOKER_ASSIGN_OR_RETURN(auto listen_at, SocketAddress::parse(options_.listen_address));
  STOKER_ASSIGN_OR_RETURN(
      listener_,
      ucx::Listener::create(*worker_, listen_at, [this](ucp_conn_request_h r) { hand_out(r); }));
  port_ = listener_->address().port();
  address_ = listener_->address().to_string();
  return Status::ok();
}

Status ReceiverCore::allocate_pool(size_t bytes) {
  if (!options_.landing_memory && ucx_shared_memory_enabled()) {
    // Host memory from UCX: a shared-memory segment that senders on this host
    // map and put into with one CPU copy of their own, where a private pool
    // costs a copy on each side (UCX's FIFO) or the receiver's core (cma).
    // Senders on other hosts are served from it as from any other memory.
    STOKER_ASSIGN_OR_RETURN(pool_region_, ucx::MemoryRegion::allocate(context_, bytes));
    pool_kind_ = MemoryKind::kHost;
    return Status::ok();
  }
  const auto resource = options_.landing_memory ? options_.landing_memory : host_memory_resource();
  pool_kind_ = resource->kind();
  STOKER_ASSIGN_OR_RETURN(pool_storage_, resource->allocate(bytes));
  STOKER_ASSIGN_OR_RETURN(
      pool_region_, ucx::MemoryRegion::map(context_, pool_storage_.data(), bytes, pool_kind_));
  return Status::ok();
}

std::byte* ReceiverCore::slot_data(uint32_t slot) const {
  return pool_region_->data() + size_t{slot} * options_.slot_bytes;
}

ReceiverCore::~ReceiverCore() {
  stop();
  // Destroying the worker purges receives still in flight, whose callbacks
  // use the slot tables: destroy it while they are alive.
  worker_.reset();
}

void ReceiverCore::stop() {
  if (stopping_.exchange(true)) {
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
    return;
  }
  if (worker_) worker_->signal();
  if (thread_.joinable()) thread_.join();
}

// ---------------------------------------------------------------------------
// Progress thread
// ---------------------------------------------------------------------------

void ReceiverCore::run() {
  auto last_event = std::chrono::steady_clock::now();
  while (!stopping_.load(std::memory_order_acquire)) {
    const unsigned events = worker_->progress();
    if (has_adopted_.load(std::memory_order_acquire)) accept_adopted();
    settle_disconnects(/*idle=*/events == 0);
    const bool released = drain_releases();
    // A turn with nothing to do sends every credit still held back.
    send_credits(/*all=*/events == 0 && !released);
    reap_retired();
    // Batches land in UCX callbacks, during progress and endpoint closes:
    // wake the consumer once for all that landed in this turn.
    if (std::exchange(landed_this_turn_, false)) placement_.landed->wake();
    const auto now = std::chrono::steady_clock::now();
    if (events != 0 || released) {
      last_event = now;
      continue;
    }
    // While traffic flows, keep polling (busy_poll): sleeping costs a wakeup
    // per event.
    if (now - last_event < options_.busy_poll) continue;
    // Publish that we sleep, then look once more, so a release racing with
    // us either is seen here or signals the worker (release()).
    sleeping_.store(true);
    const auto released_or_stopping = [this] {
      if (stopping_.load() || has_adopted_.load()) return true;
      std::lock_guard lock(release_mu_);
      return !releases_.empty();
    };
    if (!released_or_stopping()) {
      if (Status st = worker_->wait(kIdleWait, released_or_stopping); !st.is_ok()) {
        spdlog::error("{}", st.to_string());
      }
    }
    sleeping_.store(false);
  }
  // Stop accepting first (closing endpoints progresses the worker, and a
  // sender connecting meanwhile would be accepted after the loop), then close
  // every endpoint on this thread: UCX objects are single-threaded. Requests
  // handed to other shards and not accepted there yet refer to our listener:
  // they are rejected while it still exists.
  for (uint32_t k = 1; listener_ && k < placement_.shard_count; ++k) {
    ReceiverCore& shard = *placement_.siblings[k];
    for (ucp_conn_request_h request : shard.close_adoption()) {
      shard.load_.fetch_sub(1);
      listener_->reject(request);
    }
  }
  listener_.reset();
  {
    std::lock_guard lock(adopt_mu_);
    adoption_closed_ = true;
  }
  accept_adopted();  // handed over while shard 0 still listened: accepted, then closed below
  while (!senders_.empty()) {
    for (auto& sender : senders_) retired_.push_back(std::move(sender));
    senders_.clear();
    reap_retired();
  }
  // A sender may be half-way through connecting its data endpoint, which UCX
  // accepts on its own: let that handshake finish (Worker::flush). Only
  // then: a flush also reaches the UCX-made data endpoints of senders that
  // have left, and UCX logs each one's failed flush as an ERROR
  // (docs/protocol.md, section 12).
  if (welcomed_not_attached_ == 0) return;
  if (Status st = worker_->flush(ucx::Endpoint::kCloseTimeout); !st.is_ok()) {
    spdlog::warn("receiver: {}", st.to_string());
  }
}

void ReceiverCore::hand_out(ucp_conn_request_h request) {
  if (stopping_.load()) {
    listener_->reject(request);
    return;
  }
  // The shard serving the fewest senders (counting those handed over but not
  // yet accepted) takes it; ties go to the lowest shard.
  uint32_t target = 0;
  uint32_t least = load_.load();
  for (uint32_t k = 1; k < placement_.shard_count; ++k) {
    if (const uint32_t load = placement_.siblings[k]->load_.load(); load < least) {
      least = load;
      target = k;
    }
  }
  if (target == 0) {
    load_.fetch_add(1);
    accept(request);
    return;
  }
  ReceiverCore& shard = *placement_.siblings[target];
  shard.load_.fetch_add(1);
  if (!shard.adopt(request)) {
    shard.load_.fetch_sub(1);
    listener_->reject(request);
  }
}

bool ReceiverCore::adopt(ucp_conn_request_h request) {
  {
    std::lock_guard lock(adopt_mu_);
    if (adoption_closed_) return false;
    adopted_.push_back(request);
    has_adopted_.store(true, std::memory_order_release);
  }
  worker_->signal();
  return true;
}

void ReceiverCore::accept_adopted() {
  std::lock_guard lock(adopt_mu_);  // see close_adoption()
  has_adopted_.store(false, std::memory_order_relaxed);
  for (ucp_conn_request_h request : adopted_) accept(request);
  adopted_.clear();
}

std::vector<ucp_conn_request_h> ReceiverCore::close_adoption() {
  std::lock_guard lock(adopt_mu_);
  adoption_closed_ = true;
  has_adopted_.store(false, std::memory_order_relaxed);
  return std::exchange(adopted_, {});
}

void ReceiverCore::accept(ucp_conn_request_h request) {
  auto sender = std::make_unique<Sender>();
  sender->id = next_sender_id_++ * placement_.shard_count + placement_.shard + 1;
  auto ep = ucx::Endpoint::accept(
      *worker_, request, [this, id = sender->id](ucs_status_t st) { on_sender_error(id, st); });
  if (!ep.is_ok()) {
    load_.fetch_sub(1);
    // UCX has rejected and freed the request already (Endpoint::accept).
    spdlog::warn("receiver: refused a connection: {}", ep.status().to_string());
    return;
  }
  sender->ep = std::move(ep).value();
  sender->label = fmt::format("sender {} ({})", sender->id, sender->ep->peer());
  spdlog::debug("receiver: {} connected", sender->label);
  senders_.push_back(std::move(sender));
}

ReceiverCore::Sender* ReceiverCore::find_sender(const ucp_am_recv_param_t* param) {
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) == 0) return nullptr;
  for (auto& s : senders_) {
    if (s->data_ep == param->reply_ep || (s->ep && s->ep->get() == param->reply_ep)) {
      return s.get();
    }
  }
  return nullptr;
}

ReceiverCore::Sender* ReceiverCore::find_sender(uint32_t id) {
  for (auto& s : senders_) {
    if (s->id == id) return s.get();
  }
  return nullptr;
}

ucs_status_t ReceiverCore::on_hello(void* arg, const void* header, size_t header_length,
                                    void* /*data*/, size_t /*length*/,
                                    const ucp_am_recv_param_t* param) {
  auto* self = static_cast<ReceiverCore*>(arg);
  Sender* sender = self->find_sender(param);
  if (sender == nullptr || sender->welcomed) {
    self->reject(sender, RejectReason::kUnknownSender,
                 protocol_error("hello from an unknown endpoint, or a second hello"));
    return UCS_OK;
  }
  auto hello = wire::Hello::decode(bytes_of(header, header_length));
  RejectReason reason = RejectReason::kUnsupportedVersion;
  if (!hello.is_ok()) {
    reason = reason_for(hello.status());
  } else if (!self->options_.access_token.empty() &&
             !tokens_equal(hello->access_token, self->options_.access_token)) {
    hello = Status(StatusCode::kUnauthorized,
                   fmt::format("{} presented {} access token: this receiver serves only the "
                               "workers of its job",
                               sender->label, hello->access_token.empty() ? "no" : "a wrong"));
    reason = RejectReason::kUnauthorized;
  }
  if (!hello.is_ok()) {
    self->reject(sender, reason, hello.status());
    const Status sent = ucx::send_control_am(
        sender->ep->get(), static_cast<uint16_t>(wire::AmId::kRefuse),
        wire::Refusal{.version = wire::kDataPlaneVersion, .reason = hello.status().message()}
            .encode());
    if (!sent.is_ok()) spdlog::debug("{}", sent.to_string());
    sender->finished = true;  // not a failure of the peer: we sent it away
    self->retire(*sender);
    return UCS_OK;
  }
  if (!hello->name.empty()) sender->label += " " + hello->name;
  sender->producer_id = hello->producer_id;
  sender->attach_token = self->token_source_();
  wire::Welcome welcome;
  welcome.sender_id = sender->id;
  welcome.worker_address = self->worker_address_;
  welcome.attach_token = sender->attach_token;
  // An empty identity tells the sender not to count on shared memory.
  welcome.host_identity = ucx_shared_memory_enabled() ? host_identity() : std::string();
  welcome.memory_kind = static_cast<uint8_t>(self->pool_kind_);
  welcome.slot_bytes = self->options_.slot_bytes;
  welcome.slot_count = self->options_.slot_count;
  welcome.pool_address = reinterpret_cast<uintptr_t>(self->pool_region_->data());
  welcome.pool_rkey = self->pool_rkey_;
  if (Status st = ucx::send_control_am(
          sender->ep->get(), static_cast<uint16_t>(wire::AmId::kWelcome), welcome.encode());
      !st.is_ok()) {
    spdlog::warn("receiver: welcoming {}: {}", sender->label, st.to_string());
    return UCS_OK;
  }
  sender->welcomed = true;  // credits follow once its data endpoint attaches
  ++self->welcomed_not_attached_;
  return UCS_OK;
}

ucs_status_t ReceiverCore::on_attach(void* arg, const void* header, size_t header_length,
                                     void* /*data*/, size_t /*length*/,
                                     const ucp_am_recv_param_t* param) {
  auto* self = static_cast<ReceiverCore*>(arg);
  auto attach = wire::Attach::decode(bytes_of(header, header_length));
  if (!attach.is_ok() || (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) == 0) {
    self->reject(
        nullptr, RejectReason::kUnknownSender,
        attach.is_ok() ? protocol_error("attach without a reply endpoint") : attach.status());
    return UCS_OK;
  }
  Sender* sender = self->find_sender(attach->sender_id);
  if (sender == nullptr || !sender->welcomed || sender->attached ||
      sender->attach_token != attach->token) {
    self->reject(sender, RejectReason::kUnknownSender,
                 protocol_error(fmt::format("attach for sender {} with a wrong or stale token",
                                            attach->sender_id)));
    return UCS_OK;
  }
  sender->data_ep = param->reply_ep;
  sender->mode = attach->mode;
  sender->attached = true;
  --self->welcomed_not_attached_;
  self->set_streaming(*sender, true);
  self->senders_connected_.fetch_add(1, std::memory_order_relaxed);
  self->grant(*sender, self->options_.credits_per_sender);
  sender->confirm_attach = true;  // even with no slot to spare, answer
  self->emit(PeerEvent::Kind::kConnected, *sender);
  return UCS_OK;
}

ucs_status_t ReceiverCore::on_batch(void* arg, const void* header, size_t header_length, void* data,
                                    size_t length, const ucp_am_recv_param_t* param) {
  auto* self = static_cast<ReceiverCore*>(arg);
  const bool rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
  // For a rendezvous message an error status travels back to the sender's
  // send request; an eager message can only be dropped.
  const ucs_status_t refused = rndv ? UCS_ERR_REJECTED : UCS_OK;
  Sender* sender = self->find_sender(param);
  if (sender == nullptr || !sender->attached || sender->mode != PushMode::kActiveMessage) {
    self->reject(nullptr, RejectReason::kUnknownSender,
                 protocol_error("batch from an endpoint without an active-message handshake"));
    return refused;
  }
  if (sender->granted.empty()) {
    self->reject(sender, RejectReason::kNoCredit, protocol_error("batch sent without a credit"));
    return refused;
  }
  auto descriptor = BatchDescriptor::decode(bytes_of(header, header_length));
  Status bad;
  RejectReason reason = RejectReason::kMalformedDescriptor;
  if (!descriptor.is_ok()) {
    bad = descriptor.status();
    reason = reason_for(bad);
  } else if (descriptor->payload_bytes != length) {
    bad = protocol_error(fmt::format("descriptor declares {} payload bytes, {} arrived",
                                     descriptor->payload_bytes, length));
    reason = RejectReason::kPayloadMismatch;
  } else if (length > self->options_.slot_bytes) {
    bad = protocol_error(
        fmt::format("{}-byte batch exceeds the {}-byte slot", length, self->options_.slot_bytes));
    reason = RejectReason::kOversizedBatch;
  }
  // The newest granted slot is the one the consumer released last: its
  // memory is the likeliest to still be in the CPU's cache.
  const uint32_t slot = sender->granted.back();
  sender->granted.pop_back();
  if (!bad.is_ok()) {
    self->reject(sender, reason, bad);
    self->return_slot(slot);  // the sender spent a credit on it: give it back
    return refused;
  }
  Slot& s = self->slots_[slot];
  s.state = Slot::State::kLanding;
  s.producer = sender->producer_id;
  s.descriptor = std::move(descriptor).value();
  std::byte* dst = self->slot_data(slot);
  if (!rndv) {
    if (self->pool_kind_ == MemoryKind::kDevice) {
      // Senders force rendezvous for device pools (the welcome says so); a CPU
      // copy into GPU memory would crash.
      self->reject(sender, RejectReason::kLandingFailed,
                   protocol_error("eager batch for a device-memory pool"));
      self->return_slot(slot);
      return UCS_OK;
    }
    if (length != 0) std::memcpy(dst, data, length);
    self->land(slot);
    return UCS_OK;
  }
  ucp_request_param_t rp{};
  rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                    UCP_OP_ATTR_FIELD_MEMH | UCP_OP_ATTR_FIELD_MEMORY_TYPE;
  rp.cb.recv_am = &ReceiverCore::on_landed;
  rp.user_data = &s;
  rp.memh = self->pool_region_->get();
  rp.memory_type = self->pool_region_->memory_type();
  ucs_status_ptr_t request = ucp_am_recv_data_nbx(self->worker_->get(), data, dst, length, &rp);
  if (request == nullptr) {
    self->land(slot);
  } else if (!UCS_PTR_IS_ERR(request)) {
    s.request = request;
  } else {
    self->reject(sender, RejectReason::kLandingFailed,
                 ucx::from_ucs(UCS_PTR_STATUS(request), "ucp_am_recv_data_nbx"));
    self->return_slot(slot);
  }
  return UCS_OK;
}

void ReceiverCore::on_landed(void* request, ucs_status_t status, size_t /*length*/,
                             void* user_data) {
  auto& slot = *static_cast<Slot*>(user_data);
  ReceiverCore* self = slot.core;
  ucp_request_free(request);
  if (slot.request != request) return;  // the slot was taken back from a dead sender
  slot.request = nullptr;
  if (status == UCS_OK) {
    self->land(slot.index);
    return;
  }
  self->reject(self->find_sender(slot.sender), RejectReason::kLandingFailed,
               ucx::from_ucs(status, "receiving a batch"));
  self->return_slot(slot.index);
}

ucs_status_t ReceiverCore::on_ready(void* arg, const void* header, size_t header_length,
                                    void* /*data*/, size_t /*length*/,
                                    const ucp_am_recv_param_t* param) {
  auto* self = static_cast<ReceiverCore*>(arg);
  Sender* sender = self->find_sender(param);
  if (sender == nullptr || !sender->attached || sender->mode != PushMode::kPut) {
    self->reject(nullptr, RejectReason::kUnknownSender,
                 protocol_error("ready notice from an endpoint without a put-mode handshake"));
    return UCS_OK;
  }
  auto notices = wire::BatchReady::decode_list(bytes_of(header, header_length));
  if (!notices.is_ok()) {
    // Without a valid message we cannot tell which slots it meant: they stay
    // granted and are recovered when the sender leaves.
    self->reject(sender, reason_for(notices.status()), notices.status());
    return UCS_OK;
  }
  for (const wire::BatchReady& ready : *notices) self->accept_ready(*sender, ready);
  return UCS_OK;
}

void ReceiverCore::accept_ready(Sender& sender, const wire::BatchReady& ready) {
  auto it = std::find(sender.granted.begin(), sender.granted.end(), ready.slot);
  if (it == sender.granted.end()) {
    reject(
        &sender, RejectReason::kNoCredit,
        protocol_error(fmt::format("ready for slot {}, which was not granted to it", ready.slot)));
    return;
  }
  sender.granted.erase(it);
  if (ready.descriptor.payload_bytes > options_.slot_bytes) {
    reject(&sender, RejectReason::kOversizedBatch,
           protocol_error(fmt::format("{}-byte batch exceeds the {}-byte slot",
                                      ready.descriptor.payload_bytes, options_.slot_bytes)));
    return_slot(ready.slot);
    return;
  }
  Slot& s = slots_[ready.slot];
  s.state = Slot::State::kLanding;
  s.producer = sender.producer_id;
  s.descriptor = ready.descriptor;
  land(ready.slot);
}

ucs_status_t ReceiverCore::on_goodbye(void* arg, const void* /*header*/, size_t /*header_length*/,
                                      void* /*data*/, size_t /*length*/,
                                      const ucp_am_recv_param_t* param) {
  auto* self = static_cast<ReceiverCore*>(arg);
  Sender* sender = self->find_sender(param);
  if (sender == nullptr || sender->finished) return UCS_OK;
  sender->finished = true;
  self->set_streaming(*sender, false);
  self->senders_finished_.fetch_add(1, std::memory_order_relaxed);
  self->emit(PeerEvent::Kind::kFinished, *sender);
  spdlog::debug("receiver: {} finished", sender->label);
  // Its endpoint stays open until the sender closes it; its unused credits
  // go to others now.
  while (!sender->granted.empty()) {
    const uint32_t slot = sender->granted.front();
    sender->granted.pop_front();
    self->free_slot(slot);
  }
  sender->credits_to_send.clear();
  sender->deficit = 0;
  return UCS_OK;
}

void ReceiverCore::on_sender_error(uint32_t sender_id, ucs_status_t status) {
  // A clean goodbye travels on the data endpoint and the disconnect on the
  // control endpoint, and UCX may report the second first. Decide once the
  // worker has nothing more to deliver (settle_disconnects).
  disconnects_.push_back({sender_id, status, std::chrono::steady_clock::now()});
}

void ReceiverCore::settle_disconnects(bool idle) {
  if (disconnects_.empty()) return;
  const auto now = std::chrono::steady_clock::now();
  if (!idle && now - disconnects_.front().when < kDisconnectGrace) return;
  for (auto [sender_id, status, when] : std::exchange(disconnects_, {})) {
    Sender* sender = find_sender(sender_id);
    if (sender == nullptr) continue;
    if (!sender->finished) {
      sender->failed = true;
      set_streaming(*sender, false);
      senders_failed_.fetch_add(1, std::memory_order_relaxed);
      const Status why = ucx::from_ucs(status, fmt::format("{} failed", sender->label));
      spdlog::warn("receiver: {}; returning its {} granted slots", why.message(),
                   sender->granted.size());
      emit(PeerEvent::Kind::kFailed, *sender, why);
    }
    reclaim_landing_slots(sender_id);
    retire(*sender);
  }
}

void ReceiverCore::reclaim_landing_slots(uint32_t sender_id) {
  // The data endpoint has no failure detection of its own, so a rendezvous
  // receive from a dead sender may never complete. Its data cannot arrive any
  // more: take the slot back now and ignore the request if it ever finishes.
  // Each such batch is lost, and counted so (kLandingFailed).
  size_t reclaimed = 0;
  for (Slot& slot : slots_) {
    if (slot.state == Slot::State::kLanding && slot.sender == sender_id && slot.request) {
      void* request = std::exchange(slot.request, nullptr);
      free_slot(slot.index);
      ucp_request_cancel(worker_->get(), request);  // on_landed will ignore it
      reject(find_sender(sender_id), RejectReason::kLandingFailed,
             unavailable(fmt::format("sender {} failed while its batch landed in slot {}",
                                     sender_id, slot.index)));
      ++reclaimed;
    }
  }
  if (reclaimed != 0) {
    spdlog::warn("receiver: took back {} slots with transfers in flight from sender {}", reclaimed,
                 sender_id);
  }
}

void ReceiverCore::retire(Sender& sender) {
  set_streaming(sender, false);
  while (!sender.granted.empty()) {
    const uint32_t slot = sender.granted.front();
    sender.granted.pop_front();
    free_slot(slot);
  }
  sender.credits_to_send.clear();
  sender.deficit = 0;
  auto it = std::find_if(senders_.begin(), senders_.end(),
                         [&](const auto& s) { return s.get() == &sender; });
  if (it != senders_.end()) {
    retired_.push_back(std::move(*it));
    senders_.erase(it);
  }
}

void ReceiverCore::reap_retired() {
  // Endpoint destructors close (and so progress) the worker: never inside a
  // UCX callback, hence here. Callbacks they trigger may retire more
  // senders, so take the list before destroying it.
  while (!retired_.empty()) {
    auto closing = std::move(retired_);
    retired_.clear();
    load_.fetch_sub(static_cast<uint32_t>(closing.size()));
    closing.clear();
  }
}

// ---------------------------------------------------------------------------
// Slots and credits
// ---------------------------------------------------------------------------

void ReceiverCore::grant(Sender& sender, uint32_t count) {
  while (count > 0 && !free_slots_.empty()) {
    const uint32_t slot = free_slots_.back();
    free_slots_.pop_back();
    slots_[slot].state = Slot::State::kGranted;
    slots_[slot].sender = sender.id;
    sender.granted.push_back(slot);
    sender.credits_to_send.push_back(slot);
    --count;
  }
  sender.deficit += count;
  slots_free_.store(static_cast<uint32_t>(free_slots_.size()), std::memory_order_relaxed);
}

void ReceiverCore::return_slot(uint32_t slot) {
  Sender* owner = find_sender(slots_[slot].sender);
  if (owner != nullptr && owner->attached && !owner->finished && !owner->failed) {
    slots_[slot].state = Slot::State::kGranted;
    owner->granted.push_back(slot);
    owner->credits_to_send.push_back(slot);
    return;
  }
  free_slot(slot);
}

void ReceiverCore::free_slot(uint32_t slot) {
  slots_[slot].state = Slot::State::kFree;
  free_slots_.push_back(slot);
  for (auto& s : senders_) {
    if (s->deficit > 0 && !s->finished && !s->failed) {
      --s->deficit;
      grant(*s, 1);
      return;
    }
  }
  slots_free_.store(static_cast<uint32_t>(free_slots_.size()), std::memory_order_relaxed);
}

void ReceiverCore::reject(Sender* sender, RejectReason reason, const Status& why) {
  if (stopping_.load(std::memory_order_relaxed) && senders_.empty()) {
    // Shutting down, every sender closed: what still arrives was in flight
    // from them, not bad input. Their sends fail (rendezvous) or are dropped
    // with the rest of what this receiver held.
    spdlog::debug("receiver: stopping; dropped a late message: {}", why.message());
    return;
  }
  const uint64_t n = rejected_[static_cast<size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
  // Log the first few of each kind, then every 1000th: a flood of bad input
  // must not become a flood of log lines.
  if (n < 10 || n % 1000 == 0) {
    spdlog::warn("receiver: rejected a message from {} ({}, #{}): {}",
                 sender ? sender->label : "an unknown peer", reject_reason_name(reason), n + 1,
                 why.message());
  }
}

void ReceiverCore::land(uint32_t slot) {
  Slot& s = slots_[slot];
  s.state = Slot::State::kLanded;
  batches_landed_.fetch_add(1, std::memory_order_relaxed);
  bytes_landed_.fetch_add(s.descriptor.payload_bytes, std::memory_order_relaxed);
  placement_.landed->push({placement_.shard, slot});
  landed_this_turn_ = true;
}

bool ReceiverCore::drain_releases() {
  std::vector<uint32_t> released;
  {
    std::lock_guard lock(release_mu_);
    if (releases_.empty()) return false;
    released.swap(releases_);
  }
  for (uint32_t slot : released) return_slot(slot);
  return true;
}

bool ReceiverCore::credits_due(const Sender& sender) const {
  const size_t pending = sender.credits_to_send.size();
  if (pending >= credit_batch_) return true;
  // What the sender holds, or has spent on batches still on their way: when
  // that runs low, waiting for a fuller message would stall it.
  const size_t told = sender.granted.size() > pending ? sender.granted.size() - pending : 0;
  return told < credit_batch_;
}

void ReceiverCore::set_streaming(Sender& sender, bool streaming) {
  if (sender.streaming == streaming) return;
  sender.streaming = streaming;
  if (streaming) {
    placement_.streaming->fetch_add(1, std::memory_order_relaxed);
  } else {
    placement_.streaming->fetch_sub(1, std::memory_order_relaxed);
  }
}

uint64_t ReceiverCore::window_share() const {
  const uint64_t budget = options_.max_bytes_in_flight;
  if (budget == 0) return 0;
  const uint32_t senders =
      std::max<uint32_t>(1, placement_.streaming->load(std::memory_order_relaxed));
  return std::max<uint64_t>(1, budget / senders);  // 0 would mean no limit
}

void ReceiverCore::send_credits(bool all) {
  // A sender joining or leaving changes everyone's share: tell every sender,
  // with credits or without.
  const uint64_t window = window_share();
  const bool window_changed = std::exchange(announced_window_, window) != window;
  for (auto& s : senders_) {
    const bool tell = s->confirm_attach || (window_changed && s->streaming);
    if (s->credits_to_send.empty() && !tell) continue;
    if (!all && !tell && !credits_due(*s)) continue;
    s->confirm_attach = false;
    const auto& slots = s->credits_to_send;
    for (size_t first = 0; first == 0 || first < slots.size();
         first += wire::kMaxCreditsPerMessage) {
      const size_t n = std::min(wire::kMaxCreditsPerMessage, slots.size() - first);
      wire::Credit credit{.window_bytes = window,
                          .slots = {slots.begin() + static_cast<std::ptrdiff_t>(first),
                                    slots.begin() + static_cast<std::ptrdiff_t>(first + n)}};
      if (Status st = ucx::send_control_am(s->ep->get(), static_cast<uint16_t>(wire::AmId::kCredit),
                                           credit.encode());
          !st.is_ok()) {
        // The control endpoint is failing; its error handler retires the sender.
        spdlog::debug("receiver: credit to {}: {}", s->label, st.to_string());
      }
    }
    s->credits_to_send.clear();
  }
}

void ReceiverCore::emit(PeerEvent::Kind kind, const Sender& sender, Status status) {
  if (options_.on_peer_event) {
    options_.on_peer_event(
        PeerEvent{kind, sender.id, sender.producer_id, sender.label, std::move(status)});
  }
}

// ---------------------------------------------------------------------------
// Consumer side
// ---------------------------------------------------------------------------

LandedBatch ReceiverCore::take(uint32_t slot) {
  const Slot& landed = slots_[slot];
  LandedBatch batch;
  batch.core_ = shared_from_this();
  batch.slot_ = slot;
  batch.sender_id_ = landed.sender;
  batch.producer_id_ = landed.producer;
  batch.memory_kind_ = pool_kind_;
  batch.payload_ = {slot_data(slot), static_cast<size_t>(landed.descriptor.payload_bytes)};
  batch.descriptor_ = landed.descriptor;
  return batch;
}

void ReceiverCore::release(uint32_t slot) {
  {
    std::lock_guard lock(release_mu_);
    releases_.push_back(slot);
  }
  if (sleeping_.load()) worker_->signal();
}

ReceiverStats ReceiverCore::stats() const {
  ReceiverStats s;
  s.batches_landed = batches_landed_.load(std::memory_order_relaxed);
  s.bytes_landed = bytes_landed_.load(std::memory_order_relaxed);
  for (size_t i = 0; i < kRejectReasonCount; ++i) {
    s.rejected[i] = rejected_[i].load(std::memory_order_relaxed);
  }
  s.senders_connected = senders_connected_.load(std::memory_order_relaxed);
  s.senders_finished = senders_finished_.load(std::memory_order_relaxed);
  s.senders_failed = senders_failed_.load(std::memory_order_relaxed);
  s.slots_free = slots_free_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace stoker::detail
