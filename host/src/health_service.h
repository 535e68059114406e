// HealthService: grpc.health.v1.Health built from the generated health.proto, so that
// reflection can describe it (gRPC's EnableDefaultHealthCheckService is upb-based and
// invisible to reflection, grpc/grpc#36665) and grpcurl can call it without .proto files.
#ifndef POLYPLUG_HOST_SRC_HEALTH_SERVICE_H_
#define POLYPLUG_HOST_SRC_HEALTH_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"

namespace polyplug::host {

// The health protocol (grpc/doc/health-checking.md) over a table of service names: "" is
// the host as a whole, other names are whatever the host registers (one per bundle).
// A name is unknown until SetStatus() and again after Clear(); "" starts NOT_SERVING
// ("starting") until the host sets it.
//
//   Check: the name's status; NOT_FOUND for an unknown name.
//   Watch: the current status at once (SERVICE_UNKNOWN for an unknown name), then every
//          change. Changes coalesce per stream: at most one write is in flight and only the
//          latest status waits behind it, so a slow client gets the newest status, never a
//          backlog, and never the same status twice in a row. Setting a status a name
//          already has is no change.
//   Names longer than kMaxServiceNameBytes are INVALID_ARGUMENT.
//
// SetStatus/Clear/Shutdown are thread-safe and cheap: they update the table under a short
// lock and queue the change on each watcher outside it; they never wait for a client.
// Reactions never block: they only take short locks that no one holds across a wait.
//
// Lifetime: register with a grpc::ServerBuilder; destroy only after that grpc::Server has
// shut down (Server::Shutdown returns after every Watch stream's OnDone).
class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  static constexpr size_t kMaxServiceNameBytes = 1024;

  HealthService();
  ~HealthService() override;
  HealthService(const HealthService&) = delete;
  HealthService& operator=(const HealthService&) = delete;

  // SERVING or NOT_SERVING for `service` ("" = the host). After Shutdown() every status
  // set is NOT_SERVING, as in gRPC's default health service.
  void SetStatus(const std::string& service, bool serving);
  // Makes `service` unknown again: Check gives NOT_FOUND, watchers get SERVICE_UNKNOWN.
  void Clear(const std::string& service);
  // Call when the host starts shutting down, before grpc::Server::Shutdown: every known
  // name becomes NOT_SERVING, and every Watch stream gets that change (if it is one; an
  // unknown name stays SERVICE_UNKNOWN) and then ends with OK, so that server shutdown does
  // not wait for watchers. A Watch started later gets the current status and ends the same
  // way. Check keeps answering. Idempotent. (gRPC's default service only sets NOT_SERVING and
  // leaves its watchers to be cancelled by server shutdown.)
  void Shutdown();

  // Open Watch streams (registered in the handler, removed in OnDone).
  size_t watch_count() const;
  // Blocks until watch_count() == `count` or `timeout` passes; true if reached. Lets tests
  // and shutdown diagnostics wait for stream cleanup without polling.
  bool WaitForWatchCount(size_t count, std::chrono::milliseconds timeout) const;

  // grpc.health.v1.Health.
  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::health::v1::HealthCheckResponse* response) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* context,
      const grpc::health::v1::HealthCheckRequest* request) override;

 private:
  class Watcher;
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

  struct Entry {
    std::optional<ServingStatus> status;  // SERVING or NOT_SERVING; nullopt = unknown
    std::vector<std::shared_ptr<Watcher>> watchers;
  };

  // Sets `service` to `status` (nullopt: unknown) and queues the change on its watchers.
  void Update(const std::string& service, std::optional<ServingStatus> status);
  // Removes `watcher` (from its OnDone) and returns the table's reference to it, so that
  // the caller decides when it is destroyed.
  std::shared_ptr<Watcher> Unregister(const std::string& service, const Watcher* watcher);

  mutable std::mutex mu_;
  mutable std::condition_variable watch_count_changed_;
  // Entries exist while a name has a status or a watcher.
  std::unordered_map<std::string, Entry> entries_;
  // Incremented on every change; lets a watcher drop a change that was overtaken by a newer
  // one queued from another thread (changes are queued outside mu_).
  uint64_t version_ = 0;
  size_t watch_count_ = 0;
  bool shutdown_ = false;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_HEALTH_SERVICE_H_
