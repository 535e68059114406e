#!/usr/bin/env python3
"""follow.py: prints a polyplug-host's phases as they happen, across reconnects and host
restarts, the way an editor's console or a developer's terminal would show them.

    usage: follow.py [--host TARGET] [--bundle NAME]... [--count N] [--asyncio]

The host is --host, else $POLYPLUG_HOST, else the host's default socket; the bearer token
is $POLYPLUG_TOKEN. --bundle: only these bundles. --count N: stop after N phase events
(exit 0). --asyncio: read with `async for` on grpc.aio instead of the thread-free iterator
(the same output). Runs until interrupted otherwise (exit 130). Exit 3 when the host
refuses the subscription (a wrong token, say).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import datetime, timezone

import polyplug_client as pc
from polyplug_client.aio import AsyncHostClient


class Printer:
    """Turns subscription items into lines; counts phase events."""

    def __init__(self, count: int | None):
        self.count = count
        self.seen = 0
        self.exit_code: int | None = None  # set once the follow should end

    def show(self, item: pc.SubscriptionItem) -> None:
        if isinstance(item, pc.PhaseEvent):
            when = datetime.fromtimestamp(item.timestamp_unix_nanos / 1e9, timezone.utc)
            tag = " (missed while disconnected)" if item.synthetic else ""
            print(f"{when:%H:%M:%S.%f} [{item.cursor}] {item}{tag}", flush=True)
            self.seen += 1
            if self.count is not None and self.seen >= self.count:
                self.exit_code = 0
        elif isinstance(item, pc.Resynced):
            loaded = ", ".join(f"{b.name} {b.version}" for b in item.bundles) or "none"
            if item.cause == pc.ResyncCause.INITIAL:
                print(f"following from {item.host_epoch}:{item.seq + 1}; loaded: {loaded}",
                      flush=True)
            else:
                print(f"-- resynced ({item.cause.value}) at {item.cursor}; loaded: {loaded}",
                      flush=True)
            for failed in item.quarantined:
                print(f"-- not running: {failed}", flush=True)
        elif isinstance(item, pc.HostRestarted):
            print(f"-- the host restarted (epoch {item.previous_epoch} -> {item.epoch})",
                  flush=True)
        elif isinstance(item, pc.ConnectionChanged):
            if item.connected:
                print("-- connected", file=sys.stderr, flush=True)
            else:
                print(f"-- connection lost ({item.error}); reconnecting", file=sys.stderr,
                      flush=True)
        else:
            print(f"follow: the host refused the subscription: {item.error}", file=sys.stderr,
                  flush=True)
            self.exit_code = 3


def follow(client: pc.HostClient, bundles: list[str], printer: Printer) -> int:
    with client.events(bundle_names=tuple(bundles)) as items:
        for item in items:
            printer.show(item)
            if printer.exit_code is not None:
                return printer.exit_code
    return 0


async def follow_async(target: str | None, token: str, bundles: list[str],
                       printer: Printer) -> int:
    async with AsyncHostClient(target, auth_token=token) as client:
        async with client.events(bundle_names=tuple(bundles)) as items:
            async for item in items:
                printer.show(item)
                if printer.exit_code is not None:
                    return printer.exit_code
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("POLYPLUG_HOST") or None)
    parser.add_argument("--bundle", action="append", default=[])
    parser.add_argument("--count", type=int)
    parser.add_argument("--asyncio", action="store_true")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return 2 if exit_.code else 0
    token = os.environ.get("POLYPLUG_TOKEN", "")
    printer = Printer(args.count)
    try:
        if args.asyncio:
            return asyncio.run(follow_async(args.host, token, args.bundle, printer))
        with pc.HostClient(args.host, auth_token=token) as client:
            return follow(client, args.bundle, printer)
    except pc.InvalidArgumentError as error:
        print(f"follow: {error.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
