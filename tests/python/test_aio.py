"""polyplug_client.aio.AsyncHostClient's calls against real polyplug-host processes: the same
results and exceptions as HostClient's (test_calls.py), as coroutines on grpc.aio. Its event
stream is in test_subscribe.py (the `async` form of every subscription test)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

import pytest

import hostproc
from conftest import StartHost, fast_options
from polyplug_client import (PUSH_OUTCOME_LOADED, RELOAD_OUTCOME_FAILED, RELOAD_OUTCOME_RELOADED,
                             DeadlineExceededError, FailedPreconditionError,
                             CancelledError, InvalidArgumentError, NotFoundError, PolyplugError,
                             ServingStatus,
                             UnauthenticatedError, UnavailableError, new_request_id)
from polyplug_client.aio import AsyncHostClient

TIMEOUT = hostproc.CALL_TIMEOUT
COUNTER = "test.counter@1"
E = TypeVar("E", bound=PolyplugError)


async def raises(error_type: type[E], call: Awaitable[object]) -> E:
    """Awaits `call`, which must raise `error_type`; returns the error."""
    with pytest.raises(error_type) as caught:
        await call
    return caught.value


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), TIMEOUT))


def test_every_lookup(start_host: StartHost) -> None:
    host = start_host(bundles=["counter_v1"])

    async def test() -> None:
        async with AsyncHostClient(host.address, fast_options()) as client:
            info = await client.get_host_info()
            assert info.bundle_count == 1 and info.host_epoch != 0
            assert [b.name for b in (await client.list_bundles()).bundles] == ["counter"]
            contracts = await client.list_contracts("counter")
            assert [c.contract_name for c in contracts.contracts] == ["test.counter"]
            handle = await client.find_contract(COUNTER)
            assert handle.provider_bundle_name == "counter"
            assert handle.host_epoch == info.host_epoch
            missing = await raises(NotFoundError, client.find_contract("test.nothing@1"))
            assert missing.reason == "CONTRACT_NOT_FOUND"
            assert await client.check_health() == ServingStatus.SERVING
            assert await client.check_health("counter") == ServingStatus.SERVING
            assert await client.check_health("nothing") == ServingStatus.SERVICE_UNKNOWN
            assert await client.echo("ping") == b"ping"

    run(test)


def test_reload_with_request_ids_and_outcomes(start_host: StartHost, bundle_root: Path) -> None:
    host = start_host(bundles=["counter_v1"])

    async def test() -> None:
        async with AsyncHostClient(host.address, fast_options()) as client:
            request_id = new_request_id()
            first = await client.reload("counter", request_id=request_id)
            assert first.outcome == RELOAD_OUTCOME_RELOADED
            again = await client.reload("counter", request_id=request_id)
            assert again.reload_id == first.reload_id, "a retry gets the first outcome"
            operation = await client.get_operation(request_id, wait=True)
            assert operation.done and operation.reload.reload_id == first.reload_id
            gone = await raises(NotFoundError, client.get_operation("never-sent"))
            assert gone.reason == "OPERATION_NOT_FOUND"
            unknown = await raises(NotFoundError, client.reload("nothing"))
            assert unknown.reason == "BUNDLE_NOT_FOUND"
            mismatch = await raises(FailedPreconditionError,
                                    client.reload("counter", expected_sha256="0" * 64))
            assert mismatch.reason == "EXPECTED_SHA256_MISMATCH"
            hostproc.write_file_in_place(bundle_root / "counter_v1" / "libcounter.so", "junk")
            failed = await client.reload("counter")
            assert failed.outcome == RELOAD_OUTCOME_FAILED
            assert failed.reason != 0 and failed.message

    run(test)


def test_load_unload_and_push(start_host: StartHost, bundle_root: Path, tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    host = start_host("--deploy-root", str(deploy), bundles=["chain_a"])
    # Inside the served root, but after the host's discovery: loaded only when asked.
    staged = hostproc.copy_test_bundle("chain_b", bundle_root)

    async def test() -> None:
        async with AsyncHostClient(host.address, fast_options()) as client:
            loaded = await client.load_bundle(str(staged))
            assert loaded.bundle.name == "chain_b"
            outside = await raises(PolyplugError, client.load_bundle(str(tmp_path)))
            assert outside.reason == "PERMISSION_DENIED", repr(outside)
            await client.unload_bundle("chain_a", cascade=True)
            assert [b.name for b in (await client.list_bundles()).bundles] == []
            pushed = await client.push_bundle(hostproc.test_bundle_dir("counter_v1"))
            assert pushed.outcome == PUSH_OUTCOME_LOADED and pushed.bundle_name == "counter"
            await raises(InvalidArgumentError, client.push_bundle(tmp_path / "no-such-dir"))

    run(test)


def test_instances_live_under_the_clients_session(start_host: StartHost) -> None:
    host = start_host(bundles=["counter_v1"])

    async def test() -> None:
        async with AsyncHostClient(host.address, fast_options()) as other:
            async with AsyncHostClient(host.address, fast_options()) as client:
                instance = await client.create_instance(COUNTER)
                assert (await client.invoke(instance, "count")).response == b"1"
                assert (await client.invoke(instance, "count")).response == b"2"
                once = await client.invoke_once(COUNTER, "count")
                assert once.response == b"1", "a fresh instance per call"
                await client.destroy_instance(instance)
                gone = await raises(PolyplugError, client.invoke(instance, "count"))
                assert gone.reason == "INSTANCE_NOT_FOUND"
                kept = await client.create_instance(COUNTER)
                assert (await client.invoke(kept, "count")).response == b"1"
            # The client closed: its session ended, and the host destroys the instance once
            # it learns of that, on its own schedule: nothing announces it, so ask (as
            # tests/client/instance_lease_test.cc does).
            loop = asyncio.get_running_loop()
            limit = loop.time() + TIMEOUT
            while (await other.get_host_info()).session_count != 0 and loop.time() < limit:
                await asyncio.sleep(0.01)
            ended = await raises(PolyplugError, other.invoke(kept, "count"))
            assert ended.reason in ("INSTANCE_NOT_FOUND", "LEASE_EXPIRED"), repr(ended)

    run(test)


def test_bad_input_and_a_host_that_does_not_answer(start_host: StartHost,
                                                   tmp_path: Path) -> None:
    host = start_host(bundles=["counter_v1"], token="secret")
    nobody = f"unix:{tmp_path / 'nobody.sock'}"

    async def test() -> None:
        with pytest.raises(InvalidArgumentError):
            AsyncHostClient("no-port-here")
        async with AsyncHostClient(nobody, fast_options()) as unreachable:
            error = await raises(UnavailableError, unreachable.get_host_info())
            assert nobody in error.message
        async with AsyncHostClient(host.address, fast_options(auth_token="wrong")) as refused:
            await raises(UnauthenticatedError, refused.reload("counter"))
        async with AsyncHostClient(host.address, fast_options(auth_token="secret")) as client:
            assert (await client.reload("counter")).outcome == RELOAD_OUTCOME_RELOADED
            await client.create_instance(COUNTER)  # a session, before the host stops
            host.freeze()
            try:
                late = await raises(DeadlineExceededError, client.reload("counter", timeout=0.5))
                assert host.address in late.message
                await raises(DeadlineExceededError,
                             client.push_bundle(hostproc.test_bundle_dir("counter_v2"),
                                                timeout=0.5))
            finally:
                host.thaw()
            assert await client.echo("still serving") == b"still serving"

    run(test)



def test_a_session_timeout_closes_no_session_and_close_ends_streams(
        start_host: StartHost) -> None:
    """create_instance timing out on a stopped host leaves the client's session (and its
    instances) alone; close() ends an event stream being iterated, and later calls raise
    CancelledError."""
    host = start_host(bundles=["counter_v1"])

    async def test() -> None:
        client = AsyncHostClient(host.address, fast_options())
        kept = await client.create_instance(COUNTER)
        host.freeze()
        try:
            await raises(DeadlineExceededError, client.create_instance(COUNTER, timeout=0.3))
        finally:
            host.thaw()
        assert (await client.invoke(kept, "count")).response == b"1", "its session lives"
        stream = client.events()
        first = await stream.__anext__()
        assert first.__class__.__name__ == "ConnectionChanged"

        async def drain() -> list[object]:
            return [item async for item in stream]

        rest = asyncio.get_running_loop().create_task(drain())
        await asyncio.sleep(0)  # let it start reading
        await client.close()
        items = await asyncio.wait_for(rest, TIMEOUT)
        assert all(type(i).__name__ in ("Resynced", "ConnectionChanged") for i in items)
        await raises(CancelledError, client.get_host_info())
        with pytest.raises(CancelledError):
            client.events()

    run(test)
