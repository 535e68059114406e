"""The channel to one host, its options and the call plumbing shared by everything a
HostClient starts (subscriptions, trackers, live instances), as in the C++ client's
client/src/connection.h."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

import grpc

from polyplug.host.v1 import host_pb2, host_pb2_grpc
from polyplug_client.errors import (InvalidArgumentError, PolyplugError, error_from_rpc,
                                    make_error)


@dataclass
class ConnectOptions:
    """How to reach a host; the same options as the C++ client's ConnectOptions.

    `auth_token` is sent as "authorization: Bearer <token>" on every call. `tls` turns on
    TLS for HOST:PORT targets: `tls_root_certs_pem` (None: the system's trust store), a
    client certificate and its key for mutual TLS, and `tls_server_name` to check the
    certificate against instead of the target's host. `call_timeout` (seconds) is the
    deadline of a call that sets none; a reload waits for its cascade, so keep it generous.
    Subscriptions reconnect with a backoff doubling from `reconnect_initial_backoff` to
    `reconnect_max_backoff` seconds. `max_message_bytes` is the largest message accepted.
    """

    auth_token: str = ""
    tls: bool = False
    tls_root_certs_pem: bytes | None = None
    tls_client_cert_pem: bytes | None = None
    tls_client_key_pem: bytes | None = None
    tls_server_name: str = ""
    call_timeout: float = 60.0
    reconnect_initial_backoff: float = 0.1
    reconnect_max_backoff: float = 5.0
    max_message_bytes: int = 4 << 20


def default_host_target() -> str:
    """The host's default address for this user, as polyplug-host computes it:
    unix:$XDG_RUNTIME_DIR/polyplug-host.sock, else unix:/tmp/polyplug-host-<uid>.sock."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime_dir:
        return f"unix:{runtime_dir}/polyplug-host.sock"
    return f"unix:/tmp/polyplug-host-{os.getuid()}.sock"


def normalize_target(target: str) -> str:
    """"unix:PATH", "unix:///abs/path", "HOST:PORT", or an absolute socket path, checked;
    InvalidArgumentError says what is wrong with anything else."""
    target = target.strip()
    if not target:
        raise InvalidArgumentError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "empty host target; expected unix:PATH, HOST:PORT or an absolute socket path")
    if target.startswith("/"):
        target = "unix:" + target
    is_unix = target.startswith("unix:") or target.startswith("unix-abstract:")
    if is_unix and target in ("unix:", "unix://"):
        raise InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"host target '{target}' names no socket path")
    if not is_unix and ":" not in target:
        raise InvalidArgumentError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"host target '{target}' is neither unix:PATH nor HOST:PORT (no port given); "
            "e.g. 127.0.0.1:50051")
    return target


def check_options(options: ConnectOptions) -> None:
    """InvalidArgumentError for inconsistent options."""

    def invalid(message: str) -> InvalidArgumentError:
        return InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT, message)

    if bool(options.tls_client_cert_pem) != bool(options.tls_client_key_pem):
        raise invalid("a TLS client certificate needs its key and the key its certificate")
    if not options.tls and (options.tls_root_certs_pem or options.tls_client_cert_pem
                            or options.tls_server_name):
        raise invalid("TLS options are set but ConnectOptions.tls is False")
    if options.call_timeout <= 0:
        raise invalid("ConnectOptions.call_timeout must be positive")
    if (options.reconnect_initial_backoff <= 0
            or options.reconnect_max_backoff < options.reconnect_initial_backoff):
        raise invalid("reconnect backoff: initial must be positive and not above max")


def channel_arguments(options: ConnectOptions) -> list[tuple[str, Any]]:
    """The channel arguments of a connection: the C++ client's, for the same reasons."""
    args: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", options.max_message_bytes),
        # A subscription notices a dead host within ~40 s; the host accepts pings every 10 s.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        # gRPC 1.51's pick_first stays in TRANSIENT_FAILURE after a failed connect until
        # some later event (~10 s), failing calls with a stale error though the host is
        # back; round_robin reconnects as soon as its backoff elapses.
        ("grpc.lb_policy_name", "round_robin"),
        # Reconnect quickly after a host restart: subscriptions have their own backoff.
        ("grpc.initial_reconnect_backoff_ms", int(options.reconnect_initial_backoff * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(options.reconnect_max_backoff * 1000)),
    ]
    if options.tls and options.tls_server_name:
        args.append(("grpc.ssl_target_name_override", options.tls_server_name))
    return args


def deadline_of(timeout: float | None, options: ConnectOptions) -> float:
    """A call's deadline in seconds: `timeout` if given and positive, else call_timeout."""
    return timeout if timeout is not None and timeout > 0 else options.call_timeout


def channel_credentials(options: ConnectOptions) -> grpc.ChannelCredentials | None:
    """TLS credentials, or None for plaintext."""
    if not options.tls:
        return None
    return grpc.ssl_channel_credentials(root_certificates=options.tls_root_certs_pem or None,
                                        private_key=options.tls_client_key_pem or None,
                                        certificate_chain=options.tls_client_cert_pem or None)


class Connection:
    """A channel, its stub and its options. Thread-safe. Its users (the HostClient, each
    subscription and iterator) hold a reference each (acquire/release); the channel closes,
    and the instance session ends, when the last one is released, so that subscriptions and
    trackers outlive the HostClient that made them."""

    def __init__(self, target: str, options: ConnectOptions):
        self.target = normalize_target(target)
        check_options(options)
        self.options = options
        self._users_lock = threading.Lock()
        self._users = 1  # the HostClient's
        credentials = channel_credentials(options)
        args = channel_arguments(options)
        if credentials is None:
            self.channel = grpc.insecure_channel(self.target, options=args)
        else:
            self.channel = grpc.secure_channel(self.target, credentials, options=args)
        self.stub = host_pb2_grpc.PluginHostStub(self.channel)
        self.metadata: tuple[tuple[str, str], ...] = ()
        if options.auth_token:
            self.metadata = (("authorization", f"Bearer {options.auth_token}"),)
        self.session = Session(self)

    def timeout_of(self, timeout: float | None) -> float:
        """A call's deadline in seconds: `timeout`, or the options' call_timeout."""
        return deadline_of(timeout, self.options)

    def unary(self, method: Callable[..., Any], request: Any, *, timeout: float | None = None,
              wait_for_ready: bool = False) -> Any:
        """Calls a unary method of the stub; its response, or the PolyplugError."""
        deadline = self.timeout_of(timeout)
        try:
            return method(request, timeout=deadline, metadata=self.metadata,
                          wait_for_ready=wait_for_ready)
        except grpc.RpcError as error:
            raise error_from_rpc(error, self.target, deadline) from None

    def acquire(self) -> None:
        """One more user; each release()s once. CancelledError once the last user released
        it (the channel is closed)."""
        with self._users_lock:
            if self._users == 0:
                raise make_error(grpc.StatusCode.CANCELLED,
                                 f"the connection to {self.target} is closed", target=self.target)
            self._users += 1

    def release(self) -> None:
        """One user less; the last one closes the channel."""
        with self._users_lock:
            self._users -= 1
            last = self._users == 0
        if last:
            self.session.close()
            self.channel.close()


class Session:
    """The connection's lease on the remote instances it makes: one OpenSession stream,
    opened on first use and again after it ended. The host destroys the instances made
    under a session when its stream ends, so the instances of a client that dies do not
    outlive it. Thread-safe."""

    def __init__(self, connection: Connection):
        self._connection = connection
        self._lock = threading.Lock()
        self._stream: _SessionStream | None = None

    def id(self, timeout: float | None, wait_for_ready: bool = False) -> int:
        """The id of the open session; opens one first if there is none."""
        with self._lock:
            if self._stream is None or self._stream.ended:
                self._stream = _SessionStream(self._connection, wait_for_ready)
            stream = self._stream
        return stream.wait_for_id(self._connection.timeout_of(timeout))

    def forget(self, session_id: int) -> None:
        """The host said session `session_id` is not open: the next id() opens another."""
        with self._lock:
            stream = self._stream
            if stream is None or stream.session_id != session_id:
                return
            self._stream = None
        stream.stop()

    def close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()


class _SessionStream:
    """One OpenSession call, read on a daemon thread: the first message carries the id; the
    read after it returns when the stream ends, which is how the end is noticed."""

    def __init__(self, connection: Connection, wait_for_ready: bool):
        self._connection = connection
        self._changed = threading.Condition()
        self.session_id = 0
        self.ended = False
        self._error: PolyplugError | None = None
        self._call = connection.stub.OpenSession(host_pb2.OpenSessionRequest(),
                                                 metadata=connection.metadata,
                                                 wait_for_ready=wait_for_ready)
        self._thread = threading.Thread(target=self._read, name="polyplug-session", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        error: PolyplugError | None = None
        try:
            for event in self._call:
                with self._changed:
                    if self.session_id == 0:
                        self.session_id = event.session_id
                    self._changed.notify_all()
        except grpc.RpcError as rpc_error:
            error = error_from_rpc(rpc_error, self._connection.target, None)
        with self._changed:
            self.ended = True
            self._error = error
            self._changed.notify_all()

    def wait_for_id(self, timeout: float) -> int:
        with self._changed:
            self._changed.wait_for(lambda: self.session_id != 0 or self.ended, timeout)
            if self.session_id != 0 and not self.ended:
                return self.session_id
            if self.ended:
                raise self._error or make_error(grpc.StatusCode.UNAVAILABLE,
                                                "the host ended the session at once",
                                                target=self._connection.target)
        # The stream stays: other callers may wait on it, and the next id() uses it once
        # the host answers (as the C++ client does).
        raise make_error(grpc.StatusCode.DEADLINE_EXCEEDED,
                         f"no session opened by {self._connection.target} within {timeout:g}s",
                         target=self._connection.target)

    def stop(self) -> None:
        """Cancels the stream and waits until its reader is done."""
        self._call.cancel()
        self._thread.join()


def create_leased_instance(connection: Connection, request: host_pb2.CreateInstanceRequest,
                           timeout: float | None, wait_for_ready: bool) -> host_pb2.InstanceRef:
    """CreateInstance under the connection's session, retried once in a new session when
    the host says the one it got had just ended."""
    for attempt in range(2):
        request.session_id = connection.session.id(timeout, wait_for_ready)
        try:
            return connection.unary(connection.stub.CreateInstance, request, timeout=timeout,
                                    wait_for_ready=wait_for_ready)
        except PolyplugError as error:
            if attempt == 1 or error.reason != "LEASE_EXPIRED":
                raise
            connection.session.forget(request.session_id)  # it ended on the host meanwhile
    raise AssertionError("unreachable")
