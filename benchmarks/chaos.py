"""A seeded schedule of faults under steady load with retries, and a checker that reads back
what was stored.

    .venv/bin/python benchmarks/chaos.py --minutes 10 --seed 1   # the run BENCHMARKS.md reports
    .venv/bin/python benchmarks/chaos.py --minutes 2 --seed 7    # a short one
    .venv/bin/python benchmarks/chaos.py --minutes 10 --seed 1 --plan   # the schedule alone

The system: a 3-node NATS cluster (every stream at 3 replicas, write lanes left to their
default: one per node), a MongoDB-protocol server, two workers (each given every node) and one
`gatehook http`. The tenant's slot runs a template and a script; every ``--change-every``
seconds a new version of the script is published and pinned (`apply`), a live change.

The load, from this process: sign-ins started at ``--rate``/3 a second, each three trigger
requests in turn (one ``signin_id``, a new ``request_id`` each), sent over one of three
connections (one per node) and retried with the same ``request_id`` (2 s per attempt, on
another connection) until a decision or the 30 s deadline; one decided request in ten is
asked again a second later, as a login service does when a reply was lost. Beside it, signed
ZITADEL calls through the gateway at ``--http-rate``, retried until a 200 or the deadline.

The faults, drawn from ``--seed`` (the schedule is printed first; a seed replays it): kill -9
and restart, or SIGSTOP and SIGCONT, of a NATS node, the MongoDB-protocol server, a worker or
the gateway; a stream leader's step-down; a rolling restart of the three nodes. One fault at
a time, each followed by a quiet spell.

The checker runs after the load, apart from it, on what the login service saw and what
GATEHOOK_AUDIT holds:

- every request answered by its deadline (a retryable error counts), and decided;
- every decided request stored exactly once, with both of its executions, with the decision
  its caller got; a request asked again got the same decision and claims;
- every sign-in on one flow revision (the script's version it started on), across the
  changes published mid-run;
- every change's management events (`flow.action_published`, `flow.action_updated`) stored;
- every gateway call answered with a decision after its retries.

It prints one table, writes it to results/chaos-<stamp>.md, and exits 1 when it found anything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
from nats.aio.client import Client as NATS

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gateway as zitadel_call  # noqa: E402
from gatehook.admin.client import AdminClient  # noqa: E402
from gatehook.devservers import Server, free_port, start_mongo, start_nats_cluster  # noqa: E402
from gatehook.domain.targets import signature  # noqa: E402
from gatehook.errors import GatehookError  # noqa: E402
from run import PA, PY, stop, wait_ready  # noqa: E402

TENANT = "chaos"
SUBJECT = f"gatehook.v1.trigger.{TENANT}.{PA}"
DEADLINE_S = 30.0
ATTEMPT_S = 2.0
KINDS = (
    "kill a NATS node",
    "stop a NATS node",
    "kill the database",
    "stop the database",
    "kill a worker",
    "stop a worker",
    "kill the gateway",
    "stop the gateway",
    "step down a stream leader",
    "rolling restart of the nodes",
)


def script(generation: int) -> str:
    """The script of the ``generation``-th change: its claims say which version ran."""
    return (
        "export async function execute(input) {\n"
        f"  return {{kind: 'continue', claims: {{gen: {generation}, uid: input.user.id}}}};\n"
        "}"
    )


def flows_file(generation: int) -> dict[str, Any]:
    return {
        "actions": [
            {"name": "allow", "template": "domain-allowlist", "config": {"domains": ["acme.com"]}},
            {"name": "gate", "source": script(generation), "language": "js"},
        ],
        "flows": {
            "external_authentication": {"post_authentication": ["allow@latest", "gate@latest"]}
        },
    }


@dataclass
class Fault:
    at: float  # seconds into the load
    kind: str
    target: int  # which node or worker (0-based), where the kind has one
    down_s: float  # how long it stays down or stopped

    def describe(self) -> str:
        if "node" in self.kind and "rolling" not in self.kind:
            return f"{self.kind} (n{self.target}, {self.down_s:.1f} s)"
        if "worker" in self.kind:
            return f"{self.kind} (worker {self.target % 2}, {self.down_s:.1f} s)"
        if "step down" in self.kind:
            return f"{self.kind} (stream {self.target} of the sorted list)"
        return f"{self.kind} ({self.down_s:.1f} s)"


def schedule(seed: int, seconds: float, every: float) -> list[Fault]:
    """The faults of a run: one every ``every`` seconds give or take a third, none in the
    first or last 15 s, each kind in turn shuffled (every kind occurs in a long run)."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    at = 15.0
    kinds: list[str] = []
    while True:
        at += every * rng.uniform(0.67, 1.33)
        if at > seconds - 15:
            return faults
        if not kinds:
            kinds = list(KINDS)
            rng.shuffle(kinds)
        kind = kinds.pop()
        faults.append(Fault(round(at, 1), kind, rng.randrange(3), round(rng.uniform(2, 8), 1)))


@dataclass
class Request:
    rid: str
    signin: str
    sent_at: float
    replies: list[dict[str, Any]] = field(default_factory=list)
    answered_at: list[float] = field(default_factory=list)
    decided: dict[str, Any] | None = None
    again: dict[str, Any] | None = None  # the reply to the same request asked again


Start = Callable[[int], Coroutine[Any, Any, None]]


async def at_rate(seconds: float, rate: float, start: Start) -> None:
    """``start(n)`` for n = 0, 1, ... at ``rate`` a second for ``seconds`` (open loop: a slow
    one does not delay the next); return once all have ended."""
    started = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    for n in itertools.count():
        at = started + n / rate
        if at - started >= seconds:
            break
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        tasks.append(asyncio.create_task(start(n)))
    await asyncio.gather(*tasks)


class LoginService:
    """Sign-ins of three trigger requests each, with retries, over three connections."""

    def __init__(self, conns: list[NATS], seed: int) -> None:
        self.conns = conns
        self.requests: dict[str, Request] = {}
        self.signins: dict[str, list[str]] = defaultdict(list)
        self._rng = random.Random(seed + 1)
        self._turn = itertools.count()

    async def ask(self, req: Request, body: bytes, deadline: float) -> dict[str, Any] | None:
        """One request until a decision, a non-retryable error or ``deadline``."""
        first = next(self._turn)
        for attempt in itertools.count():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            nc = self.conns[(first + attempt) % len(self.conns)]
            try:
                msg = await nc.request(SUBJECT, body, timeout=min(ATTEMPT_S, left))
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                await asyncio.sleep(0.1)
                continue
            except nats.errors.Error:  # reconnecting, a stale connection: another one next
                await asyncio.sleep(0.2)
                continue
            reply: dict[str, Any] = json.loads(msg.data)
            req.replies.append(reply)
            req.answered_at.append(time.monotonic())
            error = reply.get("error")
            if error is None or not error.get("retryable"):
                return reply
            await asyncio.sleep(0.2)
        return None

    async def signin(self, n: int) -> None:
        sid = f"chaos-{uuid.uuid4().hex}"
        for _ in range(3):
            rid = uuid.uuid4().hex
            req = self.requests[rid] = Request(rid, sid, time.monotonic())
            self.signins[sid].append(rid)
            body = json.dumps(
                {
                    "request_id": rid,
                    "signin_id": sid,
                    "user": {"id": f"u{n}", "email": f"user{n}@acme.com"},
                }
            ).encode()
            reply = await self.ask(req, body, req.sent_at + DEADLINE_S)
            if reply is None or reply.get("error") is not None:
                return  # the sign-in stops here, as a login service's would
            req.decided = reply
            if self._rng.random() < 0.1:  # its reply "lost": asked again a second later
                await asyncio.sleep(1.0)
                req.again = await self.ask(req, body, time.monotonic() + DEADLINE_S)
            await asyncio.sleep(1.0)

    async def run(self, seconds: float, rate: float) -> None:
        await at_rate(seconds, rate / 3, self.signin)  # each sign-in sends three requests


class Gateway:
    """Signed ZITADEL calls through `gatehook http`, retried until a 200 or the deadline."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/zitadel/{zitadel_call.TENANT}"
        self.calls = 0
        self.answered = 0
        self.decided = 0
        self.statuses: Counter[int] = Counter()

    async def call(self, session: aiohttp.ClientSession) -> None:
        self.calls += 1
        raw = json.dumps(zitadel_call.CALL).encode()
        deadline = time.monotonic() + DEADLINE_S
        answered = False
        while time.monotonic() < deadline:
            headers = {"ZITADEL-Signature": signature(zitadel_call.KEY, int(time.time()), raw)}
            try:
                timeout = aiohttp.ClientTimeout(total=ATTEMPT_S * 2)
                async with session.post(self.url, data=raw, headers=headers, timeout=timeout) as r:
                    await r.read()
                    self.statuses[r.status] += 1
                    answered = True
                    if r.status == 200:
                        self.decided += 1
                        break
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
        self.answered += answered

    async def run(self, seconds: float, rate: float) -> None:
        if rate <= 0:
            return
        async with aiohttp.ClientSession() as session:
            await at_rate(seconds, rate, lambda _: self.call(session))


class System:
    """The processes under test, and the faults done to them."""

    def __init__(self) -> None:
        self.nodes: list[Server] = start_nats_cluster(3)
        self.urls = ",".join(n.url for n in self.nodes)
        self.mongo = start_mongo()
        self.workers = [self._worker(i) for i in range(2)]
        self.gateway_port = free_port()
        self.gateway = self._gateway()

    def _env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOOK_")}
        env.update(GATEHOOK_NATS_URL=self.urls, **extra)
        return env

    def _worker(self, i: int) -> subprocess.Popen[bytes]:
        env = self._env(
            GATEHOOK_MONGODB_URL=self.mongo.url,
            GATEHOOK_MONGODB_DATABASE="chaos",
            GATEHOOK_WORKER_NAME=f"chaos-{i}",
            GATEHOOK_AUDIT__REPLICAS="3",
        )
        return subprocess.Popen([PY, "-m", "gatehook", "worker", "--log-level", "WARNING"], env=env)

    def _gateway(self) -> subprocess.Popen[bytes]:
        env = self._env(GATEHOOK_GATEWAY__PORT=str(self.gateway_port))
        return subprocess.Popen(
            [PY, "-m", "gatehook", "http", "--log-level", "WARNING"],
            env=env,
            stdout=subprocess.DEVNULL,
        )

    async def inflict(self, fault: Fault, ops: NATS) -> str:
        """Do ``fault`` and undo it after its time down (or at once, for a step-down); what
        it was done to, where the schedule does not say (the stream stepped down)."""
        kind, down = fault.kind, fault.down_s
        if kind == "kill a NATS node":
            self.nodes[fault.target].kill()
            await asyncio.sleep(down)
            await asyncio.to_thread(self.nodes[fault.target].restart)
        elif kind == "stop a NATS node":
            await self._pause(self.nodes[fault.target].proc, down)
        elif kind == "kill the database":
            self.mongo.kill()
            await asyncio.sleep(down)
            await asyncio.to_thread(self.mongo.restart)
        elif kind == "stop the database":
            await self._pause(self.mongo.proc, down)
        elif kind == "kill a worker":
            i = fault.target % 2
            self.workers[i].kill()
            self.workers[i].wait()
            await asyncio.sleep(down)
            self.workers[i] = self._worker(i)
        elif kind == "stop a worker":
            await self._pause(self.workers[fault.target % 2], down)
        elif kind == "kill the gateway":
            self.gateway.kill()
            self.gateway.wait()
            await asyncio.sleep(down)
            self.gateway = self._gateway()
        elif kind == "stop the gateway":
            await self._pause(self.gateway, down)
        elif kind == "step down a stream leader":
            js = ops.jetstream(timeout=5)
            names = sorted([s.config.name async for s in _streams(js)])
            name = names[fault.target % len(names)]
            with contextlib.suppress(nats.errors.Error):
                await ops.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{name}", b"", timeout=5)
            return f": {name}"
        elif kind == "rolling restart of the nodes":
            for node in self.nodes:  # each stopped for a while, the next some seconds later
                assert node.proc is not None
                node.proc.terminate()
                await asyncio.to_thread(node.proc.wait, 30)
                await asyncio.sleep(min(down, 3.0))
                await asyncio.to_thread(node.restart)
                await asyncio.sleep(8.0)
        else:
            raise ValueError(kind)
        return ""

    @staticmethod
    async def _pause(proc: subprocess.Popen[bytes] | None, down: float) -> None:
        assert proc is not None
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(down)
        finally:
            os.kill(proc.pid, signal.SIGCONT)

    def close(self) -> None:
        for proc in [self.gateway, *self.workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            stop(proc)
        for server in [self.mongo, *self.nodes]:
            if server.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server.proc.pid, signal.SIGCONT)
            server.stop()


async def _quiet(exc: Exception) -> None:
    """A connection's errors while its node is down are the faults themselves: not printed."""


async def _streams(js: Any) -> Any:
    for info in await js.streams_info():
        yield info


async def run_faults(system: System, faults: list[Fault], started: float) -> list[str]:
    ops = await nats.connect(system.urls.split(","), max_reconnect_attempts=-1, error_cb=_quiet)
    done: list[str] = []
    try:
        for fault in faults:
            await asyncio.sleep(max(0.0, started + fault.at - time.monotonic()))
            t0 = time.monotonic() - started
            try:
                detail = await system.inflict(fault, ops)
                done.append(f"{t0:6.1f} s  {fault.describe()}{detail}")
            except Exception as exc:  # a fault that could not be done is reported, not fatal
                done.append(f"{t0:6.1f} s  {fault.describe()}: not done ({exc!r})")
            print(done[-1], flush=True)
    finally:
        await ops.close()
    return done


async def run_changes(url: str, every: float, seconds: float, started: float) -> list[int]:
    """Publish and pin a new script version every ``every`` s; the generations that took."""
    nc = await nats.connect(url.split(","), max_reconnect_attempts=-1, error_cb=_quiet)
    client = AdminClient(nc, actor="chaos", timeout=10)
    applied = [1]
    generation = 1
    try:
        while time.monotonic() - started + every < seconds - 5:
            await asyncio.sleep(max(0.0, started + every * generation - time.monotonic()))
            generation += 1
            for _ in range(10):  # the database or a node may be down: try again shortly
                try:
                    await client.call(TENANT, "apply", file=flows_file(generation))
                    applied.append(generation)
                    print(f"{time.monotonic() - started:6.1f} s  change: gen {generation}")
                    break
                except (GatehookError, nats.errors.Error) as exc:
                    print(f"  change gen {generation}: {exc}; again", flush=True)
                    await asyncio.sleep(2.0)
    finally:
        await nc.close()
    return applied


async def read_audit(url: str, tenant: str, want: set[str]) -> list[dict[str, Any]]:
    """Every event of ``tenant`` in GATEHOOK_AUDIT, read again until the decision records of
    ``want`` are there (sourcing catches up after elections) or 180 s passed."""
    nc = await nats.connect(url.split(","), max_reconnect_attempts=-1, error_cb=_quiet)
    deadline = time.monotonic() + 180
    events: list[dict[str, Any]] = []
    try:
        while True:
            events = []
            js = nc.jetstream(timeout=10)
            try:
                sub = await js.subscribe(
                    f"gatehook.v1.audit.{tenant}.>", stream="GATEHOOK_AUDIT", ordered_consumer=True
                )
                while True:
                    try:
                        msg = await sub.next_msg(timeout=3)
                    except nats.errors.TimeoutError:
                        break
                    events.append(json.loads(msg.data))
                await sub.unsubscribe()
            except nats.errors.Error as exc:
                print(f"  reading the audit: {exc!r}; again", flush=True)
            have = {e.get("request_id") for e in events if e.get("type") == "flow.decided"}
            if want <= have or time.monotonic() > deadline:
                return events
            print(f"  {len(want - have)} records not sourced yet; reading again", flush=True)
            await asyncio.sleep(5)
    finally:
        await nc.close()


def said(reply: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    """A reply's decision and claims (None and {} for no reply)."""
    if reply is None:
        return None, {}
    return reply.get("decision"), reply.get("claims") or {}


def check(
    service: LoginService, events: list[dict[str, Any]], applied: list[int], gateway: Gateway
) -> list[tuple[str, int, str]]:
    """The checker's rows: (what, count, example)."""
    reqs = list(service.requests.values())
    records: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e.get("type") == "flow.decided":
            records[e["request_id"]].append(e)
    unanswered = [r for r in reqs if not r.replies]
    late = [r for r in reqs if r.answered_at and r.answered_at[0] - r.sent_at > DEADLINE_S]
    undecided = [r for r in reqs if r.replies and r.decided is None]
    decided = [r for r in reqs if r.decided is not None]
    missing = [r for r in decided if not records.get(r.rid)]
    twice = [r for r in decided if len(records.get(r.rid, [])) > 1]
    partial = [
        r for r in decided if any(len(rec["executions"]) != 2 for rec in records.get(r.rid, []))
    ]
    differs = [
        r
        for r in decided
        if any(rec["decision"] != said(r.decided)[0] for rec in records.get(r.rid, []))
    ]
    asked_again = [r for r in decided if r.again is not None]
    again_differs = [r for r in asked_again if said(r.again) != said(r.decided)]
    mixed: list[str] = []
    for sid, rids in service.signins.items():
        gens = {json.dumps(said(service.requests[rid].decided)[1].get("gen")) for rid in rids}
        gens.discard("null")  # not decided: no version to compare
        revisions = {rec["flow_revision"] for rid in rids for rec in records.get(rid, [])}
        if len(gens) > 1 or len(revisions) > 1:
            mixed.append(f"{sid}: gen {sorted(gens)}, revisions {sorted(revisions)}")
    published = Counter(
        e.get("version")
        for e in events
        if e.get("type") == "flow.action_published" and e.get("action") == "gate"
    )
    updated = [
        e for e in events if e.get("type") == "flow.action_updated" and e.get("action") == "gate"
    ]
    changes_missing = max(0, len(applied) - sum(published.values())) + max(
        0, len(applied) - 1 - len(updated)
    )

    def ex(rs: list[Request]) -> str:
        return rs[0].rid if rs else ""

    return [
        ("trigger requests sent", len(reqs), ""),
        ("answered with a decision", len(decided), ""),
        ("asked again after a decision", len(asked_again), ""),
        ("sign-ins", len(service.signins), ""),
        ("changes published mid-run", len(applied) - 1, ""),
        ("gateway calls", gateway.calls, ""),
        ("! unanswered by the deadline", len(unanswered), ex(unanswered)),
        ("! first answer after the deadline", len(late), ex(late)),
        ("! answered, not decided after the retries", len(undecided), ex(undecided)),
        ("! decided, record missing", len(missing), ex(missing)),
        ("! decided, stored twice", len(twice), ex(twice)),
        ("! a record without both executions", len(partial), ex(partial)),
        ("! a record's decision not the caller's", len(differs), ex(differs)),
        ("! asked again, another decision or claims", len(again_differs), ex(again_differs)),
        ("! a sign-in on two versions", len(mixed), mixed[0] if mixed else ""),
        ("! a change's management events missing", changes_missing, ""),
        ("! gateway calls unanswered", gateway.calls - gateway.answered, ""),
        ("! gateway calls not decided after the retries", gateway.calls - gateway.decided, ""),
    ]


def longest_gap(service: LoginService) -> float:
    times = sorted(t for r in service.requests.values() for t in r.answered_at)
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def row(what: str) -> str:
    return f"{what[2:]} (a finding)" if what.startswith("! ") else what


async def main_async(args: argparse.Namespace, faults: list[Fault]) -> int:
    system = System()
    try:
        await wait_ready(system.nodes[0].url, 2)
        nc = await nats.connect(system.urls.split(","))
        await AdminClient(nc, actor="chaos", timeout=60).call(TENANT, "apply", file=flows_file(1))
        await nc.close()
        await zitadel_call.set_up(system.nodes[1].url)
        conns = [  # a login service with a connection to each node, each preferring its own
            await nats.connect(
                [u, *(v for v in system.urls.split(",") if v != u)],
                dont_randomize=True,
                max_reconnect_attempts=-1,
                error_cb=_quiet,
            )
            for u in system.urls.split(",")
        ]
        service = LoginService(conns, args.seed)
        gateway = Gateway(system.gateway_port)
        seconds = args.minutes * 60
        started = time.monotonic()
        load = asyncio.gather(
            service.run(seconds, args.rate),
            gateway.run(seconds, args.http_rate),
            run_changes(system.urls, args.change_every, seconds, started),
            run_faults(system, faults, started),
        )
        _, _, applied, done = await load
        elapsed = time.monotonic() - started
        for nc in conns:
            await nc.close()
        want = {r.rid for r in service.requests.values() if r.decided is not None}
        events = await read_audit(system.urls, TENANT, want)
        rows = check(service, events, applied, gateway)
    finally:
        system.close()
    found = sum(n for what, n, _ in rows if what.startswith("!"))
    lines = [
        f"chaos run: seed {args.seed}, {args.minutes:g} min of load ({elapsed:.0f} s with the"
        f" tail), {args.rate:g} trigger requests/s, {args.http_rate:g} gateway calls/s,"
        f" a fault every ~{args.fault_every:g} s, a change every {args.change_every:g} s",
        "",
        "Schedule:",
        "",
        "```",
        *done,
        "```",
        "",
        "| what | count | example |",
        "| --- | ---: | --- |",
        *(f"| {row(what)} | {n} | {e} |" for what, n, e in rows),
        "",
        f"longest time with no answer to any trigger request: {longest_gap(service):.2f} s;"
        f" gateway statuses: {dict(gateway.statuses)}",
        "",
        "the checker found nothing" if found == 0 else f"the checker found {found} problems",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    out = HERE / "results" / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")
    return 1 if found else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=60.0, help="trigger requests a second")
    p.add_argument("--http-rate", type=float, default=10.0, help="gateway calls a second")
    p.add_argument("--fault-every", type=float, default=30.0, help="seconds between faults")
    p.add_argument("--change-every", type=float, default=60.0, help="seconds between changes")
    p.add_argument("--plan", action="store_true", help="print the schedule and stop")
    args = p.parse_args()
    faults = schedule(args.seed, args.minutes * 60, args.fault_every)
    print(f"seed {args.seed}: {len(faults)} faults")
    for f in faults:
        print(f"{f.at:6.1f} s  {f.describe()}")
    if args.plan:
        return
    # a SIGTERM ends the run as Ctrl-C does: every process started is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(asyncio.run(main_async(args, faults)))


if __name__ == "__main__":
    main()
