"""The console's browser protections: security headers on every response, and a check that
every state-changing request comes from the console's own pages (Origin, else Referer).

The pages hold no script and no inline style, so the Content-Security-Policy allows only the
console's own stylesheet and images (pages with the script editor carry the editor's policy,
``console.script_editor.EDITOR_CSP``); frames are refused (no clickjacking), referrers are not
sent to other sites, and content types are not sniffed. The CSRF token of every form stays:
the origin check is a second, independent defence (a token leaked in a log does not suffice).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSP", "SecurityHeaders", "local_path", "same_origin"]

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
]
_SAFE = {"GET", "HEAD", "OPTIONS"}


def local_path(target: str | None) -> str:
    """``target`` when it is a path of this site, else ``/``: where to go after signing in.

    A browser reads ``/\\evil.example`` and ``/<tab>/evil.example`` (a tab or a line break is
    dropped from a URL) as ``//evil.example``, another site: a target with a backslash, a
    control character or white space, or whose second character is a slash, is refused, as
    is anything with a scheme or a host."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def same_origin(host: str, origin: str | None, referer: str | None) -> bool:
    """Whether a request to ``host`` (its Host header) came from a page of that host: its
    Origin header names it, or (no Origin) its Referer does. Neither: refused."""
    source = origin if origin and origin != "null" else referer
    if not source:
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


class SecurityHeaders:
    """ASGI middleware: the headers above on every response; a state-changing request from
    another origin answered 403 before it reaches a page."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # a page that sets its own policy (the script editor's) keeps it
                own = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in _HEADERS if name not in own]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        if scope["method"] not in _SAFE and not same_origin(
            headers.get("host", ""), headers.get("origin"), headers.get("referer")
        ):
            body = b"refused: this request did not come from the console's own pages"
            await send_with_headers(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self._app(scope, receive, send_with_headers)
