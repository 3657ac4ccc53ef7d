"""Noisy neighbour: tenant B's latency with and without tenant A flooding the sandbox with
endless loops and memory hogs, in one run.

    .venv/bin/python benchmarks/noisy.py [--seconds 5]

B runs one JS action, one request in flight. A's flood: 16 requests in flight at an action
that spins to its timeout (500 ms) or allocates until the memory cap. Reports B's p50/p99.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import uvloop

from gatehook.devservers import start_mongo, start_nats

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import ACTIONS, PY, pct, start_worker, stop, wait_ready  # noqa: E402

PA = "external_authentication.post_authentication"
SPIN = """export function execute(input) {
  if (input.request.risk_score > 0.05) { while (true) {} }
  const a = []; while (true) a.push('x'.repeat(1e6) + a.length);
}"""


async def set_up(url: str) -> None:
    import nats

    from gatehook.admin.client import AdminClient

    nc = await nats.connect(url)
    client = AdminClient(nc, timeout=120)
    try:
        await client.call(
            "quiet",
            "apply",
            file={
                "actions": [ACTIONS["js"]],
                "flows": {"external_authentication": {"post_authentication": ["js@latest"]}},
            },
        )
        await client.call(
            "noisy",
            "apply",
            file={
                "actions": [
                    {
                        "name": "hog",
                        "source": SPIN,
                        "language": "js",
                        "timeout_ms": 500,
                        "allowed_to_fail": True,
                    }
                ],
                "flows": {"external_authentication": {"post_authentication": ["hog@latest"]}},
            },
        )
    finally:
        await nc.close()


def loadgen(url: str, tenant: str, seconds: float, in_flight: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            PY,
            str(HERE / "loadgen.py"),
            "--url",
            url,
            "--subject",
            f"gatehook.v1.trigger.{tenant}.{PA}",
            "--mode",
            "closed",
            "--seconds",
            str(seconds),
            "--in-flight",
            str(in_flight),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def result(proc: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = proc.communicate(timeout=300)
    data = json.loads(out.strip().splitlines()[-1])
    lat = data["lat"]
    return {"p50": pct(lat, 50), "p99": pct(lat, 99), "n": len(lat), "errors": data["errors"]}


def scenario(seconds: float, extra: dict[str, str]) -> tuple[dict[str, float], ...]:
    nats_server, mongo = start_nats(), start_mongo()
    worker = start_worker(1, nats_server.url, mongo.url, extra)
    try:
        uvloop.run(wait_ready(nats_server.url, 1))
        uvloop.run(set_up(nats_server.url))
        result(loadgen(nats_server.url, "quiet", 1, 1))  # warm
        alone = result(loadgen(nats_server.url, "quiet", seconds, 1))
        flood = loadgen(nats_server.url, "noisy", seconds + 2, 16)
        time.sleep(1)
        crowded = result(loadgen(nats_server.url, "quiet", seconds, 1))
        noisy = result(flood)
    finally:
        stop(worker)
        mongo.stop()
        nats_server.stop()
    return alone, crowded, noisy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    lines = [
        "| tenant B (one JS action), 1 in flight | per-tenant sandbox bound | p50 ms | p99 ms "
        "| requests | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for label, extra in (
        ("default (pool size - 1)", {}),
        ("off (16)", {"GATEHOOK_SANDBOX__PER_TENANT_CONCURRENCY": "16"}),
    ):
        alone, crowded, noisy = scenario(args.seconds, extra)
        for name, r in (
            ("alone", alone),
            ("while tenant A floods", crowded),
            ("(tenant A itself)", noisy),
        ):
            lines.append(
                f"| {name} | {label} | {r['p50']:.2f} | {r['p99']:.2f} | {r['n']} | {r['errors']} |"
            )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
