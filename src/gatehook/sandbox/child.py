"""A sandbox child process: runs action scripts in QuickJS interpreters, one call at a time.

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
import signal
import sys
import time
from collections import OrderedDict
from pathlib import Path
from types import FrameType
from typing import Any

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


class _Timeout(BaseException):
    """Raised by SIGALRM at a call's deadline; a BaseException so nothing catches it by accident."""


_armed = False


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    if _armed:
        raise _Timeout


class Interpreter:
    """One QuickJS runtime holding the sandbox runtime and (at most) one action version."""

    def __init__(self, limits: dict[str, Any]) -> None:
        self._ctx = _dukpy.create_context()
        self.hosts: tuple[str, ...] = ()
        self.deadline = 0.0
        self.http_max = int(limits["http_max_bytes"])
        self.allow_private = bool(limits["http_allow_private"])
        self.eval(_RUNTIME, {"limits": limits})

    # -- the two methods dukpy's native layer calls back -------------------------------------
    def _check_exported_function_exists(self, func: bytes) -> bool:
        return func == b"gh.fetch"

    def _call_python(self, func: bytes, json_args: bytes) -> bytes:
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
    """The request loop and the LRU of warm interpreters."""

    def __init__(self, limits: dict[str, Any]) -> None:
        self.limits = limits
        self.capacity = int(limits["interpreters"])
        self.interps: OrderedDict[str, tuple[Interpreter, str]] = OrderedDict()
        self.compiler: Interpreter | None = None
        self.calls = 0
        self.collect = False

    def rss_kb(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)

    def handle(self, header: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        op = header.get("op")
        if op == "run":
            return self.run(header, body)
        if op == "compile":
            return self.compile(header, body)
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}, b""
        return {"ok": False, "error": {"type": "protocol", "message": f"unknown op {op!r}"}}, b""

    def _arm(self, deadline: float) -> None:
        global _armed
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Timeout
        _armed = True
        signal.setitimer(signal.ITIMER_REAL, remaining, _TICK_S)

    def _disarm(self) -> None:
        global _armed
        _armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)

    def _drop(self, key: str) -> None:
        self.interps.pop(key, None)
        self.collect = True  # after the reply is written: the caller is not kept waiting

    def run(self, h: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        key: str = h["key"]
        entry = self.interps.get(key)
        started = time.perf_counter()
        if h["deadline"] <= time.monotonic():
            # Expired while queued: the warm interpreter is fine, it just never got a turn.
            return {"ok": False, "error": {"type": "timeout", "message": "timed out"}}, b""
        try:
            if entry is None:
                code = h.get("code")
                if code is None:
                    return {"ok": False, "need_code": True}, b""
                self._arm(h["deadline"])
                interp = Interpreter(self.limits)
                style = interp.eval(wrap(code, h.get("style", "auto"), h["name"]))
                self._disarm()
                if style is None:
                    return {
                        "ok": False,
                        "evicted": True,
                        "error": {
                            "type": "threw",
                            "message": "the script defines neither execute(input) nor "
                            f"function {h['name']}(ctx, api)",
                        },
                    }, b""
                entry = (interp, style)
                self.interps[key] = entry
                while len(self.interps) > self.capacity:
                    self.interps.popitem(last=False)
            else:
                self.interps.move_to_end(key)
            interp = entry[0]
            interp.hosts = tuple(h.get("hosts") or ())
            interp.deadline = h["deadline"]
            self._arm(h["deadline"])
            raw = interp.eval_raw(b"__gh.run(dukpy.input)", b'{"input":' + body + b"}")
            self._disarm()
        except BaseException as exc:
            self._disarm()
            err = classify(exc)
            self._drop(key)
            return {"ok": False, "evicted": True, "error": err, "ms": _ms(started)}, b""
        box = _loads(raw) if raw else {}
        logs = box.get("logs") or []
        reply: dict[str, Any] = {"ok": "out" in box, "logs": logs, "ms": _ms(started)}
        self.calls += 1
        if self.calls % 32 == 0:
            reply["rss_kb"] = self.rss_kb()
        if "out" in box:
            return reply, box["out"].encode()
        err = box.get("error") or {
            "type": "threw",
            "message": "the action's promise never settled",
        }
        if "out of memory" in str(err.get("message", "")):
            # QuickJS ran out under the cap; the heap of this interpreter is not to be trusted.
            err = {"type": "memory", "message": "memory limit exceeded"}
            self._drop(key)
            reply["evicted"] = True
            reply["rss_kb"] = self.rss_kb()
        reply["error"] = err
        return reply, b""

    def compile(self, h: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        source = body.decode("utf-8")
        try:
            self._arm(h["deadline"])
            if self.compiler is None:
                self.compiler = Interpreter(self.limits)
                self.compiler.eval(_TS_SERVICES.read_text() + "\n;globalThis.ts = ts; 0")
            res = self.compiler.eval(
                "(function(){var r = ts.transpileModule(dukpy.src, {compilerOptions: "
                "{module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2020, "
                "removeComments: false}, fileName: dukpy.file, reportDiagnostics: true});"
                "return {out: r.outputText, diags: (r.diagnostics || []).map(function(d){"
                "return {msg: ts.flattenDiagnosticMessageText(d.messageText, '\\n'), "
                "start: d.start};})};})()",
                {"src": source, "file": "action." + ("ts" if h.get("language") == "ts" else "js")},
            )
            self._disarm()
        except BaseException as exc:
            self._disarm()
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
            self._arm(h["deadline"])
            style = probe.eval(wrap(compiled, h.get("style", "auto"), h["name"]))
            self._disarm()
        except BaseException as exc:
            self._disarm()
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
    return round((time.perf_counter() - started) * 1000, 3)


class _Reader:
    """Frames from a pipe: one read syscall fills a buffer that serves many frames."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = bytearray()

    def read_exact(self, n: int) -> bytes | None:
        while len(self._buf) < n:
            chunk = os.read(self._fd, max(65536, n - len(self._buf)))
            if not chunk:
                return None
            self._buf += chunk
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data


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
    child = Child(limits)
    while True:
        head = inp.read_exact(framing.HEAD.size)
        if head is None:
            return
        total, hlen = framing.HEAD.unpack(head)
        payload = inp.read_exact(total)
        if payload is None:
            return
        header, body = framing.decode(payload, hlen)
        try:
            reply, rbody = child.handle(header, body)
        except MemoryError:
            gc.collect()
            reply, rbody = (
                {"ok": False, "error": {"type": "memory", "message": "out of memory"}},
                b"",
            )
        reply["id"] = header.get("id")
        out.write(framing.encode(reply, rbody))
        if child.collect:
            child.collect = False
            gc.collect()


if __name__ == "__main__":
    main()
