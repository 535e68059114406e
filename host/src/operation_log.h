// OperationLog: the recent loads, reloads, unloads and pushes that carried a client-chosen
// request_id, with their outcomes.
//
// A retry with the same id gets the first outcome instead of running the operation again
// (or waits for it while it runs); the same id with another request is refused; a client
// that lost its response (a deadline, a dropped connection) asks GetOperation. The log is
// in memory: a restarted host (a new epoch) remembers nothing.
#ifndef POLYPLUG_HOST_SRC_OPERATION_LOG_H_
#define POLYPLUG_HOST_SRC_OPERATION_LOG_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace polyplug::host {

// One operation as remembered.
struct LoggedOperation {
  std::string request_id;
  std::string method;       // "Reload", "LoadBundle", "UnloadBundle", "PushBundle"
  std::string fingerprint;  // what the request asked, to tell a retry from a reuse
  bool done = false;
  grpc::Status status;   // done: the call's status
  std::string response;  // done and OK: the serialised response message
  absl::Time started;
  absl::Time finished;
};

class OperationLog {
 public:
  // Keeps at most `capacity` finished operations (the oldest go first); running ones are
  // always kept.
  explicit OperationLog(size_t capacity = 1024);

  // Longest request_id accepted.
  static constexpr size_t kMaxRequestIdBytes = 128;
  // INVALID_ARGUMENT unless `request_id` is 1..128 printable ASCII characters.
  static absl::Status CheckRequestId(absl::string_view request_id);

  enum class Admission {
    kNew,        // not seen: it is recorded as running; the caller runs it, then Finish()es
    kDuplicate,  // seen with the same request: the caller Await()s its outcome
    kConflict,   // seen with another request (REQUEST_ID_REUSED)
  };
  Admission Admit(const std::string& request_id, absl::string_view method,
                  const std::string& fingerprint, LoggedOperation* seen);

  // The operation's outcome; wakes its waiters.
  void Finish(const std::string& request_id, grpc::Status status, std::string response);
  // The operation did not run (its caller gave up while it waited, or the host stopped):
  // it is forgotten, so that a retry runs it; its waiters get `status`.
  void Forget(const std::string& request_id, const grpc::Status& status);

  // Calls `done` with the operation once it is finished: at once (on this thread) if it is,
  // else on the thread that finishes it. False when no operation has that id.
  bool Await(const std::string& request_id, std::function<void(const LoggedOperation&)> done);

  // A copy of what is remembered of `request_id`; false when nothing is.
  bool Find(const std::string& request_id, LoggedOperation* out) const;

 private:
  struct Slot {
    LoggedOperation operation;
    std::vector<std::function<void(const LoggedOperation&)>> waiters;
  };
  void TrimLocked();

  const size_t capacity_;
  mutable std::mutex mu_;
  std::map<std::string, Slot> slots_;
  std::deque<std::string> finished_order_;  // oldest first
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_OPERATION_LOG_H_
