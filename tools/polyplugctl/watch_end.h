// WatchEnd: how `polyplugctl watch` ends, and what SIGINT and SIGTERM do meanwhile.
//
// A watch ends by itself (--count, --until-terminal, a lost stream), by --timeout, or by
// the first SIGINT or SIGTERM that arrives while it runs; that signal's exit code is
// 128 + its number (130, 143). Any other such signal, during any other command or a second
// one during a watch, ends the process at once with that code.
#ifndef POLYPLUG_TOOLS_POLYPLUGCTL_WATCH_END_H_
#define POLYPLUG_TOOLS_POLYPLUGCTL_WATCH_END_H_

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>

#include "absl/time/time.h"

namespace polyplug::ctl {

// The end of the process's one watch, shared by the command that waits for it, the
// subscription thread that ends it, and the thread that takes stop signals. Thread-safe.
class WatchEnd {
 public:
  WatchEnd() = default;
  WatchEnd(const WatchEnd&) = delete;
  WatchEnd& operator=(const WatchEnd&) = delete;

  // The watch runs: from now until Stop(), the first stop signal ends it rather than the
  // process.
  void Start();
  // The watch has returned: stop signals end the process again.
  void Stop();

  // Ends the watch with exit code `code`, unless it has ended already: the first code wins.
  void Finish(int code);
  // Whether Finish() was called.
  bool finished() const;
  // Waits for Finish() and returns its code; with a `timeout`, nullopt once that passed
  // first.
  std::optional<int> Wait(std::optional<absl::Duration> timeout);

  // Called by the signal thread with SIGINT or SIGTERM. True when the signal ends the
  // running watch (Finish(128 + signal_number)), which only the first signal between
  // Start() and Stop() does. False when it must end the process.
  bool TakeSignal(int signal_number);

 private:
  void FinishLocked(int code);  // Finish(), with mu_ held

  mutable std::mutex mu_;
  std::condition_variable done_;
  bool watching_ = false;      // between Start() and Stop()
  bool signal_taken_ = false;  // TakeSignal() returned true once
  std::optional<int> code_;    // set by the first Finish()
};

// Makes SIGINT and SIGTERM behave as the file comment says. Blocks them in the calling
// thread and starts a detached thread that waits for them (sigwait). Call it from main()
// before any other thread starts, so that every thread inherits the mask and only that
// thread receives them. The thread shares `watch_end`, which so outlives main(): a signal
// that arrives while the process exits finds it alive. SIGPIPE keeps its default.
void HandleStopSignals(std::shared_ptr<WatchEnd> watch_end);

}  // namespace polyplug::ctl

#endif  // POLYPLUG_TOOLS_POLYPLUGCTL_WATCH_END_H_
