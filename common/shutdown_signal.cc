// sigwait-based shutdown signal handling.
#include "common/shutdown_signal.h"

#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <ctime>

namespace stoker {
namespace {

sigset_t shutdown_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  return set;
}

}  // namespace

void block_shutdown_signals() {
  const sigset_t set = shutdown_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

bool shutdown_signal_pending() {
  const sigset_t set = shutdown_set();
  sigset_t pending;
  if (sigpending(&pending) != 0) return false;
  for (int signal : {SIGTERM, SIGINT, SIGHUP}) {
    if (sigismember(&set, signal) == 1 && sigismember(&pending, signal) == 1) return true;
  }
  return false;
}

std::optional<int> wait_for_shutdown_signal(std::optional<std::chrono::milliseconds> timeout) {
  const sigset_t set = shutdown_set();
  while (true) {
    int rc;
    if (timeout) {
      const auto secs = std::chrono::duration_cast<std::chrono::seconds>(*timeout);
      const auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(*timeout - secs);
      const timespec ts{static_cast<time_t>(secs.count()), static_cast<long>(nanos.count())};
      rc = sigtimedwait(&set, nullptr, &ts);
    } else {
      rc = sigwaitinfo(&set, nullptr);
    }
    if (rc > 0) return rc;
    if (errno == EAGAIN) return std::nullopt;
    // EINTR: another signal interrupted the wait; wait again.
  }
}

}  // namespace stoker
