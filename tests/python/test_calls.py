"""HostClient's calls against real polyplug-host processes: results, errors with their
codes and reason tokens, request ids, pushes, remote calls, live instances, tracked
contracts, and bad input (malformed targets and options, a host nobody runs, a frozen
host), after which the host must keep serving.

The Python twin of tests/client/client_calls_test.cc, remote_calls_test.cc,
live_instance_test.cc, tracked_contract_test.cc and push_test.cc. Every wait is on an
event (a call's answer, a callback, a queue); timeouts only bound how long a broken host
or client can stall a test.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

import hostproc
from conftest import Connect, StartHost, fast_options
from polyplug.host.v1 import host_pb2
from polyplug_client import (PUSH_OUTCOME_FAILED, PUSH_OUTCOME_LOADED, PUSH_OUTCOME_RELOADED,
                             RELOAD_OUTCOME_FAILED, RELOAD_OUTCOME_RELOADED, AbortedError,
                             AlreadyExistsError, CancelledError, ConnectOptions,
                             DeadlineExceededError, FailedPreconditionError, HostClient,
                             InstanceRecreated, InvalidArgumentError, LiveCallInfo, NotFoundError,
                             PermissionDeniedError, PolyplugError, ServingStatus,
                             UnavailableError, UnimplementedError, new_request_id, reason_token)
from polyplug_client import connect as connect_to
from polyplug_client.aio import AsyncHostClient
from polyplug_client.tracking import Lookup

# A safety net for every wait below: how long a broken host may stall a test.
TIMEOUT = hostproc.CALL_TIMEOUT

GREETER = "example.greeter@1"
COUNTER = "test.counter@1"


def expect_error(error_type: type[PolyplugError], call: Callable[[], object], *,
                 reason: str | None = None, code: grpc.StatusCode | None = None) -> PolyplugError:
    """Runs `call`, which must raise `error_type` (with that reason token and code)."""
    with pytest.raises(error_type) as caught:
        call()
    error = caught.value
    if reason is not None:
        assert error.reason == reason, repr(error)
    if code is not None:
        assert error.code == code, repr(error)
    return error


def still_serving(client: HostClient) -> None:
    """The host answers after whatever the test just did to it."""
    assert client.echo(b"still there?") == b"still there?"


def artifact_of(bundle_dir: Path) -> Path:
    """The one shared library of a bundle directory."""
    (library,) = sorted(bundle_dir.glob("*.so"))
    return library


# --- lookups and host information --------------------------------------------------------


def test_host_info_bundles_and_contracts(start_host: StartHost, connect: Connect) -> None:
    host = start_host(bundles=["chain_a", "chain_b", "greeter_v1"])
    client = connect(host)

    info = client.get_host_info()
    assert info.bundle_count == 3
    assert info.contract_count == 3
    assert info.hot_reload_enabled
    assert info.host_epoch != 0
    assert info.listen_addresses == [host.address]
    assert info.last_seq == 3  # one LOADED each

    bundles = client.list_bundles()
    assert [b.name for b in bundles.bundles] == ["chain_a", "chain_b", "greeter"]
    assert [str(b.version.major) for b in bundles.bundles] == ["1", "1", "1"]

    everything = client.list_contracts()
    assert sorted(c.contract_name for c in everything.contracts) == [
        "chain.a", "chain.b", "example.greeter"]
    only_greeter = client.list_contracts("greeter")
    assert [c.contract_name for c in only_greeter.contracts] == ["example.greeter"]
    assert only_greeter.contracts[0].provider_bundle_name == "greeter"
    expect_error(NotFoundError, lambda: client.list_contracts("no_such_bundle"),
                 reason="BUNDLE_NOT_FOUND")

    handle = client.find_contract(GREETER)
    assert handle.provider_bundle_name == "greeter"
    assert handle.host_epoch == info.host_epoch
    assert handle.invocable
    assert client.find_contract(GREETER, min_version=1) == handle
    too_new = expect_error(NotFoundError, lambda: client.find_contract(GREETER, min_version=2),
                           reason="CONTRACT_NOT_FOUND", code=grpc.StatusCode.NOT_FOUND)
    assert too_new.reason_value == host_pb2.FAILURE_REASON_CONTRACT_NOT_FOUND
    expect_error(NotFoundError, lambda: client.find_contract("nobody.provides@1"),
                 reason="CONTRACT_NOT_FOUND")
    still_serving(client)


def test_check_health_of_the_host_a_bundle_and_an_unknown_name(
        start_host: StartHost, connect: Connect) -> None:
    host = start_host(bundles=["greeter_v1", "counter_v1"])
    client = connect(host)
    assert client.check_health() == ServingStatus.SERVING
    assert client.check_health("") == ServingStatus.SERVING
    assert client.check_health("greeter") == ServingStatus.SERVING
    assert client.check_health("no_such_bundle") == ServingStatus.SERVICE_UNKNOWN
    client.unload_bundle("counter")
    assert client.check_health("counter") != ServingStatus.SERVING
    assert client.check_health("greeter") == ServingStatus.SERVING
    still_serving(client)


def test_echo_answers_bytes_and_text(start_host: StartHost, connect: Connect) -> None:
    client = connect(start_host())
    binary = b"a\0b\xff"
    assert client.echo(binary) == binary
    assert client.echo("text") == b"text"
    assert client.echo() == b""


# --- reloads -------------------------------------------------------------------------------


def test_reload_by_name_and_by_path(start_host: StartHost, connect: Connect,
                                    bundle_root: Path) -> None:
    host = start_host(bundles=[("greeter_v1", "greeter")])
    client = connect(host)
    assert client.invoke_once(GREETER, "greet", "py").response == b"Hello, py! (greeter v1)"

    hostproc.overwrite_artifact(hostproc.example_bundle_dir("greeter_v2"),
                                bundle_root / "greeter")
    reloaded = client.reload("greeter")
    assert reloaded.outcome == RELOAD_OUTCOME_RELOADED, reloaded.message
    assert reloaded.bundle_name == "greeter"
    assert reloaded.reload_id != 0
    assert [e.phase for e in reloaded.events] == [host_pb2.PHASE_PREPARING,
                                                 host_pb2.PHASE_RELOADED]
    assert all(e.root_reload_id == reloaded.reload_id for e in reloaded.events)
    assert client.invoke_once(GREETER, "greet", "py").response == b"Hi there, py! (greeter v2)"
    (bundle,) = client.list_bundles().bundles
    assert (bundle.version.major, bundle.version.minor) == (2, 0)

    by_path = client.reload(str(bundle_root / "greeter"))
    assert by_path.outcome == RELOAD_OUTCOME_RELOADED, by_path.message
    assert by_path.bundle_name == "greeter"
    assert by_path.reload_id != reloaded.reload_id


def test_a_failed_reload_is_an_outcome_and_the_previous_version_still_answers(
        start_host: StartHost, connect: Connect, bundle_root: Path) -> None:
    host = start_host(bundles=[("greeter_v1", "greeter")])
    client = connect(host)
    hostproc.write_file_in_place(bundle_root / "greeter" / "libgreeter.so", "not an ELF file")
    failed = client.reload("greeter")
    assert failed.outcome == RELOAD_OUTCOME_FAILED
    assert reason_token(failed.reason) == "ARTIFACT_NOT_LOADABLE"
    assert failed.message
    assert [e.phase for e in failed.events] == [host_pb2.PHASE_PREPARING, host_pb2.PHASE_FAILED]
    assert client.invoke_once(GREETER, "greet", "still").response == \
        b"Hello, still! (greeter v1)"
    (bundle,) = client.list_bundles().bundles
    assert bundle.version.major == 1
    assert client.check_health("greeter") == ServingStatus.SERVING


def test_reload_with_expected_sha256(start_host: StartHost, connect: Connect,
                                     bundle_root: Path) -> None:
    host = start_host(bundles=[("greeter_v1", "greeter")])
    client = connect(host)
    library = artifact_of(bundle_root / "greeter")
    v1_sha = hostproc.sha256_of_file(library)
    hostproc.overwrite_artifact(hostproc.example_bundle_dir("greeter_v2"),
                                bundle_root / "greeter")
    v2_sha = hostproc.sha256_of_file(library)
    assert v1_sha != v2_sha
    before = client.get_host_info().last_seq

    # CI built v1, but v2 is on disk: nothing happens.
    refused = expect_error(FailedPreconditionError,
                           lambda: client.reload("greeter", expected_sha256=v1_sha),
                           reason="EXPECTED_SHA256_MISMATCH",
                           code=grpc.StatusCode.FAILED_PRECONDITION)
    assert v1_sha in refused.message and v2_sha in refused.message
    assert client.get_host_info().last_seq == before, "a refused precondition fired an event"
    assert client.invoke_once(GREETER, "greet").response.endswith(b"(greeter v1)")

    expect_error(InvalidArgumentError,
                 lambda: client.reload("greeter", expected_sha256="not-hex"))

    reloaded = client.reload("greeter", expected_sha256=v2_sha)
    assert reloaded.outcome == RELOAD_OUTCOME_RELOADED, reloaded.message
    assert client.invoke_once(GREETER, "greet").response.endswith(b"(greeter v2)")


def test_request_ids_run_an_operation_once_and_get_operation_finds_it(
        start_host: StartHost, connect: Connect, bundle_root: Path) -> None:
    host = start_host(bundles=[("greeter_v1", "greeter")])
    client = connect(host)
    request_id = new_request_id()
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert new_request_id() != request_id

    hostproc.overwrite_artifact(hostproc.example_bundle_dir("greeter_v2"),
                                bundle_root / "greeter")
    first = client.reload("greeter", request_id=request_id)
    assert first.outcome == RELOAD_OUTCOME_RELOADED, first.message
    seq_after_first = client.get_host_info().last_seq

    retry = client.reload("greeter", request_id=request_id)
    assert retry.reload_id == first.reload_id
    assert retry == first
    assert client.get_host_info().last_seq == seq_after_first, "the retry ran the reload again"

    operation = client.get_operation(request_id, wait=True)
    assert operation.request_id == request_id
    assert operation.done
    assert operation.method == "Reload"
    assert operation.code == 0
    assert operation.reload == first
    assert operation.host_epoch == first.host_epoch

    # The same id for another request is refused, and runs nothing.
    reused = expect_error(AlreadyExistsError,
                          lambda: client.unload_bundle("greeter", request_id=request_id),
                          reason="REQUEST_ID_REUSED")
    assert "Reload" in reused.message
    assert [b.name for b in client.list_bundles().bundles] == ["greeter"]

    # Without an id every call runs.
    again = client.reload("greeter")
    assert again.reload_id != first.reload_id
    assert client.get_host_info().last_seq > seq_after_first


def test_an_error_outcome_is_remembered_under_its_request_id(
        start_host: StartHost, connect: Connect) -> None:
    client = connect(start_host())
    request_id = new_request_id()
    first = expect_error(NotFoundError, lambda: client.reload("nope", request_id=request_id),
                         reason="BUNDLE_NOT_FOUND")
    retry = expect_error(NotFoundError, lambda: client.reload("nope", request_id=request_id),
                         reason="BUNDLE_NOT_FOUND")
    assert retry.message == first.message
    operation = client.get_operation(request_id)
    assert operation.done
    assert operation.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert operation.reason == host_pb2.FAILURE_REASON_BUNDLE_NOT_FOUND
    assert operation.message == first.message


def test_get_operation_of_an_unknown_request_id_is_not_found(
        start_host: StartHost, connect: Connect) -> None:
    client = connect(start_host())
    error = expect_error(NotFoundError, lambda: client.get_operation("never-sent"),
                         reason="OPERATION_NOT_FOUND", code=grpc.StatusCode.NOT_FOUND)
    assert "never-sent" in error.message
    expect_error(NotFoundError, lambda: client.get_operation("never-sent", wait=True),
                 reason="OPERATION_NOT_FOUND")
    still_serving(client)


# --- loads and unloads ---------------------------------------------------------------------


def test_load_and_unload_with_and_without_cascade(start_host: StartHost, connect: Connect,
                                                  bundle_root: Path) -> None:
    host = start_host(bundles=["chain_a", "chain_b"])
    client = connect(host)

    counter = hostproc.copy_test_bundle("counter_v1", bundle_root)
    load_id = new_request_id()
    loaded = client.load_bundle(str(counter), request_id=load_id)
    assert loaded.bundle.name == "counter"
    assert loaded.event.phase == host_pb2.PHASE_LOADED
    assert loaded.registry_revision > 0
    assert client.get_operation(load_id).method == "LoadBundle"
    assert client.invoke_once(COUNTER, "version").response == b"v1"
    expect_error(AlreadyExistsError, lambda: client.load_bundle(str(counter)),
                 reason="BUNDLE_ALREADY_LOADED")
    expect_error(PermissionDeniedError, lambda: client.load_bundle("/"),
                 reason="PERMISSION_DENIED")

    # Refused while a dependent is loaded, then with the cascade: dependents first.
    refused = expect_error(FailedPreconditionError, lambda: client.unload_bundle("chain_a"),
                           reason="DEPENDENCY_IN_USE")
    assert "chain_b" in refused.message
    assert [b.name for b in client.list_bundles().bundles] == ["chain_a", "chain_b", "counter"]
    unload_id = new_request_id()
    unloaded = client.unload_bundle("chain_a", cascade=True, request_id=unload_id)
    assert list(unloaded.unloaded) == ["chain_b", "chain_a"]
    assert [e.phase for e in unloaded.events] == [host_pb2.PHASE_UNLOADING] * 2
    assert client.get_operation(unload_id, wait=True).unload == unloaded
    assert [b.name for b in client.list_bundles().bundles] == ["counter"]
    expect_error(NotFoundError, lambda: client.unload_bundle("chain_a"),
                 reason="BUNDLE_NOT_FOUND")

    # Loaded again by path, it serves again.
    client.load_bundle(str(bundle_root / "chain_a"))
    assert client.find_contract("chain.a@1").provider_bundle_name == "chain_a"


# --- pushes --------------------------------------------------------------------------------


def test_push_loads_then_reloads_into_the_deploy_root(start_host: StartHost, connect: Connect,
                                                      tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    host = start_host("--deploy-root", str(deploy))
    client = connect(host)
    work = tmp_path / "work"

    v1 = hostproc.copy_test_bundle("counter_v1", work)
    request_id = new_request_id()
    loaded = client.push_bundle(v1, request_id=request_id)
    assert loaded.outcome == PUSH_OUTCOME_LOADED, loaded.message
    assert loaded.bundle_name == "counter"
    assert Path(loaded.dir).parent == deploy.resolve()
    assert loaded.bundle.name == "counter"
    assert loaded.bytes_received == sum(f.stat().st_size for f in v1.iterdir())
    assert re.fullmatch(r"[0-9a-f]{64}", loaded.bundle_digest)
    assert [e.phase for e in loaded.events] == [host_pb2.PHASE_LOADED]
    assert client.invoke_once(COUNTER, "version").response == b"v1"
    operation = client.get_operation(request_id, wait=True)
    assert operation.method == "PushBundle"
    assert operation.push == loaded

    v2 = hostproc.copy_test_bundle("counter_v2", work)  # accepts a str path too
    reloaded = client.push_bundle(str(v2))
    assert reloaded.outcome == PUSH_OUTCOME_RELOADED, reloaded.message
    assert reloaded.dir == loaded.dir
    assert reloaded.bundle_digest != loaded.bundle_digest
    assert [e.phase for e in reloaded.events] == [host_pb2.PHASE_PREPARING,
                                                 host_pb2.PHASE_RELOADED]
    assert client.invoke_once(COUNTER, "version").response == b"v2"

    # A build that does not load is an outcome, and the running version stays.
    broken = hostproc.copy_test_bundle("counter_v1", work, "broken")
    hostproc.write_file_in_place(broken / "libcounter.so", "not an ELF file")
    failed = client.push_bundle(broken)
    assert failed.outcome == PUSH_OUTCOME_FAILED
    assert reason_token(failed.reason) != "UNSPECIFIED"
    assert failed.message
    assert client.invoke_once(COUNTER, "version").response == b"v2"
    assert [b.name for b in client.list_bundles().bundles] == ["counter"]


def placed_in(deploy: Path) -> list[str]:
    """The bundles placed in a deploy root (its lock and staging directory aside)."""
    return sorted(p.name for p in deploy.iterdir() if not p.name.startswith("."))


def test_push_refuses_a_symlink_or_a_missing_manifest_before_sending_anything(
        start_host: StartHost, connect: Connect, tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    host = start_host("--deploy-root", str(deploy))
    client = connect(host)
    before = client.get_host_info()
    work = tmp_path / "work"

    linked = hostproc.copy_test_bundle("counter_v1", work, "linked")
    (linked / "passwd").symlink_to("/etc/passwd")
    error = expect_error(InvalidArgumentError, lambda: client.push_bundle(linked),
                         code=grpc.StatusCode.INVALID_ARGUMENT)
    assert "'passwd' is a symlink" in error.message
    assert error.reason == ""  # the client's own refusal: the host never saw it

    nested = hostproc.copy_test_bundle("counter_v1", work, "nested")
    (nested / "assets").mkdir()
    (nested / "assets" / "level").symlink_to(nested / "manifest.toml")
    error = expect_error(InvalidArgumentError, lambda: client.push_bundle(nested))
    assert "'assets/level' is a symlink" in error.message

    piped = hostproc.copy_test_bundle("counter_v1", work, "piped")
    os.mkfifo(piped / "pipe")
    error = expect_error(InvalidArgumentError, lambda: client.push_bundle(piped))
    assert "'pipe'" in error.message

    no_manifest = work / "no_manifest"
    no_manifest.mkdir()
    (no_manifest / "libcounter.so").write_bytes(b"\x7fELF")
    error = expect_error(InvalidArgumentError, lambda: client.push_bundle(no_manifest))
    assert "manifest.toml" in error.message

    error = expect_error(InvalidArgumentError, lambda: client.push_bundle(work / "missing"))
    assert "missing" in error.message

    # Nothing arrived: no bundle, no event, nothing placed.
    after = client.get_host_info()
    assert after.last_seq == before.last_seq
    assert after.bundle_count == 0
    assert placed_in(deploy) == []
    still_serving(client)


def test_push_to_a_host_without_a_deploy_root_is_an_error_not_an_outage(
        start_host: StartHost, connect: Connect, tmp_path: Path) -> None:
    client = connect(start_host())
    bundle = hostproc.copy_test_bundle("counter_v1", tmp_path / "work")
    expect_error(PolyplugError, lambda: client.push_bundle(bundle), reason="NO_DEPLOY_ROOT")
    still_serving(client)


# --- remote calls --------------------------------------------------------------------------


def test_create_invoke_and_destroy_an_instance(start_host: StartHost, connect: Connect) -> None:
    host = start_host(bundles=["counter_v1"])
    client = connect(host)
    instance = client.create_instance(COUNTER)
    assert instance.instance_id > 0
    assert instance.handle.provider_bundle_name == "counter"
    assert instance.host_epoch == client.get_host_info().host_epoch

    assert client.invoke(instance, "version").response == b"v1"
    assert client.invoke(instance, "count").response == b"1"
    assert client.invoke(instance, "count", b"").response == b"2", "the instance keeps its state"
    binary = b"a\0b\xff"
    assert client.invoke(instance, "echo", binary).response == binary
    assert client.invoke(instance, "echo", "text").response == b"text"
    answer = client.invoke(instance, "version")
    assert answer.handle.provider_version.major == 1

    unknown = expect_error(UnimplementedError, lambda: client.invoke(instance, "no_such_method"),
                           reason="METHOD_NOT_FOUND")
    assert "no_such_method" in unknown.message
    failed = expect_error(AbortedError, lambda: client.invoke(instance, "fail"),
                          reason="CALL_FAILED")
    assert "failed on purpose" in failed.message
    assert client.invoke(instance, "count").response == b"3", "an error leaves it usable"

    # A second instance, made from a handle, has its own state.
    other = client.create_instance(client.find_contract(COUNTER))
    assert other.instance_id != instance.instance_id
    assert client.invoke(other, "count").response == b"1"
    with_args = client.create_instance(COUNTER, args="ignored", min_version=1)
    assert client.invoke(with_args, "version").response == b"v1"

    client.destroy_instance(instance)
    expect_error(NotFoundError, lambda: client.invoke(instance, "version"),
                 reason="INSTANCE_NOT_FOUND")
    assert client.invoke(other, "count").response == b"2"
    still_serving(client)


def test_invoke_once_makes_a_fresh_instance_per_call(start_host: StartHost,
                                                     connect: Connect) -> None:
    client = connect(start_host(bundles=["counter_v1"]))
    assert client.invoke_once(COUNTER, "count").response == b"1"
    assert client.invoke_once(COUNTER, "count", b"").response == b"1", "a fresh instance per call"
    assert client.invoke_once(COUNTER, "echo", "abc", min_version=1).response == b"abc"
    expect_error(NotFoundError, lambda: client.invoke_once(COUNTER, "count", min_version=2),
                 reason="CONTRACT_NOT_FOUND")
    expect_error(NotFoundError, lambda: client.invoke_once("test.nothing@1", "version"),
                 reason="CONTRACT_NOT_FOUND")
    expect_error(UnimplementedError, lambda: client.invoke_once(COUNTER, "no_such_method"),
                 reason="METHOD_NOT_FOUND")
    still_serving(client)


def test_a_contract_without_methods_is_not_invocable(start_host: StartHost,
                                                     connect: Connect) -> None:
    client = connect(start_host(bundles=["stateless"]))
    error = expect_error(UnimplementedError, lambda: client.create_instance("test.stateless@1"),
                         reason="NOT_INVOCABLE", code=grpc.StatusCode.UNIMPLEMENTED)
    assert "test.stateless@1" in error.message
    expect_error(UnimplementedError,
                 lambda: client.invoke_once("test.stateless@1", "anything"),
                 reason="NOT_INVOCABLE")
    still_serving(client)


def test_a_reload_invalidates_instances_and_new_ones_run_the_new_version(
        start_host: StartHost, connect: Connect, bundle_root: Path) -> None:
    client = connect(start_host(bundles=["counter_v1"]))
    instance = client.create_instance(COUNTER)
    assert client.invoke(instance, "version").response == b"v1"
    hostproc.overwrite_artifact(hostproc.test_bundle_dir("counter_v2"),
                                bundle_root / "counter_v1")
    reloaded = client.reload("counter")
    assert reloaded.outcome == RELOAD_OUTCOME_RELOADED, reloaded.message
    assert reloaded.events[0].live_instances == 1
    stale = expect_error(FailedPreconditionError, lambda: client.invoke(instance, "version"),
                         reason="INSTANCE_INVALIDATED_BY_RELOAD")
    assert "reloading" in stale.message
    client.destroy_instance(instance)  # destroying it again is fine
    fresh = client.create_instance(COUNTER)
    assert client.invoke(fresh, "version").response == b"v2"


# --- LiveInstance --------------------------------------------------------------------------


def test_live_instance_follows_a_reload_from_v1_to_v2(start_host: StartHost, connect: Connect,
                                                      bundle_root: Path) -> None:
    host = start_host(bundles=[("greeter_v1", "greeter")])
    client = connect(host)
    recreated: queue.Queue[InstanceRecreated] = queue.Queue()
    live = client.make_live_instance(GREETER, on_recreated=recreated.put)
    try:
        assert live.instances_made == 0, "made on the first call"
        response, info = live.invoke_with_info("greet", "editor")
        assert response.response == b"Hello, editor! (greeter v1)"
        assert info == LiveCallInfo(generation=1, recreated=False)
        first = live.instance
        assert first is not None
        assert live.recreations == 0 and live.instances_made == 1

        hostproc.overwrite_artifact(hostproc.example_bundle_dir("greeter_v2"),
                                    bundle_root / "greeter")
        reloaded = client.reload("greeter")
        assert reloaded.outcome == RELOAD_OUTCOME_RELOADED, reloaded.message
        # The reload destroyed the instance; the LiveInstance makes it again by itself.
        event = recreated.get(timeout=TIMEOUT)
        assert event.generation == 2
        assert event.previous.instance_id == first.instance_id
        assert event.instance.instance_id != first.instance_id

        response, info = live.invoke_with_info("greet", "editor")
        assert response.response == b"Hi there, editor! (greeter v2)"
        assert response.handle.provider_version.major == 2
        assert info == LiveCallInfo(generation=2, recreated=True)
        response, info = live.invoke_with_info("greet", "editor")
        assert info == LiveCallInfo(generation=2, recreated=False), "recreated is said once"
        assert live.invoke("greet").response == b"Hi there, world! (greeter v2)"
        assert live.recreations == 1
        assert live.instances_made == 2
        assert recreated.empty(), "one reload, one re-creation"
    finally:
        live.close()


def test_live_instance_keeps_answering_after_a_failed_reload(
        start_host: StartHost, connect: Connect, bundle_root: Path) -> None:
    client = connect(start_host(bundles=["counter_v1"]))
    with client.make_live_instance(COUNTER) as live:
        assert live.invoke("version").response == b"v1"
        hostproc.write_file_in_place(bundle_root / "counter_v1" / "libcounter.so", "garbage")
        assert client.reload("counter").outcome == RELOAD_OUTCOME_FAILED
        assert live.invoke("version").response == b"v1"


def test_live_instance_after_an_unload_and_close(start_host: StartHost,
                                                 connect: Connect) -> None:
    client = connect(start_host(bundles=["counter_v1", "greeter_v1"]))
    live = client.make_live_instance(GREETER)
    assert live.invoke("greet").response.endswith(b"(greeter v1)")
    made = live.instance
    assert made is not None
    instance: host_pb2.InstanceRef = made
    live.close()
    assert live.instance is None
    expect_error(NotFoundError, lambda: client.invoke(instance, "greet"),
                 reason="INSTANCE_NOT_FOUND")

    with client.make_live_instance(COUNTER) as counter:
        assert counter.invoke("version").response == b"v1"
        client.unload_bundle("counter")
        gone = expect_error(NotFoundError, lambda: counter.invoke("version"),
                            reason="CONTRACT_NOT_FOUND")
        assert COUNTER in gone.message


# --- TrackedContract -----------------------------------------------------------------------

Refresh = tuple[Lookup, Lookup]  # on_refreshed(previous, current)


def test_tracked_contract_refreshes_after_reload_unload_and_load(
        start_host: StartHost, connect: Connect, bundle_root: Path) -> None:
    host = start_host(bundles=[("greeter_v1", "greeter")])
    client = connect(host)
    refreshes: queue.Queue[Refresh] = queue.Queue()
    tracked = client.track_contract(GREETER, on_refreshed=lambda p, n: refreshes.put((p, n)))
    try:
        first = tracked.current()
        assert first.provider_bundle_name == "greeter"
        assert first.provider_version.major == 1
        assert tracked.change_count == 0

        hostproc.overwrite_artifact(hostproc.example_bundle_dir("greeter_v2"),
                                    bundle_root / "greeter")
        assert client.reload("greeter").outcome == RELOAD_OUTCOME_RELOADED
        previous, now = refreshes.get(timeout=TIMEOUT)
        assert isinstance(previous, host_pb2.ContractHandle) and previous == first
        assert isinstance(now, host_pb2.ContractHandle)
        assert now.provider_version.major == 2
        assert (now.index, now.generation) == (first.index, first.generation), "same slot"
        assert tracked.current() == now
        assert tracked.change_count == 1

        client.unload_bundle("greeter")
        previous, gone = refreshes.get(timeout=TIMEOUT)
        assert previous == now
        assert isinstance(gone, NotFoundError), repr(gone)
        assert gone.reason == "CONTRACT_NOT_FOUND"
        with pytest.raises(NotFoundError):
            tracked.current()
        assert isinstance(tracked.lookup(), NotFoundError)

        client.load_bundle(str(bundle_root / "greeter"))
        previous, back = refreshes.get(timeout=TIMEOUT)
        assert isinstance(previous, NotFoundError)
        assert isinstance(back, host_pb2.ContractHandle)
        assert back.provider_bundle_name == "greeter"
        assert tracked.current() == back
        assert tracked.change_count == 3
    finally:
        tracked.close()
    assert refreshes.empty()


def test_tracking_a_contract_nobody_provides_yet(start_host: StartHost, connect: Connect,
                                                 bundle_root: Path) -> None:
    client = connect(start_host())
    refreshes: queue.Queue[Refresh] = queue.Queue()
    with client.track_contract(COUNTER, on_refreshed=lambda p, n: refreshes.put((p, n))) as t:
        with pytest.raises(NotFoundError):
            t.current()
        client.load_bundle(str(hostproc.copy_test_bundle("counter_v1", bundle_root)))
        previous, now = refreshes.get(timeout=TIMEOUT)
        assert isinstance(previous, NotFoundError)
        assert isinstance(now, host_pb2.ContractHandle)
        assert now.provider_bundle_name == "counter"


# --- bad input -----------------------------------------------------------------------------


def test_an_unknown_bundle_is_not_found_and_the_host_keeps_serving(
        start_host: StartHost, connect: Connect) -> None:
    client = connect(start_host(bundles=["counter_v1"]))
    error = expect_error(NotFoundError, lambda: client.reload("no_such_bundle"),
                         reason="BUNDLE_NOT_FOUND", code=grpc.StatusCode.NOT_FOUND)
    assert "no_such_bundle" in error.message
    assert error.reason_value == host_pb2.FAILURE_REASON_BUNDLE_NOT_FOUND
    assert error.target == client.target
    assert str(error).startswith("NOT_FOUND: [BUNDLE_NOT_FOUND]")
    expect_error(NotFoundError, lambda: client.unload_bundle("no_such_bundle"),
                 reason="BUNDLE_NOT_FOUND")
    # A path that is no loaded bundle (inside the root or not).
    expect_error(PolyplugError, lambda: client.reload("/no/such/bundle"))
    still_serving(client)
    assert client.invoke_once(COUNTER, "version").response == b"v1"


@pytest.mark.parametrize("target", ["", "nohostport", "unix:", "   ", "unix://"])
def test_a_malformed_target_is_invalid_argument_at_construction(target: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        HostClient(target).close()
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(InvalidArgumentError):
        connect_to(target).close()


@pytest.mark.parametrize("target", ["", "nohostport", "unix:"])
def test_the_async_client_refuses_a_malformed_target_too(target: str) -> None:
    with pytest.raises(InvalidArgumentError):
        AsyncHostClient(target)


def test_absolute_paths_and_unix_targets_are_normalized(tmp_path: Path) -> None:
    path = tmp_path / "x.sock"
    with HostClient(str(path)) as by_path:
        assert by_path.target == f"unix:{path}"
    with HostClient(f"unix:{path}") as by_unix:
        assert by_unix.target == f"unix:{path}"
    with HostClient("127.0.0.1:1") as tcp:
        assert tcp.target == "127.0.0.1:1"


@pytest.mark.parametrize("options", [
    ConnectOptions(tls_root_certs_pem=b"-----BEGIN CERTIFICATE-----"),
    ConnectOptions(tls_server_name="localhost"),
    ConnectOptions(tls_client_cert_pem=b"cert", tls_client_key_pem=b"key"),
    ConnectOptions(tls=True, tls_client_cert_pem=b"-----BEGIN CERTIFICATE-----"),
    ConnectOptions(tls=True, tls_client_key_pem=b"-----BEGIN PRIVATE KEY-----"),
    ConnectOptions(call_timeout=0),
    ConnectOptions(reconnect_initial_backoff=0),
    ConnectOptions(reconnect_initial_backoff=2, reconnect_max_backoff=1),
], ids=["roots_without_tls", "server_name_without_tls", "client_cert_without_tls",
        "cert_without_key", "key_without_cert", "zero_call_timeout", "zero_backoff",
        "backoff_above_max"])
def test_inconsistent_options_are_invalid_argument(options: ConnectOptions) -> None:
    with pytest.raises(InvalidArgumentError):
        HostClient("127.0.0.1:1", options).close()


def test_an_unreachable_host_is_unavailable_naming_the_target(tmp_path: Path) -> None:
    target = f"unix:{tmp_path / 'nobody.sock'}"
    with HostClient(target, fast_options()) as client:
        error = expect_error(UnavailableError, client.get_host_info,
                             code=grpc.StatusCode.UNAVAILABLE)
        assert target in error.message
        assert error.reason == ""
        assert error.target == target
        expect_error(UnavailableError, lambda: client.reload("greeter"))
        expect_error(UnavailableError, lambda: client.create_instance(GREETER))

    # A TCP port that is bound but does not listen refuses the connection.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed_port:
        closed_port.bind(("127.0.0.1", 0))
        tcp = f"127.0.0.1:{closed_port.getsockname()[1]}"
        with HostClient(tcp, fast_options()) as client:
            error = expect_error(UnavailableError, lambda: client.echo(b"x"))
            assert tcp in error.message


def test_wait_for_ready_waits_for_a_host_that_is_not_there_yet(start_host: StartHost,
                                                               connect: Connect,
                                                               tmp_path: Path) -> None:
    """The client's target names a socket nobody listens on, until a symlink to the host's
    socket appears there (unix connect() follows it): the host is "up" only then.

    The host itself starts first: hostproc starts it with fork(), which is not safe while
    this process has gRPC channels (grpcio's pthread_atfork handler can hang or abort)."""
    host = start_host(bundles=["counter_v1"])
    assert host.address.startswith("unix:")
    later = tmp_path / "later.sock"
    client = connect(f"unix:{later}")
    expect_error(UnavailableError, client.get_host_info)
    answers: queue.Queue[host_pb2.HostInfo | BaseException] = queue.Queue()

    def call() -> None:
        try:
            answers.put(client.get_host_info(wait_for_ready=True, timeout=TIMEOUT))
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            answers.put(error)

    waiter = threading.Thread(target=call, daemon=True)
    waiter.start()
    later.symlink_to(host.address.removeprefix("unix:"))
    answer = answers.get(timeout=TIMEOUT + 5)
    waiter.join()
    assert isinstance(answer, host_pb2.HostInfo), repr(answer)
    assert answer.bundle_count == 1


class Freeze:
    """A host held stopped by frozen()."""

    def __init__(self) -> None:
        # Set when the safety net thawed the host before the block ended: a call in the
        # block did not return by its own deadline.
        self.safety_net_fired = threading.Event()


# How long frozen() holds a host at most: a call that ignores its deadline returns after
# this (and the test fails) instead of hanging until ctest's timeout.
FREEZE_SAFETY_NET = 20.0


@contextlib.contextmanager
def frozen(host: hostproc.HostProcess) -> Iterator[Freeze]:
    """The host stopped with SIGSTOP (it answers nothing) until the block ends, then SIGCONT.

    Returns once every thread of the host has stopped: waitid() reports the stop when the
    group stop is complete (the host is a child of this process). WNOWAIT leaves an exit,
    should the host die instead, for hostproc's waiter to reap. Signals go through a pidfd,
    so they never reach a reused pid."""
    pid = host.pid
    assert pid is not None and host.running
    pidfd = os.pidfd_open(pid)
    freeze = Freeze()

    def thaw() -> None:
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGCONT)
        except ProcessLookupError:
            pass

    def thaw_anyway() -> None:
        freeze.safety_net_fired.set()
        thaw()

    safety_net = threading.Timer(FREEZE_SAFETY_NET, thaw_anyway)
    safety_net.daemon = True
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGSTOP)
        os.waitid(os.P_PIDFD, pidfd, os.WSTOPPED | os.WEXITED | os.WNOWAIT)
        safety_net.start()
        yield freeze
    finally:
        safety_net.cancel()
        safety_net.join()
        thaw()
        os.close(pidfd)


def expect_deadline(freeze: Freeze, name: str, call: Callable[[], object]) -> PolyplugError:
    """`call`, made while the host is frozen, fails with DeadlineExceededError by its own
    deadline (before the freeze's safety net had to thaw the host)."""
    with pytest.raises(PolyplugError) as caught:
        call()
    assert not freeze.safety_net_fired.is_set(), \
        f"{name} did not return by its deadline: only once the host was thawed, " \
        f"{FREEZE_SAFETY_NET:g} s later ({caught.value!r})"
    assert isinstance(caught.value, DeadlineExceededError), f"{name}: {caught.value!r}"
    return caught.value


def test_a_frozen_host_makes_a_call_exceed_its_deadline(start_host: StartHost,
                                                        connect: Connect) -> None:
    host = start_host(bundles=["counter_v1"])
    client = connect(host)
    client.get_host_info()  # connected
    with frozen(host) as freeze:
        error = expect_deadline(freeze, "get_host_info",
                                lambda: client.get_host_info(timeout=0.5))
        # Every unary call has its deadline: an invoke, a reload, a health check.
        expect_deadline(freeze, "invoke_once",
                        lambda: client.invoke_once(COUNTER, "version", timeout=0.5))
        expect_deadline(freeze, "reload", lambda: client.reload("counter", timeout=0.5))
        expect_deadline(freeze, "check_health", lambda: client.check_health(timeout=0.5))
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert host.address in error.message
    assert "0.5s" in error.message
    assert error.reason == ""
    assert error.target == host.address
    # The next call has its own deadline, and the host serves on (the reload it took before
    # it froze may have run since: its outcome is not asked here).
    assert client.get_host_info().bundle_count == 1
    still_serving(client)


def test_a_push_to_a_frozen_host_exceeds_its_deadline(start_host: StartHost, connect: Connect,
                                                      tmp_path: Path) -> None:
    """push_bundle: "The deadline covers the upload and the load or reload". counter's
    library (about 850 KiB) is larger than what HTTP/2 sends before the host reads."""
    host = start_host("--deploy-root", str(tmp_path / "deploy"))
    client = connect(host)
    client.get_host_info()  # connected
    bundle = hostproc.copy_test_bundle("counter_v2", tmp_path / "work")
    assert sum(f.stat().st_size for f in bundle.iterdir()) > 256 * 1024
    with frozen(host) as freeze:
        error = expect_deadline(freeze, "push_bundle",
                                lambda: client.push_bundle(bundle, timeout=0.5))
    assert host.address in error.message
    still_serving(client)


def test_creating_an_instance_on_a_frozen_host_exceeds_its_deadline(
        start_host: StartHost, connect: Connect) -> None:
    """No session is open yet: the client opens one first, and the host does not answer."""
    host = start_host(bundles=["counter_v1"])
    client = connect(host)
    client.get_host_info()  # connected
    with frozen(host) as freeze:
        with pytest.raises(PolyplugError) as caught:
            client.create_instance(COUNTER, timeout=0.5)
        assert not freeze.safety_net_fired.is_set()
    error = caught.value
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED, repr(error)
    assert host.address in error.message
    # The subclass follows the code, as for every other call (errors.py).
    assert isinstance(error, DeadlineExceededError), repr(error)


def test_a_session_that_timed_out_is_not_reused(start_host: StartHost,
                                                connect: Connect) -> None:
    """A session the client gave up on (the host was frozen) is not reused: the next
    create_instance opens another, which times out by its own deadline on a host still
    frozen, and succeeds once the host answers again.

    While the client reuses the cancelled session, whether a call fails with its
    cancellation depends on which of two threads runs first; the calls below come right
    after the timeout, which makes the failure all but certain then. Once the client
    forgets the session it gave up on, the test passes every time."""
    host = start_host(bundles=["counter_v1"])
    client = connect(host)
    client.get_host_info()  # connected
    for attempt in range(3):
        codes: list[str] = []
        with frozen(host) as freeze:
            for _ in range(2):
                try:
                    client.create_instance(COUNTER, timeout=0.5)
                    codes.append("OK")
                except PolyplugError as error:
                    codes.append(f"{error.code.name} {error.message}")
            assert not freeze.safety_net_fired.is_set()
        assert all(code.startswith("DEADLINE_EXCEEDED") for code in codes), \
            f"attempt {attempt + 1}: create_instance on a frozen host: {codes}"
        try:
            instance = client.create_instance(COUNTER)
        except PolyplugError as error:
            pytest.fail(f"attempt {attempt + 1}: the create_instance after the timed-out "
                        f"sessions failed: {error!r}")
        assert client.invoke(instance, "version").response == b"v1"
        client.destroy_instance(instance)


# --- closing -------------------------------------------------------------------------------


def test_calls_after_close_raise_a_polyplug_error(start_host: StartHost,
                                                  tmp_path: Path) -> None:
    """HostClient: "Every call raises a PolyplugError (errors.py) on failure"; a closed
    client's calls fail as cancelled (CancelledError), not with grpc's ValueError."""
    host = start_host(bundles=["counter_v1"])
    client = HostClient(host.address, fast_options())
    client.get_host_info()
    client.close()
    client.close()  # idempotent
    bundle = hostproc.copy_test_bundle("counter_v1", tmp_path / "work")
    calls: dict[str, Callable[[], object]] = {
        "get_host_info": client.get_host_info,
        "echo": client.echo,
        "reload": lambda: client.reload("counter"),
        "check_health": client.check_health,
        "create_instance": lambda: client.create_instance(COUNTER),
        "invoke_once": lambda: client.invoke_once(COUNTER, "version"),
        "push_bundle": lambda: client.push_bundle(bundle),
        "track_contract": lambda: client.track_contract(COUNTER),
        "make_live_instance": lambda: client.make_live_instance(COUNTER),
    }
    wrong: dict[str, str] = {}
    for name, call in calls.items():
        try:
            call()
            wrong[name] = "no error"
        except CancelledError:
            pass
        except Exception as error:  # noqa: BLE001 - what the test reports
            wrong[name] = repr(error)
    assert not wrong, f"calls on a closed HostClient that did not raise CancelledError: {wrong}"
    with HostClient(host.address, fast_options()) as other:
        still_serving(other)


# A subscription and an event iterator outliving their client: test_subscribe.py.


def test_a_tracked_contract_outlives_its_client(start_host: StartHost, connect: Connect,
                                                bundle_root: Path) -> None:
    host = start_host(bundles=[("greeter_v1", "greeter")])
    client = HostClient(host.address, fast_options())
    refreshes: queue.Queue[Refresh] = queue.Queue()
    tracked = client.track_contract(GREETER, on_refreshed=lambda p, n: refreshes.put((p, n)))
    try:
        assert tracked.current().provider_version.major == 1
        client.close()
        hostproc.overwrite_artifact(hostproc.example_bundle_dir("greeter_v2"),
                                    bundle_root / "greeter")
        assert connect(host).reload("greeter").outcome == RELOAD_OUTCOME_RELOADED
        _, now = refreshes.get(timeout=TIMEOUT)
        assert isinstance(now, host_pb2.ContractHandle), repr(now)
        assert now.provider_version.major == 2
        assert tracked.current() == now
    finally:
        tracked.close()
    tracked.close()  # idempotent


def test_a_live_instance_outlives_its_client(start_host: StartHost, connect: Connect) -> None:
    """A live instance keeps working after its HostClient was closed, and its own close()
    then destroys the remote instance (and raises nothing)."""
    host = start_host(bundles=["counter_v1"])
    client = HostClient(host.address, fast_options())
    live = client.make_live_instance(COUNTER)
    assert live.invoke("count").response == b"1"
    made = live.instance
    assert made is not None
    instance: host_pb2.InstanceRef = made
    client.close()
    assert live.invoke("count").response == b"2", "the instance and its state live on"
    live.close()
    live.close()  # idempotent
    other = connect(host)
    gone = expect_error(PolyplugError, lambda: other.invoke(instance, "count"))
    assert gone.reason in ("INSTANCE_NOT_FOUND", "LEASE_EXPIRED"), repr(gone)
    still_serving(other)


def test_a_live_instance_refuses_invokes_once_closed(start_host: StartHost,
                                                     connect: Connect) -> None:
    """invoke() after close() raises CancelledError and makes no instance (none is left
    behind on the host)."""
    host = start_host(bundles=["counter_v1"])
    client = connect(host)
    live = client.make_live_instance(COUNTER)
    assert live.invoke("count").response == b"1"
    live.close()
    expect_error(CancelledError, lambda: live.invoke("count"))
    assert live.instance is None and live.instances_made == 1
    assert client.get_host_info().instance_count == 0


def test_a_callback_that_raises_costs_no_one_their_news(start_host: StartHost,
                                                         bundle_root: Path,
                                                         connect: Connect) -> None:
    """A tracker's on_refreshed that raises is logged; the other trackers of the same
    refresh still get theirs. A LiveInstance's on_recreated that raises is logged, the
    invoke that made the instance answers, and later re-creations are still announced."""
    host = start_host(bundles=["counter_v1"])
    client = connect(host)
    refreshed: queue.Queue[Lookup] = queue.Queue()
    recreated: queue.Queue[InstanceRecreated] = queue.Queue()

    def broken_refresh(_: Lookup, __: Lookup) -> None:
        raise RuntimeError("a bug in on_refreshed")

    def broken_recreated(event: InstanceRecreated) -> None:
        recreated.put(event)
        raise RuntimeError("a bug in on_recreated")

    first = client.track_contract(COUNTER, 0, broken_refresh)
    second = client.track_contract(COUNTER, 0, lambda _, now: refreshed.put(now))
    live = client.make_live_instance(COUNTER, on_recreated=broken_recreated)
    try:
        assert live.invoke("count").response == b"1"
        for generation in (2, 3):
            assert client.reload("counter").outcome == RELOAD_OUTCOME_RELOADED
            assert not isinstance(refreshed.get(timeout=TIMEOUT), PolyplugError)
            assert recreated.get(timeout=TIMEOUT).generation == generation
            assert live.invoke("count").response == b"1", "a new instance answers"
    finally:
        live.close()
        first.close()
        second.close()


def test_push_refuses_a_file_name_that_is_not_utf8(start_host: StartHost, connect: Connect,
                                                   tmp_path: Path) -> None:
    """A name the bundle digest cannot hold is refused before anything is sent, named."""
    host = start_host("--deploy-root", str(tmp_path / "deploy"))
    client = connect(host)
    bundle = hostproc.copy_test_bundle("counter_v1", tmp_path / "staged")
    with open(os.path.join(os.fsencode(bundle), b"caf\xe9.txt"), "wb") as odd:
        odd.write(b"latin-1 name")
    error = expect_error(InvalidArgumentError, lambda: client.push_bundle(bundle))
    assert "not UTF-8" in error.message and "caf" in error.message
    still_serving(client)
