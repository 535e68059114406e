#include "polyplug/core/event_journal.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "polyplug/core/error.h"

namespace polyplug::core {

absl::string_view PhaseName(Phase phase) {
  switch (phase) {
    case Phase::kPreparing:
      return "PREPARING";
    case Phase::kReloaded:
      return "RELOADED";
    case Phase::kFailed:
      return "FAILED";
    case Phase::kUnloading:
      return "UNLOADING";
    case Phase::kLoaded:
      return "LOADED";
  }
  return "UNKNOWN";
}

EventJournal::EventJournal(uint64_t host_epoch, size_t capacity)
    : host_epoch_(host_epoch), capacity_(capacity == 0 ? 1 : capacity) {}

PhaseEvent EventJournal::Append(PhaseEvent event) {
  event.host_epoch = host_epoch_;
  if (event.timestamp_unix_nanos == 0) event.timestamp_unix_nanos = absl::GetCurrentTimeNanos();
  {
    std::lock_guard<std::mutex> lock(mu_);
    event.seq = next_seq_++;
    ring_.push_back(event);
    while (ring_.size() > capacity_) ring_.pop_front();
  }
  appended_.notify_all();
  std::vector<std::shared_ptr<Listener>> listeners;
  {
    std::lock_guard<std::mutex> lock(listeners_mu_);
    listeners.reserve(listeners_.size());
    for (const auto& [id, listener] : listeners_) listeners.push_back(listener);
  }
  for (const auto& listener : listeners) (*listener)(event);
  return event;
}

uint64_t EventJournal::last_seq() const {
  std::lock_guard<std::mutex> lock(mu_);
  return next_seq_ - 1;
}

uint64_t EventJournal::earliest_seq() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ring_.empty() ? 0 : ring_.front().seq;
}

absl::StatusOr<std::vector<PhaseEvent>> EventJournal::ReadAfter(uint64_t after_seq,
                                                                size_t max_events) const {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t last = next_seq_ - 1;
  if (after_seq > last) {
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat("cursor seq ", after_seq, " is ahead of the journal (last seq ",
                                  last, ", epoch ", host_epoch_, ")"));
  }
  std::vector<PhaseEvent> out;
  if (after_seq == last) return out;
  const uint64_t earliest = ring_.front().seq;
  if (after_seq + 1 < earliest) {
    return MakeError(
        ErrorReason::kCursorOutOfRange,
        absl::StrCat("events after seq ", after_seq, " fell out of the journal (capacity ",
                     capacity_, "); the earliest available seq is ", earliest, " (epoch ",
                     host_epoch_, ")"));
  }
  for (size_t i = after_seq + 1 - earliest; i < ring_.size() && out.size() < max_events; ++i) {
    out.push_back(ring_[i]);
  }
  return out;
}

bool EventJournal::AwaitAfter(uint64_t after_seq, absl::Duration timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return appended_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                            [&] { return next_seq_ - 1 > after_seq; });
}

EventJournal::ListenerId EventJournal::AddListener(Listener listener) {
  std::lock_guard<std::mutex> lock(listeners_mu_);
  ListenerId id = next_listener_id_++;
  listeners_[id] = std::make_shared<Listener>(std::move(listener));
  return id;
}

void EventJournal::RemoveListener(ListenerId id) {
  std::lock_guard<std::mutex> lock(listeners_mu_);
  listeners_.erase(id);
}

}  // namespace polyplug::core
