// stoker-perf: a bandwidth and latency tool for the batch data plane, in the
// spirit of ib_write_bw and ucx_perftest. A server (one BatchReceiver) and
// one or more client processes (a BatchSender each):
//
//   stoker-perf server --senders 1
//   stoker-perf client --connect 127.0.0.1:13340 --size 1M --iterations 2000
//
// The server counts a batch only when it has fully landed in a slot and the
// consumer has taken it; it prints one RESULT line per message size once
// every sender has said goodbye. Latency is one-way, from the sender's post
// to the consumer's hand-off, read off CLOCK_MONOTONIC, which is shared by
// processes of one host only (so it is meaningful on loopback runs).
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <utility>
#include <vector>

#include "common/byte_size.h"
#include "perf/verify_pattern.h"
#include "stoker/batch_receiver.h"
#include "stoker/batch_sender.h"
#include "stoker/landing.h"
#include "stoker/memory.h"

namespace {

using Clock = std::chrono::steady_clock;
using stoker::Status;

constexpr uint64_t kWarmupRound = 0;
constexpr uint64_t kMeasuredRound = 1;
constexpr double kMiB = 1024.0 * 1024.0;  // ucx_perftest's "MB"

uint64_t now_ns() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
          .count());
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const auto k = static_cast<size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

std::string tls_label() {
  const char* tls = std::getenv("UCX_TLS");
  return tls ? tls : "default";
}

struct ServerArgs {
  std::string listen = "0.0.0.0:13340";
  int senders = 1;
  std::string slot_bytes = "4M";
  uint32_t slots = 64;
  uint32_t credits = 16;
  std::string max_bytes_in_flight = std::to_string(stoker::ReceiverOptions{}.max_bytes_in_flight);
  uint32_t receiver_threads = 1;
  int64_t busy_poll_us = stoker::ReceiverOptions{}.busy_poll.count();
  std::string memory = "host";
  bool verify = false;
  bool private_pool = false;
  std::string port_file;
  int idle_timeout_ms = 60'000;
};

// One batch size's figures. Every batch counted here has that size, so the
// bytes moved are a count of batches.
struct SizeStats {
  uint64_t batches = 0;  // measured batches
  // Warm-up batches of later senders that landed after the first measured
  // one: they count once a measured batch lands after them, so that the
  // window holds every batch of this size that landed in it.
  uint64_t warmup_in_window = 0;
  uint64_t warmup_pending = 0;
  Clock::time_point first{}, last{};
  // Batches landed after the one that started the clock.
  uint64_t moved_after_first() const { return batches - 1 + warmup_in_window; }
  std::vector<double> latency_us;
};

int run_server(const ServerArgs& args) {
  auto slot_bytes = stoker::parse_byte_size(args.slot_bytes);
  auto requested = stoker::parse_memory_kind(args.memory);
  auto max_bytes_in_flight = stoker::parse_byte_size(args.max_bytes_in_flight);
  if (!slot_bytes.is_ok() || !requested || !max_bytes_in_flight.is_ok()) {
    spdlog::error("bad --slot-bytes, --max-bytes-in-flight or --memory (host, pinned, device)");
    return 2;
  }
  auto transport = stoker::query_transport();
  if (!transport.is_ok()) {
    spdlog::error("{}", transport.status().to_string());
    return 1;
  }
  auto plan = stoker::plan_landing(*requested, *transport);
  if (!plan.is_ok()) {
    spdlog::error("{}", plan.status().to_string());
    return 1;
  }
  if (!plan->note.empty()) spdlog::warn("{}", plan->note);
  // Host landing uses the receiver's default pool (UCX-allocated, shared with
  // senders on this host) unless --private-pool asks for the host resource.
  std::shared_ptr<stoker::MemoryResource> landing;
  if (plan->land_in != stoker::MemoryKind::kHost || args.private_pool) {
    auto memory = stoker::make_memory_resource(plan->land_in);
    if (!memory.is_ok()) {
      spdlog::error("{}", memory.status().to_string());
      return 1;
    }
    landing = *memory;
  }

  std::atomic<int> senders_done{0};
  stoker::ReceiverOptions options;
  options.listen_address = args.listen;
  options.slot_bytes = *slot_bytes;
  options.slot_count = args.slots;
  options.credits_per_sender = args.credits;
  options.max_bytes_in_flight = *max_bytes_in_flight;
  options.progress_threads = args.receiver_threads;
  options.busy_poll = std::chrono::microseconds(args.busy_poll_us);
  options.landing_memory = landing;
  options.on_peer_event = [&](const stoker::PeerEvent& e) {
    if (e.kind == stoker::PeerEvent::Kind::kConnected) {
      spdlog::info("{} connected", e.peer);
    } else {
      // The receiver has logged a failure already, with the peer's name.
      senders_done.fetch_add(1);
    }
  };
  auto receiver = stoker::BatchReceiver::start(options);
  if (!receiver.is_ok()) {
    spdlog::error("{}", receiver.status().to_string());
    return 1;
  }
  auto& rx = **receiver;
  spdlog::info(
      "listening on {} ({} slots of {} bytes, {} memory, {} credits per sender, {} progress "
      "threads)",
      rx.address(), args.slots, *slot_bytes, stoker::memory_kind_name(rx.memory_kind()),
      args.credits, args.receiver_threads);
  if (!args.port_file.empty()) {
    std::ofstream(args.port_file) << rx.port() << "\n";
  }

  std::map<uint64_t, SizeStats> by_size;
  const stoker::perf::VerifyPattern pattern(*slot_bytes);
  uint64_t corrupt = 0;
  auto last_activity = Clock::now();
  while (true) {
    // Batches that landed before the last goodbye are still taken.
    const bool all_done = senders_done.load() >= args.senders;
    auto batch = rx.next(std::chrono::milliseconds(all_done ? 0 : 100));
    if (!batch.is_ok()) {
      if (all_done || batch.status().code() != stoker::StatusCode::kTimedOut) break;
      if (Clock::now() - last_activity > std::chrono::milliseconds(args.idle_timeout_ms)) {
        spdlog::error("no batch for {} ms; giving up", args.idle_timeout_ms);
        return 1;
      }
      continue;
    }
    const auto landed = Clock::now();
    last_activity = landed;
    const auto& d = batch->descriptor();
    const auto payload = batch->payload();
    if (args.verify && !pattern.check(payload.data(), payload.size(), d.sequence)) ++corrupt;
    if (d.round != kMeasuredRound) {
      // With several senders, one still warming up shares the link with the
      // others' measured batches; leaving its bytes out would undercount.
      if (auto measuring = by_size.find(d.payload_bytes); measuring != by_size.end()) {
        ++measuring->second.warmup_pending;
      }
      continue;
    }
    SizeStats& s = by_size[d.payload_bytes];
    if (s.batches == 0) {
      s.first = landed;  // the clock starts when the first measured batch lands
    } else {
      s.warmup_in_window += std::exchange(s.warmup_pending, 0);
    }
    s.last = landed;
    ++s.batches;
    if (payload.size() >= 8) {
      uint64_t sent_ns = 0;
      std::memcpy(&sent_ns, payload.data(), 8);
      if (sent_ns != 0) s.latency_us.push_back(static_cast<double>(now_ns() - sent_ns) / 1e3);
    }
  }

  const auto stats = rx.stats();
  for (auto& [size, s] : by_size) {
    const double seconds = std::chrono::duration<double>(s.last - s.first).count();
    const double moved = static_cast<double>(s.moved_after_first());
    const double bps = seconds > 0 ? moved * static_cast<double>(size) / seconds : 0;
    fmt::print(
        "RESULT role=server tls={} memory={} size={} senders={} receiver_threads={} "
        "busy_poll_us={} batches={} MBps={:.1f} GBps={:.3f} msg_per_s={:.0f} lat_p50_us={:.1f} "
        "lat_p99_us={:.1f} rejected={} corrupt={} warmup_in_window={}\n",
        tls_label(), stoker::memory_kind_name(rx.memory_kind()), size, args.senders,
        args.receiver_threads, args.busy_poll_us, s.batches, bps / kMiB, bps / 1e9,
        seconds > 0 ? moved / seconds : 0, percentile(s.latency_us, 0.50),
        percentile(s.latency_us, 0.99), stats.rejected_total(), corrupt, s.warmup_in_window);
  }
  std::fflush(stdout);
  return corrupt == 0 ? 0 : 1;
}

struct ClientArgs {
  std::string connect = "127.0.0.1:13340";
  std::vector<std::string> sizes{"1M"};
  uint64_t iterations = 1000;
  uint64_t warmup = 100;
  std::string mode = "auto";
  std::string name = "stoker-perf";
  size_t buffers = 16;
  int timeout_ms = 30'000;
  bool verify = false;
  bool reuse_buffer = false;
  std::string max_bytes_in_flight = std::to_string(stoker::SenderOptions{}.max_bytes_in_flight);
  int64_t busy_poll_us = stoker::SenderOptions{}.busy_poll.count();
};

int run_client(const ClientArgs& args) {
  auto mode = stoker::parse_push_mode(args.mode);
  if (!mode) {
    spdlog::error("--mode must be am, put or auto");
    return 2;
  }
  std::vector<size_t> sizes;
  for (const auto& text : args.sizes) {
    auto size = stoker::parse_byte_size(text);
    if (!size.is_ok() || *size < 8) {
      spdlog::error("bad --size '{}' (at least 8 bytes)", text);
      return 2;
    }
    sizes.push_back(*size);
  }
  auto max_bytes_in_flight = stoker::parse_byte_size(args.max_bytes_in_flight);
  if (!max_bytes_in_flight.is_ok()) {
    spdlog::error("bad --max-bytes-in-flight '{}'", args.max_bytes_in_flight);
    return 2;
  }
  auto sender =
      stoker::BatchSender::connect({.receiver_address = args.connect,
                                    .mode = *mode,
                                    .name = args.name,
                                    .max_bytes_in_flight = *max_bytes_in_flight,
                                    .busy_poll = std::chrono::microseconds(args.busy_poll_us)});
  if (!sender.is_ok()) {
    spdlog::error("{}", sender.status().to_string());
    return 1;
  }
  auto& tx = **sender;
  const size_t max_size = *std::max_element(sizes.begin(), sizes.end());
  // From the host memory resource, as a worker's send arena is
  // (workers/send_arena.cc), and at least a huge page, as that arena is: a
  // 1 MiB buffer of its own would get small pages, which a receiver reading
  // it over shared memory (process_vm_readv) pins one by one.
  const size_t ring_bytes = max_size * (args.reuse_buffer ? 1 : args.buffers);
  constexpr size_t kHuge = stoker::kHugePageBytes;
  auto ring_buffer =
      stoker::host_memory_resource()->allocate((ring_bytes + kHuge - 1) / kHuge * kHuge);
  if (!ring_buffer.is_ok()) {
    spdlog::error("{}", ring_buffer.status().to_string());
    return 1;
  }
  const std::span<std::byte> ring(ring_buffer->data(), ring_bytes);
  if (Status st = tx.register_buffer(ring.data(), ring.size()); !st.is_ok()) {
    spdlog::warn("{} (sending without registration)", st.to_string());
  }
  std::vector<uint8_t> busy(args.buffers, 0);
  const stoker::perf::VerifyPattern pattern(args.verify ? max_size : 0);
  const auto timeout = std::chrono::milliseconds(args.timeout_ms);
  Status failure;

  for (size_t size : sizes) {
    std::vector<double> post_us;
    post_us.reserve(args.iterations);
    Clock::time_point start{};
    for (uint64_t i = 0; i < args.warmup + args.iterations && failure.is_ok(); ++i) {
      const bool measured = i >= args.warmup;
      if (i == args.warmup) {
        if (Status st = tx.flush(timeout); !st.is_ok()) {
          failure = st;
          break;
        }
        start = Clock::now();
      }
      // --reuse-buffer sends every batch from one buffer, in flight or not,
      // as ucx_perftest does: transport speed with a cache-hot source, no
      // meaningful contents or timestamps.
      const size_t b = args.reuse_buffer ? 0 : i % args.buffers;
      while (!args.reuse_buffer && busy[b] != 0 && failure.is_ok()) {
        if (Status st = tx.wait_for_completion(timeout); !st.is_ok()) failure = st;
      }
      if (!failure.is_ok()) break;
      std::byte* p = ring.data() + b * max_size;
      if (args.verify) pattern.fill(p, size, i);
      stoker::BatchDescriptor d;
      d.sequence = i;
      d.round = measured ? kMeasuredRound : kWarmupRound;
      d.payload_bytes = size;
      const uint64_t shape[] = {size};
      (void)d.add_tensor("data", stoker::DType::kUInt8, shape, 0);
      const uint64_t stamp = args.reuse_buffer ? 0 : now_ns();
      std::memcpy(p, &stamp, 8);
      busy[b] = 1;
      const auto posted = Clock::now();
      Status st = tx.post(
          d, {p, size},
          [&busy, b, &failure](const Status& s) {
            busy[b] = 0;
            if (!s.is_ok() && failure.is_ok()) failure = s;
          },
          timeout);
      if (!st.is_ok()) {
        failure = st;
        break;
      }
      if (measured) {
        post_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - posted).count());
      }
    }
    if (failure.is_ok()) failure = tx.flush(timeout);
    if (!failure.is_ok()) break;
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    const double bytes = static_cast<double>(size * args.iterations);
    fmt::print(
        "RESULT role=client tls={} mode={} busy_poll_us={} size={} iterations={} MBps={:.1f} "
        "GBps={:.3f} msg_per_s={:.0f} post_p50_us={:.1f} post_p99_us={:.1f}\n",
        tls_label(), stoker::push_mode_name(tx.mode()), args.busy_poll_us, size, args.iterations,
        bytes / seconds / kMiB, bytes / seconds / 1e9,
        static_cast<double>(args.iterations) / seconds, percentile(post_us, 0.50),
        percentile(post_us, 0.99));
    std::fflush(stdout);
  }
  if (!failure.is_ok()) {
    spdlog::error("{}", failure.to_string());
    return 1;
  }
  if (Status st = tx.close(timeout); !st.is_ok()) {
    spdlog::error("{}", st.to_string());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"stoker-perf: bandwidth and latency of stoker's batch data plane"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");

  ServerArgs server;
  auto* s = app.add_subcommand("server", "receive batches and report what landed");
  s->add_option("--listen", server.listen, "address to listen on (port 0: any)");
  s->add_option("--senders", server.senders, "exit after this many senders finished")
      ->check(CLI::PositiveNumber);
  s->add_option("--slot-bytes", server.slot_bytes, "landing slot size (64K, 4M, ...)");
  s->add_option("--slots", server.slots, "landing slots in the pool")->check(CLI::PositiveNumber);
  s->add_option("--credits", server.credits, "credits (window) per sender")
      ->check(CLI::PositiveNumber);
  s->add_option("--max-bytes-in-flight", server.max_bytes_in_flight,
                "bytes in flight to the receiver, shared by its senders (0: no limit)");
  s->add_option("--receiver-threads", server.receiver_threads,
                "progress threads receiving (senders are spread over them)")
      ->check(CLI::PositiveNumber);
  s->add_option("--busy-poll-us", server.busy_poll_us,
                "progress threads poll this long after the last event before sleeping "
                "(ReceiverOptions::busy_poll)")
      ->check(CLI::NonNegativeNumber);
  s->add_option("--memory", server.memory, "landing memory: host, pinned or device");
  s->add_flag("--verify", server.verify, "check every payload byte");
  s->add_flag("--private-pool", server.private_pool,
              "land host batches in private memory, not the default pool that senders on this "
              "host map (ReceiverOptions::landing_memory)");
  s->add_option("--port-file", server.port_file, "write the bound port here once listening");
  s->add_option("--idle-timeout-ms", server.idle_timeout_ms, "give up after this long idle");

  ClientArgs client;
  auto* c = app.add_subcommand("client", "send batches to a server");
  c->add_option("--connect", client.connect, "server host:port");
  c->add_option("--size", client.sizes, "message size(s), e.g. --size 64K 1M 4M");
  c->add_option("--iterations", client.iterations, "measured batches per size");
  c->add_option("--warmup", client.warmup, "unmeasured batches per size");
  c->add_option("--mode", client.mode, "push mode: am, put or auto (SlotReach decides)");
  c->add_option("--name", client.name, "name shown in the server's log");
  c->add_option("--buffers", client.buffers, "send buffers in the ring")
      ->check(CLI::PositiveNumber);
  c->add_option("--max-bytes-in-flight", client.max_bytes_in_flight,
                "start a batch only below this many bytes in flight (0: the receiver's share "
                "alone)");
  c->add_option("--busy-poll-us", client.busy_poll_us,
                "waits poll this long after the last event before sleeping "
                "(SenderOptions::busy_poll)")
      ->check(CLI::NonNegativeNumber);
  c->add_flag("--verify", client.verify, "fill payloads with the pattern server --verify checks");
  c->add_flag("--reuse-buffer", client.reuse_buffer,
              "send everything from one buffer, as ucx_perftest does (no latency, no --verify)")
      ->excludes("--verify");
  c->add_option("--timeout-ms", client.timeout_ms, "give up waiting for a credit after this long");

  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("[%H:%M:%S.%e] [%n] [%l] %v");
  return s->parsed() ? run_server(server) : run_client(client);
}
