"""What a subscription delivers: phase events, resyncs, restarts and connection changes.

The same values, fields and order as the C++ client's (client/include/polyplug/client/
phase_event.h), which carry what the in-process runtime's on_reload callback gets. Every
class is an immutable dataclass.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from polyplug.host.v1 import host_pb2
from polyplug_client.errors import PolyplugError, reason_token


class Phase(enum.IntEnum):
    """A bundle's phase; the same order and values as the runtime's and the C++ client's."""

    PREPARING = 0  # a reload began; the bundle's remote instances are already destroyed
    RELOADED = 1  # the new version is live (the cascade of dependents included)
    FAILED = 2  # the reload failed; the previous version is still live
    UNLOADING = 3  # the bundle is about to be unloaded; its handles go stale
    LOADED = 4  # the bundle was loaded and its contracts are published


_PHASE_OF_PROTO = {
    host_pb2.PHASE_PREPARING: Phase.PREPARING,
    host_pb2.PHASE_RELOADED: Phase.RELOADED,
    host_pb2.PHASE_FAILED: Phase.FAILED,
    host_pb2.PHASE_UNLOADING: Phase.UNLOADING,
    host_pb2.PHASE_LOADED: Phase.LOADED,
}


@dataclass(frozen=True, order=True)
class Version:
    """A bundle's semantic version."""

    major: int = 0
    minor: int = 0
    patch: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @staticmethod
    def from_proto(version: host_pb2.Version) -> Version:
        """The version a host message carries."""
        return Version(version.major, version.minor, version.patch)


@dataclass(frozen=True)
class PhaseEvent:
    """One reload/load/unload phase of one bundle.

    Each bundle operation has its own `reload_id`; a cascaded reload names the reload that
    triggered it (`parent_reload_id`) and the primary of the cascade (`root_reload_id`,
    equal to `reload_id` for a primary). `reason` is the token ("INIT_FAILED") for FAILED,
    "" otherwise; `message` is the failure, or a warning for other phases.

    `synthetic`: not an event of the host's journal. The client made it up after a resync,
    for a transition the handlers missed (LOADED: a bundle now loaded that was not;
    RELOADED: one now at another version or artifact; UNLOADING: one gone, with the version
    it had). Its host_epoch, seq and registry_revision are the new snapshot's, its reload
    ids are 0, and its timestamp is when the client made it.
    """

    host_epoch: int
    seq: int
    phase: Phase
    bundle_id: int
    bundle_name: str
    bundle_version: Version
    reload_id: int = 0
    parent_reload_id: int = 0
    root_reload_id: int = 0
    timestamp_unix_nanos: int = 0
    reason: str = ""
    message: str = ""
    registry_revision: int = 0
    live_instances: int = 0
    artifact_sha256: str = ""
    synthetic: bool = False

    @property
    def is_terminal(self) -> bool:
        """RELOADED or FAILED: the end of a reload."""
        return self.phase in (Phase.RELOADED, Phase.FAILED)

    @property
    def cursor(self) -> Cursor:
        """The position of this event; resume after it to get the events that follow."""
        return Cursor(self.host_epoch, self.seq)

    def __str__(self) -> str:
        text = f"{self.phase.name} {self.bundle_name} {self.bundle_version}"
        if self.reason:
            text += f" [{self.reason}]"
        if self.message:
            text += f" {self.message}"
        return text

    @staticmethod
    def from_proto(event: host_pb2.ReloadPhaseEvent) -> PhaseEvent:
        """The event a host message carries. Its phase must be one of the five."""
        return PhaseEvent(
            host_epoch=event.host_epoch,
            seq=event.seq,
            phase=_PHASE_OF_PROTO[event.phase],
            bundle_id=event.bundle_id,
            bundle_name=event.bundle_name,
            bundle_version=Version.from_proto(event.bundle_version),
            reload_id=event.reload_id,
            parent_reload_id=event.parent_reload_id,
            root_reload_id=event.root_reload_id,
            timestamp_unix_nanos=event.time.seconds * 1_000_000_000 + event.time.nanos,
            reason=reason_token(event.reason) if event.reason else "",
            message=event.message,
            registry_revision=event.registry_revision,
            live_instances=event.live_instances,
            artifact_sha256=event.artifact_sha256,
        )

    @staticmethod
    def knows_phase(proto_phase: int) -> bool:
        """Whether a message's phase is one this client knows (a newer host may add some)."""
        return proto_phase in _PHASE_OF_PROTO


@dataclass(frozen=True, order=True)
class Cursor:
    """A position in a host's event stream: the events after `seq` of epoch `host_epoch`."""

    host_epoch: int
    seq: int

    def __str__(self) -> str:
        return f"{self.host_epoch}:{self.seq}"


@dataclass(frozen=True)
class HostRestarted:
    """The subscription saw a new host epoch: the host process restarted, and its seq
    numbers started over. A Resynced follows."""

    previous_epoch: int
    epoch: int


class ResyncCause(enum.Enum):
    """Why a subscription resynced."""

    INITIAL = "INITIAL"  # the first snapshot of the subscription
    HOST_RESTARTED = "HOST_RESTARTED"  # the host restarted
    FELL_BEHIND = "FELL_BEHIND"  # events were lost to the host's journal


@dataclass(frozen=True)
class BundleState:
    """One loaded bundle as a snapshot lists it."""

    id: int
    name: str
    version: Version
    artifact_sha256: str = ""


@dataclass(frozen=True)
class Resynced:
    """The subscription holds a complete picture again; events after `seq` follow.

    `bundles` are the loaded bundles in name order. `quarantined` are the FAILED events
    that are part of the host's state: versions that crashed the host (reason CRASHED) and
    bundles its restart could not bring back.
    """

    cause: ResyncCause
    host_epoch: int
    seq: int
    registry_revision: int
    bundles: tuple[BundleState, ...] = ()
    quarantined: tuple[PhaseEvent, ...] = ()

    @property
    def cursor(self) -> Cursor:
        """The position the snapshot is current at; events after it follow."""
        return Cursor(self.host_epoch, self.seq)


@dataclass(frozen=True)
class ConnectionChanged:
    """The stream broke (`error` says why) and the subscription is reconnecting, or it is
    connected again (`connected`, no error). Reconnects resume after the last event seen."""

    connected: bool
    error: PolyplugError | None = None


@dataclass(frozen=True)
class Stopped:
    """The subscription gave up for good: the host refused it (UNAUTHENTICATED,
    PERMISSION_DENIED, INVALID_ARGUMENT, UNIMPLEMENTED), or a strict resume cursor could
    not be honoured (OUT_OF_RANGE). Nothing follows."""

    error: PolyplugError


# What a subscription hands over, in order: to handlers, or from an iterator.
SubscriptionItem = PhaseEvent | HostRestarted | Resynced | ConnectionChanged | Stopped

