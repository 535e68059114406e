"""examples/python against a real polyplug-host: ci_reload.py's exit codes for every
outcome, and follow.py's lines as phases happen (iterator and asyncio, a host restart)."""

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import hostproc
import pytest
from conftest import StartHost

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "python"
TIMEOUT = 60.0


def example_env(token: str | None = None) -> dict[str, str]:
    """The examples' environment: this build's polyplug_client, and a token if any."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.environ["POLYPLUG_PYTHON_PATH"]
    env.pop("POLYPLUG_HOST", None)
    env.pop("POLYPLUG_TOKEN", None)
    if token is not None:
        env["POLYPLUG_TOKEN"] = token
    return env


def ci_reload(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(hostproc.dying_with_us([sys.executable, str(EXAMPLES / "ci_reload.py"),
                                                  *args]),
                          env=example_env(token), capture_output=True, text=True,
                          timeout=TIMEOUT)


def install_greeter_v2(root: Path) -> None:
    """Puts greeter 2.0.0 (manifest and library) in place of the bundle in root/greeter."""
    source = hostproc.example_bundle_dir("greeter_v2")
    hostproc.overwrite_artifact(source, root / "greeter")
    shutil.copyfile(source / "manifest.toml", root / "greeter" / "manifest.toml")


def test_ci_reload_exits_0_only_when_the_bundle_reloaded(start_host: StartHost,
                                                         bundle_root: Path) -> None:
    host = start_host(bundles=[("greeter_v1", "greeter"), "shouter"])
    install_greeter_v2(bundle_root)
    done = ci_reload("greeter", "--host", host.address)
    assert done.returncode == 0, done.stderr
    assert "RELOADED greeter 2.0.0" in done.stdout
    assert "RELOADED shouter" in done.stdout  # the cascade is shown
    assert "greeter 2.0.0 is live" in done.stdout

    hostproc.write_file_in_place(bundle_root / "greeter" / "libgreeter.so", "not an ELF file")
    failed = ci_reload("greeter", "--host", host.address)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "ci_reload: FAILED [ARTIFACT_NOT_LOADABLE]" in failed.stderr

    unknown = ci_reload("no_such_bundle", "--host", host.address)
    assert unknown.returncode == 1
    assert "BUNDLE_NOT_FOUND" in unknown.stderr

    mismatch = ci_reload("shouter", "--host", host.address, "--expected-sha256", "0" * 64)
    assert mismatch.returncode == 1
    assert "EXPECTED_SHA256_MISMATCH" in mismatch.stderr


def test_ci_reload_reports_the_host_it_cannot_reach(tmp_path: Path) -> None:
    nobody = f"unix:{tmp_path / 'nobody.sock'}"
    done = ci_reload("greeter", "--host", nobody)
    assert done.returncode == 3, done.stderr
    assert f"cannot reach polyplug-host at {nobody}" in done.stderr

    usage = ci_reload("greeter", "--host", "no-port-here")
    assert usage.returncode == 2
    assert "neither unix:PATH nor HOST:PORT" in usage.stderr


def test_ci_reload_with_a_token(start_host: StartHost) -> None:
    host = start_host(bundles=[("greeter_v1", "greeter")], token="ci-secret")
    refused = ci_reload("greeter", "--host", host.address, token="wrong")
    assert refused.returncode == 3, refused.stderr
    accepted = ci_reload("greeter", "--host", host.address, token="ci-secret")
    assert accepted.returncode == 0, accepted.stderr


def test_ci_reload_gives_4_when_the_host_does_not_answer_in_time(start_host: StartHost) -> None:
    host = start_host(bundles=[("greeter_v1", "greeter")])
    host.kill(signal.SIGSTOP)
    try:
        done = ci_reload("greeter", "--host", host.address, "--timeout", "1")
    finally:
        host.kill(signal.SIGCONT)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "did not answer within" in done.stderr
    assert ci_reload("greeter", "--host", host.address).returncode == 0  # still serving


class Follower:
    """follow.py running, its stdout read line by line on a thread. Leaving the `with`
    block kills it if it still runs."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            hostproc.dying_with_us([sys.executable, str(EXAMPLES / "follow.py"), *args]),
            env=example_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._cond = threading.Condition()
        self._lines: list[str] = []
        self._ended = False
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def __enter__(self) -> "Follower":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(TIMEOUT)

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def wait_for(self, needle: str) -> str:
        """The first line holding `needle`, once it was printed."""

        def found() -> str | None:
            return next((line for line in self._lines if needle in line), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None or self._ended, TIMEOUT)
            line = found()
        if line is None:
            self.proc.kill()
            raise AssertionError(f"follow.py printed no line with {needle!r}: {self._lines}, "
                                 f"stderr {self.proc.stderr.read() if self.proc.stderr else ''}")
        return line

    def finish(self) -> tuple[int, list[str]]:
        code = self.proc.wait(TIMEOUT)
        with self._cond:
            self._cond.wait_for(lambda: self._ended, TIMEOUT)
            return code, list(self._lines)


def assert_followed_one_reload(code: int, lines: list[str]) -> None:
    """follow.py --count 2 printed greeter's reload, its two phases, and exited 0."""
    assert code == 0
    phases = [line.split("] ", 1)[1] for line in lines if "] " in line]
    assert phases == ["PREPARING greeter 1.0.0", "RELOADED greeter 1.0.0"]


@pytest.mark.parametrize("mode", [[], ["--asyncio"]], ids=["iterator", "asyncio"])
def test_follow_prints_phases_as_they_happen(start_host: StartHost, mode: list[str]) -> None:
    host = start_host(bundles=[("greeter_v1", "greeter")])
    with Follower("--host", host.address, "--count", "2", *mode) as follower:
        assert "loaded: greeter 1.0.0" in follower.wait_for("following from")
        assert host.ctl("reload", "greeter").returncode == 0
        code, lines = follower.finish()
    assert_followed_one_reload(code, lines)


def test_follow_announces_a_host_restart(start_host: StartHost) -> None:
    host = start_host(bundles=[("greeter_v1", "greeter")], supervise=True)
    with Follower("--host", host.address, "--count", "2") as follower:
        follower.wait_for("following from")
        served = host.server_serving_count()
        host.kill_server()
        host.wait_server_serving(served + 1)
        follower.wait_for("-- the host restarted")
        assert "loaded: greeter 1.0.0" in follower.wait_for("-- resynced (HOST_RESTARTED)")
        assert host.ctl("reload", "greeter").returncode == 0
        code, lines = follower.finish()
    assert_followed_one_reload(code, lines)
