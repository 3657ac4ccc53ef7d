"""A sandbox child process: runs action scripts in QuickJS interpreters, one call at a time
(calls already queued for the same interpreter share one evaluation, each with its own
deadline, reply and logs; see ``Child``).

Started by the pool as ``python -I -m gatehook.sandbox.child '<limits JSON>'`` with an empty
environment, a memory cap (RLIMIT_AS) and its working directory at ``/``. It reads frames
from stdin and writes one reply frame per request to the original stdout; anything else that
would print goes to stderr.

The interpreter object given to dukpy's native layer is our own: it exports no Python
function but ``gh.fetch`` (guarded, and refused unless the action has allowed hosts), so
``call_python`` cannot reach dukpy's module loader or anything else, ``process`` and
``require`` from disk do not exist, and ES module imports cannot be resolved.
"""

from __future__ import annotations

import gc
import importlib.machinery
import importlib.util
import json
import os
import re
import resource
import secrets
import select
import signal
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import orjson

from gatehook.sandbox import framing


def _load_quickjs() -> tuple[Any, Path]:
    """dukpy's native module, loaded without running ``dukpy/__init__`` (which imports
    urllib, ssl, tarfile... that this process never uses and that slow its every wake-up)."""
    spec = importlib.util.find_spec("dukpy")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("dukpy is not installed")
    home = Path(next(iter(spec.submodule_search_locations)))
    path = next(home.glob("_dukpy*.so"), None) or next(home.glob("_dukpy*.pyd"))
    loader = importlib.machinery.ExtensionFileLoader("_dukpy", str(path))
    module_spec = importlib.util.spec_from_file_location("_dukpy", str(path), loader=loader)
    assert module_spec is not None
    module = importlib.util.module_from_spec(module_spec)
    loader.exec_module(module)
    return module, home


_dukpy, _DUKPY_HOME = _load_quickjs()
_RUNTIME = (Path(__file__).with_name("runtime.js")).read_text()
_TS_SERVICES = _DUKPY_HOME / "jsmodules" / "typescriptServices.js"
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_TICK_S = 0.005  # the timer re-fires this often past a deadline, so no catch can swallow it
_TAIL_S = 0.05  # jobs still queued when an evaluation ends get this long
_LOOK_AHEAD = 16  # how deep behind other frames a call for the open evaluation is taken
_AHEAD_BUDGET = 16  # calls taken ahead of an older frame before it gets its turn
_TIMED_OUT = {"type": "timeout", "message": "timed out"}
_NEVER_SETTLED = {"type": "threw", "message": "the action's promise never settled"}


_MIN_INTERP_KB = 64  # what an interpreter is charged at least (malloc may reuse freed pages)


class _Timeout(BaseException):
    """Raised by SIGALRM at a call's deadline; a BaseException so nothing catches it by accident."""


_armed = False
T = TypeVar("T")


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    if _armed:
        raise _Timeout


def _arm(deadline: float) -> None:
    """Fire SIGALRM at ``deadline`` (soon, if it has passed), then every tick after it."""
    global _armed
    _armed = True
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 0.0005), _TICK_S)


def _timed(deadline: float, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` under an alarm at ``deadline``; the alarm is off after it, however it
    ends. Arming happens inside the ``try`` and the flag is cleared first in ``finally``,
    before any call, so a tick landing on either edge finds the handler off."""
    global _armed
    try:
        _arm(deadline)
        return fn(*args)
    finally:
        _armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)


class Interpreter:
    """One QuickJS runtime holding the sandbox runtime and (at most) one action version."""

    def __init__(
        self,
        limits: dict[str, Any],
        on_next: Callable[[Interpreter, list[Any]], bytes] | None = None,
    ) -> None:
        self._ctx = _dukpy.create_context()
        self.hosts: tuple[str, ...] = ()
        self.deadline = 0.0
        self.http_max = int(limits["http_max_bytes"])
        self.allow_private = bool(limits["http_allow_private"])
        self._on_next = on_next
        self._token = secrets.token_hex(16)
        self.eval(_RUNTIME, {"limits": limits, "token": self._token})

    # -- the two methods dukpy's native layer calls back -------------------------------------
    def _check_exported_function_exists(self, func: bytes) -> bool:
        return func in (b"gh.fetch", b"gh.next")

    def _call_python(self, func: bytes, json_args: bytes) -> bytes:
        if func == b"gh.next":
            args = _loads(json_args)
            if self._on_next is None or not args or args[0] != self._token:
                raise PermissionError("gh.next is the runtime's own")
            return self._on_next(self, args)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _Timeout
        url, options = json.loads(json_args)
        try:
            opts = json.loads(options) if isinstance(options, str) else {}
        except ValueError:
            opts = {}
        from gatehook.sandbox.netguard import FetchPolicy, fetch  # only scripts that fetch pay

        policy = FetchPolicy(self.hosts, remaining, self.http_max, self.allow_private)
        result = fetch(str(url), opts if isinstance(opts, dict) else {}, policy)
        return json.dumps(result).encode()

    def eval(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        """Evaluate ``code`` as a script; the result comes back decoded from JSON."""
        raw = self.eval_raw(code.encode(), json.dumps(variables or {}).encode())
        return None if raw is None else json.loads(raw)

    def eval_raw(self, code: bytes, variables: bytes) -> bytes | None:
        """Evaluate with ``variables`` (a JSON object) as the ``dukpy`` global; raw result."""
        result: bytes | None = _dukpy.eval_string(self, code, variables, False, "<action>")
        return result


def wrap(compiled: str, style: str, name: str) -> str:
    """The evaluation that defines an action's code inside the runtime (line numbers kept)."""
    probe = (
        f"typeof {name} === 'function' ? {name} : undefined"
        if _IDENT.fullmatch(name)
        else "undefined"
    )
    return (
        "__gh.define(function (exports, require, module) {"
        + compiled
        + f"\n;return ({probe});\n}}, {json.dumps(style)}, {json.dumps(name)})"
    )


def classify(exc: BaseException) -> dict[str, Any]:
    """An error reply for a failure raised out of the interpreter."""
    text = str(exc).strip()
    if isinstance(exc, _Timeout):
        return {"type": "timeout", "message": "timed out"}
    if isinstance(exc, MemoryError) or "out of memory" in text:
        return {"type": "memory", "message": "memory limit exceeded"}
    first = text.splitlines()[0] if text else type(exc).__name__
    if first == "interrupted":
        return {"type": "timeout", "message": "timed out"}
    return {"type": "threw", "message": first[:1000]}


class Child:
    """The request loop and the LRU of warm interpreters.

    Run calls for one interpreter that are already queued in the pipe are served in one
    evaluation (see ``serve`` in runtime.js): each call still gets its own deadline, its own
    reply the moment it settles, and its own logs; only dukpy's per-evaluation garbage
    collection is shared.
    """

    def __init__(self, limits: dict[str, Any], reader: _Reader, out: Any) -> None:
        self.limits = limits
        self.capacity = int(limits["interpreters"])
        # Warm interpreters are bounded by memory as well as by count: each one is charged
        # what the process grew by while it was made (at least ``_MIN_INTERP_KB``), and the
        # least recently used go while the charges pass the budget.
        self.budget_kb = int(limits.get("interpreter_memory_mb", 160)) * 1024
        self.interps: OrderedDict[str, tuple[Interpreter, str]] = OrderedDict()
        self.charge: dict[str, int] = {}
        self.charged_kb = 0
        self.compiler: Interpreter | None = None
        self.calls = 0
        self.collect = False
        self.reader = reader
        self.out = out
        self.current: dict[str, Any] | None = None  # the run call the serving evaluation is on
        self.started = 0.0
        self.evict = False
        self.served = 0  # calls answered so far by the evaluation in progress
        self.waiting = ""  # the key of the interpreter whose evaluation waits for calls

    def rss_kb(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)

    def send(self, reply: dict[str, Any], body: bytes = b"") -> None:
        self.out.write(framing.encode(reply, body))

    def handle(self, header: dict[str, Any], body: bytes) -> None:
        """Answer one frame (a run may answer more: the queued calls it serves)."""
        op = header.get("op")
        if op == "run":
            self.run(header, body)
            return
        if op == "compile":
            reply, rbody = self.compile(header, body)
        elif op == "ping":
            reply, rbody = {"ok": True, "pid": os.getpid()}, b""
        elif op == "warm":
            # Load the code into its interpreter without running it (a starting worker warms
            # the scripts of its recently active tenants); the answer says if it is held.
            if self._load(header) is None:
                return  # answered by _load (the code failed to load)
            reply = {"ok": True, "interpreters": len(self.interps), "held_kb": self.charged_kb}
            rbody = b""
        else:
            reply = {"ok": False, "error": {"type": "protocol", "message": f"unknown op {op!r}"}}
            rbody = b""
        reply["id"] = header.get("id")
        self.send(reply, rbody)

    def recover(self, header: dict[str, Any]) -> None:
        """After an alarm escaped the call it was meant for: quiet the timer, drop the
        interpreter that was running, and answer the call in progress as timed out."""
        global _armed
        while True:
            try:
                _armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
                break
            except _Timeout:
                continue
        key = (self.current or header).get("key")
        if key is not None:
            self._drop(key)
        if self.current is not None or header.get("op") != "run":
            self.fail(header, _TIMED_OUT)

    def fail(self, header: dict[str, Any], error: dict[str, Any]) -> None:
        """Answer the call in progress (or ``header``) with ``error`` after a failure."""
        target = self.current or header
        self.current = None
        self.send({"id": target.get("id"), "ok": False, "error": error})

    def _drop(self, key: str) -> None:
        self.interps.pop(key, None)
        self.charged_kb -= self.charge.pop(key, 0)
        self.collect = True  # after the reply is written: the caller is not kept waiting

    def _load(self, h: dict[str, Any]) -> Interpreter | None:
        """The warm interpreter for ``h``'s key, loading the code when it comes along;
        ``None`` once the call has been answered (code needed, or the load failed)."""
        key: str = h["key"]
        entry = self.interps.get(key)
        if entry is not None:
            self.interps.move_to_end(key)
            return entry[0]
        code = h.get("code")
        if code is None:
            self.send({"id": h["id"], "ok": False, "need_code": True})
            return None
        started = time.perf_counter()
        before_kb = self.rss_kb()
        try:
            interp = Interpreter(self.limits, self._next)
            style = _timed(
                h["deadline"], interp.eval, wrap(code, h.get("style", "auto"), h["name"])
            )
        except BaseException as exc:
            self.collect = True
            self.send(
                {"id": h["id"], "ok": False, "evicted": True, "error": classify(exc)}
                | {"ms": _ms(started)}
            )
            return None
        if style is None:
            message = (
                f"the script defines neither execute(input) nor function {h['name']}(ctx, api)"
            )
            self.send(
                {"id": h["id"], "ok": False, "evicted": True}
                | {"error": {"type": "threw", "message": message}}
            )
            return None
        self.interps[key] = (interp, style)
        cost = max(self.rss_kb() - before_kb, _MIN_INTERP_KB)
        self.charge[key] = cost
        self.charged_kb += cost
        while len(self.interps) > 1 and (
            len(self.interps) > self.capacity or self.charged_kb > self.budget_kb
        ):
            old, _ = self.interps.popitem(last=False)
            self.charged_kb -= self.charge.pop(old, 0)
        return interp

    def run(self, h: dict[str, Any], body: bytes) -> None:
        if h["deadline"] <= time.monotonic():
            # Expired while queued: the warm interpreter is fine, it just never got a turn.
            self.send({"id": h["id"], "ok": False, "error": _TIMED_OUT})
            return
        interp = self._load(h)
        if interp is None:
            return
        key: str = h["key"]
        self.served = 0
        self._begin(interp, h)
        try:
            raw = _timed(
                h["deadline"],
                interp.eval_raw,
                b"__gh.serve(dukpy.input)",
                b'{"input":' + body + b"}",
            )
        except BaseException as exc:
            self._drop(key)
            current = self.current
            if current is not None:
                err = classify(exc)
                if err["type"] == "threw" and current["deadline"] <= time.monotonic():
                    err = _TIMED_OUT  # the alarm landed in the host side of the runtime
                self._answer_error(err, evicted=True)
            return
        if self.current is not None:
            # The last call never handed its result over: a promise that never settled.
            box = (_loads(raw) if raw else {}).get("box") or {}
            self._answer(box.get("out"), box.get("logs"), box.get("error"))
        if self.evict:
            self.evict = False
            self._drop(key)

    def _begin(self, interp: Interpreter, h: dict[str, Any]) -> None:
        self.current = h
        self.started = time.perf_counter()
        interp.hosts = tuple(h.get("hosts") or ())
        interp.deadline = h["deadline"]

    def _next(self, interp: Interpreter, args: list[Any]) -> bytes:
        """``gh.next`` from ``serve``: answer the call that settled and hand over the next
        one for this interpreter; or, called with the token alone (serve's ``pull``), wait
        for the next frame."""
        global _armed
        _armed = False  # no alarm between two calls
        if len(args) == 1:
            return self._wait(interp)
        done = self.current
        assert done is not None
        out, logs, error = (*args[1:4], None, None, None)[:3]
        self._answer(out, logs, error)
        if not self.evict:
            self.waiting = done["key"]
            body = self._take(interp, block=False)
            if body is not None:
                return body
        # The jobs the settled call left queued run under its deadline; then, unless the
        # interpreter is to go, ``0`` has serve pull (wait here for the next frame).
        _arm(done["deadline"])
        return b"null" if self.evict else b"0"

    def _wait(self, interp: Interpreter) -> bytes:
        """Block for the next frame with the timer off. A run for the same interpreter goes
        on in this evaluation (no per-evaluation garbage collection, ~60 us a call), taken
        from behind other frames too (``_Reader``, bounded); when only other frames wait, or
        at the end of input, the evaluation ends so the main loop takes them in order."""
        signal.setitimer(signal.ITIMER_REAL, 0)
        body = self._take(interp, block=True)
        if body is not None:
            return body
        _arm(time.monotonic() + _TAIL_S)  # the evaluation's last jobs, bounded
        return b"null"

    def _take(self, interp: Interpreter, *, block: bool) -> bytes | None:
        """The input of the next queued run for the waiting interpreter, begun and armed;
        calls that expired in the queue are answered as timed out on the way."""
        key = self.waiting
        while True:
            queued = self.reader.take_if(
                lambda h: h.get("op") == "run" and h.get("key") == key, block=block
            )
            if queued is None:
                self.current = None
                return None
            h, body = queued
            if h["deadline"] <= time.monotonic():
                self.send({"id": h["id"], "ok": False, "error": _TIMED_OUT})
                continue
            self._begin(interp, h)
            _arm(h["deadline"])
            return body

    def _answer(self, out: Any, logs: Any, error: Any) -> None:
        h = self.current
        assert h is not None
        self.current = None
        reply: dict[str, Any] = {"id": h["id"], "ok": False, "logs": logs or []}
        reply["ms"] = _ms(self.started)
        if self.served:
            reply["batched"] = self.served  # this many calls before it shared its evaluation
        self.served += 1
        self.calls += 1
        if self.calls % 32 == 0:
            reply["rss_kb"] = self.rss_kb()
        if isinstance(out, str):
            try:
                body = out.encode()
            except UnicodeEncodeError:
                error = {"type": "invalid_result", "message": "result is not valid UTF-8"}
            else:
                reply["ok"] = True
                self.send(reply, body)
                return
        err = error if isinstance(error, dict) else _NEVER_SETTLED
        if "out of memory" in str(err.get("message", "")):
            # QuickJS ran out under the cap; the heap of this interpreter is not to be trusted.
            err = {"type": "memory", "message": "memory limit exceeded"}
            self.evict = True
            reply["evicted"] = True
            reply["rss_kb"] = self.rss_kb()
        reply["error"] = err
        self.send(reply)

    def _answer_error(self, err: dict[str, Any], *, evicted: bool) -> None:
        h = self.current
        assert h is not None
        self.current = None
        self.send(
            {"id": h["id"], "ok": False, "evicted": evicted, "error": err, "ms": _ms(self.started)}
        )

    def _transpile(self, source: str, language: str | None) -> Any:
        """TypeScript's ``transpileModule`` in the warm compiler interpreter (loaded once)."""
        if self.compiler is None:
            self.compiler = Interpreter(self.limits)
            self.compiler.eval(_TS_SERVICES.read_text() + "\n;globalThis.ts = ts; 0")
        return self.compiler.eval(
            "(function(){var r = ts.transpileModule(dukpy.src, {compilerOptions: "
            "{module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2020, "
            "removeComments: false}, fileName: dukpy.file, reportDiagnostics: true});"
            "return {out: r.outputText, diags: (r.diagnostics || []).map(function(d){"
            "return {msg: ts.flattenDiagnosticMessageText(d.messageText, '\\n'), "
            "start: d.start};})};})()",
            {"src": source, "file": "action." + ("ts" if language == "ts" else "js")},
        )

    def compile(self, h: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        source = body.decode("utf-8")
        try:
            res = _timed(h["deadline"], self._transpile, source, h.get("language"))
        except BaseException as exc:
            self.compiler = None
            self.collect = True
            err = classify(exc)
            err["message"] = "compiler failed: " + err["message"]
            return {"ok": False, "error": err}, b""
        if res["diags"]:
            d = res["diags"][0]
            start = int(d.get("start") or 0)
            line = source.count("\n", 0, start) + 1
            column = start - (source.rfind("\n", 0, start) + 1) + 1
            return {
                "ok": False,
                "error": {"type": "compile", "message": d["msg"], "line": line, "column": column},
            }, b""
        compiled: str = res["out"]
        # Load it once in a throwaway interpreter: QuickJS's own syntax check, and the style.
        try:
            probe = Interpreter(self.limits)
            style = _timed(
                h["deadline"], probe.eval, wrap(compiled, h.get("style", "auto"), h["name"])
            )
        except BaseException as exc:
            err = classify(exc)
            if err["type"] == "threw":
                err = {"type": "compile", "message": err["message"]}
            return {"ok": False, "error": err}, b""
        if style is None:
            want = h.get("style", "auto")
            what = {
                "module": "export function execute(input)",
                "zitadel": f"function {h['name']}(ctx, api)",
            }.get(want, f"export function execute(input) or function {h['name']}(ctx, api)")
            return {"ok": False, "error": {"type": "compile", "message": f"no {what} found"}}, b""
        return {"ok": True, "style": style}, compiled.encode()


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
    """Frames from a pipe, parsed as they arrive: one read syscall serves many frames.

    ``take_if`` may take a frame from behind others (at most ``_LOOK_AHEAD`` deep): calls for
    the interpreter whose evaluation is open go on in it even when calls for other
    interpreters are interleaved with them (a slot's scripts, started together, arrive so),
    instead of one evaluation per call. At most ``_AHEAD_BUDGET`` calls are taken ahead of an
    older frame before the evaluation ends and the main loop serves that frame in order.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = bytearray()
        self._eof = False
        self._frames: deque[tuple[dict[str, Any], bytes]] = deque()
        self._ahead = 0  # frames taken ahead of an older one since ``next`` last took one

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

    def next(self) -> tuple[dict[str, Any], bytes] | None:
        """The oldest frame, waiting for it; ``None`` at end of input."""
        while not self._frames:
            if self._eof:
                return None
            self._read(block=True)
        self._ahead = 0
        return self._frames.popleft()

    def take_if(
        self, wanted: Callable[[dict[str, Any]], bool], *, block: bool = False
    ) -> tuple[dict[str, Any], bytes] | None:
        """A frame ``wanted`` accepts, from those that have arrived (with ``block``, waiting
        for the next one when none has). Refused frames stay, in order, for ``next``."""
        if not self._frames:
            self._read(block=block)
            while block and not self._frames and not self._eof:
                self._read(block=True)
        for depth, (header, body) in enumerate(self._frames):
            if depth >= _LOOK_AHEAD:
                break
            if wanted(header):
                if depth:
                    if self._ahead >= _AHEAD_BUDGET:
                        return None  # the older frames' turn
                    self._ahead += 1
                del self._frames[depth]
                return header, body
        return None


def main() -> None:
    """Serve frames from stdin until it closes."""
    limits: dict[str, Any] = json.loads(sys.argv[1])
    cap = int(limits["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints must never corrupt the frame stream
    inp = _Reader(sys.stdin.fileno())
    child = Child(limits, inp, out)
    while True:
        frame = inp.next()
        if frame is None:
            return
        header, body = frame
        try:
            child.handle(header, body)
        except MemoryError:
            gc.collect()
            child.fail(header, {"type": "memory", "message": "out of memory"})
        except _Timeout:
            child.recover(header)
        if child.collect:
            child.collect = False
            gc.collect()


if __name__ == "__main__":
    main()
