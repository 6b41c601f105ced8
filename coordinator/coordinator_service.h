// The coordinator: the control plane's state machine behind the control
// channel. It registers workers and consumers, creates and shares jobs,
// hands out splits, tracks liveness and iterations, and journals every
// change before it takes effect (journal.h), so a restarted coordinator
// carries on exactly where it stopped. Semantics: docs/architecture.md.
//
// Threading: everything runs on the control server's progress thread.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "coordinator/coordinator_state.h"
#include "coordinator/journal.h"
#include "stoker/result.h"
#include "transport/control/control_server.h"

namespace stoker::coordinator {

struct CoordinatorOptions {
  std::string listen_address = "0.0.0.0:7000";
  std::string work_dir;  // where the journal lives; required
  std::optional<control::ClusterSecret> secret;
  Durability durability = Durability::kSync;
  std::chrono::milliseconds heartbeat_interval{1000};
  // A peer with no heartbeat for this long is dead; 0: 5 heartbeat intervals.
  std::chrono::milliseconds liveness_timeout{0};
  // A peer whose connection failed is dead unless it is back within this
  // long; 0: 2 heartbeat intervals.
  std::chrono::milliseconds reconnect_grace{0};
  // A named job without consumers for this long is removed.
  std::chrono::milliseconds job_gc_timeout{std::chrono::minutes(5)};
  // The journal is compacted (rewritten as a snapshot of the state) once it
  // is past this size and twice the size of its last snapshot.
  uint64_t journal_compaction_bytes = uint64_t{64} << 20;
};

class Coordinator {
 public:
  // Replays the journal in work_dir, then starts serving.
  static Result<std::unique_ptr<Coordinator>> start(CoordinatorOptions options);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  void stop();
  std::string address() const;
  uint16_t port() const;

 private:
  class Service;
  explicit Coordinator(std::unique_ptr<Service> service);
  std::unique_ptr<Service> service_;
};

}  // namespace stoker::coordinator
