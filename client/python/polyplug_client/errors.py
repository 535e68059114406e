"""Exceptions of polyplug_client: every failed call raises a PolyplugError.

A host error keeps its gRPC code and message ("[BUNDLE_NOT_FOUND] no bundle named ...")
and carries the reason token ("BUNDLE_NOT_FOUND"), from the host's ``polyplug-reason``
trailer or the message's "[TOKEN]" prefix. A transport failure (nobody listens, a
deadline, refused credentials) has no token (``reason == ""``) and says which host it
could not reach. The subclass follows the gRPC code, so ``except NotFoundError`` works as
well as ``if err.reason == "BUNDLE_NOT_FOUND"``.

A reload (or push) whose bundle fails to load is not an exception: it is a response with
``RELOAD_OUTCOME_FAILED`` (``PUSH_OUTCOME_FAILED``) and the reason, as in the C++ client.
"""

from __future__ import annotations

from typing import Any

import grpc

from polyplug.host.v1 import host_pb2

# Trailing metadata of a failed call: its reason token (proto/wire/wire.h).
REASON_TRAILER = "polyplug-reason"


class PolyplugError(Exception):
    """A call failed: `code` (grpc.StatusCode), `reason` (token or ""), `message`.

    `target` is the host the call went to. Compare `reason` with the tokens of host.proto's
    FailureReason without their prefix, e.g. "BUNDLE_NOT_FOUND", "CRASHED".
    """

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "", target: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.target = target

    @property
    def reason_value(self) -> int:
        """The reason as host.proto's FailureReason number (0: none, or unknown)."""
        return reason_of_token(self.reason)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, "
                f"message={self.message!r})")


class CancelledError(PolyplugError):
    """CANCELLED: the call was cancelled (e.g. the client was closed)."""


class InvalidArgumentError(PolyplugError):
    """INVALID_ARGUMENT: the request (or a connect option) is malformed."""


class DeadlineExceededError(PolyplugError):
    """DEADLINE_EXCEEDED: the host did not answer in time."""


class NotFoundError(PolyplugError):
    """NOT_FOUND: e.g. BUNDLE_NOT_FOUND, CONTRACT_NOT_FOUND, OPERATION_NOT_FOUND."""


class AlreadyExistsError(PolyplugError):
    """ALREADY_EXISTS: e.g. BUNDLE_ALREADY_LOADED."""


class PermissionDeniedError(PolyplugError):
    """PERMISSION_DENIED: e.g. a path outside the host's bundle roots."""


class ResourceExhaustedError(PolyplugError):
    """RESOURCE_EXHAUSTED: e.g. BUNDLE_TOO_LARGE, NO_SPACE, too many subscribers."""


class FailedPreconditionError(PolyplugError):
    """FAILED_PRECONDITION: e.g. DEPENDENCY_IN_USE, INSTANCE_INVALIDATED_BY_RELOAD."""


class AbortedError(PolyplugError):
    """ABORTED: e.g. REQUEST_ID_REUSED, or a file that changed while it was sent."""


class OutOfRangeError(PolyplugError):
    """OUT_OF_RANGE: e.g. CURSOR_OUT_OF_RANGE (a resume point the host no longer has)."""


class UnimplementedError(PolyplugError):
    """UNIMPLEMENTED: e.g. NOT_INVOCABLE (a contract without methods)."""


class InternalError(PolyplugError):
    """INTERNAL: a bug, in the host or in a bundle's code (CALL_FAILED)."""


class UnavailableError(PolyplugError):
    """UNAVAILABLE: the host cannot be reached, or is shutting down (SHUTTING_DOWN)."""


class UnauthenticatedError(PolyplugError):
    """UNAUTHENTICATED: the host refused the token or the client certificate."""


_CLASS_OF_CODE: dict[grpc.StatusCode, type[PolyplugError]] = {
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRangeError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
}


def make_error(code: grpc.StatusCode, message: str, reason: str = "",
               target: str = "") -> PolyplugError:
    """The PolyplugError subclass for `code`."""
    return _CLASS_OF_CODE.get(code, PolyplugError)(code, message, reason, target)


def reason_token(reason: int) -> str:
    """"BUNDLE_NOT_FOUND" for FAILURE_REASON_BUNDLE_NOT_FOUND; "UNSPECIFIED" for 0."""
    try:
        name = host_pb2.FailureReason.Name(reason)
    except ValueError:
        return "UNSPECIFIED"
    return name.removeprefix("FAILURE_REASON_")


def reason_of_token(token: str) -> int:
    """The FailureReason number a token names; 0 for "" or an unknown token."""
    if not token:
        return 0
    try:
        return int(host_pb2.FailureReason.Value("FAILURE_REASON_" + token))
    except ValueError:
        return 0


def _token_in_message(message: str) -> str:
    """The "[TOKEN]" a host error message starts with, or ""."""
    if not message.startswith("["):
        return ""
    end = message.find("]")
    return message[1:end] if end > 0 else ""


def error_from_rpc(error: Any, target: str, timeout: float | None) -> PolyplugError:
    """The PolyplugError of a failed call (a grpc.RpcError that is also a grpc.Call, or a
    grpc.aio.AioRpcError), naming `target` for the transport's own failures."""
    code: grpc.StatusCode = error.code() or grpc.StatusCode.UNKNOWN
    message: str = error.details() or ""
    token = ""
    for key, value in error.trailing_metadata() or ():
        if key == REASON_TRAILER:
            token = value.decode() if isinstance(value, bytes) else str(value)
            break
    if not token:
        token = _token_in_message(message)
    if not token:
        # Not the host's own error: the transport's. Say which host.
        if code == grpc.StatusCode.UNAVAILABLE:
            message = f"cannot reach polyplug-host at {target}: {message}"
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            within = f"{timeout:g}s" if timeout is not None else "the deadline"
            message = f"polyplug-host at {target} did not answer within {within}: {message}"
        elif code == grpc.StatusCode.UNAUTHENTICATED:
            message = f"polyplug-host at {target} refused the credentials: {message}"
    return make_error(code, message, token, target)
