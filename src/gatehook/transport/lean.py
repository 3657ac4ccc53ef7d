"""The hot path's messages on a nats-py connection, without nats-py's per-message machinery.

nats-py hands every received message to a subscription through a ``Msg`` object, an
``asyncio.Queue`` and the subscription's own task (one task switch per message), and builds
every published message through subject checks, a header dict and a future per publish. On
the decision path (a trigger in, its reply out, the audit publishes and their acks) that was
a large share of a decision's CPU (BENCHMARKS.md, "The decision path's cost"). ``LeanNats``
keeps the connection, its authentication, reconnects and resubscription in nats-py and
changes two things for the subscriptions and publishes that ask for it:

- a *lean subscription*'s messages go straight from nats-py's parser to a plain callback
  ``(subject, reply, payload, headers)`` with the raw bytes, in the order they arrived; the
  callback must not block (it starts a task when it has work to await);
- a *lean publish* appends the protocol command to the connection's pending buffer; one
  flush per event-loop turn writes everything published in that turn.

It relies on two private parts of nats-py (``Client._process_msg``, the hook the parser
calls, and the pending buffer its flusher writes), so the nats-py version is pinned in
pyproject.toml and every end-to-end test runs through this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nats import errors
from nats.aio.client import Client
from nats.aio.subscription import Subscription

__all__ = ["LeanNats", "MessageHandler", "parse_headers", "settle", "status_of"]

MessageHandler = Callable[[bytes, bytes, bytes, bytes | None], None]

_HDR_LINE = b"NATS/1.0"


def status_of(headers: bytes | None) -> bytes:
    """The inline status of a message's raw headers (``b"503"`` for no responders), or b""."""
    if not headers or headers[len(_HDR_LINE) : len(_HDR_LINE) + 1] != b" ":
        return b""
    return headers[len(_HDR_LINE) + 1 : len(_HDR_LINE) + 4]


def parse_headers(headers: bytes | None) -> dict[str, str]:
    """A message's raw header block as a dict (the last value of a repeated name wins)."""
    out: dict[str, str] = {}
    if not headers:
        return out
    for line in headers.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip():
            out[key.strip().decode(errors="replace")] = value.strip().decode(errors="replace")
    return out


async def settle(nc: Client, timeout: float = 5.0) -> None:
    """Return once the server has processed everything written on ``nc`` so far:
    subscriptions, unsubscriptions and publishes (use it where ``flush()`` is meant).

    nats-py's ``flush()`` writes its PING straight to the socket, ahead of the commands still
    waiting in the pending buffer for its flusher task, so the PONG can come back before an
    earlier SUB or PUB has reached the server: a subscription made, flushed and then
    published to from another connection can miss the first messages (seen under CPU load,
    nats-py 2.14-2.16). The first flush here kicks the flusher; the pending buffer is then
    empty (waited for, bounded by ``timeout``) and the second flush's PING follows
    everything on the socket.
    """
    flush_timeout = max(1, int(timeout))
    await nc.flush(timeout=flush_timeout)
    deadline = asyncio.get_running_loop().time() + timeout
    # nats-py offers no event for "pending buffer written"; poll it, bounded by the deadline.
    while nc.pending_data_size > 0 and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    await nc.flush(timeout=flush_timeout)


class LeanNats:
    """Lean subscriptions and publishes on one nats-py ``Client`` (see the module's text)."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._handlers: dict[int, MessageHandler] = {}
        self._flushing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        original = nc._process_msg
        if getattr(original, "__self__", None) is not nc:
            raise RuntimeError("this nats-py connection is already served by a LeanNats")
        self._original = original

        async def process_msg(
            sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
        ) -> None:
            handler = self._handlers.get(sid)
            if handler is None:
                await original(sid, subject, reply, data, headers)  # type: ignore[arg-type]
                return
            stats = nc.stats
            stats["in_msgs"] += 1
            stats["in_bytes"] += len(data)
            handler(subject, reply, data, headers)

        nc._process_msg = process_msg

    @property
    def client(self) -> Client:
        """The nats-py connection underneath."""
        return self._nc

    def close(self) -> None:
        """Give the connection its own message processing back."""
        self._handlers.clear()
        self._nc._process_msg = self._original  # type: ignore[method-assign]

    async def subscribe(
        self, subject: str, handler: MessageHandler, queue: str = ""
    ) -> Subscription:
        """Subscribe ``handler`` to ``subject`` (in ``queue`` group, if given). nats-py keeps
        the subscription (it is sent again after a reconnect); ``unsubscribe`` ends it."""
        sub = await self._nc.subscribe(subject, queue=queue)
        self._handlers[sub._id] = handler
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        """End a lean subscription."""
        self._handlers.pop(sub._id, None)
        if not self._nc.is_closed:
            await sub.unsubscribe()

    def publish(
        self, subject: bytes, payload: bytes, reply: bytes = b"", headers: bytes = b""
    ) -> None:
        """Queue one message; it is written at the end of this event-loop turn.

        ``subject``, ``reply`` and ``headers`` are trusted bytes: a subject received from the
        server, or one this worker built from checked parts. ``headers``, when given, is a
        whole header block (``NATS/1.0\\r\\n...\\r\\n\\r\\n``). Raises nats-py's errors for
        a closed or draining connection, a full reconnect buffer, an oversized payload."""
        nc = self._nc
        if nc.is_closed:
            raise errors.ConnectionClosedError
        if nc.is_draining_pubs:
            raise errors.ConnectionDrainingError
        size = len(payload)
        if size > nc._max_payload:
            raise errors.MaxPayloadError
        if headers:
            total = len(headers) + size
            cmd = b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
                subject,
                reply,
                len(headers),
                total,
                headers,
                payload,
            )
        else:
            cmd = b"PUB %s %s %d\r\n%s\r\n" % (subject, reply, size, payload)
        if not nc.is_connected and (
            nc._max_pending_size <= 0 or len(cmd) + nc._pending_data_size > nc._max_pending_size
        ):
            raise errors.OutboundBufferLimitError
        nc._pending.append(cmd)
        nc._pending_data_size += len(cmd)
        nc.stats["out_msgs"] += 1
        nc.stats["out_bytes"] += size
        if not self._flushing:
            self._flushing = True
            loop = self._loop or asyncio.get_running_loop()
            self._loop = loop
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Hand this turn's commands to nats-py's flusher (one socket write for all)."""
        self._flushing = False
        nc = self._nc
        queue: Any = nc._flush_queue
        if not nc.is_connected or queue is None or nc._pending_data_size == 0:
            return  # written by nats-py after the reconnect
        if queue.empty():
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            queue.put_nowait(future)
