// ControlServer: the coordinator's end of the control channel. It listens
// (ucp_listener), runs the handshake with every peer (version, optional
// cluster secret, both ways), then hands authenticated requests to a Handler
// on its one progress thread and sends the answers back. Peers that fail or
// disconnect are reported once. Malformed, oversized or unknown messages get
// an Error answer (or, before the handshake, the connection is closed) and
// are counted; the server keeps serving everyone else.
//
// Threading: every Handler call runs on the server's progress thread, so the
// handler's state needs no lock. notify() is for that thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "stoker/result.h"
#include "transport/control/cluster_secret.h"
#include "transport/control/control.pb.h"

namespace stoker::control {

using ConnectionId = uint64_t;

struct PeerInfo {
  Role role = ROLE_UNSPECIFIED;
  std::string name;     // as the peer introduced itself
  std::string address;  // "127.0.0.1:41234"
};

class ControlHandler {
 public:
  virtual ~ControlHandler() = default;
  // An authenticated request; the returned message (or the error, sent as an
  // Error message) is the answer.
  virtual Result<Message> on_request(ConnectionId connection, const PeerInfo& peer,
                                     const Message& request) = 0;
  // The peer failed or disconnected (once per authenticated connection).
  virtual void on_disconnect(ConnectionId connection, const PeerInfo& peer, const Status& why) = 0;
  // Called every ControlServerOptions::tick, for timers.
  virtual void on_tick() {}
  // Called once per progress turn before that turn's answers go out: where a
  // journal makes its records durable, so no answer precedes its record.
  virtual void before_answers() {}
};

struct ControlServerOptions {
  std::string listen_address = "0.0.0.0:0";
  std::optional<ClusterSecret> secret;  // when set, every peer must prove it knows it
  std::string name = "stoker-coordinator";
  uint32_t heartbeat_interval_ms = 1000;  // told to peers in the Welcome
  std::chrono::milliseconds tick{20};
  std::chrono::milliseconds handshake_timeout{10'000};
};

struct ControlServerStats {
  uint64_t connections_accepted = 0;
  uint64_t handshakes_refused = 0;  // version, secret, malformed hello
  uint64_t requests = 0;
  uint64_t malformed = 0;  // bad frames and bodies from authenticated peers
  uint64_t unknown_types = 0;
};

class ControlServer {
 public:
  static Result<std::unique_ptr<ControlServer>> start(ControlServerOptions options,
                                                      ControlHandler* handler);
  ~ControlServer();  // stop()
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Closes every connection and joins the progress thread. Idempotent.
  void stop();

  std::string address() const;  // "0.0.0.0:7000"
  uint16_t port() const;
  ControlServerStats stats() const;

  // Sends a one-way message to a connected peer. Progress thread only.
  void notify(ConnectionId connection, const Message& message);

 private:
  class Impl;
  explicit ControlServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace stoker::control
