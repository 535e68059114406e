"""Helpers of the subscription tests (test_subscribe.py, test_equivalence.py): a log of what
a subscription delivered that tests wait on, the three forms of consuming a subscription
behind one interface, and a TCP relay whose connections a test can cut.

- Log records every item (PhaseEvent, HostRestarted, Resynced, ConnectionChanged,
  Stopped) with the thread that handled it, as compact lines like the C++ SubscriptionLog
  (tests/client/client_fixture.h): "PREPARING counter", "LOADED chain_a (synthetic)",
  "RESYNCED INITIAL counter,stateless", "HOST_RESTARTED", "CONNECTED", "DISCONNECTED",
  "STOPPED OUT_OF_RANGE". Waits are on a threading.Condition notified per item.
- Consumer is one subscription in one of the package's three forms: PhaseHandlers on the
  Subscription's thread (HostClient.subscribe), the iterator HostClient.events() pumped by
  a thread, and `async for` over AsyncHostClient.events() in asyncio.run() on a thread.
- TcpProxy is the C++ fixture's TcpProxy: 127.0.0.1:<port> relaying to the host's unix
  socket; sever() closes every relayed connection and refuses new ones until restore(), so
  a client's stream breaks while the host runs on.

Nothing here sleeps to let time pass: the only timed waits are safety nets, and
wait_until() re-checks a condition that no event announces (a subscription's cursor,
which heartbeats move without a handler call) every 10 ms.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import hostproc
from conftest import fast_options
from polyplug_client import (ConnectionChanged, ConnectOptions, Cursor, EventStream, HostClient,
                             HostRestarted, PhaseEvent, PhaseHandlers, Resynced, Stopped,
                             Subscription, SubscriptionItem)
from polyplug_client.aio import AsyncEventStream, AsyncHostClient

# Safety net of every wait: how long a broken host or client may stall a test.
WAIT_TIMEOUT: float = hostproc.CALL_TIMEOUT

# Quick reconnects (conftest.fast_options).
FAST_OPTIONS = fast_options()

FORMS = ("handlers", "iterator", "async")


def describe(item: SubscriptionItem) -> str:
    """The compact line of one item (see the module docstring)."""
    if isinstance(item, PhaseEvent):
        return f"{item.phase.name} {item.bundle_name}" + (" (synthetic)" if item.synthetic else "")
    if isinstance(item, Resynced):
        return f"RESYNCED {item.cause.value} " + ",".join(b.name for b in item.bundles)
    if isinstance(item, HostRestarted):
        return "HOST_RESTARTED"
    if isinstance(item, ConnectionChanged):
        return "CONNECTED" if item.connected else "DISCONNECTED"
    assert isinstance(item, Stopped)
    return f"STOPPED {item.error.code.name}"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_TIMEOUT) -> None:
    """Re-checks `condition` every 10 ms until it holds; AssertionError naming `what` after
    `timeout`. Only for state that no event announces (a cursor moved by a heartbeat)."""
    give_up = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        pause.wait(0.01)


class Log:
    """What one subscription delivered, in order, with the handling thread. Thread-safe."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: list[SubscriptionItem] = []
        self._threads: list[int] = []

    def add(self, item: SubscriptionItem) -> None:
        with self._cond:
            self._items.append(item)
            self._threads.append(threading.get_ident())
            self._cond.notify_all()

    def handlers(self) -> PhaseHandlers:
        """PhaseHandlers that record into this log."""
        return PhaseHandlers(on_preparing=self.add, on_reloaded=self.add, on_failed=self.add,
                             on_unloading=self.add, on_loaded=self.add,
                             on_host_restarted=self.add, on_resynced=self.add,
                             on_connection_changed=self.add, on_stopped=self.add)

    def items(self, start: int = 0) -> list[SubscriptionItem]:
        with self._cond:
            return self._items[start:]

    def lines(self, start: int = 0) -> list[str]:
        return [describe(item) for item in self.items(start)]

    def threads(self) -> list[int]:
        with self._cond:
            return list(self._threads)

    def events(self, start: int = 0) -> list[PhaseEvent]:
        """The phase events among the items from index `start` (an item index) on."""
        return [i for i in self.items(start) if isinstance(i, PhaseEvent)]

    def resyncs(self) -> list[Resynced]:
        return [i for i in self.items() if isinstance(i, Resynced)]

    def restarts(self) -> list[HostRestarted]:
        return [i for i in self.items() if isinstance(i, HostRestarted)]

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def wait_for(self, what: str, done: Callable[[list[SubscriptionItem]], bool],
                 timeout: float = WAIT_TIMEOUT) -> list[SubscriptionItem]:
        """Waits until done(items) holds and returns the items; AssertionError with what was
        delivered so far after `timeout`."""
        with self._cond:
            if self._cond.wait_for(lambda: done(self._items), timeout):
                return list(self._items)
            lines = [describe(item) for item in self._items]
        raise AssertionError(f"gave up waiting for {what}; the subscription delivered:\n  "
                             + "\n  ".join(lines))

    def wait_for_line(self, line: str, after: int = 0) -> int:
        """Waits until an item from index `after` on is described as `line`; its index."""
        found: list[int] = []

        def done(items: list[SubscriptionItem]) -> bool:
            for i in range(after, len(items)):
                if describe(items[i]) == line:
                    found.append(i)
                    return True
            return False

        self.wait_for(repr(line), done)
        return found[0]

    def wait_for_events(self, count: int, after: int = 0) -> list[PhaseEvent]:
        """Waits until `count` phase events arrived from item index `after` on."""
        self.wait_for(f"{count} phase events",
                      lambda items: sum(isinstance(i, PhaseEvent) for i in items[after:]) >= count)
        return self.events(after)


class Consumer:
    """One subscription of a host in one of FORMS, recording into `log`. close() ends it
    and returns once no more items can be recorded."""

    log: Log

    @property
    def cursor(self) -> Cursor | None:
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HandlersConsumer(Consumer):
    """HostClient.subscribe(PhaseHandlers): the handlers run on the Subscription's thread."""

    def __init__(self, target: str, options: ConnectOptions, **subscribe: Any) -> None:
        self.log = Log()
        self.client = HostClient(target, options)
        self.subscription: Subscription = self.client.subscribe(self.log.handlers(), **subscribe)

    @property
    def cursor(self) -> Cursor | None:
        return self.subscription.cursor

    @property
    def connected(self) -> bool:
        return self.subscription.connected

    def close(self) -> None:
        self.subscription.close()
        self.client.close()


class IteratorConsumer(Consumer):
    """`for item in HostClient.events()` on a thread of its own."""

    def __init__(self, target: str, options: ConnectOptions, **subscribe: Any) -> None:
        self.log = Log()
        self.client = HostClient(target, options)
        self.stream: EventStream = self.client.events(**subscribe)
        self.ended = threading.Event()  # the iteration ended (by itself or by close())
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._pump, name="events-iterator", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for item in self.stream:
                self.log.add(item)
        except BaseException as error:  # reported by close()
            self.error = error
        finally:
            self.ended.set()

    @property
    def cursor(self) -> Cursor | None:
        return self.stream.cursor

    @property
    def connected(self) -> bool:
        return self.stream.connected

    def join(self, timeout: float = WAIT_TIMEOUT) -> None:
        """Waits until the iteration ended; AssertionError if it does not."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the iteration did not end"
        if self.error is not None:
            raise AssertionError(f"the iteration raised {self.error!r}") from self.error

    def close(self) -> None:
        self.stream.close()
        self.join()
        self.client.close()


class AsyncConsumer(Consumer):
    """`async for item in AsyncHostClient.events()` in asyncio.run() on a thread of its own.
    close() cancels the iterating task (the way an application stops a consumer task)."""

    def __init__(self, target: str, options: ConnectOptions, **subscribe: Any) -> None:
        self.log = Log()
        self._target = target
        self._options = options
        self._subscribe = subscribe
        self._stream: AsyncEventStream | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = threading.Event()
        self._stopping = False
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="async-events", daemon=True)
        self._thread.start()
        assert self._started.wait(WAIT_TIMEOUT), "the asyncio consumer did not start"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # reported by close()
            self.error = error
        finally:
            self.ended.set()
            self._started.set()

    async def _main(self) -> None:
        async with AsyncHostClient(self._target, self._options) as client:
            stream = client.events(**self._subscribe)
            self._stream = stream
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            self._started.set()
            try:
                async for item in stream:
                    self.log.add(item)
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
            finally:
                await stream.close()

    @property
    def cursor(self) -> Cursor | None:
        return self._stream.cursor if self._stream is not None else None

    @property
    def connected(self) -> bool:
        return self._stream is not None and self._stream.connected

    def close(self) -> None:
        self._stopping = True
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not self.ended.is_set():
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass  # the loop is closed: the iteration ended by itself
        self._thread.join(WAIT_TIMEOUT)
        assert not self._thread.is_alive(), "the asyncio consumer did not end"
        if self.error is not None:
            raise AssertionError(f"the asyncio consumer raised {self.error!r}") from self.error


def start_consumer(form: str, target: str, options: ConnectOptions = FAST_OPTIONS,
                   **subscribe: Any) -> Consumer:
    """A subscription of `target` in `form` (one of FORMS) with the keyword arguments of
    HostClient.subscribe/events (bundle_names, resume_after, strict_resume, heartbeat,
    synthesize_transitions)."""
    if form == "handlers":
        return HandlersConsumer(target, options, **subscribe)
    if form == "iterator":
        return IteratorConsumer(target, options, **subscribe)
    if form == "async":
        return AsyncConsumer(target, options, **subscribe)
    raise ValueError(f"unknown form {form!r}")


class TcpProxy:
    """127.0.0.1:<port> relaying every connection to the unix socket of `unix_target`
    ("unix:PATH"). sever() closes every relayed connection and refuses new ones (accepts and
    closes them) until restore(); it returns once the connections are closed, so nothing
    the host writes after it reaches a client. One thread relays, under a lock."""

    def __init__(self, unix_target: str) -> None:
        assert unix_target.startswith("unix:"), unix_target
        self._path = unix_target[len("unix:"):]
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._wake_r, self._wake_w = os.pipe()
        self._cond = threading.Condition()
        self._peer: dict[socket.socket, socket.socket] = {}  # both directions
        self._severed = False
        self._stopping = False
        self._sever_asked = 0
        self._sever_done = 0
        self.relayed = 0  # connections relayed so far
        self._thread = threading.Thread(target=self._loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sever(self) -> None:
        with self._cond:
            self._severed = True
            self._sever_asked += 1
            asked = self._sever_asked
        os.write(self._wake_w, b"s")
        with self._cond:
            if not self._cond.wait_for(lambda: self._sever_done >= asked, WAIT_TIMEOUT):
                raise AssertionError("the proxy did not sever its connections")

    def restore(self) -> None:
        with self._cond:
            self._severed = False

    def close(self) -> None:
        with self._cond:
            self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(WAIT_TIMEOUT)
        with self._cond:
            self._close_all_locked()
        self._listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _close_all_locked(self) -> None:
        for sock in list(self._peer):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._peer.clear()

    def _drop_locked(self, sock: socket.socket) -> None:
        other = self._peer.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self._peer.pop(s, None)
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                if self._severed:
                    self._close_all_locked()
                self._sever_done = self._sever_asked
                self._cond.notify_all()
                socks = list(self._peer)
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            poller.register(self._listener.fileno(), select.POLLIN)
            by_fd = {s.fileno(): s for s in socks}
            for fd in by_fd:
                poller.register(fd, select.POLLIN)
            ready = dict(poller.poll())
            if ready.pop(self._wake_r, 0):
                os.read(self._wake_r, 64)
                continue  # sever or stop first
            listener_ready = ready.pop(self._listener.fileno(), 0)
            for fd in ready:
                with self._cond:
                    sock = by_fd.get(fd)
                    if sock is None or sock not in self._peer:
                        continue
                    try:
                        data = sock.recv(65536)
                        if data:
                            self._peer[sock].sendall(data)
                    except OSError:
                        data = b""
                    if not data:
                        self._drop_locked(sock)
            if listener_ready:
                client, _ = self._listener.accept()
                with self._cond:
                    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        if self._severed:
                            raise OSError("severed")
                        upstream.connect(self._path)
                    except OSError:
                        upstream.close()
                        try:
                            client.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                        client.close()
                        continue
                    self._peer[client] = upstream
                    self._peer[upstream] = client
                    self.relayed += 1
