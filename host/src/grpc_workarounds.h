// What the host does about gRPC 1.51's server defaults (docs/PERFORMANCE.md and
// shared performance notes): the channel arguments for long-lived streams, and a thread
// that keeps the callback executor awake.
#ifndef POLYPLUG_HOST_SRC_GRPC_WORKAROUNDS_H_
#define POLYPLUG_HOST_SRC_GRPC_WORKAROUNDS_H_

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <mutex>
#include <thread>

namespace polyplug::host {

// Message size limits and the keepalive policy: clients of long-lived streams ping, the
// host accepts their pings and pings them back (see the .cc for each value's reason).
void ConfigureServerChannel(grpc::ServerBuilder& builder, int max_message_bytes);

// gRPC 1.51's callback server drains its completion queue with two threads that sleep
// 100 ms after a second without events, so the first call after an idle spell can wait
// that long. An in-process health check every 250 ms keeps them awake for the cost of a
// few microseconds. The server must serve grpc.health.v1.Health and outlive this object.
class ExecutorKeepWarm {
 public:
  explicit ExecutorKeepWarm(grpc::Server& server);  // starts the thread
  ~ExecutorKeepWarm();                              // stops and joins it

  ExecutorKeepWarm(const ExecutorKeepWarm&) = delete;
  ExecutorKeepWarm& operator=(const ExecutorKeepWarm&) = delete;

 private:
  void Run(grpc::Server& server);

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_GRPC_WORKAROUNDS_H_
