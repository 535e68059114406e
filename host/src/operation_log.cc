#include "host/src/operation_log.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "polyplug/core/error.h"

namespace polyplug::host {

OperationLog::OperationLog(size_t capacity) : capacity_(capacity) {}

absl::Status OperationLog::CheckRequestId(absl::string_view request_id) {
  bool printable = true;
  for (char c : request_id) printable = printable && c > ' ' && c < 0x7f;
  if (request_id.empty() || request_id.size() > kMaxRequestIdBytes || !printable) {
    return core::MakeError(
        core::ErrorReason::kInvalidArgument,
        absl::StrCat("field 'request_id' must be 1 to ", kMaxRequestIdBytes,
                     " printable ASCII characters without spaces (e.g. a UUID, or the CI job's "
                     "id and step)"));
  }
  return absl::OkStatus();
}

OperationLog::Admission OperationLog::Admit(const std::string& request_id, absl::string_view method,
                                            const std::string& fingerprint, LoggedOperation* seen) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = slots_.try_emplace(request_id);
  if (!inserted) {
    *seen = it->second.operation;
    return it->second.operation.method == method && it->second.operation.fingerprint == fingerprint
               ? Admission::kDuplicate
               : Admission::kConflict;
  }
  LoggedOperation& op = it->second.operation;
  op.request_id = request_id;
  op.method = std::string(method);
  op.fingerprint = fingerprint;
  op.started = absl::Now();
  return Admission::kNew;
}

void OperationLog::Finish(const std::string& request_id, grpc::Status status,
                          std::string response) {
  std::vector<std::function<void(const LoggedOperation&)>> waiters;
  LoggedOperation done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = slots_.find(request_id);
    if (it == slots_.end() || it->second.operation.done) return;
    LoggedOperation& op = it->second.operation;
    op.done = true;
    op.status = std::move(status);
    op.response = std::move(response);
    op.finished = absl::Now();
    waiters.swap(it->second.waiters);
    done = op;
    finished_order_.push_back(request_id);
    TrimLocked();
  }
  for (auto& waiter : waiters) waiter(done);
}

void OperationLog::Forget(const std::string& request_id, const grpc::Status& status) {
  std::vector<std::function<void(const LoggedOperation&)>> waiters;
  LoggedOperation forgotten;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = slots_.find(request_id);
    if (it == slots_.end() || it->second.operation.done) return;
    waiters.swap(it->second.waiters);
    forgotten = std::move(it->second.operation);
    slots_.erase(it);
  }
  forgotten.done = true;
  forgotten.status = status;
  for (auto& waiter : waiters) waiter(forgotten);
}

bool OperationLog::Await(const std::string& request_id,
                         std::function<void(const LoggedOperation&)> done) {
  LoggedOperation finished;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = slots_.find(request_id);
    if (it == slots_.end()) return false;
    if (!it->second.operation.done) {
      it->second.waiters.push_back(std::move(done));
      return true;
    }
    finished = it->second.operation;
  }
  done(finished);
  return true;
}

bool OperationLog::Find(const std::string& request_id, LoggedOperation* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = slots_.find(request_id);
  if (it == slots_.end()) return false;
  *out = it->second.operation;
  return true;
}

void OperationLog::TrimLocked() {
  while (finished_order_.size() > capacity_) {
    slots_.erase(finished_order_.front());
    finished_order_.pop_front();
  }
}

}  // namespace polyplug::host
