"""Frames between the pool and its children: ``len(u32) hlen(u32) header(JSON) body(bytes)``.

The body carries already-encoded JSON (a script's input, its result) so that neither side
parses and re-encodes it on the hot path; headers use orjson (the standard library's json
cost ~25 µs a round trip here, as much as the pipe itself).
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

__all__ = ["HEAD", "MAX_FRAME", "decode", "encode"]

HEAD = struct.Struct(">II")
MAX_FRAME = 64 * 1024 * 1024


def encode(header: dict[str, Any], body: bytes = b"") -> bytes:
    """One frame holding ``header`` and ``body``."""
    h = orjson.dumps(header)
    return HEAD.pack(len(h) + len(body), len(h)) + h + body


def decode(payload: bytes, header_len: int) -> tuple[dict[str, Any], bytes]:
    """Split a frame's payload (after the fixed head) into header and body."""
    header: dict[str, Any] = orjson.loads(payload[:header_len])
    return header, payload[header_len:]
