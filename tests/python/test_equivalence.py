"""The Python client's subscription delivers what in-process callbacks and the C++ client
deliver, against real polyplug-host processes.

1. Callback equivalence (tests/client/callback_equivalence_test.cc, its scenario shared in
   tests/client/equivalence_scenario.h): $POLYPLUG_INPROCESS_RECORDER runs the scenario in
   a core::Runtime and writes each on_reload event; the same steps replayed through
   polyplug_client against a host on the same root and state directory give the same
   events, field by field (the host epoch and timestamps aside), in each of the three
   forms of a subscription.
2. The C++ client: `polyplugctl watch --json` (libpolyplug_client's Subscription) and
   Python subscriptions follow one supervised host through reloads, a failure, a cascade,
   a resync after the journal lost events (--journal-size 3), and a restart of the killed
   server with changes made before the clients could see them; both sequences are equal.
   polyplugctl watch turns synthetic transitions off (tools/polyplugctl/commands/watch.cc:
   it prints what the host sent), so a Python subscription with them off must equal it
   item for item, and one with them on must equal it once its synthetic events, exactly
   those with reload id 0, are left out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path
from collections.abc import Callable
from typing import IO, Any

import pytest
from google.protobuf import timestamp_pb2

import hostproc
from conftest import StartHost
from polyplug_client import (RELOAD_OUTCOME_FAILED, RELOAD_OUTCOME_RELOADED, Cursor, HostClient,
                             HostRestarted, Phase, PhaseEvent, Resynced, SubscriptionItem)
from polyplug.host.v1 import host_pb2
from subscribe_support import (FAST_OPTIONS, FORMS, WAIT_TIMEOUT, Log, TcpProxy, describe,
                               start_consumer)

# What the scenario fires, in order (callback_equivalence_test's expected_kinds).
EXPECTED_KINDS = hostproc.EQUIVALENCE_KINDS


def reload_ok(client: HostClient, bundle: str) -> host_pb2.ReloadResponse:
    response = client.reload(bundle)
    assert response.outcome == RELOAD_OUTCOME_RELOADED, f"{bundle}: {response.message}"
    return response


# ---------------------------------------------------------------------------------------
# 1. The in-process callback.


def comparable(event: PhaseEvent) -> dict[str, Any]:
    """A delivered event in the recorder's terms (inprocess_recorder.cc): every field but
    the host epoch and the timestamp."""
    return {
        "seq": event.seq,
        "phase": event.phase.name,
        "bundle_id": event.bundle_id,
        "bundle_name": event.bundle_name,
        "bundle_version": str(event.bundle_version),
        "reload_id": event.reload_id,
        "parent_reload_id": event.parent_reload_id,
        "root_reload_id": event.root_reload_id,
        # The recorder writes the token of every event's reason, UNSPECIFIED for none; the
        # client gives "" for none.
        "reason": event.reason or "UNSPECIFIED",
        "message": event.message,
        "registry_revision": event.registry_revision,
        "live_instances": event.live_instances,
        "artifact_sha256": event.artifact_sha256,
    }


@pytest.mark.parametrize("form", FORMS)
def test_subscription_sees_exactly_what_the_in_process_callback_sees(
        form: str, start_host: StartHost, tmp_path: Path) -> None:
    # The same root and state directory for both runs: the phase messages name files there.
    root = (tmp_path / "root").resolve()
    state = (tmp_path / "state").resolve()
    in_process = hostproc.record_in_process(root, state, tmp_path / "in_process.jsonl")
    assert [f"{e['phase']} {e['bundle_name']}" for e in in_process] == EXPECTED_KINDS

    hostproc.prepare_equivalence_root(root)
    host = start_host("--state-dir", str(state), root=root)
    with HostClient(host.address, FAST_OPTIONS) as client:
        epoch = int(client.get_host_info().host_epoch)
        # From the very first event of the host: no snapshot.
        with start_consumer(form, host.address, resume_after=Cursor(epoch, 0)) as sub:

            def load(directory: Path) -> None:
                client.load_bundle(str(directory))

            def reload(name: str, expect_reloaded: bool) -> None:
                response = client.reload(name)
                assert (response.outcome == RELOAD_OUTCOME_RELOADED) == expect_reloaded, (
                    f"{name}: {response.message}")

            def unload_with_dependents(name: str) -> None:
                client.unload_bundle(name, cascade=True)

            hostproc.run_equivalence_scenario(
                root, hostproc.EquivalenceOps(load, reload, unload_with_dependents))
            remote = sub.log.wait_for_events(len(in_process))

    assert [describe(e) for e in remote] == EXPECTED_KINDS
    assert len(remote) == len(in_process)
    for i, (event, expected) in enumerate(zip(remote, in_process)):
        assert comparable(event) == expected, f"event {i}: {describe(event)}"
        assert event.host_epoch == epoch
        assert event.timestamp_unix_nanos > 0
        assert not event.synthetic
        assert event.is_terminal == (event.phase in (Phase.RELOADED, Phase.FAILED))
    assert sub.log.resyncs() == [], "resumed from seq 0: no snapshot"
    assert sub.log.lines() == ["CONNECTED"] + EXPECTED_KINDS


# ---------------------------------------------------------------------------------------
# 2. polyplugctl watch, the C++ client.


class CtlWatch:
    """`polyplugctl --host ADDRESS --json watch`, its stdout read line by line (one JSON
    envelope each) and its stderr (notes: connection lost, connected again) on threads."""

    def __init__(self, address: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("POLYPLUG_HOST", "POLYPLUG_TOKEN")}
        self.proc = subprocess.Popen(
            hostproc.dying_with_us([str(hostproc.ctl_binary()), "--host", address, "--json",
                                    "watch"]),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env)  # fmt: skip
        self._cond = threading.Condition()
        self.objects: list[dict[str, Any]] = []
        self.err: list[str] = []
        self._ended = 0  # pipes at their end
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, pipe: IO[str], is_stdout: bool) -> None:
        for line in iter(pipe.readline, ""):
            with self._cond:
                if is_stdout:
                    self.objects.append(json.loads(line))
                else:
                    self.err.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._ended += 1
            self._cond.notify_all()

    def wait_for(self, what: str,
                 done: Callable[[list[dict[str, Any]], list[str]], bool]) -> None:
        """Waits until done(objects, stderr lines) holds; AssertionError once polyplugctl
        closed its output without it (it exited), or after the safety timeout."""
        with self._cond:
            if self._cond.wait_for(lambda: done(self.objects, self.err) or self._ended == 2,
                                   WAIT_TIMEOUT) and done(self.objects, self.err):
                return
            text = "\n".join(json.dumps(o) for o in self.objects)
            raise AssertionError(f"gave up waiting for polyplugctl watch to print {what}; "
                                 f"stdout:\n{text}\nstderr:\n" + "\n".join(self.err))

    def notes(self, text: str) -> int:
        """How many stderr lines so far contain `text`."""
        with self._cond:
            return sum(text in line for line in self.err)

    def wait_for_events(self, count: int) -> None:
        self.wait_for(f"{count} events", lambda objects, _: sum(
            o["type"] == "polyplug.host.v1.ReloadPhaseEvent" for o in objects) >= count)

    def wait_for_resync(self, cause: str, count: int = 1) -> None:
        self.wait_for(f"{count} resyncs {cause}", lambda objects, _: sum(
            o["type"] == "polyplugctl.Resynced" and o["object"]["cause"] == cause
            for o in objects) >= count)

    def wait_for_note(self, text: str, count: int = 1) -> None:
        self.wait_for(f"{count} notes {text!r}",
                      lambda _, err: sum(text in line for line in err) >= count)

    def interrupt(self) -> int:
        """SIGINT, then waits for the exit and the ends of both pipes; the exit code."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(WAIT_TIMEOUT)
        for thread in self._threads:
            thread.join(WAIT_TIMEOUT)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT_TIMEOUT)


def time_text(nanos: int) -> str:
    """A timestamp as protobuf JSON writes it (what polyplugctl prints)."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(nanos)
    return stamp.ToJsonString()


Normal = tuple[Any, ...]


def normal_of_ctl(envelope: dict[str, Any]) -> Normal:
    """One line of polyplugctl watch --json, as comparable values."""
    kind, o = envelope["type"], envelope["object"]
    if kind == "polyplug.host.v1.ReloadPhaseEvent":
        v = o["bundle_version"]
        reason = o["reason"].removeprefix("FAILURE_REASON_")
        return ("EVENT", o["phase"].removeprefix("PHASE_"), o["bundle_name"],
                f"{v['major']}.{v['minor']}.{v['patch']}", int(o["seq"]), int(o["host_epoch"]),
                "" if reason == "UNSPECIFIED" else reason, int(o["reload_id"]),
                int(o["parent_reload_id"]), int(o["root_reload_id"]), int(o["bundle_id"]),
                o["message"], int(o["registry_revision"]), int(o["live_instances"]),
                o["artifact_sha256"], o["time"])  # fmt: skip
    if kind == "polyplugctl.HostRestarted":
        return ("HOST_RESTARTED", int(o["previous_epoch"]), int(o["host_epoch"]))
    assert kind == "polyplugctl.Resynced", envelope
    return ("RESYNCED", o["cause"], int(o["host_epoch"]), int(o["seq"]),
            int(o["registry_revision"]),
            tuple((int(b["id"]), b["name"], b["version"], b["artifact_sha256"])
                  for b in o["bundles"]))  # fmt: skip


def normal_of_python(item: SubscriptionItem) -> Normal | None:
    """A Python item in the terms of normal_of_ctl; None for what watch does not print as
    JSON (connection changes)."""
    if isinstance(item, PhaseEvent):
        return ("EVENT", item.phase.name, item.bundle_name, str(item.bundle_version), item.seq,
                item.host_epoch, item.reason, item.reload_id, item.parent_reload_id,
                item.root_reload_id, item.bundle_id, item.message, item.registry_revision,
                item.live_instances, item.artifact_sha256, time_text(item.timestamp_unix_nanos))
    if isinstance(item, HostRestarted):
        return ("HOST_RESTARTED", item.previous_epoch, item.epoch)
    if isinstance(item, Resynced):
        return ("RESYNCED", item.cause.value, item.host_epoch, item.seq, item.registry_revision,
                tuple((b.id, b.name, str(b.version), b.artifact_sha256) for b in item.bundles))
    return None


def python_normals(log: Log, *, synthetic: bool) -> list[Normal]:
    out: list[Normal] = []
    for item in log.items():
        if isinstance(item, PhaseEvent) and item.synthetic and not synthetic:
            continue
        normal = normal_of_python(item)
        if normal is not None:
            out.append(normal)
    return out


def describe_normal(n: Normal) -> str:
    if n[0] == "EVENT":
        return f"{n[1]} {n[2]}"
    if n[0] == "RESYNCED":
        return f"RESYNCED {n[1]} " + ",".join(b[1] for b in n[5])
    return n[0]


def test_python_and_polyplugctl_watch_agree_through_a_resync_and_a_restart(
        start_host: StartHost, bundle_root: Path) -> None:
    host = start_host("--journal-size", "3", supervise=True,
                      bundles=["chain_a", "chain_b", "chain_c", "counter_v1", "stateless",
                               ("greeter_v1", "greeter")])  # fmt: skip
    every = "chain_a,chain_b,chain_c,counter,greeter,stateless"
    # Every subscriber goes through the relay, so that all of them lose the connection at
    # the same points; the test's own calls go to the host directly.
    with TcpProxy(host.address) as proxy, HostClient(host.address, FAST_OPTIONS) as direct:
        watch = CtlWatch(proxy.address)
        try:
            with start_consumer("handlers", proxy.address) as synthesizing, \
                    start_consumer("iterator", proxy.address,
                                   synthesize_transitions=False) as plain:
                pythons = (synthesizing, plain)
                first_epoch = int(direct.get_host_info().host_epoch)
                watch.wait_for_resync("INITIAL")
                for sub in pythons:
                    sub.log.wait_for_line(f"RESYNCED INITIAL {every}")

                # Live: a reload to another version, a failure, a cascade.
                counter = bundle_root / "counter_v1"
                hostproc.overwrite_artifact(hostproc.test_bundle_dir("counter_v2"), counter)
                reload_ok(direct, "counter")
                hostproc.write_file_in_place(counter / "libcounter.so", "not an ELF file")
                assert direct.reload("counter").outcome == RELOAD_OUTCOME_FAILED
                reload_ok(direct, "chain_a")
                watch.wait_for_events(10)
                for sub in pythons:
                    sub.log.wait_for_events(10)

                def cut() -> None:
                    marks = [len(sub.log) for sub in pythons]
                    lost = watch.notes("connection lost")
                    proxy.sever()
                    for sub, mark in zip(pythons, marks):
                        sub.log.wait_for_line("DISCONNECTED", after=mark)
                    watch.wait_for_note("connection lost", lost + 1)

                # A resync: five events while cut off, more than the journal keeps.
                cut()
                direct.unload_bundle("stateless")
                reload_ok(direct, "chain_c")
                reload_ok(direct, "chain_c")
                proxy.restore()
                after_gap = "chain_a,chain_b,chain_c,counter,greeter"
                watch.wait_for_resync("FELL_BEHIND")
                for sub in pythons:
                    sub.log.wait_for_line(f"RESYNCED FELL_BEHIND {after_gap}")

                # A restart: the server killed; the restarted host changed (a load, a reload
                # to another version, an unload) before the clients see it.
                cut()
                served = host.server_serving_count()
                host.kill_server()
                host.wait_server_serving(served + 1)
                epoch = int(direct.get_host_info(wait_for_ready=True).host_epoch)
                assert epoch != first_epoch
                direct.load_bundle(str(bundle_root / "stateless"))
                hostproc.overwrite_artifact(hostproc.example_bundle_dir("greeter_v2"),
                                            bundle_root / "greeter")
                reload_ok(direct, "greeter")
                direct.unload_bundle("chain_c")
                proxy.restore()
                after_restart = "chain_a,chain_b,counter,greeter,stateless"
                watch.wait_for_resync("HOST_RESTARTED")
                for sub in pythons:
                    sub.log.wait_for_line(f"RESYNCED HOST_RESTARTED {after_restart}")

                # Live events of the new epoch: a cascade without chain_c.
                reload_ok(direct, "chain_a")
                watch.wait_for_events(14)
                for sub in pythons:
                    sub.log.wait_for_events(4, after=sub.log.wait_for_line(
                        f"RESYNCED HOST_RESTARTED {after_restart}"))
            assert watch.interrupt() == 130, "\n".join(watch.err)
        finally:
            watch.kill()

    ctl = [normal_of_ctl(o) for o in watch.objects]
    assert [describe_normal(n) for n in ctl] == [
        f"RESYNCED INITIAL {every}",
        "PREPARING counter", "RELOADED counter", "PREPARING counter", "FAILED counter",
        "PREPARING chain_a", "PREPARING chain_b", "PREPARING chain_c", "RELOADED chain_c",
        "RELOADED chain_b", "RELOADED chain_a",
        f"RESYNCED FELL_BEHIND {after_gap}",
        "HOST_RESTARTED", f"RESYNCED HOST_RESTARTED {after_restart}",
        "PREPARING chain_a", "PREPARING chain_b", "RELOADED chain_b", "RELOADED chain_a",
    ]  # fmt: skip
    assert ctl[12] == ("HOST_RESTARTED", first_epoch, epoch)
    # Item for item, every field: the subscription without synthetic transitions...
    assert python_normals(plain.log, synthetic=False) == ctl
    assert not any(e.synthetic for e in plain.log.events())
    # ...and the one with them, once they are left out.
    assert python_normals(synthesizing.log, synthetic=False) == ctl

    # The synthetic events: exactly those with reload id 0, right before the resyncs that
    # follow a gap, for what the gap hid.
    items = synthesizing.log.items()
    events = synthesizing.log.events()
    assert all(e.synthetic == (e.reload_id == 0) for e in events)
    lines = synthesizing.log.lines()
    gap = lines.index(f"RESYNCED FELL_BEHIND {after_gap}")
    restart = lines.index(f"RESYNCED HOST_RESTARTED {after_restart}")
    assert lines[gap - 2:gap] == ["CONNECTED", "UNLOADING stateless (synthetic)"]
    assert lines[restart - 5:restart] == [
        "CONNECTED", "HOST_RESTARTED", "UNLOADING chain_c (synthetic)",
        "RELOADED greeter (synthetic)", "LOADED stateless (synthetic)"]
    synthetic_at = [i for i, item in enumerate(items)
                    if isinstance(item, PhaseEvent) and item.synthetic]
    assert synthetic_at == [gap - 1, restart - 3, restart - 2, restart - 1]
    for at, resync_at in ((gap - 1, gap), (restart - 3, restart), (restart - 2, restart),
                          (restart - 1, restart)):
        event, resynced = items[at], items[resync_at]
        assert isinstance(event, PhaseEvent) and isinstance(resynced, Resynced)
        assert (event.host_epoch, event.seq, event.registry_revision) == (
            resynced.host_epoch, resynced.seq, resynced.registry_revision)
    greeter = items[restart - 2]
    assert isinstance(greeter, PhaseEvent) and str(greeter.bundle_version) == "2.0.0"
