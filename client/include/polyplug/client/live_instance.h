// LiveInstance: a remote instance of a contract that survives reloads of its provider.
#ifndef POLYPLUG_CLIENT_LIVE_INSTANCE_H_
#define POLYPLUG_CLIENT_LIVE_INSTANCE_H_

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "polyplug/client/tracked_contract.h"
#include "polyplug/host/v1/host.pb.h"

namespace polyplug::client {

struct CallOptions;

// Made by HostClient::MakeLiveInstance. The instance is created on the first Invoke; when a
// reload destroys it (the host does so at PREPARING) it is made again with the same args,
// eagerly after the reload, and an Invoke that meets the destroyed one makes it again and
// retries (the host holds the new instance back until the reload ended). A caller that
// keeps calling through reloads sees the old version's answers, then the new version's,
// and no error. Thread-safe. Not copyable.
class LiveInstance {
 public:
  // Stops following reloads and destroys the remote instance (best effort, at most a few
  // seconds against a host that does not answer).
  ~LiveInstance();
  LiveInstance(const LiveInstance&) = delete;
  LiveInstance& operator=(const LiveInstance&) = delete;

  absl::StatusOr<host::v1::InvokeResponse> Invoke(absl::string_view method,
                                                  absl::string_view request,
                                                  const CallOptions& call);
  absl::StatusOr<host::v1::InvokeResponse> Invoke(absl::string_view method,
                                                  absl::string_view request);
  // The instance in use, if one was made and not destroyed since.
  std::optional<host::v1::InstanceRef> instance() const;
  // How many instances were made so far (1 + the times it was made again).
  uint64_t instances_made() const;

  struct State;  // shared with the tracking callback

 private:
  friend class HostClient;
  LiveInstance(std::shared_ptr<State> state, std::unique_ptr<TrackedContract> tracked);

  std::shared_ptr<State> state_;
  std::unique_ptr<TrackedContract> tracked_;
};

}  // namespace polyplug::client

#endif  // POLYPLUG_CLIENT_LIVE_INSTANCE_H_
