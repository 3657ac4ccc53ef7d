"""The floor of the decision path's design: a responder made of gatehook's own transport
parts and nothing else, to tell what the parts cost from what the decision logic costs.

.venv/bin/python benchmarks/floor.py --url nats://... --mode journal+sandbox

Serves ``gatehook.v1.trigger.*.*.*`` in the worker queue group like ``echo.py``, but on the
lean path (``transport.lean``), and for each request does only what ``--mode`` names, with a
fixed reply:

- ``lean``: nothing (the lean transport alone, next to nats-py's own path in ``echo.py``);
- ``sandbox``: one call of a one-line module script in a real sandbox child (``SandboxPool``);
- ``journal``: a one-execution decision record stored and acknowledged (``JsJournal``);
- ``journal+sandbox``: both, as a one-action decision does.

No validation, flow lookup, decision, encoding or metrics: ``benchmarks/run.py`` puts these
rows next to the echo and the real worker, so the difference is the decision logic's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time

import nats
import uvloop

from gatehook.audit.journal import JsJournal, Lane
from gatehook.audit.stream import AuditPublisher, lane_audit_stream
from gatehook.domain import subjects
from gatehook.process.deadlines import Deadlines
from gatehook.sandbox.pool import SandboxPool, ScriptJob
from gatehook.service.ports import EncodedEvent
from gatehook.settings import Settings
from gatehook.transport.lean import LeanNats, settle

REPLY = b'{"request_id":"x","decision":"continue","claims":{},"actions":[],"error":null}'
SCRIPT = "exports.execute = function (input) { return {kind: 'continue'}; };"
INPUT = b'{"user":{"id":"u1","email":"a@acme.com"},"config":{}}'
RECORD = (
    b'{"type":"flow.decided","tenant":"bench-floor","decision":"continue","executions":'
    b'[{"action":"floor","version":"1.0.0","outcome":"continue"}],"reply":' + REPLY + b"}"
)
MODES = ("lean", "sandbox", "journal", "journal+sandbox")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--subject", default="gatehook.v1.trigger.*.*.*")
    parser.add_argument("--mode", choices=MODES, default="journal+sandbox")
    args = parser.parse_args()
    settings = Settings()
    nc = await nats.connect(args.url)
    lean = LeanNats(nc)
    deadlines = Deadlines()
    pool: SandboxPool | None = None
    journal: JsJournal | None = None
    if "sandbox" in args.mode:
        pool = SandboxPool(settings.sandbox, deadlines=deadlines)
        await pool.start()
        compiled = await pool.compile(SCRIPT, language="js", name="floor")
        code, style = compiled.code, compiled.style.value
    if "journal" in args.mode:
        js = nc.jetstream()
        audit = AuditPublisher(js, settings.audit)
        await audit.ensure_stream()
        lane = Lane(
            0,
            lane_audit_stream(settings.audit, 0),
            subjects.lane_audit_prefix(0, settings.audit.lanes),
        )
        journal = JsJournal(lean, [lane], audit, deadlines)
        await journal.start()
    run_id = os.urandom(6).hex()  # message ids new to the stream: no retries
    seq = 0

    async def serve(reply: bytes) -> None:
        nonlocal seq
        seq += 1
        mine = seq  # (seq moves on while this request waits)
        if pool is not None:
            await pool.run(ScriptJob("bench-floor", "floor", "1.0.0", code, style, INPUT, 1000))
        if journal is not None:
            record = EncodedEvent(
                "bench-floor",
                "flow.decided",
                f"bench-floor.x.y.{run_id}{mine}",
                RECORD,
            )
            await journal.record(record, time.monotonic() + 5)
        lean.publish(reply, REPLY)

    tasks: set[asyncio.Task[None]] = set()

    def on_msg(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        if args.mode == "lean":
            lean.publish(reply, REPLY)
            return
        task = asyncio.create_task(serve(reply))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    await lean.subscribe(args.subject, on_msg, queue="gatehook-workers")
    await settle(nc)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if journal is not None:
        await journal.aclose()
    if pool is not None:
        await pool.aclose()
    await nc.drain()


if __name__ == "__main__":
    uvloop.run(main())
