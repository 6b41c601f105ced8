// Clean shutdown of daemons on SIGTERM/SIGINT: the signals are blocked in
// every thread (call block_shutdown_signals() first thing in main, before any
// thread starts) and the main thread waits for one with sigwait, then stops
// the service in order. No async-signal-unsafe handler ever runs.
#pragma once

#include <chrono>
#include <optional>

namespace stoker {

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and every thread it starts later.
void block_shutdown_signals();

// True once one of them has arrived. It stays pending, for
// wait_for_shutdown_signal() to take: a daemon still starting up (retrying a
// peer, say) looks here to give up promptly.
bool shutdown_signal_pending();

// Waits for one of them (at most `timeout`, if given). Returns the signal
// number, or nullopt on timeout.
std::optional<int> wait_for_shutdown_signal(
    std::optional<std::chrono::milliseconds> timeout = std::nullopt);

}  // namespace stoker
