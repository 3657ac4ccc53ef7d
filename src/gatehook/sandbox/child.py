"""A sandbox child process: runs action scripts in QuickJS-ng contexts (``engine``), one
call at a time, the engine enforcing each call's memory, CPU time, promise jobs and stack.

Started by the pool as ``python -I -m gatehook.sandbox.child '<limits JSON>'`` with an empty
environment, a memory cap (RLIMIT_AS) and its working directory at ``/``. It reads frames
from stdin and writes one reply frame per request to the original stdout (the replies to
the frames that arrived together leave in one write); anything else that would print goes
to stderr.

A script that runs out of time or memory fails alone: the engine stops it, its context is
discarded, and the child goes on serving. What the engine cannot stop (a script with allowed
hosts, whose context runs without the engine's time limit) the pool stops by killing the
child at the deadline plus its grace.

TypeScript (and JavaScript with import or export) is compiled here too, by TypeScript's
transpiler in a QuickJS-ng context of its own (``transpiler``), under its own limits.
"""

from __future__ import annotations

import gc
import json
import os
import re
import resource
import select
import signal
import sys
import time
from collections import deque
from typing import Any

import orjson

from gatehook.sandbox import framing
from gatehook.sandbox.engine import TIMED_OUT, ContextCache, EngineLimits, LoadError, ScriptContext
from gatehook.sandbox.transpiler import Diagnostic, TranspileFailed, Transpiler

_HOLD = 16  # replies held back at most while more frames wait (they leave in one write)
_HOLD_S = 0.001  # and for at most this long


def engine_limits(limits: dict[str, Any]) -> EngineLimits:
    """The engine's limits from the pool's limits JSON."""
    return EngineLimits(
        memory_mb=int(limits.get("context_memory_mb", 32)),
        stack_kb=int(limits.get("stack_kb", 512)),
        max_jobs=int(limits.get("max_jobs", 100_000)),
        log_bytes=int(limits["log_bytes"]),
        output_bytes=int(limits["output_bytes"]),
        http_max_bytes=int(limits["http_max_bytes"]),
        http_allow_private=bool(limits["http_allow_private"]),
    )


class Child:
    """The request loop and the warm contexts (``ContextCache``: bounded by count and by
    the heap they hold)."""

    def __init__(self, limits: dict[str, Any], reader: _Reader, out: Any) -> None:
        self.limits = limits
        self.engine = engine_limits(limits)
        self.contexts = ContextCache(
            int(limits["interpreters"]), int(limits.get("interpreter_memory_mb", 160)) << 20
        )
        self.compiler: Transpiler | None = None
        self.calls = 0
        self.collect = False
        self.reader = reader
        self.out = out
        self._replies: list[bytes] = []
        self._first = 0.0  # when the oldest reply held was made
        self.hosts: tuple[str, ...] = ()
        self.deadline = 0.0

    def rss_kb(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)

    def send(self, reply: dict[str, Any], body: bytes = b"") -> None:
        if not self._replies:
            self._first = time.monotonic()
        self._replies.append(framing.encode(reply, body))

    def due(self) -> bool:
        """Whether the replies held so far must go now although more frames wait: never
        more than ``_HOLD`` of them, nor for longer than ``_HOLD_S``."""
        return bool(self._replies) and (
            len(self._replies) >= _HOLD or time.monotonic() - self._first >= _HOLD_S
        )

    def flush(self) -> None:
        """Write the replies so far in one write."""
        if self._replies:
            replies, self._replies = self._replies, []
            self.out.write(replies[0] if len(replies) == 1 else b"".join(replies))

    def handle(self, header: dict[str, Any], body: bytes) -> None:
        """Answer one frame."""
        op = header.get("op")
        if op == "run":
            self.run(header, body)
            return
        if op == "compile":
            reply, rbody = self.compile(header, body)
        elif op == "ping":
            reply, rbody = {"ok": True, "pid": os.getpid()}, b""
        elif op == "warm":
            # Load the code into its context without running it (a starting worker warms
            # the scripts of its recently active tenants); the answer says if it is held.
            if self._load(header) is None:
                return  # answered by _load (the code failed to load)
            held_kb = self.contexts.held_bytes // 1024
            reply = {"ok": True, "interpreters": len(self.contexts), "held_kb": held_kb}
            rbody = b""
        else:
            reply = {"ok": False, "error": {"type": "protocol", "message": f"unknown op {op!r}"}}
            rbody = b""
        reply["id"] = header.get("id")
        self.send(reply, rbody)

    def fail(self, header: dict[str, Any], error: dict[str, Any]) -> None:
        """Answer ``header`` with ``error`` after a failure outside the engine."""
        if header.get("key") is not None:
            self._drop(header["key"])
        self.send({"id": header.get("id"), "ok": False, "error": error})

    def _drop(self, key: str) -> None:
        if self.contexts.drop(key):
            self.collect = True  # after the reply is written: the caller is not kept waiting

    def _fetch(self, args: str) -> str:
        """``http.fetch`` of a script with allowed hosts (``[url, options JSON]``): guarded,
        within its deadline."""
        from gatehook.sandbox.netguard import FetchPolicy, fetch  # only scripts that fetch pay

        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return json.dumps({"error": "timed out"})
        url, options = json.loads(args)
        try:
            opts = json.loads(options)
        except ValueError:
            opts = {}
        policy = FetchPolicy(
            self.hosts, remaining, self.engine.http_max_bytes, self.engine.http_allow_private
        )
        return json.dumps(fetch(str(url), opts if isinstance(opts, dict) else {}, policy))

    def _load(self, h: dict[str, Any]) -> ScriptContext | None:
        """The warm context for ``h``'s key, loading the code when it comes along;
        ``None`` once the call has been answered (code needed, or the load failed)."""
        key: str = h["key"]
        ctx = self.contexts.get(key)
        if ctx is not None:
            return ctx
        code = h.get("code")
        if code is None:
            self.send({"id": h["id"], "ok": False, "need_code": True})
            return None
        started = time.perf_counter()
        self.hosts = tuple(h.get("hosts") or ())
        self.deadline = h["deadline"]
        try:
            ctx = ScriptContext(
                self.engine,
                code,
                h.get("style", "auto"),
                h["name"],
                fetch=self._fetch if self.hosts else None,
                deadline=h["deadline"],
            )
        except LoadError as exc:
            self.collect = True
            self.send(
                {"id": h["id"], "ok": False, "evicted": True, "error": exc.error}
                | {"ms": _ms(started)}
            )
            return None
        self.contexts.put(key, ctx)
        return ctx

    def run(self, h: dict[str, Any], body: bytes) -> None:
        if h["deadline"] <= time.monotonic():
            # Expired while queued: the warm context is fine, it just never got a turn.
            self.send({"id": h["id"], "ok": False, "error": TIMED_OUT})
            return
        ctx = self._load(h)
        if ctx is None:
            return
        key: str = h["key"]
        started = time.perf_counter()
        self.hosts = tuple(h.get("hosts") or ())
        self.deadline = h["deadline"]
        try:
            text = body.decode()
        except UnicodeDecodeError:
            self.send({"id": h["id"], "ok": False, "error": _NOT_UTF8})
            return
        outcome = ctx.call(text, h["deadline"])
        reply: dict[str, Any] = {"id": h["id"], "ok": False, "logs": outcome.logs}
        reply["ms"] = _ms(started)
        self.calls += 1
        if self.calls % 32 == 0:
            reply["rss_kb"] = self.rss_kb()
        if self.contexts.after_call(key, ctx, outcome):
            self.collect = True
            reply["evicted"] = True
        if outcome.out is not None:
            reply["ok"] = True
            self.send(reply, outcome.out.encode())
            return
        reply["error"] = outcome.error
        self.send(reply)

    def compile(self, h: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        """Compile a script and read what it names: the engine's load (style, exports) and
        the modules in its syntax (``modules``, for the publish's package check)."""
        source = body.decode("utf-8")
        try:
            # read first: a script whose top level requires a package fails to load, and
            # the package it names is the reason to give
            refs = self._transpiler().modules(
                source, h.get("language"), float(h["deadline"]) - time.monotonic()
            )
            reply, code = self._compile(h, source)
            reply["modules"] = [[m.name, m.line, m.column] for m in refs]
            return reply, code
        except TranspileFailed as exc:
            if exc.discard:
                self.compiler = None
                self.collect = True
            if exc.error["type"] in ("compile", "timeout"):  # the pool words a timeout
                return {"ok": False, "error": exc.error}, b""
            return self._compiler_failed(exc.error["message"])
        except Exception as exc:
            self.compiler = None
            self.collect = True
            text = str(exc).strip()
            return self._compiler_failed(text.splitlines()[0] if text else repr(exc))

    def _transpiler(self) -> Transpiler:
        if self.compiler is None:
            self.compiler = Transpiler()
        return self.compiler

    def _compile(self, h: dict[str, Any], source: str) -> tuple[dict[str, Any], bytes]:
        if h.get("language") != "ts" and not _MODULE_SYNTAX.search(source):
            # A script without import or export (ZITADEL's v1 style, CommonJS) is what the
            # transpiler would give back: the engine loads it as is, and checks its syntax.
            reply = self._probe(h, source)
            if reply[0].get("ok") or reply[0]["error"].get("type") != "compile":
                return reply
            # a syntax error: the transpiler's diagnostics say where (line and column)
        out = self._transpiler().transpile(
            source, h.get("language"), float(h["deadline"]) - time.monotonic()
        )
        if isinstance(out, Diagnostic):
            error = {"type": "compile", "message": out.message}
            return {"ok": False, "error": {**error, "line": out.line, "column": out.column}}, b""
        return self._probe(h, out)

    @staticmethod
    def _compiler_failed(message: str) -> tuple[dict[str, Any], bytes]:
        return {
            "ok": False,
            "error": {"type": "threw", "message": "compiler failed: " + message},
        }, b""

    def _probe(self, h: dict[str, Any], compiled: str) -> tuple[dict[str, Any], bytes]:
        """Load ``compiled`` once in a throwaway context: the engine's own syntax check, and
        the style."""
        want = h.get("style", "auto")
        try:
            probe = ScriptContext(self.engine, compiled, want, h["name"], deadline=h["deadline"])
        except LoadError as exc:
            err = exc.error
            if err["type"] == "threw":
                if err["message"].startswith("the script defines neither"):
                    what = {
                        "module": "export function execute(input)",
                        "zitadel": f"function {h['name']}(ctx, api)",
                        "auth0": "exports.onExecutePostLogin (or another Auth0 handler)",
                    }.get(
                        want,
                        f"export function execute(input), function {h['name']}(ctx, api)"
                        " or an Auth0 handler (exports.onExecutePostLogin...)",
                    )
                    err = {"type": "compile", "message": f"no {what} found"}
                else:
                    err = {"type": "compile", "message": err["message"]}
            return {"ok": False, "error": err}, b""
        return {"ok": True, "style": probe.style, "exports": list(probe.exports)}, compiled.encode()


_NOT_UTF8 = {"type": "invalid_result", "message": "input is not valid UTF-8"}
_MODULE_SYNTAX = re.compile(r"\b(?:import|export)\b")  # (in a comment or string too: safe)


def _loads(raw: bytes) -> Any:
    """orjson, or the standard library for what orjson refuses (lone surrogates a script can
    put in its strings)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


class _Reader:
    """Frames from a pipe, parsed as they arrive: one read syscall serves many frames."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = bytearray()
        self._eof = False
        self._frames: deque[tuple[dict[str, Any], bytes]] = deque()

    def _read(self, *, block: bool) -> None:
        """One read (without ``block``, only if data is there); parse the complete frames."""
        if self._eof or (not block and not select.select([self._fd], [], [], 0)[0]):
            return
        buf = self._buf
        head = framing.HEAD.size
        want = 65536
        if len(buf) >= head:  # the rest of a large frame in one read
            want = max(want, head + framing.HEAD.unpack_from(buf)[0] - len(buf))
        chunk = os.read(self._fd, want)
        if not chunk:
            self._eof = True
            return
        buf += chunk
        pos = 0
        while len(buf) - pos >= head:
            total, hlen = framing.HEAD.unpack_from(buf, pos)
            if len(buf) - pos < head + total:
                break
            start = pos + head
            header: dict[str, Any] = orjson.loads(buf[start : start + hlen])
            self._frames.append((header, bytes(buf[start + hlen : start + total])))
            pos = start + total
        if pos:
            del buf[:pos]

    def ready(self) -> bool:
        """Whether a frame can be taken without waiting."""
        if not self._frames:
            self._read(block=False)
        return bool(self._frames)

    def next(self) -> tuple[dict[str, Any], bytes] | None:
        """The oldest frame, waiting for it; ``None`` at end of input."""
        while not self._frames:
            if self._eof:
                return None
            self._read(block=True)
        return self._frames.popleft()


def main() -> None:
    """Serve frames from stdin until it closes."""
    limits: dict[str, Any] = json.loads(sys.argv[1])
    cap = int(limits["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if int(limits.get("nice", 0)) > 0:
        os.nice(int(limits["nice"]))  # a slow child yields the CPU to the decision path
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints must never corrupt the frame stream
    inp = _Reader(sys.stdin.fileno())
    child = Child(limits, inp, out)
    while True:
        if child.due() or not inp.ready():
            child.flush()  # the frames that came together are answered together
        frame = inp.next()
        if frame is None:
            child.flush()
            return
        header, body = frame
        try:
            child.handle(header, body)
        except MemoryError:
            # The process's own cap (RLIMIT_AS), outside any context's limit.
            gc.collect()
            child.fail(header, {"type": "memory", "message": "out of memory"})
        except Exception as exc:  # a bug of ours must fail the call, not the child
            print(f"sandbox child: {header.get('op')} failed: {exc!r}", file=sys.stderr)
            child.fail(header, {"type": "threw", "message": f"sandbox error: {exc}"[:500]})
        if child.collect:
            child.collect = False
            child.flush()
            gc.collect()


if __name__ == "__main__":
    main()
