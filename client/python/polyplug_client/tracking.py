"""Handles that follow the host: TrackedContract and LiveInstance (the C++ client's
client/src/contract_tracking.cc and live_instance.cc, one for one).

One tracking subscription per HostClient serves every tracker: on RELOADED, LOADED,
UNLOADING and after every resync (a host restart among them) each tracker looks its
contract up again, and a tracker whose handle changed runs its callback.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import grpc

from polyplug.host.v1 import host_pb2
from polyplug_client._connection import Connection, create_leased_instance
from polyplug_client._stream import SubscribeOptions
from polyplug_client.errors import NotFoundError, PolyplugError, error_from_rpc, make_error
from polyplug_client.events import ConnectionChanged, Phase, PhaseEvent, Resynced, Stopped
from polyplug_client.subscription import PhaseHandlers, Subscription

# What a lookup gave: the handle, or the error (NOT_FOUND while no bundle provides it,
# UNAVAILABLE before the first lookup reached the host).
Lookup = host_pb2.ContractHandle | PolyplugError
RefreshCallback = Callable[[Lookup, Lookup], None]

_log = logging.getLogger("polyplug_client")

_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED)


def _same_handle(a: Lookup, b: Lookup) -> bool:
    """Whether two lookups name the same provider implementation (revisions aside)."""
    if isinstance(a, PolyplugError) or isinstance(b, PolyplugError):
        return (isinstance(a, PolyplugError) and isinstance(b, PolyplugError)
                and a.code == b.code)
    return (a.index == b.index and a.generation == b.generation
            and a.host_epoch == b.host_epoch and a.contract_id == b.contract_id
            and a.provider_bundle_id == b.provider_bundle_id
            and a.provider_version == b.provider_version
            and a.contract_version == b.contract_version and a.plugin_name == b.plugin_name)


class TrackedContract:
    """A contract handle that refreshes itself when the host reloads, loads or unloads its
    provider, or restarts. Thread-safe. close() stops tracking; it waits for a running
    callback of this tracker unless called from it."""

    def __init__(self, tracking: _ContractTracking, contract: str, min_version: int,
                 on_refreshed: RefreshCallback | None):
        self.contract = contract
        self.min_version = min_version
        self._tracking = tracking
        self._on_refreshed = on_refreshed
        self._lock = threading.Lock()
        self._callback_lock = threading.RLock()
        self._closed = False
        self._current: Lookup = PolyplugError(grpc.StatusCode.UNAVAILABLE, "not looked up yet")
        self._change_count = 0
        self._known_epoch = 0
        self._known_revision = 0

    def current(self) -> host_pb2.ContractHandle:
        """The handle as of the last refresh; raises the lookup's error (NotFoundError while
        no bundle provides the contract)."""
        now = self.lookup()
        if isinstance(now, PolyplugError):
            raise now
        return now

    def lookup(self) -> Lookup:
        """The last refresh's result, the handle or the error, without raising."""
        with self._lock:
            return self._current

    @property
    def change_count(self) -> int:
        """How many refreshes changed the handle."""
        with self._lock:
            return self._change_count

    def close(self) -> None:
        """Stops tracking; no callback of this tracker starts after it returns."""
        with self._callback_lock:  # re-entrant: a callback may close its own tracker
            if self._closed:
                return
            self._closed = True
        self._tracking.remove(self)

    def __enter__(self) -> TrackedContract:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Trigger:
    reloaded_bundle_id: int = 0
    unloading_bundle_id: int = 0
    event_epoch: int = 0
    event_revision: int = 0
    everyone: bool = False


class _ContractTracking:
    """The tracking subscription of one HostClient and its trackers. It runs while the
    HostClient is open or a tracker is: each holds a reference (release())."""

    def __init__(self, connection: Connection):
        self._connection = connection
        self._lock = threading.Lock()
        self._users = 1  # guarded by _lock: the HostClient's, and one per tracker
        self._stopping = False  # guarded by _lock: the last user released
        self._in_flight: Any = None  # guarded by _lock: the lookup call running
        self._refresh_lock = threading.RLock()
        self._trackers: list[TrackedContract] = []
        self._leaving: set[int] = set()
        self._first_attempt = threading.Event()
        handlers = PhaseHandlers(
            on_reloaded=self._on_event, on_unloading=self._on_event, on_loaded=self._on_event,
            on_resynced=self._on_resynced, on_connection_changed=self._on_connection,
            on_stopped=self._on_stopped)
        # A resync refreshes everyone anyway: no synthetic transitions.
        self._subscription = Subscription(connection, handlers,
                                          SubscribeOptions(synthesize_transitions=False))
        # Trackers look their contract up after the subscription's snapshot, so that every
        # reload after their first lookup reaches them. An unreachable host ends the wait
        # at once (the trackers catch up when it comes); a silent one, the call timeout.
        self._first_attempt.wait(connection.options.call_timeout)

    def release(self) -> None:
        """One user less; the last one stops the tracking subscription, cancelling a lookup
        in flight so that a host that does not answer holds nobody up."""
        with self._lock:
            self._users -= 1
            last = self._users == 0
            if last:
                self._stopping = True
                in_flight = self._in_flight
        if last:
            if in_flight is not None:
                in_flight.cancel()
            self._subscription.close()

    def _unary(self, method: Any, request: Any) -> Any:
        """A lookup call that release() can cancel; CancelledError once stopping."""
        connection = self._connection
        deadline = connection.options.call_timeout
        with self._lock:
            if self._stopping:
                raise make_error(grpc.StatusCode.CANCELLED, "tracking stopped",
                                 target=connection.target)
            call = method.future(request, timeout=deadline, metadata=connection.metadata)
            self._in_flight = call
        try:
            return call.result()
        except grpc.RpcError as error:
            raise error_from_rpc(error, connection.target, deadline) from None
        except grpc.FutureCancelledError:
            raise make_error(grpc.StatusCode.CANCELLED, "tracking stopped",
                             target=connection.target) from None
        finally:
            with self._lock:
                self._in_flight = None

    def _on_resynced(self, _: Resynced) -> None:
        self._first_attempt.set()
        with self._refresh_lock:
            self._leaving.clear()
        self._refresh(_Trigger(everyone=True))

    def _on_connection(self, change: ConnectionChanged) -> None:
        if not change.connected:
            self._first_attempt.set()

    def _on_stopped(self, _: Stopped) -> None:
        self._first_attempt.set()

    def _on_event(self, event: PhaseEvent) -> None:
        if event.phase == Phase.RELOADED:
            # A reload may also add or drop contracts of the bundle: look everyone up again.
            self._refresh(_Trigger(reloaded_bundle_id=event.bundle_id,
                                   event_epoch=event.host_epoch,
                                   event_revision=event.registry_revision, everyone=True))
        elif event.phase == Phase.UNLOADING:
            with self._refresh_lock:
                self._leaving.add(event.bundle_id)
            self._refresh(_Trigger(unloading_bundle_id=event.bundle_id))
        elif event.phase == Phase.LOADED:
            with self._refresh_lock:
                self._leaving.discard(event.bundle_id)
            self._refresh(_Trigger(everyone=True))

    def _lookup(self, tracker: TrackedContract) -> Lookup:
        connection = self._connection
        try:
            found = self._unary(connection.stub.FindContract, host_pb2.FindContractRequest(
                name=tracker.contract, min_version=tracker.min_version))
            if found.provider_bundle_id not in self._leaving:
                return found
            # The first provider is being unloaded: take the next one that stays, if any.
            listed = self._unary(connection.stub.ListContracts, host_pb2.ListContractsRequest())
        except PolyplugError as error:
            return error
        for handle in listed.contracts:
            if (handle.contract_id == found.contract_id
                    and handle.provider_bundle_id not in self._leaving
                    and handle.contract_version.major >= tracker.min_version):
                return handle
        return NotFoundError(grpc.StatusCode.NOT_FOUND,
                             f"[CONTRACT_NOT_FOUND] no provider of {tracker.contract} remains: "
                             f"'{found.provider_bundle_name}' is being unloaded",
                             "CONTRACT_NOT_FOUND", connection.target)

    def add(self, contract: str, min_version: int,
            on_refreshed: RefreshCallback | None) -> TrackedContract:
        tracker = TrackedContract(self, contract, min_version, on_refreshed)
        with self._refresh_lock:
            with self._lock:
                if self._stopping:
                    raise make_error(grpc.StatusCode.CANCELLED, "the HostClient is closed",
                                     target=self._connection.target)
                self._trackers.append(tracker)
                self._users += 1
            first = self._lookup(tracker)
            with tracker._lock:
                if not isinstance(first, PolyplugError):
                    tracker._known_epoch = first.host_epoch
                    tracker._known_revision = first.registry_revision
                tracker._current = first
        return tracker

    def remove(self, tracker: TrackedContract) -> None:
        """Stops refreshing `tracker`, and releases its reference."""
        with self._lock:
            self._trackers.remove(tracker)
        self.release()

    def _refresh(self, trigger: _Trigger) -> None:
        with self._lock:
            trackers = list(self._trackers)
        changes: list[tuple[TrackedContract, Lookup, Lookup]] = []
        with self._refresh_lock:
            for tracker in trackers:
                if self._stopping:
                    return
                with tracker._lock:
                    previous = tracker._current
                    known_epoch, known_revision = tracker._known_epoch, tracker._known_revision
                provider = 0 if isinstance(previous, PolyplugError) else previous.provider_bundle_id
                if not trigger.everyone and provider != trigger.unloading_bundle_id:
                    continue
                now = self._lookup(tracker)
                # The host could not be asked: keep what we have; a resync refreshes later.
                if isinstance(now, PolyplugError) and now.code in _TRANSIENT:
                    continue
                # A reload of the provider is news even when the handle stays the same,
                # unless an earlier refresh already saw the registry as of this event.
                reloaded = (provider != 0 and provider == trigger.reloaded_bundle_id
                            and (known_epoch != trigger.event_epoch
                                 or known_revision < trigger.event_revision))
                changed = not _same_handle(previous, now) or reloaded
                with tracker._lock:
                    tracker._current = now
                    if changed:
                        tracker._change_count += 1
                        if not isinstance(now, PolyplugError):
                            tracker._known_epoch = now.host_epoch
                            tracker._known_revision = now.registry_revision
                if changed:
                    changes.append((tracker, previous, now))
        for tracker, previous, now in changes:
            with tracker._callback_lock:
                if tracker._closed or tracker._on_refreshed is None:
                    continue
                try:
                    tracker._on_refreshed(previous, now)
                except Exception:  # one tracker's bug must not cost the others their news
                    _log.exception("polyplug_client: on_refreshed of %s raised",
                                   tracker.contract)


@dataclass(frozen=True)
class InstanceRecreated:
    """A LiveInstance made its instance again: the previous one, and whatever state the
    calls before left in it, is gone; the new one starts from its args."""

    generation: int  # of the new instance: 2 for the first re-creation
    previous: host_pb2.InstanceRef
    instance: host_pb2.InstanceRef


@dataclass(frozen=True)
class LiveCallInfo:
    """Which instance answered a LiveInstance call: its generation (1 for the first), and
    whether it was made again since the last successful call returned."""

    generation: int
    recreated: bool


_RETRY_REASONS = ("INSTANCE_INVALIDATED_BY_RELOAD", "INSTANCE_NOT_FOUND", "LEASE_EXPIRED")


def _forget_live_instance(tracked: TrackedContract, connection: Connection) -> None:
    """What a LiveInstance collected without close() leaves behind: its tracker and its
    hold on the channel. (Its remote instance ends with the client's session.)"""
    tracked.close()
    connection.release()


class LiveInstance:
    """A remote instance of a contract that survives reloads of its provider.

    The instance is made on the first invoke(); when a reload destroys it (the host does so
    at PREPARING) it is made again with the same args, eagerly after the reload, and an
    invoke() that meets the destroyed one makes it again and retries. A caller that keeps
    calling through reloads sees the old version's answers, then the new version's, and no
    error. Every instance made after the first is a re-creation: the state the previous one
    held is gone (`recreations`, `on_recreated`, LiveCallInfo.recreated say so).
    Thread-safe. close() stops following reloads and destroys the remote instance.
    """

    # Each retry follows a reload that destroyed the instance just made.
    _MAX_RETRIES = 16

    def __init__(self, connection: Connection, tracking: _ContractTracking, contract: str,
                 min_version: int, args: bytes,
                 on_recreated: Callable[[InstanceRecreated], None] | None):
        self._connection = connection
        self._contract = contract
        self._min_version = min_version
        self._args = args
        self._on_recreated = on_recreated
        self._lock = threading.RLock()
        self._current: host_pb2.InstanceRef | None = None
        self._used = False
        self._made = 0
        self._last_made: host_pb2.InstanceRef | None = None
        self._last_answered = 0
        self._announce_lock = threading.Lock()
        self._to_announce: list[InstanceRecreated] = []
        self._announcing = False
        self._closed = False  # guarded by _announce_lock: no more on_recreated
        self._closing = False  # guarded by _lock: close() began
        connection.acquire()  # the channel stays open until close(), as in C++
        # The tracker holds the callback weakly, so that a LiveInstance nobody closed and
        # nobody holds is collected; then its finalizer stops its tracking.
        weak = weakref.WeakMethod(self._on_refreshed)

        def refreshed(previous: Lookup, now: Lookup) -> None:
            method = weak()
            if method is not None:
                method(previous, now)

        self._tracked = tracking.add(contract, min_version, refreshed)
        self._finalizer = weakref.finalize(self, _forget_live_instance, self._tracked,
                                           connection)

    def invoke(self, method: str, request: bytes | str = b"", *, timeout: float | None = None,
               wait_for_ready: bool = False) -> host_pb2.InvokeResponse:
        """Runs `method` on the instance; its response (`.response` holds the bytes)."""
        return self.invoke_with_info(method, request, timeout=timeout,
                                     wait_for_ready=wait_for_ready)[0]

    def invoke_with_info(self, method: str, request: bytes | str = b"", *,
                         timeout: float | None = None,
                         wait_for_ready: bool = False) -> tuple[host_pb2.InvokeResponse,
                                                                LiveCallInfo]:
        """As invoke(), and which instance answered."""
        payload = request.encode() if isinstance(request, str) else request
        for attempt in range(self._MAX_RETRIES + 1):
            instance, generation = self._ensure(timeout, wait_for_ready)
            try:
                response = self._connection.unary(
                    self._connection.stub.Invoke,
                    host_pb2.InvokeRequest(instance=instance, method=method, request=payload),
                    timeout=timeout, wait_for_ready=wait_for_ready)
            except PolyplugError as error:
                if attempt == self._MAX_RETRIES or error.reason not in _RETRY_REASONS:
                    raise
                # A reload, a host restart or a broken connection took it: make it again.
                self._drop(instance.instance_id)
                continue
            with self._lock:
                info = LiveCallInfo(generation, self._last_answered != 0
                                    and generation > self._last_answered)
                self._last_answered = max(self._last_answered, generation)
            return response, info
        raise AssertionError("unreachable")

    @property
    def instance(self) -> host_pb2.InstanceRef | None:
        """The instance in use, if one was made and not destroyed since."""
        with self._lock:
            return self._current

    @property
    def instances_made(self) -> int:
        """How many instances were made so far: the generation of the newest one."""
        with self._lock:
            return self._made

    @property
    def recreations(self) -> int:
        """How many times the instance was made again (its state started over)."""
        with self._lock:
            return max(self._made - 1, 0)

    def close(self) -> None:
        """Stops following reloads and destroys the remote instance (best effort: at most
        5 s against a host that does not answer, after a refresh in progress). Invokes
        after it raise CancelledError. Idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            last, self._current = self._current, None
        with self._announce_lock:
            self._closed = True
        self._finalizer.detach()
        self._tracked.close()  # no refresh runs after this
        if last is not None:
            self._destroy(last)
        self._connection.release()

    def __enter__(self) -> LiveInstance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure(self, timeout: float | None,
                wait_for_ready: bool) -> tuple[host_pb2.InstanceRef, int]:
        announce = False
        with self._lock:
            if self._closing:
                raise make_error(grpc.StatusCode.CANCELLED,
                                 f"the LiveInstance of {self._contract} is closed",
                                 target=self._connection.target)
            self._used = True
            if self._current is not None:
                return self._current, self._made
            made = create_leased_instance(
                self._connection,
                host_pb2.CreateInstanceRequest(contract=self._contract,
                                               min_version=self._min_version, args=self._args),
                timeout, wait_for_ready)
            self._current = made
            self._made += 1
            generation = self._made
            if generation > 1 and self._on_recreated is not None:
                with self._announce_lock:
                    self._to_announce.append(InstanceRecreated(
                        generation, self._last_made or host_pb2.InstanceRef(), made))
                announce = True
            self._last_made = made
        if announce:
            self._announce()
        return made, generation

    def _announce(self) -> None:
        """Runs on_recreated for the queued re-creations, one call at a time."""
        with self._announce_lock:
            if self._announcing:
                return
            self._announcing = True
        while True:
            with self._announce_lock:
                if not self._to_announce or self._closed:
                    self._to_announce.clear()
                    self._announcing = False
                    return
                next_one = self._to_announce.pop(0)
            assert self._on_recreated is not None
            try:
                self._on_recreated(next_one)
            except Exception:  # logged; the instance was made and the call goes on
                _log.exception("polyplug_client: on_recreated of %s raised", self._contract)

    def _drop(self, instance_id: int) -> None:
        with self._lock:
            if self._current is None or self._current.instance_id != instance_id:
                return
            dropped, self._current = self._current, None
        self._destroy(dropped)

    def _destroy(self, instance: host_pb2.InstanceRef) -> None:
        try:
            self._connection.unary(self._connection.stub.DestroyInstance,
                                   host_pb2.DestroyInstanceRequest(instance=instance),
                                   timeout=min(self._connection.options.call_timeout, 5.0))
        except PolyplugError:
            pass  # usually destroyed by the reload already

    def _on_refreshed(self, _: Lookup, now: Lookup) -> None:
        old: host_pb2.InstanceRef | None = None
        with self._lock:
            if self._current is not None:
                made_from = self._current.handle
                if (not isinstance(now, PolyplugError) and made_from.host_epoch == now.host_epoch
                        and made_from.registry_revision >= now.registry_revision):
                    return  # made after the change (e.g. by an invoke's retry)
                old, self._current = self._current, None
            remake = self._used and not isinstance(now, PolyplugError)
        if old is not None:
            self._destroy(old)
        if remake:
            try:
                self._ensure(None, False)
            except PolyplugError:
                pass  # the next invoke() tries again and reports
