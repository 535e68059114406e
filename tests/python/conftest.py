"""pytest fixtures for the tests of the Python client against real polyplug-host processes.

Built on hostproc.py (which says where the build is: environment variables set by the
ctest registration in CMakeLists.txt beside this file). $POLYPLUG_PYTHON_PATH, the build
tree's python directory, is put first on sys.path, so that `import polyplug_client` finds
the package under test rather than anything installed.

Fixtures:
    bundle_root  <tmp_path>/bundles (created): the default --bundles root of start_host.
    pki          a test PKI made with openssl in <tmp_path>/pki (made once per test).
    start_host   a factory: start_host(*extra_args, token=..., tls=..., supervise=...,
                 bundles=[...]) -> a started hostproc.HostProcess.
    connect      a factory: connect(host_or_target, options=None, **fields) -> a HostClient
                 closed at teardown (fast_options() unless told; a host's token sent).

fast_options(**fields) makes the ConnectOptions every suite uses (quick reconnects).

At teardown every host a test started is closed: one still running is stopped with SIGTERM
and must exit 0, and one that exited by itself with another status, without the test having
killed or waited for it, fails the test (as does a sanitizer report in its stderr). When a
test fails, each host's stderr is added to its report.
"""

import dataclasses
import os
import sys
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest

_python_path = os.environ.get("POLYPLUG_PYTHON_PATH", "")
if _python_path and _python_path not in sys.path:
    sys.path.insert(0, _python_path)

import hostproc  # noqa: E402  (after the sys.path set-up above, like the client's import)
from polyplug_client import ConnectOptions, HostClient  # noqa: E402

def fast_options(**fields: object) -> ConnectOptions:
    """ConnectOptions for tests: quick reconnects, so that reconnects follow the events that
    allow them closely (the C++ ClientTest::FastOptions), and the fixtures' deadline
    (hostproc.CALL_TIMEOUT, a safety net) for every call; `fields` override."""
    options = ConnectOptions(call_timeout=hostproc.CALL_TIMEOUT, reconnect_initial_backoff=0.02,
                             reconnect_max_backoff=0.2)
    for key, value in fields.items():
        setattr(options, key, value)
    return options


# The hosts each test started, for the failure report (pytest_runtest_makereport below).
_HOSTS_KEY = pytest.StashKey[list[hostproc.HostProcess]]()


class StartHost(Protocol):
    """The type of the start_host fixture."""

    def __call__(
        self,
        *extra_args: str,
        token: str | None = None,
        tls: bool = False,
        mtls: bool = False,
        supervise: bool = False,
        bundles: Iterable[str | tuple[str, str]] = (),
        root: Path | None = None,
        listen: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        start: bool = True,
    ) -> hostproc.HostProcess: ...


@pytest.fixture
def bundle_root(tmp_path: Path) -> Path:
    """<tmp_path>/bundles, created: the bundle root start_host serves unless told another."""
    root = tmp_path / "bundles"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture
def pki(tmp_path: Path) -> hostproc.Pki:
    """A throwaway PKI (hostproc.make_pki) in <tmp_path>/pki: CA, server and client
    certificates, and an unrelated CA with a rogue client certificate."""
    return hostproc.make_pki(tmp_path / "pki")


@pytest.fixture
def start_host(
    request: pytest.FixtureRequest, tmp_path: Path, bundle_root: Path
) -> Iterator[StartHost]:
    """A factory of real polyplug-host processes, each closed at teardown (see the module).

    start_host(*extra_args, token=None, tls=False, mtls=False, supervise=False, bundles=(),
               root=None, listen=(), env=None, start=True) -> hostproc.HostProcess

    - The host serves `root` (default: the bundle_root fixture) with --bundles, unless
      `extra_args` has a --bundles of its own; `extra_args` follow on its command line.
    - `bundles` are built bundles copied into the root first: "counter_v1" is copied to
      <root>/counter_v1 (as the C++ CopyTestBundle does), ("crasher_v1", "crasher") to
      <root>/crasher; test bundles first, else example bundles (greeter_v1, shouter). A
      directory already in the root is left as it is.
    - Its private directory is <tmp_path>/host (then host-2, host-3, ...): unix socket
      host.sock (see HostProcess.address), state dir, logs.
    - `token`: --auth-token-file with it (HostProcess.token_file for clients).
    - `tls`: --tls-cert/--tls-key from the pki fixture and a TCP listener on 127.0.0.1:0
      (HostProcess.tcp_address, HostProcess.pki); `mtls` adds --tls-client-ca (implies tls).
    - `supervise`: --supervise; see HostProcess.server_pid/kill_server/wait_server_serving.
    - `listen`: more listeners (e.g. "127.0.0.1:0"); `env`: added to its environment.
    - `start=False` returns it unstarted (call .start()).
    """
    hosts: list[hostproc.HostProcess] = []
    request.node.stash[_HOSTS_KEY] = hosts

    def factory(
        *extra_args: str,
        token: str | None = None,
        tls: bool = False,
        mtls: bool = False,
        supervise: bool = False,
        bundles: Iterable[str | tuple[str, str]] = (),
        root: Path | None = None,
        listen: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        start: bool = True,
    ) -> hostproc.HostProcess:
        root = bundle_root if root is None else root
        root.mkdir(parents=True, exist_ok=True)
        for bundle in bundles:
            target, name = (bundle, bundle) if isinstance(bundle, str) else bundle
            if not (root / name).exists():
                hostproc.copy_bundle(hostproc.bundle_source_dir(target), root / name)
        args: list[str] = []
        if supervise:
            args.append("--supervise")
        if not any(a == "--bundles" or a.startswith("--bundles=") for a in extra_args):
            args += ["--bundles", str(root)]
        listeners = list(listen)
        the_pki: hostproc.Pki | None = None
        if tls or mtls:
            made: hostproc.Pki = request.getfixturevalue("pki")
            the_pki = made
            args += ["--tls-cert", str(made.server_cert), "--tls-key", str(made.server_key)]
            if mtls:
                args += ["--tls-client-ca", str(made.ca_cert)]
            if not any(not a.startswith("unix:") for a in listeners):
                listeners.append("127.0.0.1:0")
        args += extra_args
        name = "host" if not hosts else f"host-{len(hosts) + 1}"
        host = hostproc.HostProcess(
            args, tmp=tmp_path / name, token=token, listen=listeners, env=env, pki=the_pki
        )
        hosts.append(host)
        if start:
            host.start()
        return host

    yield factory

    problems: list[str] = []
    for host in hosts:
        problems += host.close()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.hookimpl(hookwrapper=True)  # type: ignore[misc]  # pytest 7.2's hookimpl is untyped
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Adds each host's stderr (every start) to the report of a failed test phase."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.failed:
        return
    for host in item.stash.get(_HOSTS_KEY, []):
        report.sections.append(
            (f"polyplug-host stderr ({host.dir.name}, pid {host.pid})",
             host.stderr_text(all_runs=True) or "(nothing)")
        )  # fmt: skip


# connect(host_or_target, options=None, **fields) -> HostClient: the `connect` fixture.
Connect = Callable[..., HostClient]


@pytest.fixture
def connect(start_host: StartHost) -> Iterator[Connect]:
    """connect(host_or_target, options=None, **fields) -> a HostClient closed at teardown,
    before the hosts stop (it depends on start_host, so it is torn down first). `options`
    default to fast_options(); `fields` override them. A HostProcess's token is sent unless
    `options` or `fields` say which."""
    clients: list[HostClient] = []

    def factory(to: hostproc.HostProcess | str, options: ConnectOptions | None = None,
                **fields: Any) -> HostClient:
        target = to
        if isinstance(to, hostproc.HostProcess):
            target = to.address
            if to.token is not None and options is None and "auth_token" not in fields:
                fields["auth_token"] = to.token
        auth_token = fields.pop("auth_token", None)  # HostClient's own override argument
        client = HostClient(str(target), dataclasses.replace(options or fast_options(), **fields),
                            auth_token=auth_token)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()
