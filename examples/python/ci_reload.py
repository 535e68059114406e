#!/usr/bin/env python3
"""ci_reload.py: a CI step that hot-reloads a bundle on a running polyplug-host and fails
the job on any outcome but success.

    usage: ci_reload.py BUNDLE [--host TARGET] [--expected-sha256 HEX] [--timeout SECONDS]
                               [--request-id ID]

BUNDLE is a bundle's name, or a path inside one of the host's bundle roots. The host is
--host, else $POLYPLUG_HOST, else the host's default socket; the bearer token is
$POLYPLUG_TOKEN (no secret in files), and $POLYPLUG_TLS_CA turns on TLS with that CA file.

The reload carries a request id (--request-id, else $POLYPLUG_REQUEST_ID, else a fresh one),
so that when its response is lost (the connection broke, the deadline passed) the step asks
the host for the outcome of that very reload instead of reloading twice.

Exit status, as polyplugctl's: 0 the bundle reloaded with every dependent; 1 the reload
failed or left dependents behind (the reason is printed); 2 usage; 3 the host is
unreachable or refused the credentials; 4 the deadline passed before the outcome was known.
"""

from __future__ import annotations

import argparse
import os
import sys

import polyplug_client as pc
from polyplug.host.v1 import host_pb2

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TIMEOUT = 0, 1, 2, 3, 4


def exit_code_of(error: pc.PolyplugError) -> int:
    """polyplugctl's exit code for an error."""
    if isinstance(error, (pc.UnavailableError, pc.UnauthenticatedError)):
        return EXIT_UNREACHABLE
    if isinstance(error, pc.DeadlineExceededError):
        return EXIT_TIMEOUT
    return EXIT_FAILED


def report(response: host_pb2.ReloadResponse) -> int:
    """Prints what the reload did; its exit code."""
    for event in response.events:
        print(f"  {pc.PhaseEvent.from_proto(event)}")
    if response.outcome == pc.RELOAD_OUTCOME_RELOADED:
        versions = [pc.Version.from_proto(e.bundle_version) for e in response.events
                    if e.phase == host_pb2.PHASE_RELOADED and e.parent_reload_id == 0]
        version = f" {versions[-1]}" if versions else ""
        print(f"ci_reload: {response.bundle_name}{version} is live")
        return EXIT_OK
    if response.outcome == pc.RELOAD_OUTCOME_DEPENDENTS_FAILED:
        print(f"ci_reload: FAILED: reloaded, but dependents stayed on their old versions: "
              f"{', '.join(response.failed_dependents)}", file=sys.stderr)
        return EXIT_FAILED
    print(f"ci_reload: FAILED [{pc.reason_token(response.reason)}] {response.message}",
          file=sys.stderr)
    return EXIT_FAILED


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--host", default=os.environ.get("POLYPLUG_HOST") or None)
    parser.add_argument("--expected-sha256", default="")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--request-id", default=os.environ.get("POLYPLUG_REQUEST_ID") or "")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_USAGE if exit_.code else EXIT_OK
    request_id = args.request_id or pc.new_request_id()
    options = pc.ConnectOptions(auth_token=os.environ.get("POLYPLUG_TOKEN", ""),
                                call_timeout=args.timeout)
    if os.environ.get("POLYPLUG_TLS_CA"):
        with open(os.environ["POLYPLUG_TLS_CA"], "rb") as ca:
            options.tls, options.tls_root_certs_pem = True, ca.read()
    try:
        client = pc.HostClient(args.host, options)
    except pc.InvalidArgumentError as error:
        print(f"ci_reload: {error.message}", file=sys.stderr)
        return EXIT_USAGE
    with client:
        print(f"ci_reload: reloading {args.bundle} on {client.target} (request id {request_id})")
        try:
            response = client.reload(args.bundle, expected_sha256=args.expected_sha256,
                                     request_id=request_id)
        except (pc.UnavailableError, pc.DeadlineExceededError) as lost:
            if lost.reason:  # the host's own answer, e.g. SHUTTING_DOWN
                print(f"ci_reload: FAILED {lost}", file=sys.stderr)
                return exit_code_of(lost)
            # The response may be lost while the reload ran: ask for that reload's outcome.
            try:
                operation = client.get_operation(request_id, wait=True, timeout=args.timeout)
            except pc.NotFoundError:
                print(f"ci_reload: FAILED: the host never ran the reload: {lost}",
                      file=sys.stderr)
                return exit_code_of(lost)
            except pc.PolyplugError:
                print(f"ci_reload: FAILED {lost}", file=sys.stderr)
                return exit_code_of(lost)
            print(f"ci_reload: the response was lost ({lost.message}); the host's record of "
                  f"request {request_id} follows", file=sys.stderr)
            if not operation.done:
                print("ci_reload: the reload is still running; its outcome is unknown",
                      file=sys.stderr)
                return EXIT_TIMEOUT
            if operation.code != 0:
                print(f"ci_reload: FAILED: {operation.message}", file=sys.stderr)
                return EXIT_FAILED
            response = operation.reload
        except pc.PolyplugError as error:
            print(f"ci_reload: FAILED {error}", file=sys.stderr)
            return exit_code_of(error)
        return report(response)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
