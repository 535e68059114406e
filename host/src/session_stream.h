// SessionStream: one OpenSession call, the lease of the remote instances made under it.
//
// It opens a session, sends its id as the stream's only message and then stays open;
// when the stream ends for any reason (the client cancels, disconnects or dies, or the
// server shuts down) the session is closed and its instances are destroyed on the call
// pool, never on a gRPC thread.
#ifndef POLYPLUG_HOST_SRC_SESSION_STREAM_H_
#define POLYPLUG_HOST_SRC_SESSION_STREAM_H_

#include <grpcpp/grpcpp.h>

#include "host/src/operation_worker.h"
#include "host/src/remote_instances.h"
#include "polyplug/host/v1/host.pb.h"

namespace polyplug::host {

// Starts the stream for an accepted OpenSession call; the reactor owns itself until
// OnDone. `instances` and `calls` must outlive every stream (the server's shutdown waits
// for them).
grpc::ServerWriteReactor<v1::SessionEvent>* StartSessionStream(grpc::CallbackServerContext* context,
                                                               RemoteInstances& instances,
                                                               OperationWorker& calls,
                                                               uint64_t host_epoch);

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_SESSION_STREAM_H_
