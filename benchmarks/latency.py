"""Sequential decision latency over NATS, one action per flow: every template, JS, TS and a
ZITADEL-style script, next to an empty slot and the raw echo, in one run.

    .venv/bin/python benchmarks/latency.py [--requests 1000]

One request in flight at a time (a login service's view of one sign-in step), audit on.
Prints a Markdown table (p50 / p99 / mean, ms) and writes results/latency-<stamp>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nats
import uvloop

from gatehook.admin.client import AdminClient
from gatehook.devservers import start_mongo, start_nats

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import ACTIONS, PY, pct, start_worker, stop, wait_ready  # noqa: E402

PA = "external_authentication.post_authentication"
CT = "complement_token.pre_access_token_creation"


def scenarios(hook_url: str) -> dict[str, tuple[str, dict[str, Any] | None]]:
    """name -> (slot, action spec or None for an empty slot)."""
    t = {
        "domain-allowlist": {"domains": ["acme.com"]},
        "domain-blocklist": {"domains": ["evil.io"]},
        "rate-limit-by-ip": {"limit": 1_000_000, "window_s": 3600},
        "rate-limit-by-user": {"limit": 1_000_000, "window_s": 3600},
        "block-by-risk-score": {"threshold": 0.9},
        "demand-mfa-by-risk-score": {"threshold": 0.9},
        "redirect-by-group": {"rules": [{"group": "nobody", "url": "https://acme.com/x"}]},
        "decorate-token": {"claims": {"email": {"path": "user.email"}, "plan": {"value": "gold"}}},
        "webhook-emit": {"url": hook_url, "allow_http": True, "secret": "s3cret"},
        "slack-notify": {"webhook_url": "https://127.0.0.1:9/services/T/B/X"},
    }
    out: dict[str, tuple[str, dict[str, Any] | None]] = {"empty slot": (PA, None)}
    for name, config in t.items():
        slot = CT if name == "decorate-token" else PA
        out[name] = (slot, {"name": "t", "template": name, "config": config})
    out["custom JS"] = (PA, ACTIONS["js"] | {"name": "t"})
    out["custom TS"] = (PA, ACTIONS["ts"] | {"name": "t"})
    zitadel = ACTIONS["benchZitadel"] | {"name": "benchZitadel"}
    out["ZITADEL-style"] = (PA, zitadel)
    return out


def receiver() -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/hook"


async def set_up(url: str, plan: dict[str, tuple[str, dict[str, Any] | None]]) -> dict[str, str]:
    nc = await nats.connect(url)
    client = AdminClient(nc, actor="bench", timeout=120)
    tenants = {}
    try:
        for i, (name, (slot, spec)) in enumerate(plan.items()):
            tenant = f"lat-{i}"
            tenants[name] = tenant
            if spec is None:
                file = {
                    "actions": [ACTIONS["allow"]],
                    "flows": {"external_authentication": {"pre_creation": ["allow@latest"]}},
                }
            else:
                ft, tr = slot.split(".")
                file = {"actions": [spec], "flows": {ft: {tr: [f"{spec['name']}@latest"]}}}
            await client.call(tenant, "apply", file=file)
    finally:
        await nc.close()
    return tenants


def measure(url: str, subject: str, requests: int) -> dict[str, float]:
    out = subprocess.run(
        [
            PY,
            str(HERE / "loadgen.py"),
            "--url",
            url,
            "--subject",
            subject,
            "--mode",
            "closed",
            "--in-flight",
            "1",
            "--seconds",
            str(max(2.0, requests / 400)),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    lat = data["lat"][-requests:]
    return {
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "mean": sum(lat) / len(lat),
        "n": len(lat),
        "errors": data["errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    nats_server, mongo = start_nats(), start_mongo()
    server, hook_url = receiver()
    echo = subprocess.Popen(
        [PY, str(HERE / "echo.py"), "--url", nats_server.url], stdout=subprocess.PIPE, text=True
    )
    assert echo.stdout is not None
    echo.stdout.readline()
    rows: dict[str, dict[str, float]] = {}
    try:
        rows["raw nats-py echo"] = measure(
            nats_server.url, f"gatehook.v1.trigger.x.{PA}", args.requests
        )
        stop(echo)  # type: ignore[arg-type]
        os.environ["GATEHOOK_WEBHOOKS__ALLOW_PRIVATE"] = "true"
        worker = start_worker(1, nats_server.url, mongo.url)
        try:
            uvloop.run(wait_ready(nats_server.url, 1))
            plan = scenarios(hook_url)
            tenants = uvloop.run(set_up(nats_server.url, plan))
            for name, (slot, _) in plan.items():
                rows[name] = measure(
                    nats_server.url, f"gatehook.v1.trigger.{tenants[name]}.{slot}", args.requests
                )
                print(f"{name}: p50 {rows[name]['p50']:.2f} ms", flush=True)
        finally:
            stop(worker)
    finally:
        server.shutdown()
        mongo.stop()
        nats_server.stop()
    echo_p50 = rows["raw nats-py echo"]["p50"]
    lines = [
        "| one-action flow | p50 ms | p99 ms | mean ms | p50 over echo ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['p50']:.2f} | {r['p99']:.2f} | {r['mean']:.2f} | "
            f"{r['p50'] - echo_p50:+.2f} | {int(r['errors'])} |"
        )
    md = "\n".join(lines)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    meta = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "rows": rows}
    (args.out / f"latency-{stamp}.json").write_text(json.dumps(meta, indent=2))
    (args.out / f"latency-{stamp}.md").write_text(md + "\n")


if __name__ == "__main__":
    main()
