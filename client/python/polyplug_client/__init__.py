"""polyplug_client: the Python client of polyplug-host.

The twin of the C++ client library (docs/CLIENT.md): connect to a host over a unix socket
or TCP (token, TLS, mutual TLS); reload, load, unload and push bundles with request ids and
honest outcomes; look contracts up; call methods in the host; follow its phase events with
the same guarantees as in-process on_reload callbacks, as handlers on a thread, as an
iterator, or with `async for` (polyplug_client.aio); and hold handles that follow reloads.

    from polyplug_client import HostClient

    with HostClient("unix:/run/user/1000/polyplug-host.sock") as host:
        response = host.reload("greeter")
        if response.outcome != RELOAD_OUTCOME_RELOADED: ...
"""

from polyplug.host.v1.host_pb2 import (PUSH_OUTCOME_DEPENDENTS_FAILED, PUSH_OUTCOME_FAILED,
                                       PUSH_OUTCOME_LOADED, PUSH_OUTCOME_RELOADED,
                                       RELOAD_OUTCOME_DEPENDENTS_FAILED, RELOAD_OUTCOME_FAILED,
                                       RELOAD_OUTCOME_RELOADED)
from polyplug_client._connection import ConnectOptions, default_host_target
from polyplug_client._stream import SubscribeOptions
from polyplug_client.client import HostClient, ServingStatus, connect, new_request_id
from polyplug_client.errors import (AbortedError, AlreadyExistsError, CancelledError,
                                    DeadlineExceededError, FailedPreconditionError,
                                    InternalError, InvalidArgumentError, NotFoundError,
                                    OutOfRangeError, PermissionDeniedError, PolyplugError,
                                    ResourceExhaustedError, UnauthenticatedError,
                                    UnavailableError, UnimplementedError, reason_of_token,
                                    reason_token)
from polyplug_client.events import (BundleState, ConnectionChanged, Cursor, HostRestarted, Phase,
                                    PhaseEvent, Resynced, ResyncCause, Stopped, SubscriptionItem,
                                    Version)
from polyplug_client.subscription import EventStream, PhaseHandlers, Subscription
from polyplug_client.tracking import (InstanceRecreated, LiveCallInfo, LiveInstance,
                                      TrackedContract)

from polyplug_client._version import __version__

__all__ = [
    "AbortedError", "AlreadyExistsError", "BundleState", "CancelledError", "ConnectOptions",
    "ConnectionChanged", "Cursor", "DeadlineExceededError", "EventStream",
    "FailedPreconditionError", "HostClient", "HostRestarted", "InstanceRecreated",
    "InternalError", "InvalidArgumentError", "LiveCallInfo", "LiveInstance", "NotFoundError",
    "OutOfRangeError", "PUSH_OUTCOME_DEPENDENTS_FAILED", "PUSH_OUTCOME_FAILED",
    "PUSH_OUTCOME_LOADED", "PUSH_OUTCOME_RELOADED", "PermissionDeniedError", "Phase",
    "PhaseEvent", "PhaseHandlers", "PolyplugError", "RELOAD_OUTCOME_DEPENDENTS_FAILED",
    "RELOAD_OUTCOME_FAILED", "RELOAD_OUTCOME_RELOADED", "ResourceExhaustedError", "ResyncCause",
    "Resynced", "ServingStatus", "Stopped", "SubscribeOptions", "Subscription",
    "SubscriptionItem", "TrackedContract", "UnauthenticatedError", "UnavailableError",
    "UnimplementedError", "Version", "__version__", "connect", "default_host_target",
    "new_request_id", "reason_of_token", "reason_token",
]
