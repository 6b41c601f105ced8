// SendArena: first-fit allocation with coalescing over one host buffer, and
// the tenants' reserves.
#include "workers/send_arena.h"

#include <fmt/format.h>

namespace stoker::workers {
namespace {

constexpr uint64_t kOffsetMask = SendArena::kMaxBytes - 1;

uint64_t token_of(uint32_t tenant, size_t offset) {
  return (uint64_t{tenant} << SendArena::kOffsetBits) | offset;
}

}  // namespace

Result<std::unique_ptr<SendArena>> SendArena::create(size_t bytes) {
  constexpr size_t kPage = 4096;
  if (bytes < kPage) {
    return invalid_argument(fmt::format("a memory budget of {} bytes is below one page", bytes));
  }
  if (bytes > kMaxBytes) {
    return invalid_argument(fmt::format(
        "a memory budget of {} bytes is above the most a worker takes, {}", bytes, kMaxBytes));
  }
  bytes = (bytes + kPage - 1) / kPage * kPage;
  STOKER_ASSIGN_OR_RETURN(auto buffer, host_memory_resource()->allocate(bytes));
  return std::unique_ptr<SendArena>(new SendArena(std::move(buffer)));
}

SendArena::SendArena(Buffer buffer) : buffer_(std::move(buffer)) { free_[0] = buffer_.size(); }

std::unique_ptr<SendArena::Tenant> SendArena::join(size_t reserve) {
  std::lock_guard lock(mu_);
  const uint32_t id = next_tenant_++;
  tenants_[id] = Account{.reserve = std::min(reserve, buffer_.size())};
  return std::unique_ptr<Tenant>(new Tenant(*this, id));
}

void SendArena::leave(uint32_t tenant) {
  {
    std::lock_guard lock(mu_);
    auto it = tenants_.find(tenant);
    if (it == tenants_.end()) return;
    if (it->second.in_use == 0) {
      tenants_.erase(it);
    } else {
      it->second.joined = false;
    }
  }
  freed_.notify_all();  // its reserve is no longer kept
}

bool SendArena::leaves_the_reserves_locked(uint32_t tenant, size_t want) const {
  size_t reserves = 0;
  for (const auto& [id, account] : tenants_) {
    if (account.joined) reserves += account.reserve;
  }
  // Reserves that add up to more than the arena are scaled down alike.
  const double scale = reserves > buffer_.size()
                           ? static_cast<double>(buffer_.size()) / static_cast<double>(reserves)
                           : 1.0;
  const auto reserve_of = [&](const Account& a) {
    return static_cast<size_t>(static_cast<double>(a.reserve) * scale);
  };
  const Account& mine = tenants_.at(tenant);
  // Within its own reserve a tenant may always take what fits: memory that
  // others must leave it.
  if (mine.in_use + want <= reserve_of(mine)) return true;
  size_t owed = 0;  // what tenants below their reserve are still owed
  for (const auto& [id, account] : tenants_) {
    if (id == tenant || !account.joined) continue;
    owed += reserve_of(account) - std::min(account.in_use, reserve_of(account));
  }
  const size_t free = buffer_.size() - in_use_;
  return free >= want && free - want >= owed;
}

Result<pipeline::SendBuffer> SendArena::acquire(uint32_t tenant, size_t bytes,
                                                const std::atomic<bool>& cancel,
                                                const std::function<size_t()>& limit) {
  const size_t want = std::max(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
  if (want > buffer_.size()) {
    return resource_exhausted(
        fmt::format("a {}-byte batch cannot fit the {}-byte memory budget (--memory-budget)", bytes,
                    buffer_.size()));
  }
  std::unique_lock lock(mu_);
  bool waited = false;
  while (true) {
    if (cancel.load()) return cancelled("the task is stopping");
    const size_t end = limit ? limit() : buffer_.size();
    if (leaves_the_reserves_locked(tenant, want)) {
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        if (it->first + want > end) break;  // free_ is by offset: none further fits
        if (it->second < want) continue;
        const size_t offset = it->first;
        const size_t rest = it->second - want;
        free_.erase(it);
        if (rest > 0) free_[offset + want] = rest;
        in_use_ += want;
        peak_ = std::max(peak_, in_use_);
        tenants_.at(tenant).in_use += want;
        return pipeline::SendBuffer(std::span(buffer_.data() + offset, want), this,
                                    token_of(tenant, offset));
      }
    }
    if (!waited) {
      waited = true;
      ++waits_;
    }
    // Bounded waits: a cancellation is noticed even if no buffer is freed.
    freed_.wait_for(lock, std::chrono::milliseconds(50));
  }
}

void SendArena::release_send_buffer(std::span<std::byte> bytes, uint64_t token) noexcept {
  {
    std::lock_guard lock(mu_);
    size_t offset = token & kOffsetMask;
    size_t length = bytes.size();
    in_use_ -= length;
    if (auto t = tenants_.find(static_cast<uint32_t>(token >> kOffsetBits)); t != tenants_.end()) {
      t->second.in_use -= length;
      if (!t->second.joined && t->second.in_use == 0) tenants_.erase(t);
    }
    auto next = free_.lower_bound(offset);
    if (next != free_.end() && next->first == offset + length) {
      length += next->second;
      next = free_.erase(next);
    }
    if (next != free_.begin()) {
      if (auto prev = std::prev(next); prev->first + prev->second == offset) {
        prev->second += length;
        length = 0;
      }
    }
    if (length > 0) free_[offset] = length;
  }
  freed_.notify_all();
}

void SendArena::wake() {
  // Under the lock: a waiter between its attempt and its wait is not missed.
  std::lock_guard lock(mu_);
  freed_.notify_all();
}

size_t SendArena::bytes_in_use() const {
  std::lock_guard lock(mu_);
  return in_use_;
}
size_t SendArena::peak_bytes_in_use() const {
  std::lock_guard lock(mu_);
  return peak_;
}
uint64_t SendArena::waits() const {
  std::lock_guard lock(mu_);
  return waits_;
}

size_t SendArena::Tenant::bytes_in_use() const {
  std::lock_guard lock(arena_.mu_);
  return arena_.tenants_.at(id_).in_use;
}

}  // namespace stoker::workers
