"""polyplug_client against hosts that guard themselves: a bearer token (--auth-token-file),
TLS on a TCP listener (--tls-cert/--tls-key) and mutual TLS (--tls-client-ca).

The Python twin of the client's side of tests/host/security/authentication_test.cc and
tls_test.cc, and of client_calls_test.cc's token and mTLS tests. Refused clients must leave
the host serving; every wait is on an event (an answer, a stream item), with timeouts only
as safety nets.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

import hostproc
from conftest import Connect, StartHost, fast_options
from polyplug.host.v1 import host_pb2
from polyplug_client import (ConnectionChanged, ConnectOptions, EventStream,
                             PhaseHandlers, PolyplugError, ResyncCause, Resynced, ServingStatus,
                             Stopped, SubscriptionItem, UnauthenticatedError, UnavailableError)

TIMEOUT = hostproc.CALL_TIMEOUT
TOKEN = "s3cret-token"
COUNTER = "test.counter@1"



@pytest.fixture(scope="module", autouse=True)
def pki(tmp_path_factory: pytest.TempPathFactory) -> hostproc.Pki:
    """One PKI for the whole module, as the C++ security suite has (making keys is the slow
    part); it overrides conftest's per-test one, which start_host(tls=...) asks for."""
    return hostproc.make_pki(tmp_path_factory.mktemp("pki"))


def expect_refused(connect: Connect, address: str,
                   attempts: list[tuple[str, ConnectOptions]]) -> None:
    """Each named client is refused at the handshake: UnavailableError naming `address`."""
    refusals: dict[str, PolyplugError] = {}
    for name, client_options in attempts:
        refused = connect(address, client_options)
        with pytest.raises(PolyplugError) as caught:
            refused.get_host_info()
        refusals[name] = caught.value
    for name, error in refusals.items():
        assert isinstance(error, UnavailableError), f"{name}: {error!r}"
        assert address in error.message, f"{name}: {error!r}"


def tls_options(pki: hostproc.Pki, *, client_cert: bool = False, roots: Path | None = None,
                **fields: object) -> ConnectOptions:
    """TLS options trusting the test CA (or `roots`), with the client certificate for mTLS."""
    result = fast_options(tls=True, tls_root_certs_pem=(roots or pki.ca_cert).read_bytes(),
                          **fields)
    if client_cert:
        result.tls_client_cert_pem = pki.client_cert.read_bytes()
        result.tls_client_key_pem = pki.client_key.read_bytes()
    return result


def first_items(stream: EventStream, done: Callable[[SubscriptionItem], bool],
                timeout: float = TIMEOUT) -> list[SubscriptionItem]:
    """Iterates `stream` on a thread of its own until an item satisfies `done` or the stream
    ends, and returns the items so far. After `timeout` (a safety net) the stream is closed
    and the test fails with what arrived."""
    items: queue.Queue[SubscriptionItem | None] = queue.Queue()

    def read() -> None:
        try:
            for item in stream:
                items.put(item)
                if done(item):
                    return
        finally:
            items.put(None)

    reader = threading.Thread(target=read, name="test-event-reader", daemon=True)
    reader.start()
    got: list[SubscriptionItem] = []
    try:
        while True:
            item = items.get(timeout=timeout)
            if item is None:
                break
            got.append(item)
    except queue.Empty:
        stream.close()
        reader.join(TIMEOUT)
        pytest.fail(f"no item ended the subscription within {timeout} s; it delivered {got}")
    reader.join(TIMEOUT)
    return got


def is_initial_resync(item: SubscriptionItem) -> bool:
    return isinstance(item, Resynced) and item.cause == ResyncCause.INITIAL


# --- the bearer token ----------------------------------------------------------------------


def test_a_client_without_the_token_or_with_a_wrong_one_is_unauthenticated(
        start_host: StartHost, connect: Connect) -> None:
    host = start_host(bundles=["counter_v1"], token=TOKEN)

    for name, client in [("no token", connect(host.address)),
                         ("wrong token", connect(host.address, auth_token="guess")),
                         ("prefix of it", connect(host.address, auth_token=TOKEN[:-1])),
                         ("wrong in options", connect(host.address, fast_options(auth_token="x")))]:
        with pytest.raises(UnauthenticatedError) as caught:
            client.get_host_info()
        error = caught.value
        assert error.code == grpc.StatusCode.UNAUTHENTICATED, name
        # The host names the reason: token and trailer.
        assert error.reason == "PERMISSION_DENIED", f"{name}: {error!r}"
        assert error.reason_value == host_pb2.FAILURE_REASON_PERMISSION_DENIED
        assert error.target == host.address
        # Nothing the client asks for happens.
        with pytest.raises(UnauthenticatedError):
            client.reload("counter")
        with pytest.raises(UnauthenticatedError):
            client.create_instance(COUNTER)  # the session stream is refused too
        with pytest.raises(UnauthenticatedError):
            client.invoke_once(COUNTER, "version")
        with pytest.raises(UnauthenticatedError):
            client.echo(b"ping")
        # Health needs no token.
        assert client.check_health() == ServingStatus.SERVING, name

    authorised = connect(host.address, auth_token=TOKEN)
    info = authorised.get_host_info()
    assert info.last_seq == 1, "a refused reload fired an event"
    assert info.instance_count == 0


def test_the_right_token_works_as_argument_and_as_option(start_host: StartHost,
                                                         connect: Connect) -> None:
    host = start_host(bundles=["counter_v1"], token=TOKEN)
    by_argument = connect(host.address, auth_token=TOKEN)
    by_options = connect(host.address, fast_options(auth_token=TOKEN))
    # The argument wins over the options.
    overriding = connect(host.address, fast_options(auth_token="wrong"), auth_token=TOKEN)
    for client in (by_argument, by_options, overriding):
        assert client.get_host_info().bundle_count == 1
        assert client.reload("counter").outcome == host_pb2.RELOAD_OUTCOME_RELOADED
        instance = client.create_instance(COUNTER)  # the session stream carries it too
        assert client.invoke(instance, "count").response == b"1"
        client.destroy_instance(instance)
        assert client.check_health("counter") == ServingStatus.SERVING
        with client.events() as stream:
            items = first_items(stream, is_initial_resync)
        assert isinstance(items[-1], Resynced), items
        assert [b.name for b in items[-1].bundles] == ["counter"]
    with by_argument.make_live_instance(COUNTER) as live:
        assert live.invoke("version").response == b"v1"


def test_a_subscription_with_a_wrong_token_stops_unauthenticated(
        start_host: StartHost, connect: Connect) -> None:
    host = start_host(bundles=["counter_v1"], token=TOKEN)
    client = connect(host.address, auth_token="guess")
    with client.events() as stream:
        items = first_items(stream, lambda item: isinstance(item, Stopped))
    assert items and isinstance(items[-1], Stopped), items
    assert all(not isinstance(item, Resynced) for item in items)
    stopped = items[-1]
    assert isinstance(stopped.error, UnauthenticatedError), repr(stopped.error)
    assert stopped.error.code == grpc.StatusCode.UNAUTHENTICATED
    assert stopped.error.reason == "PERMISSION_DENIED"

    # The same with handlers: on_stopped runs, and nothing after it.
    stops: queue.Queue[Stopped] = queue.Queue()
    others: list[object] = []
    handlers = PhaseHandlers(on_stopped=stops.put, on_resynced=others.append,
                             on_loaded=others.append)
    with client.subscribe(handlers) as subscription:
        stop = stops.get(timeout=TIMEOUT)
        assert isinstance(stop.error, UnauthenticatedError)
        assert not subscription.connected
    assert others == []
    # The host serves on.
    assert connect(host.address, auth_token=TOKEN).echo(b"x") == b"x"


def test_a_push_without_the_token_is_refused_and_places_nothing(
        start_host: StartHost, connect: Connect, tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    host = start_host("--deploy-root", str(deploy), token=TOKEN)
    bundle = hostproc.copy_test_bundle("counter_v1", tmp_path / "work")
    with pytest.raises(UnauthenticatedError) as caught:
        connect(host.address, auth_token="guess").push_bundle(bundle)
    assert caught.value.reason == "PERMISSION_DENIED"
    authorised = connect(host.address, auth_token=TOKEN)
    assert authorised.get_host_info().bundle_count == 0
    assert sorted(p.name for p in deploy.iterdir() if not p.name.startswith(".")) == []
    pushed = authorised.push_bundle(bundle)
    assert pushed.outcome == host_pb2.PUSH_OUTCOME_LOADED, pushed.message


def test_a_refused_token_on_a_tcp_listener_too(start_host: StartHost, connect: Connect) -> None:
    host = start_host(bundles=["counter_v1"], token=TOKEN, listen=["127.0.0.1:0"])
    address = host.tcp_address
    with pytest.raises(UnauthenticatedError):
        connect(address).get_host_info()
    assert connect(address, auth_token=TOKEN).get_host_info().bundle_count == 1


# --- TLS -----------------------------------------------------------------------------------


def test_tls_on_a_tcp_listener(start_host: StartHost, connect: Connect) -> None:
    host = start_host(bundles=["counter_v1"], tls=True)
    assert host.pki is not None
    pki = host.pki
    address = host.tcp_address
    assert address.startswith("127.0.0.1:")

    client = connect(address, tls_options(pki))
    info = client.get_host_info()
    assert info.bundle_count == 1
    assert client.invoke_once(COUNTER, "version").response == b"v1"
    with client.events() as stream:
        items = first_items(stream, is_initial_resync)
    assert is_initial_resync(items[-1]), items
    with client.make_live_instance(COUNTER) as live:
        assert live.invoke("count").response == b"1"

    # The certificate's DNS name works as well as its IP address.
    port = address.rsplit(":", 1)[1]
    assert connect(f"localhost:{port}", tls_options(pki)).get_host_info().host_epoch == \
        info.host_epoch
    # tls_server_name: the name checked against the certificate instead of the target's.
    assert connect(address, tls_options(pki, tls_server_name="localhost")).echo(b"x") == b"x"

    expect_refused(connect, address, [
        ("plaintext", fast_options()),
        ("another CA", tls_options(pki, roots=pki.other_ca_cert)),
        ("another server name", tls_options(pki, tls_server_name="somebody-else.example"))])

    # Refused clients leave the host serving.
    assert client.get_host_info().host_epoch == info.host_epoch


def test_tls_with_a_token(start_host: StartHost, connect: Connect) -> None:
    host = start_host(bundles=["counter_v1"], tls=True, token=TOKEN)
    assert host.pki is not None
    address = host.tcp_address
    with pytest.raises(UnauthenticatedError):
        connect(address, tls_options(host.pki)).get_host_info()
    client = connect(address, tls_options(host.pki, auth_token=TOKEN))
    assert client.get_host_info().bundle_count == 1


def test_mutual_tls_needs_a_client_certificate_from_the_client_ca(
        start_host: StartHost, connect: Connect) -> None:
    host = start_host(bundles=["counter_v1"], mtls=True)
    assert host.pki is not None
    pki = host.pki
    address = host.tcp_address

    client = connect(address, tls_options(pki, client_cert=True))
    info = client.get_host_info()
    assert info.bundle_count == 1
    instance = client.create_instance(COUNTER)
    assert client.invoke(instance, "count").response == b"1"
    with client.events() as stream:
        items = first_items(stream, is_initial_resync)
    assert is_initial_resync(items[-1]), items
    by_name = connect(address, tls_options(pki, client_cert=True, tls_server_name="localhost"))
    assert by_name.get_host_info().host_epoch == info.host_epoch

    rogue = tls_options(pki)
    rogue.tls_client_cert_pem = pki.rogue_client_cert.read_bytes()
    rogue.tls_client_key_pem = pki.rogue_client_key.read_bytes()
    expect_refused(connect, address, [("no client certificate", tls_options(pki)),
                                      ("a certificate from another CA", rogue),
                                      ("plaintext", fast_options())])

    # A subscription without a client certificate keeps trying; it never sees a snapshot.
    # (The host's refusal is a transport failure, not an answer, so it is not Stopped.)
    with connect(address, tls_options(pki)).events() as stream:
        items = first_items(stream, lambda item: not isinstance(item, Resynced))
    assert len(items) == 1, items
    (refused_stream,) = items
    assert isinstance(refused_stream, ConnectionChanged), items
    assert not refused_stream.connected
    assert isinstance(refused_stream.error, UnavailableError), repr(refused_stream.error)

    # The refused clients leave the host serving.
    assert client.invoke(instance, "count").response == b"2"
