// stoker-coordinator: the control plane daemon.
//
//   stoker-coordinator --port 7000 --work-dir /var/lib/stoker [--secret-file F]
//
// Prints "stoker-coordinator: listening on HOST:PORT" once it serves, and
// exits 0 on SIGTERM or SIGINT after closing every connection.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "common/shutdown_signal.h"
#include "coordinator/coordinator_service.h"

int main(int argc, char** argv) {
  stoker::block_shutdown_signals();
  CLI::App app{"stoker-coordinator: jobs, splits, liveness and the journal of a stoker cluster"};
  std::string host = "0.0.0.0";
  uint16_t port = 7000;
  std::string work_dir;
  std::string secret_file;
  uint32_t heartbeat_ms = 1000;
  uint32_t liveness_ms = 0;
  uint32_t grace_ms = 0;
  uint32_t job_gc_s = 300;
  uint64_t compaction_bytes = stoker::coordinator::CoordinatorOptions{}.journal_compaction_bytes;
  std::string durability = "sync";
  std::string log_level = "info";
  app.add_option("--host", host, "address to listen on");
  app.add_option("--port", port, "port to listen on (0: any free port)");
  app.add_option("--work-dir", work_dir, "directory of the journal (created if missing)")
      ->required();
  app.add_option("--secret-file", secret_file,
                 "file holding the cluster secret every peer must prove it knows");
  app.add_option("--heartbeat-ms", heartbeat_ms, "heartbeat interval told to peers")
      ->check(CLI::Range(10u, 600'000u));
  app.add_option("--liveness-timeout-ms", liveness_ms,
                 "a peer silent this long is dead (default: 5 heartbeats)");
  app.add_option("--reconnect-grace-ms", grace_ms,
                 "a peer whose connection failed is dead unless back this soon (default: 2 "
                 "heartbeats)");
  app.add_option("--job-gc-s", job_gc_s, "a named job without consumers this long is removed");
  app.add_option("--journal-compaction-bytes", compaction_bytes,
                 "compact the journal once it is past this size and twice its last snapshot");
  app.add_option("--durability", durability,
                 "sync: journal records reach the disk before answers (fdatasync); os: they "
                 "reach the OS (survives a crash of the process, not of the machine)")
      ->check(CLI::IsMember({"sync", "os"}));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));
  // A daemon's log is often a file: write each line out as it is logged.
  spdlog::flush_on(spdlog::level::trace);

  stoker::coordinator::CoordinatorOptions options;
  options.listen_address = fmt::format("{}:{}", host, port);
  options.work_dir = work_dir;
  options.durability = durability == "sync" ? stoker::coordinator::Durability::kSync
                                            : stoker::coordinator::Durability::kOs;
  options.heartbeat_interval = std::chrono::milliseconds(heartbeat_ms);
  options.liveness_timeout = std::chrono::milliseconds(liveness_ms);
  options.reconnect_grace = std::chrono::milliseconds(grace_ms);
  options.job_gc_timeout = std::chrono::seconds(job_gc_s);
  options.journal_compaction_bytes = compaction_bytes;
  if (!secret_file.empty()) {
    auto secret = stoker::control::ClusterSecret::load(secret_file);
    if (!secret.is_ok()) {
      fmt::print(stderr, "stoker-coordinator: {}\n", secret.status().to_string());
      return 2;
    }
    options.secret = std::move(secret).value();
  }
  auto coordinator = stoker::coordinator::Coordinator::start(std::move(options));
  if (!coordinator.is_ok()) {
    fmt::print(stderr, "stoker-coordinator: {}\n", coordinator.status().to_string());
    return 1;
  }
  fmt::print("stoker-coordinator: listening on {}\n", (*coordinator)->address());
  std::fflush(stdout);
  const auto signal = stoker::wait_for_shutdown_signal();
  spdlog::info("stoker-coordinator: signal {}: shutting down", signal.value_or(0));
  (*coordinator)->stop();
  return 0;
}
