"""Sandbox benchmark: a warm action call through the pool (1 and 2 children) next to the same
call on an in-process interpreter, and how far past its deadline a timed-out call returns.

    .venv/bin/python benchmarks/sandbox.py [--calls 3000] [--out benchmarks/results]

Reports tables (Markdown) and JSON; loops are bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from gatehook.errors import ScriptTimeout
from gatehook.sandbox import SandboxPool, ScriptJob
from gatehook.sandbox.engine import EngineLimits, ScriptContext
from gatehook.settings import SandboxSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import pct

SOURCE = (
    "export async function execute(input) {\n"
    "  return {kind: 'continue', claims: {uid: input.user.id, year: 2026}};\n}\n"
)
INPUT = json.dumps(
    {
        "tenant": "bench",
        "flow_type": "external_authentication",
        "trigger": "post_authentication",
        "request_id": "r1",
        "user": {"id": "u1", "email": "ann@acme.com", "groups": ["staff"], "metadata": {}},
        "request": {"ip": "203.0.113.7", "risk_score": 0.1},
        "state": {},
        "context": {},
        "config": {},
    }
).encode()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def in_process(code: str, calls: int) -> dict[str, Any]:
    """The same call on an engine context in this process (isolation ``worker``'s path)."""
    ctx = ScriptContext(EngineLimits(), code, "module", "bench")
    text = INPUT.decode()
    lat = []
    started = time.perf_counter()
    for _ in range(calls):
        t = time.perf_counter()
        ctx.call(text, time.monotonic() + 1.0)
        lat.append((time.perf_counter() - t) * 1000)
    total = time.perf_counter() - started
    return {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "calls_per_s": calls / total}


async def through_pool(code: str, children: int, calls: int, in_flight: int) -> dict[str, Any]:
    async with SandboxPool(SandboxSettings(pool_size=children), size=children) as pool:
        job = ScriptJob("bench", "bench", "1.0.0", code, "module", INPUT, 1000)
        for _ in range(50):
            await pool.run(job)  # warm every child
        lat = []
        for _ in range(calls):
            t = time.perf_counter()
            await pool.run(job)
            lat.append((time.perf_counter() - t) * 1000)
        # closed loop, `in_flight` calls outstanding
        done = 0
        deadline = time.monotonic() + 30

        async def client() -> None:
            nonlocal done
            while done < calls * 2 and time.monotonic() < deadline:
                await pool.run(job)
                done += 1

        pids = pool.pids()
        cpu0 = [cpu_seconds(pid) for pid in pids]
        own0 = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(in_flight)))
        total = time.perf_counter() - started
        child_cpu = sum(cpu_seconds(pid) - c for pid, c in zip(pids, cpu0, strict=True))
        parent_cpu = time.process_time() - own0
        return {
            "calls_per_child_cpu_s": done / child_cpu if child_cpu else 0.0,
            "child_cpu_share": child_cpu / total / children,
            "parent_cpu_share": parent_cpu / total,
            "children": children,
            "p50_ms": pct(lat, 50),
            "p99_ms": pct(lat, 99),
            "calls_per_s": done / total,
            "calls_per_s_per_child": done / total / children,
        }


async def overshoot(runs: int, timeout_ms: float) -> dict[str, Any]:
    async with SandboxPool(SandboxSettings(pool_size=1), size=1) as pool:
        compiled = await pool.compile(
            "export function execute() { while (true) {} }", language="js", name="spin"
        )
        over = []
        for i in range(runs):
            job = ScriptJob(
                "bench", "spin", f"1.0.{i}", compiled.code, compiled.style.value, b"{}", timeout_ms
            )
            t = time.perf_counter()
            with contextlib.suppress(ScriptTimeout):
                await pool.run(job)
            over.append((time.perf_counter() - t) * 1000 - timeout_ms)
        return {
            "timeout_ms": timeout_ms,
            "runs": runs,
            "overshoot_p50_ms": pct(over, 50),
            "overshoot_max_ms": max(over),
        }


async def compile_once() -> str:
    async with SandboxPool(SandboxSettings(pool_size=1), size=1) as pool:
        return (await pool.compile(SOURCE, language="js", name="bench")).code


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    code = await compile_once()
    base = in_process(code, args.calls)
    pools = [await through_pool(code, n, args.calls, args.in_flight) for n in (1, 2)]
    over = await overshoot(20, 100)
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "in_process": base,
        "pool": pools,
        "timeout": over,
    }
    lines = [
        "| path | p50 ms | p99 ms | calls/s | calls/s per child | calls per child CPU-second "
        "| child CPU busy | pool (parent) CPU busy | p50 vs in-process |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| in-process engine context (isolation worker, no IPC) | {base['p50_ms']:.3f} "
        f"| {base['p99_ms']:.3f} "
        f"| {base['calls_per_s']:.0f} | - | - | - | - | 1.00x |",
    ]
    for p in pools:
        lines.append(
            f"| pool, {p['children']} child(ren), {args.in_flight} in flight for calls/s "
            f"| {p['p50_ms']:.3f} | {p['p99_ms']:.3f} | {p['calls_per_s']:.0f} "
            f"| {p['calls_per_s_per_child']:.0f} | {p['calls_per_child_cpu_s']:.0f} "
            f"| {p['child_cpu_share']:.0%} | {p['parent_cpu_share']:.0%} "
            f"| {p['p50_ms'] / base['p50_ms']:.2f}x |"
        )
    lines.append("")
    lines.append(
        f"Timeout {over['timeout_ms']:.0f} ms, {over['runs']} runs of `while(true){{}}`: "
        f"the caller got `timeout` {over['overshoot_p50_ms']:.1f} ms (p50) / "
        f"{over['overshoot_max_ms']:.1f} ms (max) after the deadline."
    )
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sandbox.json").write_text(json.dumps(result, indent=2))
    (args.out / "sandbox.md").write_text(table + "\n")


if __name__ == "__main__":
    uvloop.run(main())
