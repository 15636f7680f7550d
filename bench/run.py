"""Every benchmark in sequence, one command (README): `python -m bench` (or `python -m bench.run`).

    .venv/bin/python -m bench                 # full run, all tables (< 5 minutes on 2 cores)
    .venv/bin/python -m bench --smoke         # seconds-long versions (CI)
    .venv/bin/python -m bench --only ack startup

A benchmark is a module of this package exposing `main(argv) -> int` (sync or async) that takes
`--smoke` and prints its own tables; adding one is adding its name to BENCHMARKS. Each runs in
this process in turn (each starts its own server and stand-ins as child processes); a failure
or exception in one does not stop the others, and the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

from bench.common import machine, print_table, run_main

BENCHMARKS: tuple[str, ...] = (
    "ack",  # issue 7.1: ack latency under load, against a bare Bolt app
    "followup",  # issue 7.2: Retell requests and detection lag, 1,000 batches in flight
    "capacity",  # issue 7.3: batches in flight before lag doubles, RSS up to 10,000
    "startup",  # issue 7.4: time to /healthz 200, idle RSS
    "triage",  # Show failures on 400 of 1,000, repeat=5 of 1,000, rendering cost
    "compare",  # SPEC §9: compare @3 @4 on 1,000 cases, completion to result, requests, blocks
    "parsing",  # the slash-command parser on hostile input (inside the ack)
    "chaos",  # issue 14: two replicas on PostgreSQL through every kind of fault, nothing lost
    "burst",  # issue 17: N results at once under Slack's tiers, against the floor they allow
    "workspaces",  # issue 18: 1,000 workspaces x 10 runs in flight, 1 and 2 replicas, tokens
)


def run_one(name: str, argv: list[str]) -> int:
    try:
        module = importlib.import_module(f"bench.{name}")
        return run_main(module.main, argv)
    except Exception:
        traceback.print_exc()
        return 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="the seconds-long version of each")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME", default=None)
    args = parser.parse_args(argv)
    chosen = args.only or list(BENCHMARKS)
    flags = ["--smoke"] if args.smoke else []
    print(f"benchmarks: {', '.join(chosen)}{' (smoke)' if args.smoke else ''}\n  {machine()}")
    results: list[tuple[str, int, float]] = []
    for name in chosen:
        print(f"\n=== bench.{name} {' '.join(flags)}".rstrip(), flush=True)
        started = time.perf_counter()
        code = run_one(name, flags)
        results.append((name, code, time.perf_counter() - started))
    print_table(
        "Benchmark runs",
        ["benchmark", "result", "seconds"],
        [(name, "ok" if code == 0 else f"FAILED ({code})", secs) for name, code, secs in results],
    )
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
