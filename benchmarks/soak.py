"""Soak: a steady rate for a long time, watching memory, errors and the tail minute by minute.

    .venv/bin/python benchmarks/soak.py                   # 20 minutes at 300 req/s
    .venv/bin/python benchmarks/soak.py --minutes 2       # a short check
    .venv/bin/python benchmarks/soak.py --pin-cache 10000 # the sign-in pin cache bounded lower

One worker (with its sandbox children) on real servers, the sample tenant's flow
(examples/acme: templates, a TypeScript action, a ZITADEL-style script), and an open loop
(requests on a fixed schedule; latency from each request's scheduled time) in which a third
of the requests are a new sign-in (a fresh ``signin_id``: its pin is written) and the rest
triggers of sign-ins already pinned. Every minute: requests, errors, timeouts, p50 / p99 /
max, and the RSS of the worker and of each sandbox child. Not part of the test run.
Writes results/soak-<stamp>.json and .md, and prints the Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gatehook.admin.apply import load_file
from gatehook.admin.client import AdminClient
from gatehook.devservers import start_mongo, start_nats
from run import kind_of, pct, proc_tree, start_worker, stop, wait_ready

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SUBJECT = "gatehook.v1.trigger.acme.external_authentication.post_authentication"


def rss_by_process(pid: int) -> dict[str, float]:
    """RSS in MB of the worker and of each of its children (by kind and pid)."""
    out: dict[str, float] = {}
    for p in proc_tree([pid]):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[f"{kind_of(p)}:{p}"] = int(line.split()[1]) / 1024
        except OSError:
            continue
    return out


def body(signin: str) -> bytes:
    return json.dumps(
        {
            "request_id": uuid.uuid4().hex,
            "signin_id": signin,
            "user": {"id": "u1", "username": "ann", "email": "ann@acme.com", "groups": ["staff"]},
            "request": {"ip": "203.0.113.7", "risk_score": 0.1},
            "context": {"providerInfo": {"name": "okta"}},
        }
    ).encode()


async def minute(nc: nats.NATS, rate: float, seconds: float, pinned: list[str]) -> dict[str, Any]:
    lat: list[float] = []
    errors = timeouts = 0
    first_error = ""
    start = time.monotonic() + 0.05
    total = int(rate * seconds)

    async def one(k: int) -> None:
        nonlocal errors, timeouts, first_error
        at = start + k / rate
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        if k % 3 == 0 or not pinned:
            signin = uuid.uuid4().hex  # a new sign-in: its pin is written
            pinned.append(signin)
            if len(pinned) > 5000:
                del pinned[: len(pinned) - 5000]
        else:
            signin = random.choice(pinned)
        try:
            msg = await nc.request(SUBJECT, body(signin), timeout=5)
        except nats.errors.TimeoutError:
            timeouts += 1
            return
        lat.append((time.monotonic() - at) * 1000)
        reply = json.loads(msg.data)
        if reply.get("error"):
            errors += 1
            first_error = first_error or json.dumps(reply["error"])

    await asyncio.gather(*(one(k) for k in range(total)))
    return {
        "n": total,
        "errors": errors,
        "timeouts": timeouts,
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "max": max(lat, default=float("nan")),
        "first_error": first_error,
    }


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=int, default=20)
    p.add_argument("--rate", type=float, default=300.0)
    p.add_argument(
        "--pin-cache",
        type=int,
        default=None,
        help="GATEHOOK_CACHE__SIGNIN_PINS of the worker (default: the setting's default)",
    )
    args = p.parse_args()
    nats_srv, mongo = start_nats(), start_mongo()
    extra = {} if args.pin_cache is None else {"GATEHOOK_CACHE__SIGNIN_PINS": str(args.pin_cache)}
    worker = start_worker(1, nats_srv.url, mongo.url, extra)
    rows: list[dict[str, Any]] = []
    try:
        await wait_ready(nats_srv.url, 1)
        nc = await nats.connect(nats_srv.url)
        doc, sources = load_file(ROOT / "examples/acme/tenant.yaml")
        await AdminClient(nc, actor="soak", timeout=120).call(
            "acme", "apply", file=doc.model_dump(mode="json"), sources=sources
        )
        pinned: list[str] = []
        for m in range(1, args.minutes + 1):
            row = await minute(nc, args.rate, 60.0, pinned)
            row["minute"] = m
            row["rss_mb"] = rss_by_process(worker.pid)
            rows.append(row)
            rss = ", ".join(f"{k} {v:.0f}" for k, v in sorted(row["rss_mb"].items()))
            print(
                f"minute {m}: {row['n']} requests, {row['errors']} errors,"
                f" {row['timeouts']} timeouts, p99 {row['p99']:.1f} ms; RSS MB {rss}",
                flush=True,
            )
        await nc.close()
    finally:
        stop(worker)
        mongo.stop()
        nats_srv.stop()
    md = table(rows, args)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"soak-{stamp}.json").write_text(json.dumps(rows, indent=1))
    (out / f"soak-{stamp}.md").write_text(md + "\n")
    print(md)


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    kinds = sorted({k.split(":")[0] for r in rows for k in r["rss_mb"]})

    def by_kind(r: dict[str, Any], kind: str) -> str:
        values = [v for k, v in sorted(r["rss_mb"].items()) if k.split(":")[0] == kind]
        return " / ".join(f"{v:.0f}" for v in values)

    lines = [
        f"Machine: {platform.machine()}, Python {platform.python_version()}; {args.rate:.0f}"
        " req/s, a third new sign-ins; RSS in MB (a sandbox child's column lists each child).",
        "",
        "| minute | requests | errors | timeouts | p50 ms | p99 ms | max ms | "
        + " | ".join(f"RSS {k}" for k in kinds)
        + " |",
        "|---" * (7 + len(kinds)) + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r['minute']} | {r['n']} | {r['errors']} | {r['timeouts']} | {r['p50']:.1f} |"
            f" {r['p99']:.1f} | {r['max']:.0f} | " + " | ".join(by_kind(r, k) for k in kinds) + " |"
        )
    if len(rows) > 2:
        growth = {
            k: max(rows[-1]["rss_mb"].get(k, 0.0) - rows[1]["rss_mb"].get(k, 0.0), 0.0)
            for k in rows[-1]["rss_mb"]
        }
        lines += [
            "",
            "RSS growth after the second minute (MB): "
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(growth.items())),
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    uvloop.run(main())
