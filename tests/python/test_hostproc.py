"""The fixture itself (hostproc.py, conftest.py) against the real polyplug-host: start and
answer polyplugctl, stop, kill and restart in place, --supervise restarting a killed server,
TLS and tokens, dying with the test process, bundle copies, and the in-process recorder
agreeing with a host that replays the same scenario."""

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import hostproc
from conftest import StartHost

EXPECTED_SCENARIO = hostproc.EQUIVALENCE_KINDS


def ok(completed: "subprocess.CompletedProcess[str]") -> "subprocess.CompletedProcess[str]":
    """`completed` when polyplugctl exited 0; a failed assertion with its output otherwise."""
    assert completed.returncode == 0, (
        f"{completed.args} exited with {completed.returncode}\n"
        f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    )
    return completed


def info(host: hostproc.HostProcess, *flags: str, address: str | None = None) -> dict[str, Any]:
    """`polyplugctl info --json` of the host: the HostInfo object."""
    completed = hostproc.run_ctl(
        [*flags, "info", "--json"],
        address=address or host.address,
        token_file=host.token_file,
    )
    envelope = json.loads(ok(completed).stdout)
    assert envelope["type"] == "polyplug.host.v1.HostInfo"
    result: dict[str, Any] = envelope["object"]
    return result


def test_host_serves_its_bundles_to_polyplugctl(start_host: StartHost, bundle_root: Path) -> None:
    host = start_host(bundles=["counter_v1"])
    assert host.running
    assert host.address == f"unix:{host.dir / 'host.sock'}"
    assert host.served_addresses() == [host.address]
    assert ok(host.ctl("info")).stdout.startswith("polyplug-host")
    host_info = info(host)
    assert host_info["bundle_roots"] == [str(bundle_root)]
    assert host_info["bundle_count"] == 1
    assert "counter" in ok(host.ctl("list", "bundles")).stdout
    assert host.state_dir == host.dir / "state"
    assert "--state-dir" in host.argv


def test_wait_for_stderr_line_sees_what_a_reload_logs(start_host: StartHost) -> None:
    host = start_host(bundles=["counter_v1"])
    before = len(host.stderr_lines())
    ok(host.ctl("reload", "counter"))
    line = host.wait_for_stderr_line("RELOADED counter", after=before)
    assert line.startswith("polyplug-host: [seq 3] RELOADED counter")
    # Lines before `after` do not count: the LOADED line is there, but not after the reload.
    assert host.wait_for_stderr_line("] LOADED counter").startswith("polyplug-host: [seq 1]")
    with pytest.raises(hostproc.HostError, match="timed out"):
        host.wait_for_stderr_line("] LOADED counter", timeout=0.2, after=before)


def test_stop_is_sigterm_and_exit_0(start_host: StartHost) -> None:
    host = start_host()
    assert host.stop() == 0
    assert not host.running
    assert host.returncode == 0
    assert "polyplug-host: SIGTERM received, shutting down" in host.stderr_lines()


def test_kill_then_restart_in_place_on_the_same_socket_and_state(start_host: StartHost) -> None:
    host = start_host(bundles=["counter_v1"])
    first_pid, epoch = host.pid, info(host)["host_epoch"]
    host.kill(signal.SIGKILL)
    assert host.wait_exit() == -signal.SIGKILL
    assert not host.running

    host.start()  # the dead host's socket is replaced
    assert host.pid != first_pid
    assert host.served_addresses() == [host.address]
    assert info(host)["host_epoch"] != epoch
    assert "==== start 2" in host.stderr_path.read_text()
    assert host.stderr_text() != host.stderr_text(all_runs=True)
    host.restart()  # stop (exit 0) and start again
    assert info(host)["bundle_count"] == 1


def _process_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat: R, S, T (stopped), Z..."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def test_freeze_stops_every_thread_and_stop_still_works(start_host: StartHost) -> None:
    host = start_host(bundles=["counter_v1"])
    pid = host.pid or 0
    host.freeze()
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    assert len(tasks) > 1 and all(_process_state(int(t.name)) == "T" for t in tasks)
    host.thaw()
    assert info(host)["bundle_count"] == 1
    host.freeze()
    assert host.stop() == 0  # SIGTERM reaches a frozen host too


def test_host_that_cannot_start_raises_with_its_stderr(tmp_path: Path) -> None:
    host = hostproc.HostProcess(["--no-such-flag"], tmp=tmp_path / "host")
    with pytest.raises(hostproc.HostError, match="no-such-flag"):
        host.start()
    assert host.returncode not in (None, 0)
    assert host.close() == []  # a failed start was reported by start() already


def test_unexpected_exit_is_reported_at_close(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    host = hostproc.HostProcess(["--bundles", str(empty)], tmp=tmp_path / "lone")
    host.start()
    pidfd = os.pidfd_open(host.pid or 0)
    try:
        os.kill(host.pid or 0, signal.SIGKILL)  # not through host.kill(): unexpected
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        assert poller.poll(int(hostproc.CALL_TIMEOUT * 1000))
    finally:
        os.close(pidfd)
    problems = host.close()
    assert len(problems) == 1
    assert "killed by signal 9 (SIGKILL) unexpectedly" in problems[0]
    assert host.close() == []  # reported once


def test_supervised_server_is_restarted_after_a_kill(start_host: StartHost) -> None:
    host = start_host(supervise=True, bundles=["counter_v1"])
    assert host.supervised
    assert host.server_serving_count() == 1
    server = host.server_pid()
    assert server != host.pid

    killed = host.kill_server(signal.SIGKILL)
    assert killed == server
    restarted = host.wait_server_serving(2)
    assert restarted != server
    assert host.server_pid() == restarted
    host.wait_for_stderr_line(f"restarted the server (pid {restarted})")
    host_info = info(host)
    assert host_info["supervised"] is True
    assert host_info["restarts"] == 1
    assert host_info["bundle_count"] == 1
    assert host.running  # the supervisor itself went on; teardown stops it (exit 0)


def test_tls_host_answers_polyplugctl_over_tcp(start_host: StartHost) -> None:
    host = start_host(tls=True, bundles=["counter_v1"])
    assert host.pki is not None
    address = host.tcp_address
    assert address.startswith("127.0.0.1:") and not address.endswith(":0")
    assert host.serving_address("127.0.0.1:") == address
    assert info(host, "--tls-ca", str(host.pki.ca_cert), address=address)["bundle_count"] == 1
    untrusted = hostproc.run_ctl(
        ["--tls-ca", str(host.pki.other_ca_cert), "info"], address=address
    )
    assert untrusted.returncode == 3, untrusted.stderr  # unreachable: the handshake fails


def test_mtls_host_wants_a_client_certificate(start_host: StartHost) -> None:
    host = start_host(mtls=True)
    assert host.pki is not None
    ca = ["--tls-ca", str(host.pki.ca_cert)]
    client = ["--tls-cert", str(host.pki.client_cert), "--tls-key", str(host.pki.client_key)]
    assert info(host, *ca, *client, address=host.tcp_address)["bundle_count"] == 0
    assert hostproc.run_ctl([*ca, "info"], address=host.tcp_address).returncode == 3


def test_token_host_refuses_calls_without_it(start_host: StartHost) -> None:
    host = start_host(token="s3cret-token")
    assert host.token_file is not None
    assert host.token_file.read_text() == "s3cret-token\n"
    assert info(host)["bundle_count"] == 0  # host.ctl sends the token file
    refused = hostproc.run_ctl(["info"], address=host.address)
    assert refused.returncode == 3 and "UNAUTHENTICATED" in refused.stderr


def test_two_hosts_in_one_test_have_their_own_dirs(start_host: StartHost, tmp_path: Path) -> None:
    first = start_host(bundles=["greeter_v1"])
    second = start_host(bundles=[("counter_v1", "counter")], root=tmp_path / "other")
    assert first.dir.name == "host" and second.dir.name == "host-2"
    assert first.address != second.address
    assert info(first)["bundle_count"] == 1
    assert info(second)["bundle_roots"] == [str(tmp_path / "other")]


def test_long_tmp_dir_gets_a_short_socket_dir(tmp_path: Path) -> None:
    deep, empty = tmp_path / ("d" * 100), tmp_path / "empty"
    empty.mkdir()
    with hostproc.HostProcess(["--bundles", str(empty)], tmp=deep) as host:
        assert not host.address.startswith(f"unix:{deep}")
        socket_dir = Path(host.address.removeprefix("unix:")).parent
        host.start()
        assert info(host)["bundle_count"] == 0
    assert not socket_dir.exists()  # close() removed it


def test_host_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    # A Python process starts a host, prints its pid, and is then killed with SIGKILL: the
    # host must not outlive it (PR_SET_PDEATHSIG).
    program = (
        "import sys, pathlib, hostproc\n"
        "host = hostproc.HostProcess([], tmp=pathlib.Path(sys.argv[1]))\n"
        "host.start()\n"
        "print(host.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    parent = subprocess.Popen(
        [sys.executable, "-c", program, str(tmp_path / "orphan")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        assert parent.stdout is not None
        host_pid = int(parent.stdout.readline())
        pidfd = os.pidfd_open(host_pid)
    finally:
        parent.kill()
        parent.wait()
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        assert poller.poll(int(hostproc.CALL_TIMEOUT * 1000)), "the host outlived its parent"
    finally:
        os.close(pidfd)


def test_bundle_copies_mirror_the_cpp_helpers(tmp_path: Path) -> None:
    root = tmp_path / "root"
    copied = hostproc.copy_test_bundle("counter_v1", root)
    assert copied == root / "counter_v1"
    assert sorted(p.name for p in copied.iterdir()) == ["libcounter.so", "manifest.toml"]
    assert hostproc.manifest_name(copied) == "counter"
    with pytest.raises(FileExistsError):
        hostproc.copy_test_bundle("counter_v1", root)

    crasher = hostproc.copy_test_bundle("crasher_v1", root, "crasher")
    assert crasher == root / "crasher" and hostproc.manifest_name(crasher) == "crasher"
    greeter = hostproc.copy_example_bundle("greeter_v1", root, "greeter")
    assert hostproc.manifest_name(greeter) == "greeter"

    library = copied / "libcounter.so"
    inode = library.stat().st_ino
    v2 = hostproc.test_bundle_dir("counter_v2")
    hostproc.overwrite_artifact(v2, copied)
    assert library.stat().st_ino == inode  # rewritten in place, like a rebuild
    assert hostproc.sha256_of_file(library) == hostproc.sha256_of_file(v2 / "libcounter.so")
    assert (copied / "manifest.toml").read_bytes() == (v2 / "manifest.toml").read_bytes()
    hostproc.write_file_in_place(library, "not an ELF file")
    assert library.stat().st_ino == inode and library.read_bytes() == b"not an ELF file"


def test_pki_files_exist(pki: hostproc.Pki) -> None:
    for field in (
        "ca_cert", "server_cert", "client_cert", "other_ca_cert", "rogue_client_cert"
    ):  # fmt: skip
        assert getattr(pki, field).read_text().startswith("-----BEGIN CERTIFICATE-----")


def _from_watch_json(line: str) -> dict[str, Any]:
    """One `polyplugctl watch --json` line in the recorder's format."""
    envelope = json.loads(line)
    assert envelope["type"] == "polyplug.host.v1.ReloadPhaseEvent"
    e = envelope["object"]
    v = e["bundle_version"]
    return {
        "seq": int(e["seq"]),
        "phase": e["phase"].removeprefix("PHASE_"),
        "bundle_id": int(e["bundle_id"]),
        "bundle_name": e["bundle_name"],
        "bundle_version": f"{v.get('major', 0)}.{v.get('minor', 0)}.{v.get('patch', 0)}",
        "reload_id": int(e["reload_id"]),
        "parent_reload_id": int(e["parent_reload_id"]),
        "root_reload_id": int(e["root_reload_id"]),
        "reason": e["reason"].removeprefix("FAILURE_REASON_"),
        "message": e["message"],
        "registry_revision": int(e["registry_revision"]),
        "live_instances": int(e["live_instances"]),
        "artifact_sha256": e["artifact_sha256"],
    }


def test_recorder_matches_a_host_replaying_the_scenario(
    start_host: StartHost, tmp_path: Path
) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    recorded = hostproc.record_in_process(root, state, tmp_path / "in_process.jsonl")
    assert [f"{e['phase']} {e['bundle_name']}" for e in recorded] == EXPECTED_SCENARIO
    assert all(isinstance(e[f], int) for e in recorded for f in hostproc.ID_FIELDS)
    assert recorded[0]["bundle_id"] > 2**53  # why the file has them as strings
    failed = recorded[7]
    assert failed["reason"] == "ARTIFACT_NOT_LOADABLE"
    assert str(root / "counter_v1" / "libcounter.so") in failed["message"]
    raw = (tmp_path / "in_process.jsonl").read_text().splitlines()
    assert json.loads(raw[0])["bundle_id"] == str(recorded[0]["bundle_id"])

    # The same steps through a host on the same root and state dir, with polyplugctl.
    hostproc.prepare_equivalence_root(root)
    host = start_host("--state-dir", str(state), root=root)
    assert host.state_dir == state

    def load(directory: Path) -> None:
        ok(host.ctl("load", str(directory)))

    def reload(name: str, expect_reloaded: bool) -> None:
        completed = host.ctl("reload", name)
        assert completed.returncode == (0 if expect_reloaded else 1), completed

    def unload_with_dependents(name: str) -> None:
        ok(host.ctl("unload", name, "--cascade"))

    hostproc.run_equivalence_scenario(
        root, hostproc.EquivalenceOps(load, reload, unload_with_dependents)
    )
    epoch = info(host)["host_epoch"]
    watched = ok(host.ctl("watch", "--from", f"{epoch}:1", "--count", str(len(recorded)),
                          "--json"))  # fmt: skip
    assert [_from_watch_json(line) for line in watched.stdout.splitlines()] == recorded
