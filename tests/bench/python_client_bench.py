#!/usr/bin/env python3
"""The Python half of polyplug-bench's `python` section: the same calls the C++ half makes,
through polyplug_client, against the same host. Prints one JSON object with the figures.

    python_client_bench.py --host TARGET --calls N --reloads M --replay-to SEQ

--calls: FindContract calls (after a warm-up); --reloads: Reload calls of bundle "counter";
--replay-to: subscribe from the start of the host's journal (resume after epoch:0) and time
how long the iterator takes to hand over every event up to SEQ (what a Python subscriber
keeps up with: the host sends as fast as the reader reads); once with HostClient.events(),
once with `async for` over AsyncHostClient.events().
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import polyplug_client as pc
from polyplug_client.aio import AsyncHostClient


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.50), "p99": at(0.99)}


def counts(item: pc.SubscriptionItem, last_seq: int) -> bool | None:
    """True for the last event, None for an item that says the replay did not happen."""
    if isinstance(item, pc.PhaseEvent):
        return item.seq >= last_seq
    if isinstance(item, (pc.Stopped, pc.Resynced)):
        print(f"the replay did not resume: {item}", file=sys.stderr)
        return None
    return False


def replay(stream: pc.EventStream, last_seq: int) -> float | None:
    """Events per second the iterator hands over, up to `last_seq`."""
    events = 0
    start = time.perf_counter()
    with stream:
        for item in stream:
            last = counts(item, last_seq)
            if last is None:
                return None
            events += isinstance(item, pc.PhaseEvent)
            if last:
                break
    return events / (time.perf_counter() - start)


async def replay_async(host: str, epoch: int, last_seq: int) -> float | None:
    """The same with `async for`."""
    events = 0
    async with AsyncHostClient(host) as client:
        start = time.perf_counter()
        async with client.events(resume_after=pc.Cursor(epoch, 0), strict_resume=True) as stream:
            async for item in stream:
                last = counts(item, last_seq)
                if last is None:
                    return None
                events += isinstance(item, pc.PhaseEvent)
                if last:
                    break
        return events / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--reloads", type=int, required=True)
    parser.add_argument("--replay-to", type=int, required=True)
    args = parser.parse_args()
    figures: dict[str, object] = {}
    with pc.HostClient(args.host) as client:
        epoch = client.get_host_info().host_epoch
        find: list[float] = []
        for i in range(args.calls + args.calls // 10):
            start = time.perf_counter()
            client.find_contract("test.counter@1")
            if i >= args.calls // 10:
                find.append((time.perf_counter() - start) * 1e6)
        figures["find_us"] = percentiles(find)
        reload: list[float] = []
        for i in range(args.reloads + 5):
            start = time.perf_counter()
            response = client.reload("counter")
            if response.outcome != pc.RELOAD_OUTCOME_RELOADED:
                print(f"the reload failed: {response.message}", file=sys.stderr)
                return 1
            if i >= 5:
                reload.append((time.perf_counter() - start) * 1e6)
        figures["reload_us"] = percentiles(reload)
        replayed = replay(client.events(resume_after=pc.Cursor(epoch, 0), strict_resume=True),
                          args.replay_to)
        if replayed is None:
            return 1
        figures["replay_events_per_s"] = replayed
    replayed = asyncio.run(replay_async(args.host, epoch, args.replay_to))
    if replayed is None:
        return 1
    figures["aio_replay_events_per_s"] = replayed
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
