"""The subscription protocol without its I/O: what to ask for, what a message means, what
the consumer is told. Shared by the thread-backed subscription and iterator (subscription.py)
and the asyncio one (aio.py), so that both keep the C++ client's guarantees
(client/src/subscription.cc) the same way:

- a reconnect resumes after the last message read, from the host's journal;
- a host restart (new epoch) is told as HostRestarted, then Resynced;
- a gap the journal cannot fill gets a fresh snapshot (Resynced, FELL_BEHIND);
- after a resync other than the first, the transitions the consumer missed are told as
  synthetic events: every UNLOADING first, then LOADED and RELOADED in bundle name order;
- after a host restart, FAILED (CRASHED) for each version newly quarantined.

Not thread-safe: one reader drives it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace

import grpc

from polyplug.host.v1 import host_pb2
from polyplug_client.errors import PolyplugError
from polyplug_client.events import (BundleState, ConnectionChanged, Cursor, HostRestarted, Phase,
                                    PhaseEvent, Resynced, ResyncCause, Stopped, SubscriptionItem,
                                    Version)

# Initial metadata of a SubscribeReloadPhases stream the host accepted (proto/wire/wire.h).
HOST_EPOCH_METADATA = "polyplug-host-epoch"

# Errors that retrying cannot fix: the host refuses this client or this request.
_PERMANENT = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
              grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED)


@dataclass
class SubscribeOptions:
    """How to subscribe; the same options as the C++ client's SubscribeOptions.

    `bundle_names`: only these bundles' events (empty: all). `resume_after`: start after
    this cursor instead of with a snapshot; when the host cannot resume there, the
    subscription resyncs, or with `strict_resume` stops with OUT_OF_RANGE. `heartbeat`: how
    often (seconds, at least 0.1) the host sends a progress marker on a quiet stream.
    `synthesize_transitions`: after a resync, tell the transitions missed as synthetic
    events.
    """

    bundle_names: tuple[str, ...] = ()
    resume_after: Cursor | None = None
    strict_resume: bool = False
    heartbeat: float = 10.0
    synthesize_transitions: bool = True


def is_established(initial_metadata: object) -> bool:
    """Whether a stream's initial metadata says the host accepted it."""
    for key, _ in initial_metadata or ():  # type: ignore[attr-defined]
        if key == HOST_EPOCH_METADATA:
            return True
    return False


@dataclass
class Delivery:
    """One item for the consumer, and where the cursor stands once it was handled."""

    item: SubscriptionItem
    cursor: Cursor | None = None


@dataclass
class Backoff:
    """Reconnect waits: doubling from `initial` to `maximum` seconds, with jitter."""

    initial: float
    maximum: float
    current: float = 0.0
    _random: random.Random = field(default_factory=random.Random)

    def reset(self) -> None:
        self.current = self.initial

    def next_wait(self) -> float:
        if self.current <= 0:
            self.current = self.initial
        wait = self.current * self._random.uniform(0.5, 1.0)
        self.current = min(self.current * 2, self.maximum)
        return wait


class StreamCore:
    """The state of one subscription across its streams."""

    def __init__(self, options: SubscribeOptions):
        self.options = options
        # The position of the last item handled (what `cursor` reports).
        self.cursor: Cursor | None = options.resume_after
        # Reader side: the last message read, what a reconnect resumes after.
        self._received: Cursor | None = options.resume_after
        # A strict cursor applies until a stream was established with it.
        self._strict = options.strict_resume and options.resume_after is not None
        self._reported_down = False
        self._snapshot_bundles: list[BundleState] = []
        self._snapshot_failed: list[PhaseEvent] = []
        # Consumer side: what it was last told of each bundle (None: not loaded).
        self._told: dict[str, BundleState | None] = {}
        self._told_complete = False
        self._quarantine_known: set[tuple[str, str]] = set()

    # --- the reader ---------------------------------------------------------------------

    def request(self) -> host_pb2.SubscribeReloadPhasesRequest:
        """The request of the next stream."""
        request = host_pb2.SubscribeReloadPhasesRequest()
        request.bundle_names.extend(self.options.bundle_names)
        heartbeat = max(self.options.heartbeat, 0.1)
        request.heartbeat_interval.FromNanoseconds(int(heartbeat * 1e9))
        if self._received is not None:
            request.resume_after.host_epoch = self._received.host_epoch
            request.resume_after.seq = self._received.seq
            # Without `strict`, a cursor the host cannot honour gets the snapshot instead.
            request.include_snapshot = not self._strict
        else:
            request.include_snapshot = True
        self._snapshot_bundles.clear()
        self._snapshot_failed.clear()
        return request

    @property
    def wait_for_ready(self) -> bool:
        """Once a failure was reported, wait for the host instead of failing fast."""
        return self._reported_down

    def established(self) -> list[Delivery]:
        """The stream was accepted: what to tell."""
        self._strict = False
        self._reported_down = False
        return [Delivery(ConnectionChanged(connected=True))]

    def on_message(self, message: host_pb2.ReloadPhaseEvent) -> list[Delivery]:
        """What one message of the stream means for the consumer (often nothing yet)."""
        kind = message.kind
        if kind == host_pb2.EVENT_KIND_SNAPSHOT:
            if message.phase == host_pb2.PHASE_FAILED:
                self._snapshot_failed.append(PhaseEvent.from_proto(message))
            else:
                self._snapshot_bundles.append(
                    BundleState(message.bundle_id, message.bundle_name,
                                Version.from_proto(message.bundle_version),
                                message.artifact_sha256))
            return []
        if kind == host_pb2.EVENT_KIND_SNAPSHOT_END:
            bundles = tuple(sorted(self._snapshot_bundles, key=lambda b: b.name))
            failed = tuple(self._snapshot_failed)
            self._snapshot_bundles.clear()
            self._snapshot_failed.clear()
            self._received = Cursor(message.host_epoch, message.seq)
            return self._resync(message.host_epoch, message.seq, message.registry_revision,
                                bundles, failed)
        if kind == host_pb2.EVENT_KIND_PROGRESS:
            received = self._received
            if (received is None or received.host_epoch != message.host_epoch
                    or message.seq <= received.seq):
                return []
            self._received = Cursor(message.host_epoch, message.seq)
            if self.cursor is not None and self.cursor.host_epoch == message.host_epoch:
                # A bookmark needs no handler: it moves the cursor past filtered events.
                self.cursor = self._received
            return []
        if kind == host_pb2.EVENT_KIND_PHASE:
            received = self._received
            # The host resumes after the cursor, so an event at or before it (or from
            # another epoch without a snapshot first) would be a duplicate: never deliver it.
            if received is not None and (received.host_epoch != message.host_epoch
                                         or message.seq <= received.seq):
                return []
            self._received = Cursor(message.host_epoch, message.seq)
            if not PhaseEvent.knows_phase(message.phase):
                # From a newer host: passed over, not guessed; handled as a bookmark.
                if self.cursor is not None and self.cursor.host_epoch == message.host_epoch:
                    self.cursor = self._received
                return []
            event = PhaseEvent.from_proto(message)
            self._tell(event)
            return [Delivery(event, event.cursor)]
        return []

    def ended(self, error: PolyplugError | None, established: bool) -> tuple[list[Delivery], str]:
        """The stream ended (`error` None: the host ended it cleanly). Returns what to tell
        and what to do next: "stop", "now" (reconnect at once) or "backoff"."""
        if error is None:
            error = PolyplugError(grpc.StatusCode.UNAVAILABLE, "the host ended the stream")
        if error.code in _PERMANENT or (error.code == grpc.StatusCode.OUT_OF_RANGE
                                        and not established and self._strict):
            return [Delivery(Stopped(error))], "stop"
        deliveries: list[Delivery] = []
        if not self._reported_down:
            self._reported_down = True
            deliveries.append(Delivery(ConnectionChanged(connected=False, error=error)))
        # A stream the host ended because this subscriber fell behind resumes at once.
        if established and error.code == grpc.StatusCode.OUT_OF_RANGE:
            return deliveries, "now"
        return deliveries, "backoff"

    # --- what the consumer is told ---------------------------------------------------------

    def _tell(self, event: PhaseEvent) -> None:
        """Records what a delivered event told the consumer about its bundle."""
        if event.phase in (Phase.LOADED, Phase.RELOADED):
            self._told[event.bundle_name] = BundleState(event.bundle_id, event.bundle_name,
                                                        event.bundle_version,
                                                        event.artifact_sha256)
        elif event.phase == Phase.UNLOADING:
            self._told[event.bundle_name] = None

    def _resync(self, epoch: int, seq: int, revision: int, bundles: tuple[BundleState, ...],
                failed: tuple[PhaseEvent, ...]) -> list[Delivery]:
        handled = self.cursor
        out: list[Delivery] = []
        if handled is None:
            cause = ResyncCause.INITIAL
        elif handled.host_epoch != epoch:
            cause = ResyncCause.HOST_RESTARTED
            out.append(Delivery(HostRestarted(handled.host_epoch, epoch)))
        else:
            cause = ResyncCause.FELL_BEHIND
        if self.options.synthesize_transitions and cause != ResyncCause.INITIAL:
            base = PhaseEvent(host_epoch=epoch, seq=seq, phase=Phase.LOADED, bundle_id=0,
                              bundle_name="", bundle_version=Version(),
                              registry_revision=revision, timestamp_unix_nanos=time.time_ns(),
                              synthetic=True)
            now = {b.name: b for b in bundles}
            for name in sorted(self._told):
                was = self._told[name]
                if was is None or name in now:
                    continue
                out.append(Delivery(replace(base, phase=Phase.UNLOADING, bundle_id=was.id,
                                            bundle_name=was.name, bundle_version=was.version,
                                            artifact_sha256=was.artifact_sha256)))
            for b in bundles:
                phase: Phase | None = None
                if b.name not in self._told:
                    if self._told_complete:
                        phase = Phase.LOADED  # else: never heard of it, unknown
                else:
                    was = self._told[b.name]
                    if was is None:
                        phase = Phase.LOADED
                    elif was.version != b.version or (was.artifact_sha256 and b.artifact_sha256
                                                      and was.artifact_sha256
                                                      != b.artifact_sha256):
                        phase = Phase.RELOADED
                if phase is not None:
                    out.append(Delivery(replace(base, phase=phase, bundle_id=b.id,
                                                bundle_name=b.name, bundle_version=b.version,
                                                artifact_sha256=b.artifact_sha256)))
        self._told = {b.name: b for b in bundles}
        self._told_complete = True
        resynced = Resynced(cause, epoch, seq, revision, bundles, failed)
        out.append(Delivery(resynced, resynced.cursor))
        # A version that crashed the host, announced by the restarted host; and a bundle the
        # restart could not bring back. A failure that goes away and comes back is told again.
        listed: set[tuple[str, str]] = set()
        for event in failed:
            key = (event.bundle_name, event.artifact_sha256)
            listed.add(key)
            if key not in self._quarantine_known and cause == ResyncCause.HOST_RESTARTED:
                out.append(Delivery(event, resynced.cursor))
        self._quarantine_known = listed
        return out
