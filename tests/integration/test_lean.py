"""transport.lean against a real nats-server: lean subscriptions get every message in order
with its raw parts, lean publishes are written once per loop turn, other subscriptions of the
connection keep nats-py's own path, and a lean subscription survives a server restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from nats import errors

from gatehook.devservers import start_nats
from gatehook.transport.lean import LeanNats, parse_headers, settle, status_of
from tests.support.workers import Servers

Got = list[tuple[bytes, bytes, bytes, bytes | None]]


async def _until(check: object, timeout: float = 5.0, state: object = None) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            seen = state() if callable(state) else ""
            raise AssertionError(f"condition not met in time {seen}")
        await asyncio.sleep(0.01)


async def test_lean_subscription_gets_raw_messages_in_order(servers: Servers) -> None:
    nc = await nats.connect(servers.nats.url)
    lean = LeanNats(nc)
    other = await nats.connect(servers.nats.url)
    got: Got = []
    plain: list[bytes] = []
    try:
        await lean.subscribe("lean.in.*", lambda *m: got.append(m), queue="q")

        async def on_plain(msg: nats.aio.msg.Msg) -> None:
            plain.append(msg.data)

        await nc.subscribe("plain.in", cb=on_plain)  # nats-py's own path, same connection
        await settle(nc)
        for i in range(200):
            await other.publish(f"lean.in.{i % 3}", f"m{i}".encode(), reply=f"r.{i}")
        await other.publish("lean.in.x", b"h", headers={"traceparent": "00-ab-cd-01", "K": "v"})
        await other.publish("plain.in", b"p")
        await settle(other)
        await _until(
            lambda: len(got) == 201 and plain == [b"p"],
            # Two CI runs lost a prefix of these messages: a bare flush() let the
            # subscription reach the server after the publishes (see lean.settle).
            timeout=15,
            state=lambda: f"(lean: {len(got)} of 201, plain: {plain})",
        )
    finally:
        lean.close()
        await nc.close()
        await other.close()
    assert [m[2] for m in got[:200]] == [f"m{i}".encode() for i in range(200)]
    assert got[7][:2] == (b"lean.in.1", b"r.7")
    assert got[0][3] is None
    headers = parse_headers(got[200][3])
    assert headers == {"traceparent": "00-ab-cd-01", "K": "v"}
    assert status_of(got[200][3]) == b""


async def test_lean_publish_request_reply_and_no_responders(servers: Servers) -> None:
    nc = await nats.connect(servers.nats.url)
    lean = LeanNats(nc)
    client = await nats.connect(servers.nats.url)
    acks: Got = []
    try:
        # a responder answering with lean publishes (as the trigger server does)
        await lean.subscribe("svc.echo", lambda s, r, d, h: lean.publish(r, d.upper()))
        inbox = nc.new_inbox()
        await lean.subscribe(inbox + ".*", lambda *m: acks.append(m))
        await settle(nc)
        replies = await asyncio.gather(
            *(client.request("svc.echo", f"x{i}".encode(), timeout=5) for i in range(50))
        )
        assert sorted(r.data for r in replies) == sorted(f"X{i}".encode() for i in range(50))
        # a request to nobody: the server's 503 comes back as an inline status
        lean.publish(b"nobody.home", b"?", reply=f"{inbox}.1".encode())
        lean.publish(
            b"nobody.home",
            b"?",
            reply=f"{inbox}.2".encode(),
            headers=b"NATS/1.0\r\nNats-Msg-Id: abc\r\n\r\n",
        )
        await _until(lambda: len(acks) == 2)
    finally:
        lean.close()
        await nc.close()
        await client.close()
    assert {status_of(a[3]) for a in acks} == {b"503"}
    assert sorted(a[0] for a in acks) == [f"{inbox}.1".encode(), f"{inbox}.2".encode()]


async def test_lean_publish_refuses_what_nats_py_refuses(servers: Servers) -> None:
    nc = await nats.connect(servers.nats.url)
    lean = LeanNats(nc)
    with pytest.raises(RuntimeError, match="already served"):
        LeanNats(nc)
    with pytest.raises(errors.MaxPayloadError):
        lean.publish(b"too.big", b"x" * (nc.max_payload + 1))
    lean.close()
    LeanNats(nc).close()  # given back: a new one may take it
    await nc.close()
    with pytest.raises(errors.ConnectionClosedError):
        lean.publish(b"closed", b"x")


async def test_lean_subscription_survives_a_server_restart() -> None:
    server = start_nats()
    got: Got = []
    nc = await nats.connect(server.url, reconnect_time_wait=0.2, max_reconnect_attempts=-1)
    lean = LeanNats(nc)
    try:
        await lean.subscribe("after.restart", lambda *m: got.append(m))
        await settle(nc)
        server.kill()
        await _until(lambda: not nc.is_connected)
        lean.publish(b"after.restart", b"buffered")  # kept in nats-py's reconnect buffer
        server.restart()
        await _until(lambda: nc.is_connected, timeout=15)
        lean.publish(b"after.restart", b"fresh")
        await _until(lambda: len(got) == 2, timeout=10)
    finally:
        lean.close()
        await nc.close()
        server.stop()
    assert [m[2] for m in got] == [b"buffered", b"fresh"]


async def test_settle_returns_only_after_the_server_has_the_subscription(tmp_path: Path) -> None:
    """A tracing nats-server logs each client's protocol lines in the order it processed
    them: after ``settle`` a PING the server answered comes after the SUB (nats-py's own
    ``flush()`` writes its PING first, the SUB after it: the PONG comes back too early)."""
    config = tmp_path / "trace.conf"
    config.write_text("trace: true\n")
    server = start_nats(config=str(config))
    try:
        nc = await nats.connect(server.url)
        await nc.subscribe("settle.first")
        await nc.flush()  # the bare flush, to show the order it gives
        await nc.subscribe("settle.second")
        await settle(nc)
        await nc.close()
        log = await asyncio.to_thread(Path(server.log_path or "").read_text)
    finally:
        server.stop()
    lines = [
        line.split("<<- ", 1)[1]
        for line in log.splitlines()
        if "<<- [" in line and ("[SUB settle." in line or "[PING]" in line)
    ]
    first, second = lines.index("[SUB settle.first  1]"), lines.index("[SUB settle.second  2]")
    assert lines[first - 1] == "[PING]", lines  # the bare flush: PING overtook the SUB
    assert "[PING]" in lines[second + 1 :], lines  # settle: a PING after the SUB, answered
