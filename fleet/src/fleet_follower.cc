#include "fleet/src/fleet_follower.h"

#include <vector>

namespace polyplug::fleet {

absl::Status FleetFollower::Start() {
  auto read = etcd_.GetPrefix(keys_.root());
  if (!read.ok()) return read.status();
  {
    std::lock_guard<std::mutex> lock(mu_);
    state_.Reset(*read);
  }
  WatchHandler handler;
  handler.on_events = [this](const std::vector<WatchEvent>& events, int64_t) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const WatchEvent& e : events) state_.Apply(e);
    ++changes_;
    cv_.notify_all();
  };
  handler.on_compacted = [this] {
    auto again = etcd_.GetPrefix(keys_.root());
    std::lock_guard<std::mutex> lock(mu_);
    if (!again.ok()) return state_.revision();  // resumes there; compacted again: retried
    state_.Reset(*again);
    ++changes_;
    cv_.notify_all();
    return again->revision;
  };
  watch_ = etcd_.WatchPrefix(keys_.root(), read->revision + 1, std::move(handler));
  return absl::OkStatus();
}

bool FleetFollower::WaitUntil(absl::Time deadline,
                              const std::function<bool(const FleetState&)>& done) {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (done(state_)) return true;
    const uint64_t seen = changes_;
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    cv_.wait_for(lock, absl::ToChronoNanoseconds(left), [&] { return changes_ != seen; });
  }
}

void FleetFollower::Read(const std::function<void(const FleetState&)>& read) {
  std::lock_guard<std::mutex> lock(mu_);
  read(state_);
}

}  // namespace polyplug::fleet
