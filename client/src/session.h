// Session: a connection's lease on the remote instances it makes.
//
// One OpenSession stream per Connection, opened on first use and again after it ended
// (the host restarted, the connection broke). The host destroys the instances made under
// a session when its stream ends, so the instances of a client that dies or disconnects
// do not outlive it.
#ifndef POLYPLUG_CLIENT_SRC_SESSION_H_
#define POLYPLUG_CLIENT_SRC_SESSION_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "absl/status/statusor.h"
#include "polyplug/client/host_client.h"
#include "polyplug/host/v1/host.pb.h"

namespace polyplug::client::internal {

struct Connection;

// Thread-safe.
class Session {
 public:
  // `connection` must outlive this (a Connection owns its Session).
  explicit Session(const Connection& connection);
  // Ends the stream (the host then destroys the session's instances) and waits for it.
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // The id of the open session; opens one first if there is none, within the call's
  // deadline.
  absl::StatusOr<uint64_t> Id(const CallOptions& call);
  // The host said session `id` is not open: the next Id() opens another.
  void Forget(uint64_t id);

 private:
  class Stream;
  const Connection& connection_;
  std::mutex mu_;
  std::shared_ptr<Stream> stream_;  // guarded by mu_
};

// CreateInstance under the connection's session (its session_id is set here), retried
// once in a new session when the host says the one it got had just ended.
absl::StatusOr<host::v1::InstanceRef> CreateLeasedInstance(const Connection& connection,
                                                           host::v1::CreateInstanceRequest request,
                                                           const CallOptions& call);

}  // namespace polyplug::client::internal

#endif  // POLYPLUG_CLIENT_SRC_SESSION_H_
