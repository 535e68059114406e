#include "core/src/read_epoch.h"

#include <functional>
#include <thread>

namespace polyplug::core {
namespace {

// Spreads readers over stripes so that concurrent readers rarely share a cache line.
int StripeOfThisThread() {
  thread_local const int stripe =
      static_cast<int>(std::hash<std::thread::id>{}(std::this_thread::get_id()) % 16);
  return stripe;
}

}  // namespace

ReadPin::~ReadPin() {
  if (counter_ != nullptr) counter_->fetch_sub(1, std::memory_order_release);
}

ReadPin ReadEpoch::Enter() const {
  const int stripe = StripeOfThisThread();
  for (;;) {
    uint64_t e = epoch_.load(std::memory_order_seq_cst);
    std::atomic<int64_t>& counter = readers_[e & 1][stripe].value;
    counter.fetch_add(1, std::memory_order_seq_cst);
    // If a writer flipped the epoch meanwhile, it may already have drained this parity:
    // back out and enter under the new one.
    if (epoch_.load(std::memory_order_seq_cst) == e) return ReadPin(&counter);
    counter.fetch_sub(1, std::memory_order_seq_cst);
  }
}

void ReadEpoch::Synchronize() {
  const uint64_t old = epoch_.fetch_add(1, std::memory_order_seq_cst);
  auto& stripes = readers_[old & 1];
  for (;;) {
    int64_t active = 0;
    for (const Counter& c : stripes) active += c.value.load(std::memory_order_acquire);
    if (active == 0) return;
    std::this_thread::yield();
  }
}

}  // namespace polyplug::core
