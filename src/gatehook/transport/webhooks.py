"""Outbound webhook delivery for templates: a bounded background queue with retries and
backoff, or a blocking send with a timeout; Standard Webhooks signatures; SSRF checks.

Nothing here can fail a sign-in: a full queue drops the delivery (counted, logged), a dead
receiver is retried in the background, and a blocking send gives up at its timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import time
from collections import Counter
from dataclasses import dataclass

from gatehook.sandbox.netguard import FetchPolicy, fetch
from gatehook.settings import WebhookSettings

__all__ = ["WebhookDelivery", "sign"]

log = logging.getLogger("gatehook.webhooks")


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value (``v1,<base64 HMAC-SHA256>``)."""
    if secret.startswith("whsec_"):
        key = base64.b64decode(secret.removeprefix("whsec_"))
    else:
        key = secret.encode()
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclass(frozen=True, slots=True)
class _Job:
    url: str
    body: bytes
    message_id: str
    secret: str | None
    headers: dict[str, str]


class WebhookDelivery:
    """The ``Delivery`` port. ``start()`` the senders; ``aclose()`` stops them."""

    def __init__(self, settings: WebhookSettings) -> None:
        self._settings = settings
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=settings.queue_size)
        self._senders: list[asyncio.Task[None]] = []
        self.outcomes: Counter[str] = Counter()

    async def start(self) -> None:
        """Start the background senders."""
        self._senders = [asyncio.create_task(self._sender()) for _ in range(self._settings.senders)]

    async def aclose(self, timeout: float = 5.0) -> None:
        """Give queued deliveries a moment, then stop."""
        deadline = time.monotonic() + timeout
        while not self._queue.empty() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for task in self._senders:
            task.cancel()
        for task in self._senders:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def send(
        self,
        url: str,
        body: bytes,
        *,
        message_id: str,
        secret: str | None,
        headers: dict[str, str],
        blocking: bool,
        timeout_ms: int,
    ) -> bool:
        """Deliver now (blocking, bounded by ``timeout_ms``) or enqueue (background)."""
        job = _Job(url, body, message_id, secret, headers)
        if blocking:
            # The socket may wait a little longer than we do: our timeout is the one that counts.
            attempt = self._attempt(job, timeout_ms / 1000 + 1)
            try:
                ok = await asyncio.wait_for(attempt, timeout_ms / 1000)
            except TimeoutError:
                ok = False
                self.outcomes["timeout"] += 1
            return ok
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.outcomes["dropped"] += 1
            log.warning("webhook queue full; dropped delivery %s", message_id)
            return False
        self.outcomes["queued"] += 1
        return True

    async def _sender(self) -> None:
        s = self._settings
        while True:
            job = await self._queue.get()
            try:
                for attempt in range(s.max_attempts):
                    if await self._attempt(job, s.timeout_ms / 1000):
                        break
                    if attempt + 1 < s.max_attempts:
                        self.outcomes["retried"] += 1
                        await asyncio.sleep(s.backoff_s * 2**attempt)
                else:
                    self.outcomes["failed"] += 1
                    log.warning(
                        "webhook %s to %s failed after %d attempts",
                        job.message_id,
                        _host(job.url),
                        s.max_attempts,
                    )
            finally:
                self._queue.task_done()

    async def _attempt(self, job: _Job, timeout_s: float) -> bool:
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "gatehook-webhooks",
            "webhook-id": job.message_id,
            "webhook-timestamp": str(timestamp),
            **job.headers,
        }
        if job.secret:
            headers["webhook-signature"] = sign(job.secret, job.message_id, timestamp, job.body)
        policy = FetchPolicy(
            allowed_hosts=("*",),
            timeout_s=timeout_s,
            max_bytes=self._settings.max_response_bytes,
            allow_private=self._settings.allow_private,
            ca_file=self._settings.ca_file,
        )
        options = {"method": "POST", "headers": headers, "body": job.body.decode()}
        result = await asyncio.to_thread(fetch, job.url, options, policy)
        status = result.get("status")
        if isinstance(status, int) and 200 <= status < 300:
            self.outcomes["delivered"] += 1
            return True
        self.outcomes["refused" if "error" in result else f"http_{status}"] += 1
        log.info(
            "webhook %s to %s: %s",
            job.message_id,
            _host(job.url),
            result.get("error") or f"HTTP {status}",
        )
        return False


def _host(url: str) -> str:
    """Only the host goes to logs: URLs may carry secrets (Slack webhook paths do)."""
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or "?"
