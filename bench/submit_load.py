"""Submissions per second and their latency through `kts serve` on PostgreSQL + Redis.

For each configuration: a fresh PostgreSQL database, a unique Redis queue that no worker
consumes, `kts serve --workers N` (API keys required, one tenant and key per client), then
C concurrent keep-alive clients
  1. submit training jobs (POST /v1/jobs, the digits MLP spec) for S seconds, then
  2. poll GET /v1/jobs/{id} on the jobs they made, for S seconds.
Prints requests/s, p50/p95/p99 and who used the 2 cores in each phase. Figures, never asserted.

The load generator is a minimal HTTP/1.1 client on asyncio (uvloop when installed): on a
2-core machine it shares the CPU with the server, PostgreSQL and Redis, so it is kept as
cheap as possible and its own CPU use is printed with the rest.

    python bench/submit_load.py [--workers 1 2] [--clients 32] [--seconds 10] [--ref HEAD]

--ref REF adds a run of the code at git REF (exported with `git archive`) with one process:
the path before the changes, measured beside the new one in the same run.
"""

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

sys.path.insert(0, os.path.dirname(__file__))
from pg_service import (  # noqa: E402
    cpu_line,
    cpu_snapshot,
    cpu_used,
    drop_queue,
    fresh_database,
    make_keys,
    migrate,
    server_env,
    serving,
    source_tree,
)

SPEC = {
    "name": "digits-mlp",
    "dataset": {"builtin": "digits"},
    "epochs": 3,
    "seed": 7,
    "model": {
        "layers": [
            {"type": "dense", "units": 32, "activation": "elu", "kernel_initializer": "he_normal"},
            {"type": "batch_normalization"},
            {"type": "dropout", "rate": 0.2},
            {"type": "dense", "units": 10, "activation": "softmax"},
        ]
    },
}
BODY = orjson.dumps(SPEC)


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0
    cpu: str = ""
    server_cpu: float = 0.0  # CPU seconds of the kts processes, PostgreSQL and Redis

    def line(self, label: str) -> str:
        ok = sorted(self.latencies)
        if not ok:
            return f"{label}: no answers ({dict(self.statuses)})"

        def pct(p: float) -> float:
            return ok[min(len(ok) - 1, int(p * len(ok)))] * 1000

        rate = len(ok) / self.seconds
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return (
            f"{label}: {rate:7.1f}/s  p50 {pct(0.50):6.1f} ms  p95 {pct(0.95):6.1f} ms  "
            f"p99 {pct(0.99):6.1f} ms  ({len(ok)} answers; {codes})\n    {self.cpu}\n"
            f"    server CPU per answer (kts + postgres + redis): "
            f"{1000 * self.server_cpu / len(ok):.2f} ms"
        )


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return status, body


def _post(port: int, key: str) -> bytes:
    return (
        f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


def _get(port: int, key: str, job_id: str) -> bytes:
    return (
        f"GET /v1/jobs/{job_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\n\r\n"
    ).encode()


async def _client(
    port: int, key: str, until: float, phase: Phase, ids: list[str], poll: bool
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            request = _get(port, key, random.choice(ids)) if poll else _post(port, key)
            started = time.perf_counter()
            status, body = await _exchange(reader, writer, request)
            phase.latencies.append(time.perf_counter() - started)
            phase.statuses[status] += 1
            if not poll and status == 202:
                ids.append(orjson.loads(body)["id"])
    finally:
        writer.close()


async def _phase(
    port: int, keys: list[str], seconds: float, ids: list[list[str]], poll: bool, group: int
) -> Phase:
    phase = Phase()
    before, started = cpu_snapshot(group), time.perf_counter()
    until = started + seconds
    await asyncio.gather(
        *(_client(port, k, until, phase, ids[i], poll) for i, k in enumerate(keys))
    )
    phase.seconds = time.perf_counter() - started
    used = cpu_used(before, cpu_snapshot(group))
    phase.cpu = cpu_line(used, phase.seconds)
    phase.server_cpu = used["kts"] + used["postgres"] + used["redis"]
    return phase


def run_config(tree: Path, args: list[str], clients: int, seconds: float) -> tuple[Phase, Phase]:
    queue = f"kts-bench-{uuid.uuid4().hex[:8]}"
    with fresh_database() as db_url, tempfile.TemporaryDirectory() as artifacts:
        env = server_env(tree, db_url, queue, artifacts)
        migrate(tree, env)
        keys = make_keys(db_url, [f"bench{i}" for i in range(clients)])
        try:
            with serving(tree, env, args) as (base, group):
                port = int(base.rsplit(":", 1)[1])
                ids: list[list[str]] = [[] for _ in keys]
                asyncio.run(_phase(port, keys, 2.0, ids, False, group))  # warm-up
                submit = asyncio.run(_phase(port, keys, seconds, ids, False, group))
                poll = asyncio.run(_phase(port, keys, seconds, ids, True, group))
        finally:
            drop_queue(queue)
    return submit, poll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ref", default=None, help="also run git REF with one process")
    opts = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    print(
        f"{opts.clients} clients ({loop} load generator), {opts.seconds:g} s per phase, "
        f"PostgreSQL + Redis, API keys on, {os.cpu_count()} cores shared by everything below"
    )
    configs: list[tuple[str, str | None, list[str]]] = []
    if opts.ref:
        configs.append((f"{opts.ref} (1 process)", opts.ref, []))
    for n in opts.workers:
        configs.append((f"--workers {n}", None, ["--workers", str(n)]))
    for label, ref, args in configs:
        with source_tree(ref) as tree:
            submit, poll = run_config(tree, args, opts.clients, opts.seconds)
        print(f"\n{label}")
        print(submit.line("  submit POST /v1/jobs     "))
        print(poll.line("  poll   GET /v1/jobs/{id} "))


if __name__ == "__main__":
    main()
