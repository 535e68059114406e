"""HostClient: a connection to one polyplug-host, its calls, subscriptions and live handles.

The Python twin of the C++ client's HostClient (client/include/polyplug/client/
host_client.h): the same calls, options and semantics, with Python names. Responses are
the messages of proto/polyplug/host/v1/host.proto (module polyplug.host.v1.host_pb2).
Every call raises a PolyplugError (errors.py) on failure; a reload or push whose bundle
fails to load is a response with outcome FAILED and the reason, not an exception.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
import uuid
from pathlib import Path
from typing import Any, Callable

import grpc

from polyplug.host.v1 import host_pb2
from polyplug_client import _health
from polyplug_client._connection import (ConnectOptions, Connection, create_leased_instance,
                                         default_host_target)
from polyplug_client._push import Upload
from polyplug_client._stream import SubscribeOptions
from polyplug_client.errors import CancelledError, error_from_rpc
from polyplug_client.events import Cursor
from polyplug_client.subscription import EventStream, PhaseHandlers, Subscription
from polyplug_client.tracking import (InstanceRecreated, LiveInstance, RefreshCallback,
                                      TrackedContract, _ContractTracking)


class ServingStatus(enum.IntEnum):
    """grpc.health.v1's answer for the host ("") or a bundle."""

    UNKNOWN = 0
    SERVING = 1
    NOT_SERVING = 2
    SERVICE_UNKNOWN = 3


def new_request_id() -> str:
    """A fresh request id: pass it to reload, load_bundle, unload_bundle or push_bundle,
    and again to a retry, so that the host runs the operation once."""
    return uuid.uuid4().hex


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


class HostClient:
    """One channel to a host. Thread-safe: calls may run concurrently. Subscriptions and
    tracked contracts keep the channel alive until they are closed.

    Every call takes `timeout` (seconds; None: ConnectOptions.call_timeout) and
    `wait_for_ready` (wait for the host to come up until the deadline instead of failing
    at once with UNAVAILABLE). reload, load_bundle, unload_bundle and push_bundle also take
    `request_id`: the host runs the operation once per id (a retry with it gets the first
    outcome), and get_operation finds its outcome after a lost response.
    """

    def __init__(self, target: str | None = None, options: ConnectOptions | None = None, *,
                 auth_token: str | None = None):
        """Connects to `target`: "unix:PATH", "unix:///abs/path", "HOST:PORT" or an absolute
        socket path; None: the host's default address for this user. Does not wait for the
        host. InvalidArgumentError for a malformed target or inconsistent options.
        `auth_token` overrides options.auth_token."""
        options = options or ConnectOptions()
        if auth_token is not None:
            options = dataclasses.replace(options, auth_token=auth_token)
        self._connection = Connection(default_host_target() if target is None else target,
                                      options)
        self._lock = threading.Lock()
        self._tracking: _ContractTracking | None = None
        self._closed = False

    @property
    def target(self) -> str:
        """The normalized target, e.g. "unix:/run/user/1000/polyplug-host.sock"."""
        return self._connection.target

    def close(self) -> None:
        """Closes this client: its calls then raise CancelledError. Subscriptions, iterators,
        tracked contracts and live instances it started keep the channel open until they
        are closed; the last one closes it and ends the instance session (the host then
        destroys the instances made through this client)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            tracking, self._tracking = self._tracking, None
        if tracking is not None:
            tracking.release()
        self._connection.release()

    @property
    def _conn(self) -> Connection:
        """The connection, for a call; CancelledError once this client is closed."""
        if self._closed:
            raise CancelledError(grpc.StatusCode.CANCELLED,
                                 f"the HostClient of {self.target} is closed",
                                 target=self.target)
        return self._connection

    def __enter__(self) -> HostClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- bundles --------------------------------------------------------------------------

    def reload(self, bundle: str, *, expected_sha256: str = "", request_id: str = "",
               timeout: float | None = None,
               wait_for_ready: bool = False) -> host_pb2.ReloadResponse:
        """Reloads a loaded bundle and returns once its terminal phase (cascade included) is
        in. `bundle` is a name, or a path (it contains '/') inside one of the host's bundle
        roots. With `expected_sha256` (lowercase hex), only if the artifact on the host has
        that SHA-256: otherwise FailedPreconditionError (EXPECTED_SHA256_MISMATCH).
        Only outcome RELOAD_OUTCOME_RELOADED means everything followed."""
        request = host_pb2.ReloadRequest(expected_sha256=expected_sha256, request_id=request_id)
        if "/" in bundle:
            request.path = bundle
        else:
            request.name = bundle
        return self._call(self._conn.stub.Reload, request, timeout, wait_for_ready)

    def load_bundle(self, path: str, *, request_id: str = "", timeout: float | None = None,
                    wait_for_ready: bool = False) -> host_pb2.LoadBundleResponse:
        """Loads the bundle directory (or its manifest.toml) at `path`, a path on the host."""
        return self._call(self._conn.stub.LoadBundle,
                          host_pb2.LoadBundleRequest(path=path, request_id=request_id), timeout,
                          wait_for_ready)

    def unload_bundle(self, name: str, *, cascade: bool = False, request_id: str = "",
                      timeout: float | None = None,
                      wait_for_ready: bool = False) -> host_pb2.UnloadBundleResponse:
        """Unloads a bundle; with `cascade`, its dependents first."""
        return self._call(
            self._conn.stub.UnloadBundle,
            host_pb2.UnloadBundleRequest(name=name, cascade=cascade, request_id=request_id),
            timeout, wait_for_ready)

    def push_bundle(self, directory: str | Path, *, request_id: str = "",
                    timeout: float | None = None,
                    wait_for_ready: bool = False) -> host_pb2.PushBundleResponse:
        """Uploads the bundle directory `directory`, on this machine, into the host's deploy
        root and loads it there, or reloads it when it is loaded from there. Sends every
        regular file below it; InvalidArgumentError names an entry that is anything else.
        The deadline covers the upload and the load or reload. A push whose bundle does not
        load is a response with PUSH_OUTCOME_FAILED and the reason (the host's previous
        version stays), not an exception."""
        upload = Upload(Path(directory), request_id)
        connection = self._conn
        deadline = connection.timeout_of(timeout)
        call = connection.stub.PushBundle.future(upload.messages(), timeout=deadline,
                                                 metadata=connection.metadata,
                                                 wait_for_ready=wait_for_ready)
        try:
            response: host_pb2.PushBundleResponse = call.result(timeout=deadline)
        except grpc.FutureTimeoutError:
            call.cancel()
            raise Upload.too_slow(self.target, deadline) from None
        except grpc.RpcError as error:
            raise upload.error_of(error, self.target, deadline) from None
        if upload.error is not None:
            raise upload.error
        return response

    def get_operation(self, request_id: str, *, wait: bool = False,
                      timeout: float | None = None) -> host_pb2.Operation:
        """The outcome of the operation that carried `request_id`; with `wait`, once it is
        done (or the deadline passes). NotFoundError (OPERATION_NOT_FOUND) when the host
        does not remember it."""
        return self._call(self._conn.stub.GetOperation,
                          host_pb2.GetOperationRequest(request_id=request_id, wait=wait),
                          timeout, False)

    # --- lookups --------------------------------------------------------------------------

    def find_contract(self, contract: str, min_version: int = 0, *,
                      timeout: float | None = None,
                      wait_for_ready: bool = False) -> host_pb2.ContractHandle:
        """`contract`: "name@major" (or a bare name for major 0). `min_version`: the lowest
        acceptable provider major version, 0 = any. NotFoundError (CONTRACT_NOT_FOUND)."""
        return self._call(self._conn.stub.FindContract,
                          host_pb2.FindContractRequest(name=contract, min_version=min_version),
                          timeout, wait_for_ready)

    def list_bundles(self, *, timeout: float | None = None,
                     wait_for_ready: bool = False) -> host_pb2.ListBundlesResponse:
        """The loaded bundles."""
        return self._call(self._conn.stub.ListBundles, host_pb2.ListBundlesRequest(),
                          timeout, wait_for_ready)

    def list_contracts(self, bundle: str = "", *, timeout: float | None = None,
                       wait_for_ready: bool = False) -> host_pb2.ListContractsResponse:
        """The published contract providers; `bundle`: only its providers."""
        return self._call(self._conn.stub.ListContracts,
                          host_pb2.ListContractsRequest(bundle=bundle), timeout, wait_for_ready)

    def get_host_info(self, *, timeout: float | None = None,
                      wait_for_ready: bool = False) -> host_pb2.HostInfo:
        """The host's version, epoch, registry revision, roots and counters."""
        return self._call(self._conn.stub.GetHostInfo, host_pb2.GetHostInfoRequest(),
                          timeout, wait_for_ready)

    def echo(self, payload: bytes | str = b"", *, timeout: float | None = None,
             wait_for_ready: bool = False) -> bytes:
        """The host answers `payload` back and does nothing else: a ping."""
        response = self._call(self._conn.stub.Echo,
                              host_pb2.EchoRequest(payload=_bytes(payload)), timeout,
                              wait_for_ready)
        return bytes(response.payload)

    def check_health(self, service: str = "", *, timeout: float | None = None,
                     wait_for_ready: bool = False) -> ServingStatus:
        """grpc.health.v1 Check: "" is the host itself, a bundle's name that bundle;
        SERVICE_UNKNOWN for a name the host does not know."""
        deadline = self._conn.timeout_of(timeout)
        try:
            status = _health.check(self._conn.channel, service, deadline,
                                   self._conn.metadata, wait_for_ready)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return ServingStatus.SERVICE_UNKNOWN
            raise error_from_rpc(error, self.target, deadline) from None
        return ServingStatus(status) if status in ServingStatus._value2member_map_ else \
            ServingStatus.UNKNOWN

    # --- remote calls ---------------------------------------------------------------------

    def create_instance(self, contract: str | host_pb2.ContractHandle,
                        args: bytes | str = b"", min_version: int = 0, *,
                        timeout: float | None = None,
                        wait_for_ready: bool = False) -> host_pb2.InstanceRef:
        """An instance of `contract` ("name@major", or a handle from find_contract) made in
        the host with `args`, under this client's session: the host destroys it when this
        client closes or dies. A reload or unload of its bundle destroys it too (calls on it
        then fail with FailedPreconditionError, INSTANCE_INVALIDATED_BY_RELOAD).
        UnimplementedError (NOT_INVOCABLE) for a contract without methods."""
        request = host_pb2.CreateInstanceRequest(args=_bytes(args))
        if isinstance(contract, str):
            request.contract = contract
            request.min_version = min_version
        else:
            request.handle.CopyFrom(contract)
        return create_leased_instance(self._conn, request, timeout, wait_for_ready)

    def invoke(self, instance: host_pb2.InstanceRef, method: str, request: bytes | str = b"", *,
               timeout: float | None = None,
               wait_for_ready: bool = False) -> host_pb2.InvokeResponse:
        """Runs `method` on `instance`; `.response` holds the answer's bytes and `.handle`
        the provider (its version tells which build ran)."""
        return self._call(
            self._conn.stub.Invoke,
            host_pb2.InvokeRequest(instance=instance, method=method, request=_bytes(request)),
            timeout, wait_for_ready)

    def invoke_once(self, contract: str, method: str, request: bytes | str = b"",
                    min_version: int = 0, *, timeout: float | None = None,
                    wait_for_ready: bool = False) -> host_pb2.InvokeResponse:
        """Runs `method` on a fresh instance of `contract` ("name@major") made for this
        call."""
        return self._call(
            self._conn.stub.Invoke,
            host_pb2.InvokeRequest(contract=contract, min_version=min_version, method=method,
                                   request=_bytes(request)), timeout, wait_for_ready)

    def destroy_instance(self, instance: host_pb2.InstanceRef, *, timeout: float | None = None,
                         wait_for_ready: bool = False) -> None:
        """Destroys an instance made by create_instance."""
        self._call(self._conn.stub.DestroyInstance,
                   host_pb2.DestroyInstanceRequest(instance=instance), timeout, wait_for_ready)

    # --- following the host ---------------------------------------------------------------

    def subscribe(self, handlers: PhaseHandlers, *, bundle_names: tuple[str, ...] = (),
                  resume_after: Cursor | None = None, strict_resume: bool = False,
                  heartbeat: float = 10.0, synthesize_transitions: bool = True) -> Subscription:
        """Starts a subscription at once; it connects (and reconnects) in the background and
        runs `handlers` on its own thread. Close it (or use it in a `with` block).

        `bundle_names`: only these bundles' events. `resume_after`: start after this cursor
        instead of with a snapshot; when the host cannot resume there, the subscription
        resyncs (on_host_restarted, on_resynced), or with `strict_resume` stops with
        OUT_OF_RANGE. `heartbeat`: seconds between progress markers on a quiet stream.
        `synthesize_transitions`: after a resync, run the handlers for the transitions they
        missed, as synthetic events (PhaseEvent.synthetic)."""
        return Subscription(self._conn, handlers,
                            SubscribeOptions(tuple(bundle_names), resume_after, strict_resume,
                                             heartbeat, synthesize_transitions))

    def events(self, *, bundle_names: tuple[str, ...] = (), resume_after: Cursor | None = None,
               strict_resume: bool = False, heartbeat: float = 10.0,
               synthesize_transitions: bool = True) -> EventStream:
        """The same subscription as an iterator, read on the iterating thread:
        `for item in client.events(): ...` yields PhaseEvent, HostRestarted, Resynced,
        ConnectionChanged and Stopped in the order handlers would run. Options as for
        subscribe(). Close it (or use it in a `with` block) to end the iteration."""
        return EventStream(self._conn,
                           SubscribeOptions(tuple(bundle_names), resume_after, strict_resume,
                                            heartbeat, synthesize_transitions))

    def track_contract(self, contract: str, min_version: int = 0,
                       on_refreshed: RefreshCallback | None = None) -> TrackedContract:
        """Tracks `contract` ("name@major") with providers of major version >= `min_version`.
        Looks it up before returning (current() then holds the result, possibly an error)
        and refreshes it on this client's tracking subscription, shared by all trackers.
        `on_refreshed(previous, current)` runs after a refresh changed the handle (each a
        ContractHandle or a PolyplugError), on the tracking thread, one call at a time."""
        return self._tracking_subscription().add(contract, min_version, on_refreshed)

    def make_live_instance(self, contract: str, min_version: int = 0, args: bytes | str = b"",
                           on_recreated: Callable[[InstanceRecreated], None] | None = None
                           ) -> LiveInstance:
        """A remote instance of `contract` made with `args` when first invoked, and made
        again after every reload; see LiveInstance."""
        return LiveInstance(self._conn, self._tracking_subscription(), contract,
                            min_version, _bytes(args), on_recreated)

    # --- plumbing -------------------------------------------------------------------------

    def _tracking_subscription(self) -> _ContractTracking:
        with self._lock:
            connection = self._conn
            if self._tracking is None:
                self._tracking = _ContractTracking(connection)
            return self._tracking

    def _call(self, method: Callable[..., object], request: object, timeout: float | None,
              wait_for_ready: bool) -> Any:
        return self._connection.unary(method, request, timeout=timeout,
                                      wait_for_ready=wait_for_ready)


def connect(target: str | None = None, options: ConnectOptions | None = None, *,
            auth_token: str | None = None) -> HostClient:
    """HostClient(target, options): the module-level spelling of the C++ Connect()."""
    return HostClient(target, options, auth_token=auth_token)
