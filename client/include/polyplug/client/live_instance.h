// LiveInstance: a remote instance of a contract that survives reloads of its provider.
#ifndef POLYPLUG_CLIENT_LIVE_INSTANCE_H_
#define POLYPLUG_CLIENT_LIVE_INSTANCE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "polyplug/client/tracked_contract.h"
#include "polyplug/host/v1/host.pb.h"

namespace polyplug::client {

struct CallOptions;

// A LiveInstance made its instance again: the previous instance, and whatever state the
// calls before left in it, is gone; the new one starts from its args.
struct InstanceRecreated {
  uint64_t generation = 0;         // of the new instance: 2 for the first re-creation
  host::v1::InstanceRef previous;  // the instance that went away
  host::v1::InstanceRef instance;  // the one made instead
};

struct LiveInstanceOptions {
  // Called after each re-creation (not for the first instance), one call at a time, in
  // generation order, on the HostClient's tracking thread (re-creations after a reload) or
  // on a thread calling Invoke. It may call this LiveInstance (e.g. to restore state); it
  // must not destroy it.
  std::function<void(const InstanceRecreated&)> on_recreated;
};

// Which instance answered a LiveInstance call.
struct LiveCallInfo {
  // The answering instance's generation: 1 for the first instance made, then + 1 each time
  // it was made again.
  uint64_t generation = 0;
  // The instance was made again since the last successful call through this LiveInstance
  // returned, so what that call left in it is gone. False for the first call.
  bool recreated = false;
};

// Made by HostClient::MakeLiveInstance. The instance is created on the first Invoke; when a
// reload destroys it (the host does so at PREPARING) it is made again with the same args,
// eagerly after the reload, and an Invoke that meets the destroyed one makes it again and
// retries (the host holds the new instance back until the reload ended). A caller that
// keeps calling through reloads sees the old version's answers, then the new version's,
// and no error. Every instance made after the first is a re-creation: the state the
// previous one held is gone. recreations(), LiveInstanceOptions::on_recreated and the
// LiveCallInfo of a call say so. Thread-safe. Not copyable.
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
  // As above, and on success sets `*info` (if not null) to which instance answered.
  absl::StatusOr<host::v1::InvokeResponse> Invoke(absl::string_view method,
                                                  absl::string_view request,
                                                  const CallOptions& call, LiveCallInfo* info);
  // The instance in use, if one was made and not destroyed since.
  std::optional<host::v1::InstanceRef> instance() const;
  // How many instances were made so far (1 + the times it was made again): the generation
  // of the newest one.
  uint64_t instances_made() const;
  // How many times the instance was made again (its state started over): after a reload,
  // a host restart, a lost lease, or an unload followed by a load.
  uint64_t recreations() const;

  struct State;  // shared with the tracking callback

 private:
  friend class HostClient;
  LiveInstance(std::shared_ptr<State> state, std::unique_ptr<TrackedContract> tracked);

  std::shared_ptr<State> state_;
  std::unique_ptr<TrackedContract> tracked_;
};

}  // namespace polyplug::client

#endif  // POLYPLUG_CLIENT_LIVE_INSTANCE_H_
