// ControlClient: a worker's, consumer's or stoker-ctl's end of the control
// channel. It connects to the coordinator, runs the handshake (version, and
// the cluster secret both ways when configured), and then carries
// request/answer calls from any thread. When the connection is lost it
// reconnects by itself with exponential backoff, replays the session request
// (re-registration) before anything else, and calls made meanwhile wait for
// it up to their own timeout.
//
// Threading: call() is thread-safe. The callbacks in the options run on the
// client's progress thread and must not call call().
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "stoker/result.h"
#include "stoker/transport_context.h"
#include "transport/control/cluster_secret.h"
#include "transport/control/control.pb.h"

namespace stoker::control {

struct ControlClientOptions {
  std::string server_address;  // "host:port" of the coordinator
  Role role = ROLE_ADMIN;
  std::string name;
  std::optional<ClusterSecret> secret;
  std::chrono::milliseconds connect_timeout{5000};  // of one attempt
  // connect() retries an unreachable or unresponsive coordinator with backoff
  // for this long (0: one attempt); refusals are not retried.
  std::chrono::milliseconds retry_for{0};
  // connect() stops retrying, with kCancelled, once this returns true
  // (looked at between attempts): a daemon told to stop while it starts.
  std::function<bool()> give_up;
  std::chrono::milliseconds reconnect_min{50};
  std::chrono::milliseconds reconnect_max{2000};
  // Sent right after every handshake, before any queued call; its answer (or
  // error) goes to on_session, which decides: an error it returns fails this
  // connection attempt (connect() returns it; a reconnection retries later).
  std::function<std::optional<Message>()> session_request;
  std::function<Status(const Result<Message>& answer)> on_session;
  // One-way messages from the coordinator (e.g. "nudge").
  std::function<void(const Message& notice)> on_notice;
  // Told when the connection is lost (before reconnecting starts).
  std::function<void(const Status& why)> on_disconnect;
  // How long the progress thread keeps polling after an event before it
  // sleeps: answers come sooner, at the cost of a core's time while busy.
  std::chrono::microseconds spin{50};
  // The process's shared UCX context; empty: the client creates its own.
  TransportContext context;
};

class ControlClient {
 public:
  // Connects, completes the handshake and the session request. Errors name
  // the coordinator: unreachable, refused (version, secret) or the session's error.
  static Result<std::unique_ptr<ControlClient>> connect(ControlClientOptions options);
  ~ControlClient();
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;

  // Sends `request` and waits for its answer. An Error answer becomes its
  // Status. kUnavailable when the connection was lost with the request in
  // flight (it may or may not have been processed); kTimedOut when no answer
  // came in time (including while reconnecting).
  Result<Message> call(const Message& request, std::chrono::milliseconds timeout);

  // Sends `request` without waiting. `done` runs once, on the client's
  // progress thread, with the answer or the error (kUnavailable when the
  // connection was lost with it in flight, kCancelled at shutdown); it must
  // not block or call back into the client. Calls made while disconnected
  // wait for the reconnection.
  void call_async(const Message& request, std::function<void(Result<Message>)> done);

  // Fails every pending and future call with kCancelled and stops
  // reconnecting, so threads blocked in call() return at once. Idempotent.
  void shutdown();

  bool connected() const;
  uint32_t heartbeat_interval_ms() const;
  const std::string& server_address() const;
  uint64_t reconnects() const;  // connections re-established after a loss

 private:
  class Impl;
  explicit ControlClient(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace stoker::control
