#include "host/src/grpc_workarounds.h"

#include <chrono>

#include "grpc/health/v1/health.grpc.pb.h"

namespace polyplug::host {

void ConfigureServerChannel(grpc::ServerBuilder& builder, int max_message_bytes) {
  builder.SetMaxReceiveMessageSize(max_message_bytes);
  builder.SetMaxSendMessageSize(max_message_bytes);
  // Clients of long-lived streams send keepalive pings (polyplug's client every 30 s) to
  // notice a dead host; C-core's default would answer pings more often than every 5 min
  // on a quiet connection with GOAWAY "too_many_pings".
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // The host pings its clients too, so a client that vanished without closing its
  // connection (a dead machine, a cut network) is noticed within about 80 s and its
  // sessions' instances are destroyed. A closed socket (a killed process) is noticed at once.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20'000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
}

ExecutorKeepWarm::ExecutorKeepWarm(grpc::Server& server)
    : thread_([this, &server] { Run(server); }) {}

ExecutorKeepWarm::~ExecutorKeepWarm() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void ExecutorKeepWarm::Run(grpc::Server& server) {
  auto stub = grpc::health::v1::Health::NewStub(server.InProcessChannel(grpc::ChannelArguments()));
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::milliseconds(250), [this] { return stop_; })) {
    lock.unlock();
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    stub->Check(&context, request, &response);
    lock.lock();
  }
}

}  // namespace polyplug::host
