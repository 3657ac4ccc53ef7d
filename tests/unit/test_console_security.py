"""The console's origin check (pure)."""

from __future__ import annotations

import pytest

from gatehook.console.security import same_origin


@pytest.mark.parametrize(
    ("host", "origin", "referer", "ok"),
    [
        ("console.example:8089", "http://console.example:8089", None, True),
        ("console.example", "https://console.example", None, True),  # behind a TLS proxy
        ("Console.Example", "https://console.example", None, True),
        ("console.example", None, "https://console.example/t/acme/actions", True),
        ("console.example", "https://evil.example", "https://console.example/x", False),
        ("console.example", "https://console.example.evil.example", None, False),
        ("console.example", None, "https://evil.example/console.example", False),
        ("console.example", "null", None, False),  # a sandboxed frame or a file
        ("console.example", None, None, False),
        ("console.example", "javascript://console.example", None, False),
    ],
)
def test_same_origin(host: str, origin: str | None, referer: str | None, ok: bool) -> None:
    assert same_origin(host, origin, referer) is ok
