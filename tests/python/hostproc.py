"""Real polyplug-host processes for the Python tests: start, stop, kill, restart, read logs.

The Python twin of the C++ fixture in tests/host/host_fixture.h (HostProcess),
tests/support/bundle_fixture.h (bundle copies) and tests/host/test_pki.h (a throwaway
PKI). Standard library only; it does not use the polyplug_client package, so it can test
that package without depending on it.

Where the build is comes from environment variables that the ctest registration
(tests/python/CMakeLists.txt) sets:

    POLYPLUG_HOST_BINARY          the polyplug-host executable
    POLYPLUGCTL_BINARY            the polyplugctl executable
    POLYPLUG_TEST_BUNDLES_DIR     <build>/tests/bundles: one built bundle per test target
    POLYPLUG_EXAMPLE_BUNDLES_DIR  <build>/examples/bundles: greeter_v1, greeter_v2, shouter
    POLYPLUG_INPROCESS_RECORDER   <build>/tests/client/inprocess_recorder

Synchronisation is on events only: a reader thread blocks on the host's stderr pipe and
notifies a threading.Condition per line; a waiter thread blocks in waitpid and notifies on
exit; a server child's exit is a pidfd becoming readable. Timeouts are safety nets that
bound how long a broken host can stall a test, never a way to let time pass.

Every process started here dies with the test process: it gets PR_SET_PDEATHSIG(SIGKILL)
before it execs. The signal fires when the *thread* that started the process ends, so
start hosts from a thread that outlives them (pytest's main thread does).
"""

import dataclasses
import hashlib
import json
import math
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "CALL_TIMEOUT",
    "START_TIMEOUT",
    "EquivalenceOps",
    "HostError",
    "HostProcess",
    "ID_FIELDS",
    "Pki",
    "bundle_source_dir",
    "copy_bundle",
    "copy_example_bundle",
    "copy_test_bundle",
    "ctl_binary",
    "describe_returncode",
    "example_bundle_dir",
    "host_binary",
    "make_pki",
    "manifest_name",
    "overwrite_artifact",
    "prepare_equivalence_root",
    "record_in_process",
    "run_ctl",
    "run_equivalence_scenario",
    "sha256_of_file",
    "test_bundle_dir",
    "write_file_in_place",
    "write_token_file",
]

# How long a host may take to come up, and to answer or exit: safety nets against a hung
# host, not performance expectations (the C++ fixture's kStartDeadline and kCallDeadline).
START_TIMEOUT: float = 30.0
CALL_TIMEOUT: float = 60.0

SERVING_ON = "polyplug-host: serving on "
_SUPERVISOR_SERVES = re.compile(r"polyplug-host: supervise: the server \(pid (\d+)\) serves")

# sun_path holds 107 bytes and a NUL. The host binds a unix socket first at
# <dir>/.pp-XXXXXX/s (13 bytes after <dir>), then renames it into place.
_SUN_PATH_MAX = 107
_STAGING_SUFFIX_LEN = len("/.pp-XXXXXX/s")


class HostError(Exception):
    """A host did not do what the fixture waited for: start, write a line, exit (cleanly)."""


# ---------------------------------------------------------------------------------------
# The build's paths.


def _env_path(var: str) -> Path:
    """The path in environment variable `var`; HostError when it is unset or empty."""
    value = os.environ.get(var, "")
    if not value:
        raise HostError(
            f"${var} is not set: run these tests through ctest "
            f"(ctest --test-dir <build> -R python_), which sets it"
        )
    return Path(value)


def host_binary() -> Path:
    """$POLYPLUG_HOST_BINARY: the polyplug-host executable."""
    return _env_path("POLYPLUG_HOST_BINARY")


def ctl_binary() -> Path:
    """$POLYPLUGCTL_BINARY: the polyplugctl executable."""
    return _env_path("POLYPLUGCTL_BINARY")


def test_bundle_dir(target: str) -> Path:
    """$POLYPLUG_TEST_BUNDLES_DIR/<target>: the directory the build made for a test bundle."""
    return _env_path("POLYPLUG_TEST_BUNDLES_DIR") / target


def example_bundle_dir(target: str) -> Path:
    """$POLYPLUG_EXAMPLE_BUNDLES_DIR/<target>: greeter_v1, greeter_v2 or shouter."""
    return _env_path("POLYPLUG_EXAMPLE_BUNDLES_DIR") / target


def bundle_source_dir(target: str) -> Path:
    """The built bundle `target`: a test bundle if there is one by that name, else an example
    bundle; HostError when neither exists."""
    for candidate in (test_bundle_dir(target), example_bundle_dir(target)):
        if (candidate / "manifest.toml").is_file():
            return candidate
    raise HostError(f"no built bundle {target!r} among the test and the example bundles")


# ---------------------------------------------------------------------------------------
# Bundle files (tests/support/bundle_fixture.h).


def _is_bundle_file(path: Path) -> bool:
    """A bundle's own files: manifest.toml and the shared libraries (what the C++ copies)."""
    return path.is_file() and (path.name == "manifest.toml" or path.suffix == ".so")


def copy_bundle(src: Path, dst_dir: Path) -> Path:
    """Copies src's manifest.toml and shared libraries into `dst_dir` and returns it.

    `dst_dir` is created (with its parents) and must not exist yet (FileExistsError);
    `src` must hold a manifest.toml (HostError). Mirrors the C++ CopyBundle.
    """
    if not (src / "manifest.toml").is_file():
        raise HostError(f"{src} is not a built bundle (no manifest.toml)")
    dst_dir.mkdir(parents=True, exist_ok=False)
    for entry in sorted(src.iterdir()):
        if _is_bundle_file(entry):
            shutil.copyfile(entry, dst_dir / entry.name)
    return dst_dir


def copy_test_bundle(target: str, parent: Path, name: str | None = None) -> Path:
    """Copies the built test bundle `target` (e.g. "counter_v1") into <parent>/<name>.

    `name` defaults to `target`, exactly as the C++ CopyTestBundle does (counter_v1 ->
    <parent>/counter_v1; the bundle inside is still called "counter", as its manifest
    says). Pass `name` for another directory name, e.g. copy_test_bundle("crasher_v1",
    root, "crasher"). Returns the new directory. Phase messages name files by path, so a
    replay of a C++ scenario must use the C++ directory names.
    """
    return copy_bundle(test_bundle_dir(target), parent / (name or target))


def copy_example_bundle(target: str, parent: Path, name: str | None = None) -> Path:
    """copy_test_bundle() for an example bundle (greeter_v1, greeter_v2, shouter)."""
    return copy_bundle(example_bundle_dir(target), parent / (name or target))


def overwrite_artifact(src_bundle: Path, dst_bundle: Path) -> None:
    """Copies the manifest and libraries of `src_bundle` over those of `dst_bundle` in place
    (each file truncated and rewritten, same inode), the way a rebuild of the bundle would:
    e.g. counter_v2's files over a loaded copy of counter_v1. Mirrors OverwriteArtifact."""
    for entry in sorted(src_bundle.iterdir()):
        if _is_bundle_file(entry):
            shutil.copyfile(entry, dst_bundle / entry.name)


def write_file_in_place(path: Path, contents: bytes | str) -> None:
    """Overwrites the file with `contents`, truncating it in place (same inode), like the C++
    WriteFile: e.g. write_file_in_place(dir / "libcounter.so", "not an ELF file")."""
    data = contents.encode() if isinstance(contents, str) else contents
    with open(path, "wb") as f:
        f.write(data)


def sha256_of_file(path: Path) -> str:
    """SHA-256 of the file's bytes in lowercase hex, as `sha256sum` prints it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_name(bundle_dir: Path) -> str:
    """The bundle's name, as its manifest.toml says (counter_v1's is "counter")."""
    with open(bundle_dir / "manifest.toml", "rb") as f:
        name = tomllib.load(f)["name"]
    if not isinstance(name, str):
        raise HostError(f"{bundle_dir}/manifest.toml: name is not a string")
    return name


def write_token_file(path: Path, token: str) -> Path:
    """Writes `token` and a newline to `path` (mode 0600), for --auth-token-file on the host
    and --token-file on polyplugctl; returns `path`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return path


# ---------------------------------------------------------------------------------------
# A throwaway PKI (tests/host/test_pki.h).


@dataclasses.dataclass(frozen=True)
class Pki:
    """The files make_pki() wrote: PEM certificates (.pem) and keys (.key)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path  # SAN IP:127.0.0.1, DNS:localhost; serverAuth and clientAuth
    server_key: Path
    client_cert: Path  # signed by the CA; clientAuth
    client_key: Path
    other_ca_cert: Path  # an unrelated CA
    other_ca_key: Path
    rogue_client_cert: Path  # signed by the other CA
    rogue_client_key: Path


_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = polyplug test CA
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
authorityKeyIdentifier = keyid
[client]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
"""

_NEW_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _run_logged(argv: Sequence[str], cwd: Path, log: Path) -> None:
    """Runs `argv` (from PATH, no shell) in `cwd`, output appended to `log`; HostError
    naming the command and carrying the log unless it exits 0."""
    with open(log, "ab") as out:
        completed = subprocess.run(
            dying_with_us(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=CALL_TIMEOUT,
            check=False,
        )
    if completed.returncode != 0:
        raise HostError(
            f"`{' '.join(argv)}` {describe_returncode(completed.returncode)}; output:\n"
            + log.read_text(errors="replace")
        )


def make_pki(directory: Path) -> Pki:
    """Makes a test PKI in `directory` (created) with the `openssl` command-line tool, as the
    C++ MakePki does: a CA with a server certificate (SAN IP 127.0.0.1 and DNS localhost,
    good for serverAuth and clientAuth) and a client certificate, and an unrelated CA with a
    client certificate of its own. EC P-256 keys, valid for two days. Nothing touches the
    network. A private openssl.cnf is used, so neither the system's nor $OPENSSL_CONF
    matters; openssl.log in `directory` tells what went wrong (HostError)."""
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "openssl.log"
    config = directory / "openssl.cnf"
    config.write_text(_OPENSSL_CONFIG)

    def make_ca(name: str) -> tuple[Path, Path]:
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        _run_logged(
            ["openssl", "req", "-x509", "-new", "-config", str(config), "-extensions", "v3_ca",
             "-subj", f"/CN=polyplug test {name}", "-days", "2", *_NEW_EC_KEY,
             "-keyout", str(key), "-out", str(cert)],
            directory, log)  # fmt: skip
        return cert, key

    serial = 100

    def make_leaf(
        name: str, common_name: str, section: str, ca: tuple[Path, Path]
    ) -> tuple[Path, Path]:
        nonlocal serial
        serial += 1
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        csr = directory / f"{name}.csr"
        _run_logged(
            ["openssl", "req", "-new", "-config", str(config), "-subj", f"/CN={common_name}",
             *_NEW_EC_KEY, "-keyout", str(key), "-out", str(csr)],
            directory, log)  # fmt: skip
        _run_logged(
            ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-set_serial", str(serial), "-days", "2", "-extfile", str(config),
             "-extensions", section, "-out", str(cert)],
            directory, log)  # fmt: skip
        return cert, key

    ca = make_ca("ca")
    other_ca = make_ca("other-ca")
    server = make_leaf("server", "localhost", "server", ca)
    client = make_leaf("client", "polyplug test client", "client", ca)
    rogue = make_leaf("rogue-client", "polyplug rogue client", "client", other_ca)
    return Pki(
        ca_cert=ca[0], ca_key=ca[1],
        server_cert=server[0], server_key=server[1],
        client_cert=client[0], client_key=client[1],
        other_ca_cert=other_ca[0], other_ca_key=other_ca[1],
        rogue_client_cert=rogue[0], rogue_client_key=rogue[1],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# Processes.

# setpriv (util-linux, on every Debian) sets the parent-death signal and execs the command,
# so the program runs with the pid subprocess returns.
_SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"


def dying_with_us(argv: Sequence[str]) -> list[str]:
    """`argv` prefixed so that the child gets SIGKILL when the thread that started it ends.

    Not a preexec_fn: that makes subprocess fork() rather than vfork(), and fork() runs the
    fork handlers gRPC registers in this process (the client under test), which can deadlock
    the child on a lock another gRPC thread held at the fork (seen: 3 hangs in 6 runs of
    3,000 spawns beside an open subscription)."""
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]


def describe_returncode(returncode: int | None) -> str:
    """ "exited with 0", "killed by signal 9 (SIGKILL)", "is running": for messages.
    `returncode` is subprocess's: negative for a signal."""
    if returncode is None:
        return "is running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "?"
        return f"killed by signal {-returncode} ({name})"
    return f"exited with {returncode}"


def _wait_fd_readable(fd: int, timeout: float) -> bool:
    """Blocks until `fd` is readable (a pidfd: the process exited) or `timeout` passed."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, math.ceil(timeout * 1000))))


# Signals after which an exit is not the test's doing (their default is not to end a process).
_NOT_ENDING_SIGNALS = frozenset(
    {0, signal.SIGSTOP, signal.SIGCONT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU,
     signal.SIGCHLD, signal.SIGURG, signal.SIGWINCH}
)  # fmt: skip


def _address_matches(requested: str, served: str) -> bool:
    """Whether `served` (from a "serving on" line) is the listener asked for as `requested`:
    equal, or the same host with the real port for a requested port 0."""
    if requested.endswith(":0") and not requested.startswith("unix:"):
        return served.startswith(requested[:-1]) and served[len(requested) - 1 :].isdigit()
    return served == requested


class _Run:
    """One start of a host: its process and what it wrote. Guarded by HostProcess._cond."""

    def __init__(self, proc: "subprocess.Popen[bytes]", pidfd: int, stdout_offset: int) -> None:
        self.proc = proc
        self.pidfd = pidfd
        self.stdout_offset = stdout_offset
        self.lines: list[str] = []  # stderr lines, without their newline
        self.eof = False  # every writer of the stderr pipe closed it: no line can come
        self.returncode: int | None = None  # set once reaped
        self.exit_expected = False  # the test killed, stopped or waited for it
        self.threads: list[threading.Thread] = []


class HostProcess:
    """One polyplug-host process, restartable in place. Not thread-safe for control calls
    (start/stop/kill/...); the waits may be called from any thread.

    The host runs with --listen <address>[,<listen>...] as one comma-separated flag, and
    --state-dir <tmp>/state unless `args` has a --state-dir; its stdout goes to
    <tmp>/stdout.log and its stderr to a pipe that a reader thread copies to memory and to
    <tmp>/stderr.log (every start appended, each after a "==== start N" line).

    `args` are the flags after the binary (e.g. ["--bundles", root]; without --bundles a
    host from the build tree serves the example bundles staged in <build>/examples/root);
    they must not hold --listen: pass more listeners in `listen` (e.g. ["127.0.0.1:0"]) and
    the main one in `address`. `tmp` is this host's private directory (created); it must
    not be shared with another HostProcess. `address` defaults to unix:<tmp>/host.sock, or
    to a socket in a short directory of its own under the system temp dir when that path
    would not fit in a unix socket address (removed by close()). With `default_listen` no
    --listen is passed and the host runs with XDG_RUNTIME_DIR=<tmp>: address becomes
    unix:<tmp>/polyplug-host.sock. `token` (if any) is written to <tmp>/token and passed as
    --auth-token-file; clients find it in `token` / `token_file`. `env` is added to the
    host's environment. `pki` only rides along for the test's clients (the TLS flags must
    be in `args`).
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        tmp: Path,
        token: str | None = None,
        listen: Sequence[str] = (),
        address: str | None = None,
        default_listen: bool = False,
        env: Mapping[str, str] | None = None,
        pki: Pki | None = None,
        binary: Path | None = None,
    ) -> None:
        for arg in args:
            if arg == "--listen" or arg.startswith("--listen="):
                raise ValueError("pass listeners as address= / listen=, not as --listen in args")
        self.args: list[str] = list(args)
        self.binary: Path = binary or host_binary()
        self.dir: Path = Path(tmp).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.token: str | None = token
        self.token_file: Path | None = None
        if token is not None:
            self.token_file = write_token_file(self.dir / "token", token)
        self.pki: Pki | None = pki
        self.env: dict[str, str] = dict(env or {})
        self.default_listen: bool = default_listen
        self.extra_listen: list[str] = list(listen)
        self._socket_dir: Path | None = None  # a short directory of our own, if needed
        self.address: str
        if default_listen:
            if address is not None or listen:
                raise ValueError("default_listen excludes address= and listen=")
            self.address = f"unix:{self.dir / 'polyplug-host.sock'}"
        elif address is not None:
            self.address = address
        else:
            socket_dir = self.dir
            if len(str(socket_dir)) + _STAGING_SUFFIX_LEN >= _SUN_PATH_MAX:
                base = tempfile.gettempdir()
                if len(base) > 40:
                    base = "/tmp"
                socket_dir = self._socket_dir = Path(tempfile.mkdtemp(prefix="pph-", dir=base))
            self.address = f"unix:{socket_dir / 'host.sock'}"
        self.stdout_path: Path = self.dir / "stdout.log"
        self.stderr_path: Path = self.dir / "stderr.log"
        self._cond = threading.Condition()
        self._run: _Run | None = None
        self._past: list[_Run] = []  # earlier starts, for stderr_text(all_runs=True)
        self._starts = 0
        self.argv: list[str] = []  # the command line of the latest start

    def __repr__(self) -> str:
        return f"HostProcess(pid={self.pid}, address={self.address!r}, dir={str(self.dir)!r})"

    def __enter__(self) -> "HostProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        problems = self.close()
        if problems and exc[0] is None:
            raise HostError("\n".join(problems))

    # -- state ----------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """The --state-dir the host runs with (the fixture's <tmp>/state unless args set one)."""
        for i, arg in enumerate(self.args):
            if arg == "--state-dir" and i + 1 < len(self.args):
                return Path(self.args[i + 1])
            if arg.startswith("--state-dir="):
                return Path(arg.split("=", 1)[1])
        return self.dir / "state"

    @property
    def supervised(self) -> bool:
        """Whether the host runs with --supervise (a supervisor process and a server child)."""
        return "--supervise" in self.args or "--supervise=true" in self.args

    @property
    def pid(self) -> int | None:
        """The pid of the latest start (the supervisor's under --supervise), or None."""
        return self._run.proc.pid if self._run else None

    @property
    def running(self) -> bool:
        """True from start() until the process has been reaped."""
        with self._cond:
            return self._run is not None and self._run.returncode is None

    @property
    def returncode(self) -> int | None:
        """The latest start's exit: subprocess's returncode (negative: killed by that signal);
        None while it runs or before the first start."""
        with self._cond:
            return self._run.returncode if self._run else None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Spawns the host and returns once it serves: its stderr has a "polyplug-host:
        serving on" line for every listener asked for (any one with default_listen), and,
        under --supervise, the supervisor has said "the server (pid N) serves".

        Also restarts in place after the previous start ended (same args, dir, state dir
        and socket path). HostError when it is still running, when the host ends its stderr
        (exits) before serving, or after `timeout`; the message carries its stderr, and a
        host that did not come up is killed and reaped first.
        """
        if self.running:
            raise HostError(f"start(): {self!r} is still running; stop() or kill() it first")
        argv = [str(self.binary)]
        if not self.default_listen:
            argv += ["--listen", ",".join([self.address, *self.extra_listen])]
        if not any(a == "--state-dir" or a.startswith("--state-dir=") for a in self.args):
            (self.dir / "state").mkdir(exist_ok=True)
            argv += ["--state-dir", str(self.dir / "state")]
        if self.token_file is not None:
            argv += ["--auth-token-file", str(self.token_file)]
        argv += self.args
        env = dict(os.environ)
        if self.default_listen:
            env["XDG_RUNTIME_DIR"] = str(self.dir)
        env.update(self.env)

        self._starts += 1
        with open(self.stderr_path, "a", encoding="utf-8") as log:
            log.write(f"==== start {self._starts}: {' '.join(argv)}\n")
        stdout = open(self.stdout_path, "ab")  # append mode starts at the end
        stdout_offset = stdout.tell()
        try:
            proc = subprocess.Popen(
                dying_with_us(argv),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.PIPE,
                env=env,
                cwd=self.dir,
                process_group=0,  # a terminal's Ctrl-C reaches the test, which stops the host
            )
        finally:
            stdout.close()
        # Before anything can reap it: signals through the pidfd never hit a reused pid.
        pidfd = os.pidfd_open(proc.pid)
        run = _Run(proc, pidfd, stdout_offset)
        with self._cond:
            if self._run is not None:
                self._past.append(self._run)
            self._run = run
        self.argv = argv
        assert proc.stderr is not None
        reader = threading.Thread(
            target=self._read_stderr, args=(run, proc.stderr), name=f"host-{proc.pid}-stderr",
            daemon=True)  # fmt: skip
        waiter = threading.Thread(
            target=self._wait_process, args=(run,), name=f"host-{proc.pid}-wait", daemon=True
        )
        run.threads = [reader, waiter]
        reader.start()
        waiter.start()

        try:
            self._wait_ready(run, timeout)
        except HostError:
            if self.running:
                signal.pidfd_send_signal(run.pidfd, signal.SIGKILL)
            self._wait_reaped(run, CALL_TIMEOUT)
            run.exit_expected = True
            raise

    def _wait_ready(self, run: _Run, timeout: float) -> None:
        requested = [] if self.default_listen else [self.address, *self.extra_listen]

        def ready(lines: list[str]) -> bool:
            served = [line[len(SERVING_ON):] for line in lines if line.startswith(SERVING_ON)]
            if requested:
                if not all(any(_address_matches(r, s) for s in served) for r in requested):
                    return False
            elif not served:
                return False
            return not self.supervised or any(_SUPERVISOR_SERVES.search(x) for x in lines)

        self._wait_lines(run, ready, timeout, f"`{' '.join(self.argv)}` to serve")

    def stop(self, timeout: float = CALL_TIMEOUT) -> int:
        """SIGTERM, then waits for the exit, which must be status 0 (HostError otherwise, or
        when it does not exit within `timeout`: it is then killed). Returns the returncode.
        A host that already exited is not signalled; its status is checked all the same."""
        run = self._require_run("stop()")
        run.exit_expected = True
        self.kill(signal.SIGTERM)
        self.kill(signal.SIGCONT)  # a frozen host would not act on SIGTERM before
        code = self.wait_exit(timeout)
        if code != 0:
            raise HostError(
                f"polyplug-host (pid {run.proc.pid}) {describe_returncode(code)} on SIGTERM; "
                f"stderr:\n{self.stderr_text()}"
            )
        return code

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """stop() (which must give exit 0), then start() again in place."""
        self.stop()
        self.start(timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Sends `sig` to the host (the supervisor under --supervise); nothing once it was
        reaped. An exit after a signal that ends a process (not SIGSTOP, SIGCONT and the
        like) counts as expected: close() does not report it."""
        run = self._require_run("kill()")
        if sig not in _NOT_ENDING_SIGNALS:
            run.exit_expected = True
        try:
            signal.pidfd_send_signal(run.pidfd, sig)
        except ProcessLookupError:
            pass  # exited already

    def freeze(self) -> None:
        """SIGSTOP, and returns once every thread of the host has stopped (waitid reports the
        group stop; WNOWAIT leaves an exit for the waiter thread to reap). The host answers
        nothing until thaw(); stop() and close() thaw it too."""
        run = self._require_run("freeze()")
        self.kill(signal.SIGSTOP)
        try:
            os.waitid(os.P_PIDFD, run.pidfd, os.WSTOPPED | os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass  # reaped already: it is not running, let alone stopped

    def thaw(self) -> None:
        """SIGCONT: a frozen host goes on."""
        self.kill(signal.SIGCONT)

    def wait_exit(self, timeout: float = CALL_TIMEOUT) -> int:
        """Waits until the host exits and returns its returncode (negative: the signal that
        killed it); the exit then counts as expected. A host still running after `timeout` is
        killed with SIGKILL, and HostError raised."""
        run = self._require_run("wait_exit()")
        run.exit_expected = True
        if not self._wait_reaped(run, timeout):
            try:
                signal.pidfd_send_signal(run.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._wait_reaped(run, CALL_TIMEOUT)
            raise HostError(
                f"polyplug-host (pid {run.proc.pid}) did not exit within {timeout} s; killed "
                f"it. stderr:\n{self.stderr_text()}"
            )
        assert run.returncode is not None
        return run.returncode

    def close(self, timeout: float = CALL_TIMEOUT) -> list[str]:
        """Ends this HostProcess for good and returns what went wrong (empty: nothing):

        - a host still running is stopped (SIGTERM) and must exit 0;
        - a start whose exit the test did not cause or wait for (kill, stop, wait_exit) must
          have exited 0;
        - no stderr may hold a sanitizer report.

        Idempotent; also removes the short socket directory, if one was made.
        """
        problems: list[str] = []
        run = self._run
        if run is not None and run.pidfd >= 0:
            if self.running and _wait_fd_readable(run.pidfd, 0):
                self._wait_reaped(run, CALL_TIMEOUT)  # it ended by itself: judged below
            elif self.running:
                try:
                    self.stop(timeout)
                except HostError as e:
                    problems.append(str(e))
            for past in [*self._past, run]:
                if past.returncode is None:
                    continue
                if not past.exit_expected and past.returncode != 0:
                    problems.append(
                        f"polyplug-host (pid {past.proc.pid}) "
                        f"{describe_returncode(past.returncode)} unexpectedly; stderr:\n"
                        + "\n".join(past.lines)
                    )
                    past.exit_expected = True  # reported once
            log = self.stderr_text(all_runs=True)
            if "Sanitizer" in log or "runtime error:" in log:
                problems.append(f"polyplug-host reported a sanitizer error:\n{log}")
            for past in [*self._past, run]:
                for thread in past.threads:
                    thread.join(timeout=5)  # EOF follows the exit unless a grandchild holds it
                if past.pidfd >= 0:
                    os.close(past.pidfd)
                    past.pidfd = -1
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        return problems

    # -- logs ------------------------------------------------------------------------------

    def stderr_lines(self, all_runs: bool = False) -> list[str]:
        """The lines the host wrote to stderr so far (the latest start's, or every start's)."""
        with self._cond:
            runs = [*self._past, self._run] if all_runs else [self._run]
            return [line for run in runs if run is not None for line in run.lines]

    def stderr_text(self, all_runs: bool = False) -> str:
        """stderr_lines() joined, each line ending in a newline."""
        return "".join(line + "\n" for line in self.stderr_lines(all_runs))

    def stdout_text(self) -> str:
        """What the latest start wrote to stdout so far."""
        run = self._run
        if run is None or not self.stdout_path.exists():
            return ""
        with open(self.stdout_path, "rb") as f:
            f.seek(run.stdout_offset)
            return f.read().decode("utf-8", "replace")

    def wait_for_stderr_line(
        self, needle: str, timeout: float = START_TIMEOUT, *, after: int = 0
    ) -> str:
        """Waits until a line of the latest start's stderr, from index `after` on (see
        len(stderr_lines())), contains `needle`, and returns the first such line.

        Woken by each line the reader thread gets; HostError once the host closed its stderr
        (it exited) without such a line, or after `timeout`.
        """
        return self.wait_for_stderr(lambda line: needle in line, timeout, after=after,
                                    what=f"a stderr line containing {needle!r}")  # fmt: skip

    def wait_for_stderr(
        self,
        match: Callable[[str], bool],
        timeout: float = START_TIMEOUT,
        *,
        after: int = 0,
        what: str = "a matching stderr line",
    ) -> str:
        """wait_for_stderr_line() with a predicate on the line instead of a substring."""
        run = self._require_run("wait_for_stderr()")
        found: list[str] = []

        def done(lines: list[str]) -> bool:
            for line in lines[after:]:
                if match(line):
                    found.append(line)
                    return True
            return False

        self._wait_lines(run, done, timeout, what)
        return found[0]

    def served_addresses(self) -> list[str]:
        """The addresses of the latest start's "polyplug-host: serving on" lines, in order,
        without repeats (a supervised server says them again after each restart)."""
        out: list[str] = []
        for line in self.stderr_lines():
            if line.startswith(SERVING_ON) and line[len(SERVING_ON):] not in out:
                out.append(line[len(SERVING_ON):])
        return out

    def serving_address(self, requested_prefix: str, timeout: float = START_TIMEOUT) -> str:
        """The address the host serves for the listener asked for as `requested_prefix...`
        (e.g. "127.0.0.1:" gives "127.0.0.1:41234", the real port of a port-0 listener).
        Waits for the line like wait_for_stderr_line()."""
        line = self.wait_for_stderr(lambda x: x.startswith(SERVING_ON + requested_prefix),
                                    timeout, what=f"{SERVING_ON}{requested_prefix}...")  # fmt: skip
        return line[len(SERVING_ON):]

    @property
    def tcp_address(self) -> str:
        """The first TCP address the host serves ("127.0.0.1:41234"); HostError if none."""
        for address in self.served_addresses():
            if not address.startswith("unix:"):
                return address
        raise HostError(f"{self!r} serves no TCP listener: {self.served_addresses()}")

    # -- --supervise ----------------------------------------------------------------------

    def server_pid(self) -> int:
        """The pid of the server the supervisor runs now (--supervise), from
        /proc/<pid>/task/<pid>/children as the C++ supervise tests find it. HostError when
        there is none (between a server's death and its restart)."""
        run = self._require_run("server_pid()")
        pid = run.proc.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError as e:
            raise HostError(f"cannot list the children of {pid}: {e}") from e
        if not children:
            raise HostError(f"the supervisor (pid {pid}) has no server child now")
        return int(children[0])

    def kill_server(self, sig: int = signal.SIGKILL, timeout: float = CALL_TIMEOUT) -> int:
        """Sends `sig` to the supervised server (not the supervisor) and waits until that
        process has exited (its pidfd became readable); returns its pid. The supervisor then
        restarts it: see wait_server_serving()."""
        pid = self.server_pid()
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return pid  # already gone
        try:
            signal.pidfd_send_signal(fd, sig)
            if not _wait_fd_readable(fd, timeout):
                raise HostError(f"the server (pid {pid}) did not exit within {timeout} s")
        except ProcessLookupError:
            pass
        finally:
            os.close(fd)
        return pid

    def server_serving_count(self) -> int:
        """How many times a supervised server has served in the latest start: the
        supervisor's "the server (pid N) serves" lines (1 right after start())."""
        return sum(1 for line in self.stderr_lines() if _SUPERVISOR_SERVES.search(line))

    def wait_server_serving(self, count: int, timeout: float = START_TIMEOUT) -> int:
        """Waits until the supervisor has said "the server (pid N) serves" `count` times in
        the latest start, and returns that N: e.g. n = server_serving_count(); kill_server();
        new_pid = wait_server_serving(n + 1). HostError if the host ends first or after
        `timeout`."""
        run = self._require_run("wait_server_serving()")
        pids: list[int] = []

        def done(lines: list[str]) -> bool:
            pids.clear()
            for line in lines:
                m = _SUPERVISOR_SERVES.search(line)
                if m:
                    pids.append(int(m.group(1)))
            return len(pids) >= count

        self._wait_lines(run, done, timeout, f"the supervised server to serve {count} times")
        return pids[count - 1]

    # -- polyplugctl ----------------------------------------------------------------------

    def ctl(
        self,
        *args: str,
        timeout: float = CALL_TIMEOUT,
        extra_env: Mapping[str, str] | None = None,
    ) -> "subprocess.CompletedProcess[str]":
        """run_ctl(args) against this host's `address`, with its token file if it has one."""
        return run_ctl(args, address=self.address, token_file=self.token_file, timeout=timeout,
                       extra_env=extra_env)  # fmt: skip

    # -- internals ------------------------------------------------------------------------

    def _require_run(self, what: str) -> _Run:
        if self._run is None:
            raise HostError(f"{what} on a host that was never started")
        return self._run

    def _read_stderr(self, run: _Run, pipe: IO[bytes]) -> None:
        """Reader thread: blocks on the pipe, keeps and logs each line, notifies waiters."""
        with open(self.stderr_path, "ab") as log:
            for raw in iter(pipe.readline, b""):
                log.write(raw if raw.endswith(b"\n") else raw + b"\n")
                log.flush()
                line = raw.decode("utf-8", "replace").rstrip("\n")
                with self._cond:
                    run.lines.append(line)
                    self._cond.notify_all()
        pipe.close()
        with self._cond:
            run.eof = True
            self._cond.notify_all()

    def _wait_process(self, run: _Run) -> None:
        """Waiter thread: blocks in waitpid, records the exit, notifies waiters."""
        code = run.proc.wait()
        with self._cond:
            run.returncode = code
            self._cond.notify_all()

    def _wait_reaped(self, run: _Run, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: run.returncode is not None, timeout)

    def _wait_lines(
        self, run: _Run, done: Callable[[list[str]], bool], timeout: float, what: str
    ) -> None:
        """Waits until done(run.lines) holds; HostError when the stderr pipe reached its end
        first (the host and every process that shared its stderr exited) or on timeout."""
        with self._cond:
            finished = self._cond.wait_for(lambda: done(run.lines) or run.eof, timeout)
            if finished and done(run.lines):
                return
            text = "".join(line + "\n" for line in run.lines)
        if finished:
            self._wait_reaped(run, CALL_TIMEOUT)  # the pipe ended: the exit is imminent
            raise HostError(
                f"polyplug-host (pid {run.proc.pid}) "
                f"{describe_returncode(run.returncode)} while waiting for {what}; "
                f"stderr:\n{text}"
            )
        raise HostError(f"timed out after {timeout} s waiting for {what}; stderr:\n{text}")


# ---------------------------------------------------------------------------------------
# polyplugctl.


def run_ctl(
    args: Iterable[str],
    *,
    address: str | None = None,
    token_file: Path | None = None,
    timeout: float = CALL_TIMEOUT,
    extra_env: Mapping[str, str] | None = None,
) -> "subprocess.CompletedProcess[str]":
    """Runs `$POLYPLUGCTL_BINARY [--host address] [--token-file F] args...` to completion and
    returns it (returncode, stdout, stderr as text; no check). $POLYPLUG_HOST and
    $POLYPLUG_TOKEN are removed from its environment (then `extra_env` is added), so only
    what is passed here counts. subprocess.TimeoutExpired after `timeout` (the process is
    killed)."""
    argv = [str(ctl_binary())]
    if address is not None:
        argv += ["--host", address]
    if token_file is not None:
        argv += ["--token-file", str(token_file)]
    argv += list(args)
    env = {k: v for k, v in os.environ.items() if k not in ("POLYPLUG_HOST", "POLYPLUG_TOKEN")}
    env.update(extra_env or {})
    return subprocess.run(
        dying_with_us(argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


# ---------------------------------------------------------------------------------------
# The callback-equivalence scenario (tests/client/equivalence_scenario.h).

# Fields of the recorder's JSON lines that are 64-bit ids, written as decimal strings.
ID_FIELDS = ("bundle_id", "reload_id", "parent_reload_id", "root_reload_id")


def prepare_equivalence_root(root: Path) -> None:
    """PrepareRoot: removes `root` and everything in it, then copies chain_a, chain_b and
    chain_c into <root>/chain_a, <root>/chain_b and <root>/chain_c."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for target in ("chain_a", "chain_b", "chain_c"):
        copy_test_bundle(target, root)


@dataclasses.dataclass(frozen=True)
class EquivalenceOps:
    """What the scenario does, however it is done (the C++ Operations)."""

    load: Callable[[Path], None]  # load the bundle in this directory
    reload: Callable[[str, bool], None]  # reload bundle `name`; True: expect RELOADED
    unload_with_dependents: Callable[[str], None]  # unload `name`, its dependents first


# What the scenario fires, in order (callback_equivalence_test's expected_kinds).
EQUIVALENCE_KINDS = [
    "LOADED chain_a", "LOADED chain_b", "LOADED chain_c", "LOADED counter",
    "PREPARING counter", "RELOADED counter", "PREPARING counter", "FAILED counter",
    "PREPARING chain_a", "PREPARING chain_b", "PREPARING chain_c", "RELOADED chain_c",
    "RELOADED chain_b", "RELOADED chain_a", "UNLOADING chain_c", "UNLOADING chain_b",
    "UNLOADING chain_a",
]  # fmt: skip


def run_equivalence_scenario(root: Path, ops: EquivalenceOps) -> None:
    """RunScenario, step for step; call it once the host serves `root` as
    prepare_equivalence_root() left it (with the recorder's --state-dir):
    counter_v1 -> <root>/counter_v1, load; counter_v2's files over it, reload "counter"
    (RELOADED); libcounter.so := "not an ELF file", reload "counter" (FAILED); reload
    "chain_a" (RELOADED, cascading to chain_b then chain_c); unload "chain_a" with its
    dependents."""
    counter = copy_test_bundle("counter_v1", root)
    ops.load(counter)
    overwrite_artifact(test_bundle_dir("counter_v2"), counter)
    ops.reload("counter", True)
    write_file_in_place(counter / "libcounter.so", "not an ELF file")
    ops.reload("counter", False)
    ops.reload("chain_a", True)  # cascades to chain_b, then chain_c
    ops.unload_with_dependents("chain_a")


def record_in_process(root: Path, state_dir: Path, out: Path) -> list[dict[str, Any]]:
    """Runs $POLYPLUG_INPROCESS_RECORDER --root root --state-dir state_dir --out out (the
    scenario in a core::Runtime; it prepares `root` itself) and returns its events, one dict
    per JSON line of `out`, with the ID_FIELDS turned into ints. HostError (with the
    recorder's output) unless it exits 0. Use the same, resolved paths for the host run:
    the phase messages name files under them."""
    recorder = _env_path("POLYPLUG_INPROCESS_RECORDER")
    completed = subprocess.run(
        dying_with_us([str(recorder), "--root", str(root), "--state-dir", str(state_dir),
                        "--out", str(out)]),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CALL_TIMEOUT,
        check=False,
    )
    if completed.returncode != 0:
        raise HostError(
            f"{recorder.name} {describe_returncode(completed.returncode)}:\n"
            f"{completed.stdout}{completed.stderr}"
        )
    events: list[dict[str, Any]] = []
    for line in out.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        for field in ID_FIELDS:
            event[field] = int(event[field])
        events.append(event)
    return events

