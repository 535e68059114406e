"""Subscriptions: a host's phase events, as handlers on a thread or as an iterator.

Both forms keep the C++ client's guarantees (see _stream.py): resume after a reconnect from
the last event read, resync after a host restart or a gap, synthetic transitions after a
resync, heartbeats. A slow consumer holds the stream back; the host then ends it as a
subscriber that fell behind, and the subscription resumes from the host's journal, or
resyncs from a snapshot when the journal no longer has what it missed.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterator

import grpc

from polyplug_client._connection import Connection
from polyplug_client._stream import Backoff, Delivery, StreamCore, SubscribeOptions, is_established
from polyplug_client.errors import PolyplugError, error_from_rpc
from polyplug_client.events import (ConnectionChanged, Cursor, HostRestarted, Phase, PhaseEvent,
                                    Resynced, Stopped, SubscriptionItem)


_log = logging.getLogger("polyplug_client")


class EventStream:
    """An iterator over what a subscription delivers (PhaseEvent, HostRestarted, Resynced,
    ConnectionChanged, Stopped), read from the network on the iterating thread.

    The iteration ends after a Stopped, or once close() was called (from any thread; it
    cancels the open stream and wakes a reconnect wait). An item counts as handled, and
    `cursor` moves past it, when the next one is asked for. Use it in a `with` block or call
    close(); iterate it from one thread.
    """

    def __init__(self, connection: Connection, options: SubscribeOptions):
        self._connection = connection
        self._core = StreamCore(options)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._call: Any = None  # guarded by _lock; the open stream
        self._holds_connection = True  # guarded by _lock; released once, at the end
        self._connected = False
        connection.acquire()  # the channel stays open while this stream may use it
        self._iterator = self._run()
        # Held while a thread is inside the generator, so that close() on another thread
        # finalizes it only when nobody runs it (a generator is not thread-safe).
        self._iterating = threading.Lock()
        self._handed_out: Cursor | None = None  # guarded by _iterating; not yet handled

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> SubscriptionItem:
        with self._iterating:
            # Asked for the next item: the one handed out before was handled.
            if self._handed_out is not None:
                self._core.cursor, self._handed_out = self._handed_out, None
            delivery = next(self._iterator)
            self._handed_out = delivery.cursor
            return delivery.item

    def _next_delivery(self) -> Delivery:
        """The next delivery, for a consumer that moves the cursor itself (handled());
        StopIteration at the end."""
        with self._iterating:
            return next(self._iterator)

    def _handled(self, delivery: Delivery) -> None:
        """`delivery`'s handler returned: the cursor moves past it."""
        if delivery.cursor is not None:
            self._core.cursor = delivery.cursor

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def cursor(self) -> Cursor | None:
        """The position of the last item handled; a later subscription with it as
        `resume_after` continues where this one stopped."""
        return self._core.cursor

    @property
    def connected(self) -> bool:
        """True while a stream to the host is established."""
        return self._connected

    def close(self) -> None:
        """Ends the iteration: cancels the stream and wakes a reconnect wait. Thread-safe."""
        self._closed.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()
        if not self._iterating.acquire(blocking=False):
            return  # a thread is reading: the cancelled call ends it, and it releases
        try:
            self._iterator.close()  # a suspended generator runs its `finally` now
        finally:
            self._iterating.release()
        self._release()  # also when it never started

    def _release(self) -> None:
        with self._lock:
            holds, self._holds_connection = self._holds_connection, False
        if holds:
            self._connection.release()

    def _run(self) -> Generator[Delivery, None, None]:
        try:
            yield from self._streams()
        finally:
            self._release()

    def _streams(self) -> Iterator[Delivery]:
        options = self._connection.options
        backoff = Backoff(options.reconnect_initial_backoff, options.reconnect_max_backoff)
        while not self._closed.is_set():
            request = self._core.request()
            call = self._connection.stub.SubscribeReloadPhases(
                request, metadata=self._connection.metadata,
                wait_for_ready=self._core.wait_for_ready)
            with self._lock:
                self._call = call
            if self._closed.is_set():
                call.cancel()
            error: PolyplugError | None = None
            established = False
            try:
                # The host sends its initial metadata as soon as it accepted the stream.
                established = is_established(call.initial_metadata())
                if established:
                    self._connected = True
                    backoff.reset()
                    yield from self._hand_over(self._core.established())
                for message in call:
                    if self._closed.is_set():
                        break
                    yield from self._hand_over(self._core.on_message(message))
            except grpc.RpcError as rpc_error:
                error = error_from_rpc(rpc_error, self._connection.target, None)
            finally:
                self._connected = False
                with self._lock:
                    self._call = None
                call.cancel()
            if self._closed.is_set():
                return
            deliveries, next_step = self._core.ended(error, established)
            yield from self._hand_over(deliveries)
            if next_step == "stop":
                return
            if next_step == "backoff" and self._closed.wait(backoff.next_wait()):
                return

    def _hand_over(self, deliveries: list[Delivery]) -> Iterator[Delivery]:
        for delivery in deliveries:
            if self._closed.is_set():
                return
            yield delivery


@dataclass
class PhaseHandlers:
    """What a Subscription calls; every handler is optional. Handlers run one at a time,
    in order, on the subscription's thread; they may call the HostClient and may close
    their own Subscription. The C++ client's PhaseHandlers, one for one."""

    on_preparing: Callable[[PhaseEvent], None] | None = None
    on_reloaded: Callable[[PhaseEvent], None] | None = None
    on_failed: Callable[[PhaseEvent], None] | None = None
    on_unloading: Callable[[PhaseEvent], None] | None = None
    on_loaded: Callable[[PhaseEvent], None] | None = None
    on_host_restarted: Callable[[HostRestarted], None] | None = None
    on_resynced: Callable[[Resynced], None] | None = None
    on_connection_changed: Callable[[ConnectionChanged], None] | None = None
    on_stopped: Callable[[Stopped], None] | None = None

    def dispatch(self, item: SubscriptionItem) -> None:
        """Calls the handler of `item`, if set."""
        if isinstance(item, PhaseEvent):
            on_event = {
                Phase.PREPARING: self.on_preparing,
                Phase.RELOADED: self.on_reloaded,
                Phase.FAILED: self.on_failed,
                Phase.UNLOADING: self.on_unloading,
                Phase.LOADED: self.on_loaded,
            }[item.phase]
            if on_event is not None:
                on_event(item)
        elif isinstance(item, Resynced):
            if self.on_resynced is not None:
                self.on_resynced(item)
        elif isinstance(item, HostRestarted):
            if self.on_host_restarted is not None:
                self.on_host_restarted(item)
        elif isinstance(item, ConnectionChanged):
            if self.on_connection_changed is not None:
                self.on_connection_changed(item)
        elif self.on_stopped is not None:
            self.on_stopped(item)


class Subscription:
    """A subscription whose handlers run on its own thread. Thread-safe. A handler that
    raises is logged (logger "polyplug_client") and the next item is handled as usual.

    close() (or leaving a `with` block) cancels the stream, wakes a reconnect wait and
    joins the thread: no handler runs after it returns. Called from one of this
    subscription's own handlers, it returns at once and no further handler runs.
    """

    def __init__(self, connection: Connection, handlers: PhaseHandlers,
                 options: SubscribeOptions):
        self._handlers = handlers
        self._stream = EventStream(connection, options)
        self._thread = threading.Thread(target=self._run, name="polyplug-subscription",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                delivery = self._stream._next_delivery()
            except StopIteration:
                return
            try:
                self._handlers.dispatch(delivery.item)
            except Exception:  # a handler's bug must not end the subscription
                _log.exception("polyplug_client: a subscription handler raised on %r; the "
                               "subscription goes on with the next item", delivery.item)
            self._stream._handled(delivery)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Cancels the stream and joins the thread (unless called from a handler)."""
        self._stream.close()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    @property
    def cursor(self) -> Cursor | None:
        """The position of the last item whose handler returned."""
        return self._stream.cursor

    @property
    def connected(self) -> bool:
        """True while a stream to the host is established."""
        return self._stream.connected
