#include "polyplugctl/watch_end.h"

#include <pthread.h>
#include <signal.h>

#include <cstdlib>
#include <thread>
#include <utility>

namespace polyplug::ctl {

void WatchEnd::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  watching_ = true;
}

void WatchEnd::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  watching_ = false;
}

void WatchEnd::Finish(int code) {
  std::lock_guard<std::mutex> lock(mu_);
  FinishLocked(code);
}

void WatchEnd::FinishLocked(int code) {
  if (code_) return;
  code_ = code;
  done_.notify_all();
}

bool WatchEnd::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return code_.has_value();
}

std::optional<int> WatchEnd::Wait(std::optional<absl::Duration> timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (timeout) {
    if (!done_.wait_for(lock, absl::ToChronoNanoseconds(*timeout),
                        [this] { return code_.has_value(); })) {
      return std::nullopt;
    }
  } else {
    done_.wait(lock, [this] { return code_.has_value(); });
  }
  return code_;
}

bool WatchEnd::TakeSignal(int signal_number) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!watching_ || signal_taken_) return false;
  signal_taken_ = true;
  FinishLocked(128 + signal_number);
  return true;
}

void HandleStopSignals(std::shared_ptr<WatchEnd> watch_end) {
  // Blocked before any thread starts, so only the waiter gets them. SIGPIPE keeps its
  // default, so that `polyplugctl watch | head -1` ends when head does (gRPC's sockets never
  // raise it).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::thread([stop_signals, watch_end = std::move(watch_end)] {
    while (true) {
      int signal_number = 0;
      if (sigwait(&stop_signals, &signal_number) != 0) continue;
      if (!watch_end->TakeSignal(signal_number)) std::_Exit(128 + signal_number);
    }
  }).detach();
}

}  // namespace polyplug::ctl
