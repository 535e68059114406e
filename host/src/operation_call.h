// OperationCall: the call of a load, reload, unload or push, which may wait long for its
// turn (the operation worker, or an application's RunPendingOperations).
//
// A caller that gives up meanwhile gets its answer at once and the call's resources go,
// instead of at the operation's turn. Who finishes the call is decided once, through
// `state`, which the posted task shares and which outlives the reactor: the task
// (kClaimed: it runs the operation), the cancellation (kAbandoned: the task then touches
// nothing of the call), or, while the call is still being checked or received
// (kChecking), the reactor's own code that refuses it.
#ifndef POLYPLUG_HOST_SRC_OPERATION_CALL_H_
#define POLYPLUG_HOST_SRC_OPERATION_CALL_H_

#include <atomic>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"

namespace polyplug::host {

class OperationCall {
 public:
  enum State : int { kChecking, kWaiting, kClaimed, kAbandoned };

  virtual ~OperationCall() = default;

  const std::shared_ptr<std::atomic<int>>& state() const { return state_; }
  // The call waits for its turn from now on; `what` ("reload", ...) names it in messages.
  void Queue(std::string what) {
    what_ = std::move(what);
    int expected = kChecking;
    state_->compare_exchange_strong(expected, kWaiting);
  }
  // The posted task's claim: true when it, and nobody else, is to finish the call.
  static bool Claim(std::atomic<int>& state) {
    int expected = kWaiting;
    return state.compare_exchange_strong(expected, kClaimed);
  }
  // Finishes the call; exactly once, by whoever the state made its finisher.
  virtual void FinishCall(grpc::Status status) = 0;

 protected:
  // From the reactor's OnCancel: a call still waiting for its turn ends now.
  void AbandonIfWaiting() {
    int expected = kWaiting;
    if (!state_->compare_exchange_strong(expected, kAbandoned)) return;
    FinishCall(grpc::Status(grpc::StatusCode::CANCELLED,
                            absl::StrCat("the caller gave up before the ", what_,
                                         " started (its deadline passed, or it cancelled); it "
                                         "did not run")));
  }

 private:
  const std::shared_ptr<std::atomic<int>> state_ = std::make_shared<std::atomic<int>>(kChecking);
  std::string what_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_OPERATION_CALL_H_
