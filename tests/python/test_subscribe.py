"""polyplug_client subscriptions against real polyplug-host processes, in each of the three
forms (PhaseHandlers on the Subscription's thread, the iterator HostClient.events(), and
`async for` over AsyncHostClient.events() under asyncio.run()): the guarantees of the C++
client's tests (tests/client/client_subscription_test.cc, resync_transitions_test.cc,
supervise_test.cc), one for one where they apply.

- the initial snapshot (Resynced INITIAL) with the loaded bundles, and no event for them;
- events in seq order with every field, the reload ids of a cascade among them;
- a bundle filter, and heartbeats moving the cursor past the events it filters out;
- the cursor moving past an item once it was handled;
- resume_after a cursor: exactly the events after it; a cursor of another epoch: a resync,
  or with strict_resume a Stopped with OutOfRangeError; a cursor the journal lost;
- a dropped connection (a TCP relay cut, the host running on) resumed after the last event
  handled, without loss or duplicates;
- a journal too short (--journal-size 3): Resynced FELL_BEHIND after the synthetic
  transitions the handlers missed (UNLOADING first, then LOADED/RELOADED by name);
- a server killed under --supervise: ConnectionChanged, HostRestarted, synthetic
  transitions for what changed, Resynced HOST_RESTARTED, live events of the new epoch;
- a bundle that crashes the supervised host: FAILED (CRASHED) after the resync;
- close() from a handler or the loop body, and from another thread (task); a subscription
  outliving the HostClient that started it;
- TrackedContract and LiveInstance across a supervised restart.

Every wait is on what a subscription delivered (subscribe_support.Log), a callback, a
process's exit or a log line; timeouts are safety nets only. The one exception is the
cursor, which heartbeats move without any callback: subscribe_support.wait_until re-checks
it every 10 ms.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import grpc
import pytest

import hostproc
from conftest import StartHost
from polyplug_client import (RELOAD_OUTCOME_FAILED, RELOAD_OUTCOME_RELOADED, ConnectionChanged,
                             Cursor, EventStream, HostClient, HostRestarted, InstanceRecreated,
                             OutOfRangeError, Phase, PhaseEvent, PhaseHandlers, PolyplugError,
                             Resynced, ResyncCause, Stopped, Subscription, SubscriptionItem,
                             Version)
from polyplug.host.v1 import host_pb2
from polyplug_client.aio import AsyncHostClient
from polyplug_client.tracking import Lookup
from subscribe_support import (FAST_OPTIONS, FORMS, WAIT_TIMEOUT, AsyncConsumer,
                               IteratorConsumer, Log, TcpProxy, describe, start_consumer,
                               wait_until)

# Under ASan, let the crasher bundle's faults reach the supervisor's crash handling (the C++
# SuperviseTest does the same); without ASan the variable changes nothing.
CRASHER_ENV = {"ASAN_OPTIONS": "handle_segv=0:handle_sigbus=0:handle_sigfpe=0:handle_sigill=0:"
                               "handle_abort=0"}

form_param = pytest.mark.parametrize("form", FORMS)


def events_of(*responses: host_pb2.ReloadResponse) -> list[PhaseEvent]:
    """The phase events the responses list, as a subscription delivers them."""
    return [PhaseEvent.from_proto(e) for r in responses for e in r.events]


def reload_ok(client: HostClient, bundle: str) -> host_pb2.ReloadResponse:
    response = client.reload(bundle)
    assert response.outcome == RELOAD_OUTCOME_RELOADED, f"{bundle}: {response.message}"
    return response


def epoch_of(client: HostClient) -> int:
    return int(client.get_host_info().host_epoch)


def restart_server(host: hostproc.HostProcess) -> None:
    """kill -9 of the supervised server, and waits until the supervisor's new one serves."""
    served = host.server_serving_count()
    host.kill_server()
    host.wait_server_serving(served + 1)


def new_epoch(client: HostClient, old: int) -> int:
    """The epoch of the host once a host of another epoch than `old` answers."""
    info = client.get_host_info(wait_for_ready=True)
    assert info.host_epoch != old, "the host did not restart"
    return int(info.host_epoch)


def check_synthetic(events: list[PhaseEvent], resynced: Resynced) -> None:
    """What synthetic events carry: the new snapshot's epoch, seq and revision, reload ids 0,
    the time the client made them."""
    for e in events:
        assert e.synthetic, describe(e)
        assert e.host_epoch == resynced.host_epoch
        assert e.seq == resynced.seq
        assert e.registry_revision == resynced.registry_revision
        assert (e.reload_id, e.parent_reload_id, e.root_reload_id) == (0, 0, 0)
        assert e.timestamp_unix_nanos > 0
        assert (e.reason, e.message) == ("", "")


# ---------------------------------------------------------------------------------------
# The stream.


@form_param
def test_initial_resync_lists_the_loaded_bundles_and_no_event(form: str,
                                                              start_host: StartHost) -> None:
    host = start_host(bundles=["counter_v1", "stateless"])
    with HostClient(host.address, FAST_OPTIONS) as client:
        info = client.get_host_info()
        listed = {b.name: b for b in client.list_bundles().bundles}
        with start_consumer(form, host.address) as sub:
            sub.log.wait_for_line("RESYNCED INITIAL counter,stateless")
            assert sub.log.lines() == ["CONNECTED", "RESYNCED INITIAL counter,stateless"]
            initial = sub.log.resyncs()[0]
            assert initial.cause == ResyncCause.INITIAL
            assert (initial.host_epoch, initial.seq) == (info.host_epoch, info.last_seq)
            assert initial.registry_revision == info.registry_revision
            assert [b.name for b in initial.bundles] == ["counter", "stateless"]
            for b in initial.bundles:
                assert b.version == Version(1, 0, 0)
                assert b.id == listed[b.name].id
            assert initial.quarantined == ()
            assert sub.log.events() == [], "no on_loaded for what the first snapshot lists"
            assert sub.connected
            # The cursor is the snapshot's once it was handled.
            wait_until(lambda: sub.cursor == initial.cursor, "the cursor at the snapshot")


@form_param
def test_events_arrive_in_seq_order_with_every_field(form: str, start_host: StartHost,
                                                     bundle_root: Path) -> None:
    host = start_host(bundles=["chain_a", "chain_b", "chain_c", "counter_v1"])
    with HostClient(host.address, FAST_OPTIONS) as client, \
            start_consumer(form, host.address) as sub:
        sub.log.wait_for_line("RESYNCED INITIAL chain_a,chain_b,chain_c,counter")
        synced = sub.log.resyncs()[0]
        counter = bundle_root / "counter_v1"
        hostproc.overwrite_artifact(hostproc.test_bundle_dir("counter_v2"), counter)
        reloaded = reload_ok(client, "counter")
        hostproc.write_file_in_place(counter / "libcounter.so", "not an ELF file")
        failed = client.reload("counter")
        assert failed.outcome == RELOAD_OUTCOME_FAILED
        cascade = reload_ok(client, "chain_a")
        expected = events_of(reloaded, failed, cascade)
        assert len(expected) == 10

        events = sub.log.wait_for_events(10)
        # Field by field what the reload responses list: the same events, in the same order.
        assert events == expected
        assert sub.log.lines()[2:] == [
            "PREPARING counter", "RELOADED counter", "PREPARING counter", "FAILED counter",
            "PREPARING chain_a", "PREPARING chain_b", "PREPARING chain_c", "RELOADED chain_c",
            "RELOADED chain_b", "RELOADED chain_a"]  # fmt: skip
        assert [e.seq for e in events] == list(range(synced.seq + 1, synced.seq + 11))
        assert {e.host_epoch for e in events} == {synced.host_epoch}
        assert all(e.timestamp_unix_nanos > 0 for e in events)
        stamps = [e.timestamp_unix_nanos for e in events]
        revisions = [e.registry_revision for e in events]
        assert stamps == sorted(stamps) and revisions == sorted(revisions)
        assert not any(e.synthetic for e in events)
        assert [e.is_terminal for e in events] == [False, True, False, True, False, False,
                                                   False, True, True, True]

        # The successful reload: one reload id, the new version.
        assert events[0].reload_id == events[1].reload_id == reloaded.reload_id
        assert events[1].bundle_version == Version(2, 0, 0)
        assert events[0].root_reload_id == reloaded.reload_id
        # The failure: its reason and message, the reload's id.
        fail = events[3]
        assert fail.phase == Phase.FAILED
        assert fail.reason == "ARTIFACT_NOT_LOADABLE"
        assert fail.message == failed.message and "not an ELF" in fail.message
        assert fail.reload_id == events[2].reload_id == failed.reload_id
        # The cascade: each bundle its own reload id, naming its parent and the primary.
        a_prep, b_prep, c_prep, c_rel, b_rel, a_rel = events[4:]
        assert a_prep.reload_id == cascade.reload_id
        assert (a_prep.parent_reload_id, a_prep.root_reload_id) == (0, a_prep.reload_id)
        assert (b_prep.parent_reload_id, b_prep.root_reload_id) == (a_prep.reload_id,
                                                                    a_prep.reload_id)
        assert (c_prep.parent_reload_id, c_prep.root_reload_id) == (b_prep.reload_id,
                                                                    a_prep.reload_id)
        assert len({a_prep.reload_id, b_prep.reload_id, c_prep.reload_id}) == 3
        for prep, done in ((a_prep, a_rel), (b_prep, b_rel), (c_prep, c_rel)):
            assert (done.reload_id, done.parent_reload_id, done.root_reload_id) == (
                prep.reload_id, prep.parent_reload_id, prep.root_reload_id)
            assert done.bundle_id == prep.bundle_id
        # One thread delivered everything, and not the test's.
        threads = sub.log.threads()
        assert len(set(threads)) == 1 and threads[0] != threading.get_ident()
        wait_until(lambda: sub.cursor == events[-1].cursor, "the cursor at the last event")


@form_param
def test_bundle_filter_and_heartbeats_move_the_cursor_past_filtered_events(
        form: str, start_host: StartHost) -> None:
    host = start_host(bundles=["counter_v1", "stateless"])
    with HostClient(host.address, FAST_OPTIONS) as client, \
            start_consumer(form, host.address, bundle_names=("stateless",),
                           heartbeat=0.1) as sub:
        sub.log.wait_for_line("RESYNCED INITIAL stateless")
        synced = sub.log.resyncs()[0]
        wait_until(lambda: sub.cursor == synced.cursor, "the cursor at the snapshot")
        last = [reload_ok(client, "counter"), reload_ok(client, "counter")][-1].events[-1].seq
        # No event is delivered for counter, but the heartbeats carry the cursor past its
        # events: a subscription resumed from it would not replay them.
        wait_until(lambda: sub.cursor == Cursor(synced.host_epoch, last),
                   f"heartbeats to move the cursor to seq {last}")
        assert sub.log.lines() == ["CONNECTED", "RESYNCED INITIAL stateless"]
        stateless = reload_ok(client, "stateless")
        events = sub.log.wait_for_events(2)
        assert events == events_of(stateless)
        assert [describe(e) for e in events] == ["PREPARING stateless", "RELOADED stateless"]
        assert [e.seq for e in events] == [last + 1, last + 2]


@form_param
def test_resume_after_a_cursor_delivers_exactly_the_events_after_it(
        form: str, start_host: StartHost) -> None:
    host = start_host(bundles=["counter_v1"])
    with HostClient(host.address, FAST_OPTIONS) as client:
        info = client.get_host_info()
        start = info.last_seq
        reload_ok(client, "counter")
        second = reload_ok(client, "counter")
        after = Cursor(info.host_epoch, start + 2)  # skip the first reload
        with start_consumer(form, host.address, resume_after=after) as sub:
            events = sub.log.wait_for_events(2)
            assert events == events_of(second)
            assert sub.log.lines() == ["CONNECTED", "PREPARING counter", "RELOADED counter"]
            third = reload_ok(client, "counter")
            events = sub.log.wait_for_events(4)
            assert events[2:] == events_of(third)
            assert [e.seq for e in events] == list(range(start + 3, start + 7))
            assert sub.log.resyncs() == [], "resumed from the journal: no snapshot"
            wait_until(lambda: sub.cursor == events[-1].cursor, "the cursor at the last event")


@form_param
def test_cursor_while_an_item_is_handled_names_the_item_before(form: str,
                                                               start_host: StartHost) -> None:
    """The cursor moves past an item once it was handled: when its handler returned, or
    when the iterator is asked for the next item."""
    host = start_host(bundles=["counter_v1"])
    seen: list[tuple[SubscriptionItem, Cursor | None]] = []
    synced = threading.Event()
    done = threading.Event()

    def record(item: SubscriptionItem, cursor: Cursor | None) -> None:
        seen.append((item, cursor))
        if isinstance(item, Resynced):
            synced.set()
        if isinstance(item, PhaseEvent) and item.phase == Phase.RELOADED:
            done.set()

    after: Cursor | None = None  # the cursor once the subscription ended
    with HostClient(host.address, FAST_OPTIONS) as client:
        if form == "handlers":
            holder: list[Subscription] = []
            assigned = threading.Event()

            def on_item(item: SubscriptionItem) -> None:
                assert assigned.wait(WAIT_TIMEOUT)
                record(item, holder[0].cursor)

            holder.append(client.subscribe(PhaseHandlers(
                on_preparing=on_item, on_reloaded=on_item, on_resynced=on_item,
                on_connection_changed=on_item)))  # fmt: skip
            assigned.set()
            assert synced.wait(WAIT_TIMEOUT)
            reload_ok(client, "counter")
            assert done.wait(WAIT_TIMEOUT)
            holder[0].close()
            after = holder[0].cursor
        elif form == "iterator":
            with client.events() as stream:
                for item in stream:
                    record(item, stream.cursor)
                    if isinstance(item, Resynced):
                        reload_ok(client, "counter")  # its events wait in the stream
                    if done.is_set():
                        break
                after = stream.cursor
        else:

            async def main() -> Cursor | None:
                async with AsyncHostClient(host.address, FAST_OPTIONS) as aio:
                    stream = aio.events()
                    async for item in stream:
                        record(item, stream.cursor)
                        if isinstance(item, Resynced):
                            await aio.reload("counter")
                        if done.is_set():
                            break
                    await stream.close()
                    return stream.cursor

            after = asyncio.run(asyncio.wait_for(main(), WAIT_TIMEOUT))

    assert [describe(item) for item, _ in seen] == [
        "CONNECTED", "RESYNCED INITIAL counter", "PREPARING counter", "RELOADED counter"]
    resynced, preparing, reloaded = (item for item, _ in seen[1:])
    assert isinstance(resynced, Resynced) and isinstance(preparing, PhaseEvent)
    assert isinstance(reloaded, PhaseEvent)
    assert [cursor for _, cursor in seen] == [None, None, resynced.cursor, preparing.cursor]
    # A handler that returned counts as handled; an item the loop broke out on does not (the
    # next one was never asked for): a subscription resumed from there gets it again.
    assert after == (reloaded.cursor if form == "handlers" else preparing.cursor)


@form_param
def test_cursor_of_another_epoch_resyncs_or_stops_when_strict(form: str,
                                                              start_host: StartHost) -> None:
    host = start_host(bundles=["counter_v1"])
    with HostClient(host.address, FAST_OPTIONS) as client:
        epoch = epoch_of(client)
    stale = Cursor(epoch ^ 0x5A5A, 1)
    with start_consumer(form, host.address, resume_after=stale) as sub:
        sub.log.wait_for_line("RESYNCED HOST_RESTARTED counter")
        assert sub.log.lines() == ["CONNECTED", "HOST_RESTARTED",
                                   "RESYNCED HOST_RESTARTED counter"]
        assert sub.log.restarts() == [HostRestarted(stale.host_epoch, epoch)]
        assert sub.log.events() == [], "it heard of no bundle before: nothing to synthesize"

    sub = start_consumer(form, host.address, resume_after=stale, strict_resume=True)
    try:
        sub.log.wait_for_line("STOPPED OUT_OF_RANGE")
        if isinstance(sub, (IteratorConsumer, AsyncConsumer)):
            assert sub.ended.wait(WAIT_TIMEOUT), "the iteration did not end after Stopped"
    finally:
        sub.close()
    assert sub.log.lines() == ["STOPPED OUT_OF_RANGE"], "nothing after Stopped"
    stopped = sub.log.items()[0]
    assert isinstance(stopped, Stopped)
    assert isinstance(stopped.error, OutOfRangeError)
    assert stopped.error.reason == "CURSOR_OUT_OF_RANGE"


# ---------------------------------------------------------------------------------------
# Reconnects, gaps, restarts, crashes.


@form_param
def test_reconnect_resumes_after_the_last_event_without_loss_or_duplicates(
        form: str, start_host: StartHost) -> None:
    host = start_host(bundles=["counter_v1"])
    with TcpProxy(host.address) as proxy, HostClient(host.address, FAST_OPTIONS) as direct, \
            start_consumer(form, proxy.address) as sub:
        sub.log.wait_for_line("RESYNCED INITIAL counter")
        synced = sub.log.resyncs()[0]
        before = len(sub.log)
        proxy.sever()  # the host runs on; only this client's connection breaks
        sub.log.wait_for_line("DISCONNECTED", after=before)
        assert not sub.connected
        # Three reloads while it is cut off (it keeps retrying, and the relay refuses it).
        responses = [reload_ok(direct, "counter") for _ in range(3)]
        proxy.restore()
        events = sub.log.wait_for_events(6, after=before)
        assert sub.log.lines(before) == ["DISCONNECTED", "CONNECTED"] + [
            "PREPARING counter", "RELOADED counter"] * 3
        assert events == events_of(*responses), "exactly the events missed, field by field"
        assert [e.seq for e in events] == list(range(synced.seq + 1, synced.seq + 7))
        assert len(sub.log.resyncs()) == 1, "resumed from the journal, no resync"
        down = sub.log.items(before)[0]
        assert isinstance(down, ConnectionChanged) and isinstance(down.error, PolyplugError)
        assert proxy.relayed >= 2
        assert sub.connected


@form_param
def test_journal_gap_resyncs_fell_behind_after_the_synthetic_transitions(
        form: str, start_host: StartHost, bundle_root: Path) -> None:
    host = start_host("--journal-size", "3", bundles=["counter_v1", "stateless"])
    with TcpProxy(host.address) as proxy, HostClient(host.address, FAST_OPTIONS) as direct, \
            start_consumer(form, proxy.address) as sub:
        sub.log.wait_for_line("RESYNCED INITIAL counter,stateless")
        initial = sub.log.resyncs()[0]
        before = len(sub.log)
        proxy.sever()
        sub.log.wait_for_line("DISCONNECTED", after=before)
        # Four events while cut off, one more than the journal keeps.
        hostproc.overwrite_artifact(hostproc.test_bundle_dir("counter_v2"),
                                    bundle_root / "counter_v1")
        reload_ok(direct, "counter")  # PREPARING, RELOADED
        direct.unload_bundle("stateless")  # UNLOADING
        chain_a = hostproc.copy_test_bundle("chain_a", bundle_root)
        direct.load_bundle(str(chain_a))  # LOADED
        proxy.restore()
        sub.log.wait_for_line("RESYNCED FELL_BEHIND chain_a,counter", after=before)
        assert sub.log.lines(before) == [
            "DISCONNECTED", "CONNECTED", "UNLOADING stateless (synthetic)",
            "LOADED chain_a (synthetic)", "RELOADED counter (synthetic)",
            "RESYNCED FELL_BEHIND chain_a,counter"]
        assert sub.log.restarts() == []
        resynced = sub.log.resyncs()[-1]
        assert resynced.seq == direct.get_host_info().last_seq
        synthetic = sub.log.events()
        check_synthetic(synthetic, resynced)
        unloading, loaded, reloaded = synthetic
        was = {b.name: b for b in initial.bundles}
        now = {b.name: b for b in resynced.bundles}
        assert (unloading.bundle_id, unloading.bundle_version) == (was["stateless"].id,
                                                                   Version(1, 0, 0))
        assert (loaded.bundle_id, loaded.bundle_version) == (now["chain_a"].id, Version(1, 0, 0))
        assert (reloaded.bundle_id, reloaded.bundle_version) == (now["counter"].id,
                                                                 Version(2, 0, 0))

        # Live events follow, not synthetic.
        live = events_of(reload_ok(direct, "counter"))
        events = sub.log.wait_for_events(5)
        assert events[3:] == live
        assert live[0].seq == resynced.seq + 1


@form_param
def test_resume_from_a_cursor_the_journal_lost_resyncs_fell_behind_or_stops_when_strict(
        form: str, start_host: StartHost) -> None:
    host = start_host("--journal-size", "3", bundles=["counter_v1", "stateless"])
    with HostClient(host.address, FAST_OPTIONS) as client:
        info = client.get_host_info()
        old = Cursor(info.host_epoch, info.last_seq)
        reload_ok(client, "counter")
        reload_ok(client, "stateless")  # four events: the journal no longer has old.seq + 1
        last = client.get_host_info().last_seq
        with start_consumer(form, host.address, resume_after=old) as sub:
            sub.log.wait_for_line("RESYNCED FELL_BEHIND counter,stateless")
            # Resumed from a cursor, it has heard of no bundle: nothing to synthesize.
            assert sub.log.lines() == ["CONNECTED", "RESYNCED FELL_BEHIND counter,stateless"]
            assert sub.log.resyncs()[0].cursor == Cursor(old.host_epoch, last)
            live = events_of(reload_ok(client, "counter"))
            assert sub.log.wait_for_events(2) == live
            assert live[0].seq == last + 1
        with start_consumer(form, host.address, resume_after=old, strict_resume=True) as sub:
            sub.log.wait_for_line("STOPPED OUT_OF_RANGE")
            stopped = sub.log.items()[-1]
            assert isinstance(stopped, Stopped) and isinstance(stopped.error, OutOfRangeError)
        assert sub.log.lines() == ["STOPPED OUT_OF_RANGE"]


@form_param
def test_supervised_server_killed_and_restarted(form: str, start_host: StartHost,
                                                bundle_root: Path) -> None:
    """Two subscriptions of one form: one direct, which sees the kill itself; one through a
    relay cut before the kill, which sees the restart only after the restarted host changed
    (a reload to another version, an unload, a load): synthetic transitions for those."""
    host = start_host(supervise=True, bundles=["counter_v1", "stateless"])
    with TcpProxy(host.address) as proxy, HostClient(host.address, FAST_OPTIONS) as direct, \
            start_consumer(form, host.address) as seer, \
            start_consumer(form, proxy.address) as late:
        first_epoch = epoch_of(direct)
        for sub in (seer, late):
            sub.log.wait_for_line("RESYNCED INITIAL counter,stateless")
        initial = late.log.resyncs()[0]
        assert all(b.artifact_sha256 for b in initial.bundles), "--supervise hashes artifacts"
        late_before = len(late.log)
        proxy.sever()
        late.log.wait_for_line("DISCONNECTED", after=late_before)

        seer_before = len(seer.log)
        restart_server(host)
        epoch = new_epoch(direct, first_epoch)
        seer.log.wait_for_line("RESYNCED HOST_RESTARTED counter,stateless", after=seer_before)
        # The restarted server has what ran: nothing changed, nothing to synthesize.
        assert seer.log.lines(seer_before) == ["DISCONNECTED", "CONNECTED", "HOST_RESTARTED",
                                               "RESYNCED HOST_RESTARTED counter,stateless"]
        assert seer.log.restarts() == [HostRestarted(first_epoch, epoch)]
        seer_resync = seer.log.resyncs()[-1]
        assert seer_resync.host_epoch == epoch
        assert seer_resync.bundles == initial.bundles, "same ids, versions and artifacts"

        # Changes the relayed subscription does not see happen.
        hostproc.overwrite_artifact(hostproc.test_bundle_dir("counter_v2"),
                                    bundle_root / "counter_v1")
        changes = [reload_ok(direct, "counter")]
        direct.unload_bundle("stateless")
        direct.load_bundle(str(hostproc.copy_test_bundle("chain_a", bundle_root)))
        seer_live = seer.log.wait_for_events(4, after=seer_before)
        assert [describe(e) for e in seer_live] == [
            "PREPARING counter", "RELOADED counter", "UNLOADING stateless", "LOADED chain_a"]
        assert seer_live[:2] == events_of(*changes)
        assert [e.seq for e in seer_live] == list(range(seer_resync.seq + 1,
                                                        seer_resync.seq + 5))
        assert {e.host_epoch for e in seer_live} == {epoch}

        proxy.restore()
        late.log.wait_for_line("RESYNCED HOST_RESTARTED chain_a,counter", after=late_before)
        assert late.log.lines(late_before) == [
            "DISCONNECTED", "CONNECTED", "HOST_RESTARTED", "UNLOADING stateless (synthetic)",
            "LOADED chain_a (synthetic)", "RELOADED counter (synthetic)",
            "RESYNCED HOST_RESTARTED chain_a,counter"]
        assert late.log.restarts() == [HostRestarted(first_epoch, epoch)]
        resynced = late.log.resyncs()[-1]
        assert resynced.cause == ResyncCause.HOST_RESTARTED
        assert resynced.cursor == Cursor(epoch, seer_live[-1].seq)
        synthetic = late.log.events()
        check_synthetic(synthetic, resynced)
        was = {b.name: b for b in initial.bundles}
        now = {b.name: b for b in resynced.bundles}
        unloading, loaded, reloaded = synthetic
        assert unloading.bundle_version == Version(1, 0, 0)
        assert unloading.artifact_sha256 == was["stateless"].artifact_sha256
        assert loaded.artifact_sha256 == now["chain_a"].artifact_sha256
        assert reloaded.bundle_version == Version(2, 0, 0)
        assert reloaded.artifact_sha256 == now["counter"].artifact_sha256
        assert reloaded.artifact_sha256 != was["counter"].artifact_sha256

        # Live events of the new epoch follow, for both.
        live = events_of(reload_ok(direct, "counter"))
        assert late.log.wait_for_events(5)[3:] == live
        assert seer.log.wait_for_events(6, after=seer_before)[4:] == live
        assert live[0].seq == resynced.seq + 1 and live[0].host_epoch == epoch


@form_param
def test_crash_quarantines_the_version_and_tells_failed_crashed_after_the_resync(
        form: str, start_host: StartHost, bundle_root: Path) -> None:
    host = start_host(supervise=True, bundles=["counter_v1", ("crasher_v1", "crasher")],
                      env=CRASHER_ENV)
    with HostClient(host.address, FAST_OPTIONS) as client, \
            start_consumer(form, host.address) as sub:
        sub.log.wait_for_line("RESYNCED INITIAL counter,crasher")
        first_epoch = epoch_of(client)
        crashing = hostproc.test_bundle_dir("crasher_init_segv")
        hostproc.overwrite_artifact(crashing, bundle_root / "crasher")
        try:
            response = client.reload("crasher")  # polyplug_init dies of SIGSEGV
            assert response.outcome == RELOAD_OUTCOME_FAILED, response
        except PolyplugError:
            pass  # the server died under the call
        failed_at = sub.log.wait_for_line("FAILED crasher")
        epoch = new_epoch(client, first_epoch)

        lines = sub.log.lines()
        restarted = lines.index("HOST_RESTARTED")
        assert "DISCONNECTED" in lines[:restarted] and "CONNECTED" in lines[2:restarted]
        # crasher came back at 1.0.0 with the same artifact: no synthetic event. The FAILED
        # (CRASHED) the dead server could not send comes right after the resync.
        assert lines[restarted:] == ["HOST_RESTARTED", "RESYNCED HOST_RESTARTED counter,crasher",
                                     "FAILED crasher"]
        assert failed_at == len(lines) - 1
        assert sub.log.restarts() == [HostRestarted(first_epoch, epoch)]
        failed = sub.log.items()[failed_at]
        assert isinstance(failed, PhaseEvent)
        assert failed.reason == "CRASHED"
        assert failed.bundle_version == Version(3, 0, 0)
        sha = hostproc.sha256_of_file(crashing / "libcrasher.so")
        assert failed.artifact_sha256 == sha
        assert "SIGSEGV in polyplug_init" in failed.message
        assert failed.host_epoch == epoch and not failed.synthetic
        resynced = sub.log.resyncs()[-1]
        assert [(q.bundle_name, q.reason, q.artifact_sha256) for q in resynced.quarantined] == [
            ("crasher", "CRASHED", sha)]
        assert {b.name: b.version for b in resynced.bundles} == {
            "counter": Version(1, 0, 0), "crasher": Version(1, 0, 0)}

        # The quarantined build is refused, not retried: a FAILED, and the stream goes on.
        refused = client.reload("crasher")
        assert refused.outcome == RELOAD_OUTCOME_FAILED and "quarantined" in refused.message
        events = sub.log.wait_for_events(1, after=failed_at + 1)
        assert events == events_of(refused)
        assert events[0].seq == resynced.seq + 1


# ---------------------------------------------------------------------------------------
# Closing.


@form_param
def test_close_from_inside_a_handler_or_the_loop_body(form: str, start_host: StartHost) -> None:
    host = start_host(bundles=["counter_v1"])
    log = Log()
    closed_inside = threading.Event()
    with HostClient(host.address, FAST_OPTIONS) as client:
        if form == "handlers":
            holder: list[Subscription] = []
            assigned = threading.Event()

            def on_resynced(item: Resynced) -> None:
                log.add(item)
                assert assigned.wait(WAIT_TIMEOUT)
                holder[0].close()  # returns at once: no join of its own thread
                closed_inside.set()

            handlers = log.handlers()
            handlers.on_resynced = on_resynced
            holder.append(client.subscribe(handlers))
            assigned.set()
            assert closed_inside.wait(WAIT_TIMEOUT), "close() from the handler did not return"
            holder[0].close()  # from here: joins the thread; no handler can run after this
        elif form == "iterator":
            with client.events() as stream:
                for item in stream:
                    log.add(item)
                    if isinstance(item, Resynced):
                        stream.close()
                        closed_inside.set()
            # The loop ended by itself after close().
        else:

            async def main() -> None:
                async with AsyncHostClient(host.address, FAST_OPTIONS) as aio:
                    stream = aio.events()
                    async for item in stream:
                        log.add(item)
                        if isinstance(item, Resynced):
                            await stream.close()
                            closed_inside.set()

            asyncio.run(asyncio.wait_for(main(), WAIT_TIMEOUT))
        assert closed_inside.is_set()
        assert log.lines() == ["CONNECTED", "RESYNCED INITIAL counter"]

        # Nothing more reaches the closed subscription; a witness sees the reload's events.
        witness = Log()
        with client.subscribe(witness.handlers()):
            witness.wait_for_line("RESYNCED INITIAL counter")
            reload_ok(client, "counter")
            witness.wait_for_events(2)
        assert log.lines() == ["CONNECTED", "RESYNCED INITIAL counter"]


def test_close_from_another_thread_ends_the_iteration(start_host: StartHost,
                                                      tmp_path: Path) -> None:
    host = start_host(bundles=["counter_v1"])
    # A stream waiting for the next message.
    sub = IteratorConsumer(host.address, FAST_OPTIONS)
    sub.log.wait_for_line("RESYNCED INITIAL counter")
    sub.close()  # joins the iterating thread: the iteration ended
    assert sub.error is None
    assert sub.log.lines() == ["CONNECTED", "RESYNCED INITIAL counter"]

    # A stream waiting to reconnect to a host that is not there.
    nobody = f"unix:{tmp_path / 'nobody.sock'}"
    sub = IteratorConsumer(nobody, FAST_OPTIONS)
    sub.log.wait_for_line("DISCONNECTED")
    sub.close()
    assert sub.log.lines() == ["DISCONNECTED"], "reported once, not per retry"


def test_subscription_close_returns_while_no_host_is_there(tmp_path: Path) -> None:
    log = Log()
    with HostClient(f"unix:{tmp_path / 'nobody.sock'}", FAST_OPTIONS) as client:
        subscription = client.subscribe(log.handlers())
        log.wait_for_line("DISCONNECTED")
        subscription.close()  # cancels the reconnect wait and joins the thread
    assert log.lines() == ["DISCONNECTED"], "reported once, not per retry"
    down = log.items()[0]
    assert isinstance(down, ConnectionChanged) and down.error is not None
    assert "nobody.sock" in down.error.message


@pytest.mark.parametrize("form", ["handlers", "iterator"])
def test_subscription_outlives_the_host_client_that_started_it(form: str,
                                                               start_host: StartHost) -> None:
    """HostClient: "Subscriptions and tracked contracts keep the channel alive until they
    are closed" (and the C++ Subscription holds its connection): closing the client must not
    end a subscription it started."""
    host = start_host(bundles=["counter_v1"])
    log = Log()
    raised: list[BaseException] = []

    def died(error: BaseException) -> None:
        raised.append(error)
        log.add(Stopped(PolyplugError(grpc.StatusCode.UNKNOWN, f"raised {error!r}")))

    # The subscription's thread may die of an exception: that ends the wait below too.
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: died(args.exc_value or RuntimeError("?"))
    client = HostClient(host.address, FAST_OPTIONS)
    subscription: Subscription | None = None
    stream: EventStream | None = None
    pump: threading.Thread | None = None
    try:
        if form == "handlers":
            subscription = client.subscribe(log.handlers())
        else:
            iterated = stream = client.events()

            def iterate() -> None:
                try:
                    for item in iterated:
                        log.add(item)
                except BaseException as error:
                    died(error)

            pump = threading.Thread(target=iterate, daemon=True)
            pump.start()
        log.wait_for_line("RESYNCED INITIAL counter")
        client.close()
        with HostClient(host.address, FAST_OPTIONS) as other:
            expected = events_of(reload_ok(other, "counter"))
        log.wait_for("the reload's events, or the end of the subscription",
                     lambda items: sum(isinstance(i, PhaseEvent) for i in items) >= 2
                     or any(isinstance(i, Stopped) for i in items))
        assert not raised, f"the subscription died: {raised[0]!r}; it delivered {log.lines()}"
        assert [describe(i) for i in log.items() if not isinstance(i, ConnectionChanged)] == [
            "RESYNCED INITIAL counter", "PREPARING counter", "RELOADED counter"], log.lines()
        assert log.events() == expected
    finally:
        if subscription is not None:
            subscription.close()
        if stream is not None:
            stream.close()
        if pump is not None:
            pump.join(WAIT_TIMEOUT)
        client.close()
        threading.excepthook = previous_hook


def test_async_close_from_another_task_ends_the_iteration(start_host: StartHost) -> None:
    """AsyncEventStream.close() says the iteration ends once it was called; from another task
    than the one iterating, the iterating task must see the loop end, not an exception."""
    host = start_host(bundles=["counter_v1"])
    log = Log()

    async def main() -> str:
        async with AsyncHostClient(host.address, FAST_OPTIONS) as aio:
            stream = aio.events()
            synced = asyncio.Event()

            async def consume() -> str:
                async for item in stream:
                    log.add(item)
                    if isinstance(item, Resynced):
                        synced.set()
                return "ended"

            consumer = asyncio.create_task(consume())
            await synced.wait()
            await stream.close()
            return await consumer

    outcome = asyncio.run(asyncio.wait_for(main(), WAIT_TIMEOUT))
    assert outcome == "ended"
    assert log.lines() == ["CONNECTED", "RESYNCED INITIAL counter"]


# ---------------------------------------------------------------------------------------
# Handles that follow the host.


def test_tracked_contract_and_live_instance_survive_a_supervised_restart(
        start_host: StartHost) -> None:
    host = start_host(supervise=True, bundles=["counter_v1", ("crasher_v1", "crasher")],
                      env=CRASHER_ENV)
    refreshed = threading.Condition()
    refreshes: list[tuple[Lookup, Lookup]] = []
    recreated: list[tuple[int, int]] = []  # (generation, thread)
    remade = threading.Event()

    def on_refreshed(before: Lookup, now: Lookup) -> None:
        with refreshed:
            refreshes.append((before, now))
            refreshed.notify_all()

    def on_recreated(r: InstanceRecreated) -> None:
        recreated.append((r.generation, threading.get_ident()))
        remade.set()

    with HostClient(host.address, FAST_OPTIONS) as client:
        first_epoch = epoch_of(client)
        tracker = client.track_contract("test.crasher@1", on_refreshed=on_refreshed)
        before = tracker.current()
        assert (before.host_epoch, before.provider_bundle_name) == (first_epoch, "crasher")
        live = client.make_live_instance("test.crasher@1", on_recreated=on_recreated)
        answer, info = live.invoke_with_info("version")
        assert answer.response == b"v1" and info.generation == 1
        assert live.instance is not None and live.instance.handle.host_epoch == first_epoch

        restart_server(host)
        epoch = new_epoch(client, first_epoch)
        with refreshed:
            assert refreshed.wait_for(
                lambda: any(not isinstance(now, PolyplugError) and now.host_epoch == epoch
                            for _, now in refreshes), WAIT_TIMEOUT), refreshes
        now = tracker.current()
        assert now.host_epoch == epoch and now.provider_bundle_name == "crasher"
        assert tracker.change_count >= 1
        # The live instance is made again on the new host, eagerly (no call has met the
        # destroyed one yet), on the tracking thread.
        assert remade.wait(WAIT_TIMEOUT), "the live instance was not made again"
        assert recreated[0][0] == 2 and recreated[0][1] != threading.get_ident()
        assert live.instance is not None and live.instance.handle.host_epoch == epoch
        answer, info = live.invoke_with_info("version")
        assert answer.response == b"v1"
        assert (info.generation, info.recreated) == (2, True)
        assert live.recreations == 1
        live.close()
        tracker.close()


def test_a_handler_that_raises_is_logged_and_the_subscription_goes_on(
        start_host: StartHost, caplog: pytest.LogCaptureFixture) -> None:
    """A handler's exception does not end the subscription: it is logged (logger
    "polyplug_client") and the next item reaches its handler as usual."""
    host = start_host(bundles=["counter_v1"])
    reloaded = threading.Event()
    synced = threading.Event()

    def broken(_: Resynced) -> None:
        synced.set()
        raise RuntimeError("a bug in the application's handler")

    with HostClient(host.address, FAST_OPTIONS) as client, \
            client.subscribe(PhaseHandlers(on_resynced=broken,
                                           on_reloaded=lambda _: reloaded.set())):
        assert synced.wait(WAIT_TIMEOUT)
        assert client.reload("counter").outcome == RELOAD_OUTCOME_RELOADED
        assert reloaded.wait(WAIT_TIMEOUT), "the subscription ended with the handler's error"
    logged = [r for r in caplog.records if r.name == "polyplug_client"]
    assert logged and "a subscription handler raised" in logged[0].getMessage()
    assert logged[0].exc_info is not None and "a bug in" in str(logged[0].exc_info[1])


def test_closing_from_a_handler_keeps_the_cursor_past_the_handled_event(
        start_host: StartHost) -> None:
    """A handler that closes its Subscription has handled its event: the cursor names it,
    so that a subscription resumed there does not deliver it again."""
    host = start_host(bundles=["counter_v1"])
    handled: list[PhaseEvent] = []
    done = threading.Event()

    with HostClient(host.address, FAST_OPTIONS) as client:
        holder: list[Subscription] = []

        def on_reloaded(event: PhaseEvent) -> None:
            handled.append(event)
            holder[0].close()
            done.set()

        synced = threading.Event()
        holder.append(client.subscribe(PhaseHandlers(on_reloaded=on_reloaded,
                                                     on_resynced=lambda _: synced.set())))
        assert synced.wait(WAIT_TIMEOUT)
        assert client.reload("counter").outcome == RELOAD_OUTCOME_RELOADED
        assert done.wait(WAIT_TIMEOUT)
        holder[0].close()
        assert holder[0].cursor == handled[0].cursor
        assert client.reload("counter").outcome == RELOAD_OUTCOME_RELOADED
        with client.events(resume_after=holder[0].cursor) as stream:
            first = next(iter(stream))
            while not isinstance(first, PhaseEvent):
                first = next(stream)
        assert first.seq == handled[0].seq + 1
