"""Profile one worker's hot path under load (cProfile), to see what a request costs.

.venv/bin/python benchmarks/profile_worker.py [--actions js] [--seconds 4] [--per-request]

``--per-request`` also prints how many Python-level calls a decision makes, by function
(cProfile's call counts over the requests answered): a count does not depend on the
machine's noise the way a time does.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import subprocess
import sys
from pathlib import Path

import uvloop

from gatehook.admin.client import AdminClient
from gatehook.devservers import start_mongo, start_nats
from gatehook.runtime import build_broker
from gatehook.settings import Settings
from gatehook.transport.lean import settle

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import ACTIONS  # noqa: E402


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--actions", default="js", help="comma-separated: allow,risk,js,ts,benchZitadel")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--in-flight", type=int, default=32)
    p.add_argument("--top", type=int, default=35)
    p.add_argument("--per-request", action="store_true", help="calls per request")
    p.add_argument("--callers", default="", help="also print who calls functions matching this")
    args = p.parse_args()
    nats_server, mongo = start_nats(), start_mongo()
    settings = Settings(nats_url=nats_server.url, mongodb_url=mongo.url, mongodb_database="prof")
    broker, runtime = build_broker(settings)
    await runtime.start()
    await broker.start()
    await runtime.serve()
    await settle(broker.connection)
    names = [n for n in args.actions.split(",") if n]
    client = AdminClient(broker.connection, timeout=120)
    await client.call(
        "prof",
        "apply",
        file={
            "actions": [ACTIONS[n] for n in names],
            "flows": {
                "external_authentication": {"post_authentication": [f"{n}@latest" for n in names]}
            },
        },
    )
    subject = "gatehook.v1.trigger.prof.external_authentication.post_authentication"
    cmd = [
        sys.executable,
        str(HERE / "loadgen.py"),
        "--url",
        nats_server.url,
        "--subject",
        subject,
        "--mode",
        "closed",
        "--seconds",
        str(args.seconds),
        "--in-flight",
        str(args.in_flight),
    ]
    prof = cProfile.Profile()
    prof.enable()
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE)
    out, _ = await proc.communicate()
    prof.disable()
    import json

    result = json.loads(out.decode().strip().splitlines()[-1])
    print(
        f"{result['ok']} ok, {result['errors']} errors in {result['elapsed']:.1f} s "
        f"= {result['ok'] / result['elapsed']:.0f} req/s"
    )
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf).sort_stats("tottime")
    stats.print_stats(args.top)
    if args.callers:
        stats.print_callers(args.callers)
    print(buf.getvalue())
    if args.per_request:
        ncalls = {k: v[1] for k, v in stats.stats.items()}  # type: ignore[attr-defined]
        total = sum(ncalls.values())
        print(f"python calls per request: {total / result['ok']:.0f}")
        for k, n in sorted(ncalls.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"{n / result['ok']:7.2f}  {k[2]} ({Path(k[0]).name}:{k[1]})")
    await broker.stop()
    await runtime.aclose()
    mongo.stop()
    nats_server.stop()


if __name__ == "__main__":
    uvloop.run(main())
