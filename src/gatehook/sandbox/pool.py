"""The supervised pool of sandbox children, asyncio side.

Each child is a separate Python process (``gatehook.sandbox.child``) with an empty
environment and a memory cap, holding warm script contexts keyed by
``tenant/action/version``. Calls are pipelined over its stdin/stdout (several in flight per
child, the frames of one loop turn in one write, their replies back in one write). The
engine enforces each call's limits inside the child, so a timeout or a memory overrun costs
only the script's context; the pool enforces the deadline again (deadline + grace) and kills
a child that stays silent past it (see ``_call``). A child that dies is replaced; calls in
flight on it fail with ``SandboxCrashed`` while other children keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sys
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

from gatehook.domain.model import ScriptStyle
from gatehook.errors import (
    CompileError,
    InvalidResult,
    SandboxCrashed,
    ScriptError,
    ScriptMemoryError,
    ScriptThrew,
    ScriptTimeout,
)
from gatehook.process.deadlines import Deadlines
from gatehook.sandbox import framing
from gatehook.service.ports import Compiled, ScriptJob, ScriptRun
from gatehook.settings import SandboxSettings

__all__ = ["Compiled", "SandboxPool", "ScriptJob", "ScriptRun"]

log = logging.getLogger("gatehook.sandbox")
_SPILL = 4  # calls a key's home child may be behind another before the key spills
_COMPILED_CACHE = 1024  # compiled artifacts kept by content
_STALL_S = 0.02  # a busy home child silent this long is held by a slow script
_STUCK_S = 1.0  # silence past a timed-out call's grace after which its child is killed


_ERRORS: dict[str, type[ScriptError]] = {
    "threw": ScriptThrew,
    "invalid_result": InvalidResult,
    "memory": ScriptMemoryError,
}


def script_error(reply: dict[str, Any], budget_ms: float) -> ScriptError:
    """The ``ScriptError`` for a failed call's reply (``error`` and ``logs``)."""
    err = reply.get("error") or {}
    kind = err.get("type")
    exc: ScriptError
    if kind == "timeout":
        exc = ScriptTimeout(budget_ms)
    else:
        exc = _ERRORS.get(str(kind), ScriptThrew)(str(err.get("message", "unknown error")))
    exc.logs = list(reply.get("logs") or [])
    ms = reply.get("ms")
    exc.ran_ms = float(ms) if isinstance(ms, (int, float)) else None
    return exc


class _Expired(TimeoutError):
    """A call not answered by its deadline and grace; ``started``: since when its child had
    been running it (None: it was queued behind another call)."""

    def __init__(self, started: float | None) -> None:
        super().__init__()
        self.started = started


class _Child(asyncio.SubprocessProtocol):
    """One child process; frames are parsed in ``pipe_data_received`` (no reader task)."""

    def __init__(self, on_frame: Callable[[_Child, dict[str, Any], bytes], None]) -> None:
        self.transport: asyncio.SubprocessTransport | None = None
        self.stdin: asyncio.WriteTransport | None = None
        self.pending: dict[int, asyncio.Future[tuple[dict[str, Any], bytes]]] = {}
        self.known: set[str] = set()
        self.queued: dict[str, int] = {}  # calls in flight here per key (run's calls)
        self.progress = 0.0  # when it last answered, or took a call while idle (monotonic)
        self.draining = False
        self.dead = False
        self.pid = 0
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._buf = bytearray()
        self._out: list[bytes] = []  # frames written together at the end of this loop turn
        self._on_frame = on_frame

    @property
    def load(self) -> int:
        return len(self.pending)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Duck-typed: uvloop's transports implement the interface without subclassing it.
        self.transport = cast(asyncio.SubprocessTransport, transport)
        self.pid = self.transport.get_pid()
        self.stdin = cast(asyncio.WriteTransport, self.transport.get_pipe_transport(0))

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        buf = self._buf
        buf += data
        head = framing.HEAD.size
        frames = 0
        while len(buf) >= head:
            total, hlen = framing.HEAD.unpack_from(buf)
            if len(buf) < head + total:
                break
            payload = bytes(buf[head : head + total])
            del buf[: head + total]
            header, body = framing.decode(payload, hlen)
            if frames:
                header["batched"] = frames  # it came back in one write with the ones before
            frames += 1
            self._on_frame(self, header, body)

    def write(self, frame: bytes) -> None:
        """Queue ``frame``; every frame queued in one turn of the loop goes in one write."""
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(frame)

    def _flush(self) -> None:
        frames, self._out = self._out, []
        if self.stdin is not None and not self.stdin.is_closing():
            self.stdin.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def process_exited(self) -> None:
        code = self.transport.get_returncode() if self.transport is not None else None
        if not self.exited.done():
            self.exited.set_result(code or 0)

    def kill(self) -> None:
        if self.transport is not None and self.transport.get_returncode() is None:
            with contextlib.suppress(ProcessLookupError):
                self.transport.kill()


class SandboxPool:
    """Runs action scripts in supervised child processes. Use ``async with`` or start/aclose."""

    def __init__(
        self,
        settings: SandboxSettings,
        *,
        size: int | None = None,
        deadlines: Deadlines | None = None,
        nice: int = 0,
    ) -> None:
        self._settings = settings
        self._nice = nice  # the children's scheduling priority (see ``os.nice``)
        self._deadlines = deadlines or Deadlines()
        self._size = size or settings.pool_size
        self._children: list[_Child] = []
        self._compiler: _Child | None = None
        self._compile_lock = asyncio.Lock()
        # Compiled artifacts by content: the same script published for many tenants (one
        # file applied to a thousand) is transpiled once; TypeScript's transpiler is what a
        # publish of a module-style or TypeScript script costs (~65-130 ms of a core here).
        self._compiled: OrderedDict[str, Compiled] = OrderedDict()
        self._next_id = 0
        self._closing = False
        self._spawning: set[asyncio.Task[None]] = set()
        self.restarts = 0
        self.batched = 0  # replies that came back in one write with the ones before them

    def _limits(self, memory_mb: int) -> str:
        s = self._settings
        return json.dumps(
            {
                "memory_mb": memory_mb,
                "interpreters": s.interpreters_per_child,
                "interpreter_memory_mb": s.interpreter_memory_mb,
                "context_memory_mb": s.context_memory_mb,
                "stack_kb": s.stack_kb,
                "max_jobs": s.max_jobs,
                "log_bytes": s.max_log_bytes,
                "output_bytes": s.max_output_bytes,
                "http_max_bytes": s.http_max_response_bytes,
                "http_allow_private": s.http_allow_private,
                "nice": self._nice,
            }
        )

    async def __aenter__(self) -> SandboxPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the children and wait until each answers a ping."""
        self._children = list(
            await asyncio.gather(
                *(self._spawn(self._settings.memory_mb) for _ in range(self._size))
            )
        )

    async def aclose(self) -> None:
        """Stop every child (in-flight calls fail with ``SandboxCrashed``)."""
        self._closing = True
        for task in list(self._spawning):
            task.cancel()
        children = [*self._children, *([self._compiler] if self._compiler else [])]
        await asyncio.gather(*(self._stop(c) for c in children), return_exceptions=True)
        self._children = []
        self._compiler = None

    @property
    def size(self) -> int:
        """How many children serve calls now."""
        return sum(1 for c in self._children if not c.dead)

    @property
    def queue_depth(self) -> int:
        """Calls sent to children and not answered yet."""
        return sum(c.load for c in self._children if not c.dead)

    @property
    def starts_together(self) -> bool:
        """Yes: a slot's pure scripts, started together with one ``affinity``, travel to one
        child in one write and come back in one (one round trip per slot)."""
        return True

    def pids(self) -> list[int]:
        """The process ids of the serving children (for tests and operations)."""
        return [c.pid for c in self._children if not c.dead]

    async def _spawn(self, memory_mb: int) -> _Child:
        loop = asyncio.get_running_loop()
        _, child = await loop.subprocess_exec(
            lambda: _Child(self._on_frame),
            sys.executable,
            "-I",
            "-m",
            "gatehook.sandbox.child",
            self._limits(memory_mb),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            env={},
            cwd="/",
        )
        child.exited.add_done_callback(lambda f: loop.create_task(self._on_death(child)))
        reply, _ = await self._call(child, {"op": "ping"}, b"", timeout=30.0)
        if not reply.get("ok"):
            raise SandboxCrashed("sandbox child did not start")
        return child

    async def _stop(self, child: _Child) -> None:
        child.dead = True
        child.kill()
        with contextlib.suppress(Exception):
            await child.exited
        if child.transport is not None:
            child.transport.close()
        self._fail_pending(
            child, "sandbox pool closed" if self._closing else "sandbox child stopped"
        )

    def _fail_pending(self, child: _Child, why: str) -> None:
        for fut in child.pending.values():
            if not fut.done():
                fut.set_exception(SandboxCrashed(why))
        child.pending.clear()

    def _on_frame(self, child: _Child, header: dict[str, Any], body: bytes) -> None:
        child.progress = time.monotonic()
        fut = child.pending.pop(header.get("id", -1), None)
        if fut is not None and not fut.done():
            fut.set_result((header, body))
        rss = header.get("rss_kb")
        if rss and rss > self._settings.memory_mb * 1024 * 3 // 4 and not child.draining:
            self._recycle(child)
        if child.draining and not child.pending and child.stdin is not None:
            child.stdin.close()  # the child exits at EOF; its replacement is already starting

    async def _on_death(self, child: _Child) -> None:
        if child.dead:
            return
        child.dead = True
        code = await child.exited
        if child.transport is not None:
            child.transport.close()
        self._fail_pending(child, f"sandbox child exited with code {code}")
        if child is self._compiler:
            self._compiler = None
            return
        if not self._closing and not child.draining:
            log.warning("sandbox child %s exited (%s); replacing it", child.pid, code)
            self._replace(child)

    def _recycle(self, child: _Child) -> None:
        log.info("sandbox child %s over its memory soft limit; recycling", child.pid)
        child.draining = True
        self._replace(child)

    def _replace(self, old: _Child) -> None:
        self.restarts += 1

        async def spawn() -> None:
            new = await self._spawn(self._settings.memory_mb)
            if self._closing:
                await self._stop(new)
                return
            # In the old one's place: keys keep their home child (``_pick``).
            self._children = [new if c is old else c for c in self._children]
            if new not in self._children:
                self._children.append(new)

        task = asyncio.create_task(spawn())
        self._spawning.add(task)
        task.add_done_callback(self._spawning.discard)

    async def _kill(self, child: _Child) -> None:
        """A child that missed a deadline by more than the grace: kill and replace it."""
        if child.dead:
            return
        child.kill()
        await self._on_death(child)

    def _send(
        self, child: _Child, header: dict[str, Any], body: bytes
    ) -> asyncio.Future[tuple[dict[str, Any], bytes]]:
        self._next_id += 1
        header["id"] = self._next_id
        fut: asyncio.Future[tuple[dict[str, Any], bytes]] = (
            asyncio.get_running_loop().create_future()
        )
        if child.dead:
            fut.set_exception(SandboxCrashed("sandbox child is not running"))
            return fut
        if not child.pending:
            child.progress = time.monotonic()
        child.pending[self._next_id] = fut
        child.write(framing.encode(header, body))
        return fut

    async def _call(
        self,
        child: _Child,
        header: dict[str, Any],
        body: bytes,
        *,
        timeout: float,
        engine_timed: bool = False,
    ) -> tuple[dict[str, Any], bytes]:
        """Send one call and wait for its answer until ``timeout``.

        A call whose time the engine bounds (``engine_timed``) that is not answered by then
        times out alone; its child is killed only if it then answers nothing for
        ``_STUCK_S`` more (the engine stops a script at its deadline: a child that does
        not answer is broken). Any other call past its timeout means its script is still
        running (a script with allowed hosts runs without the engine's time limit), and its
        child is killed at once if that call is the oldest it holds.
        """
        fut = self._send(child, header, body)
        call_id = header["id"]
        # On the shared deadline timer: no timer, no task per call on the hot path.
        expired = False
        loop = asyncio.get_running_loop()

        def kill() -> None:
            task = loop.create_task(self._kill(child))
            self._spawning.add(task)
            task.add_done_callback(self._spawning.discard)

        def expire() -> None:
            nonlocal expired
            if fut.done():
                return
            oldest = next(iter(child.pending), None) == call_id
            if engine_timed or not oldest:
                # This call alone times out (the child's late answer is dropped). Killing
                # the child here would fail every call queued on it.
                child.pending.pop(call_id, None)
                # the oldest call has had the child since its last answer (or since it was
                # sent to an idle child): what the pool knows of how long it ran
                fut.set_exception(_Expired(child.progress if oldest else None))
                if oldest:
                    since = child.progress
                    self._deadlines.at(
                        time.monotonic() + _STUCK_S,
                        lambda: None if child.progress != since or child.dead else kill(),
                    )
                return
            # The child's oldest call is past its deadline and grace: the child is stuck.
            expired = True
            kill()

        deadline = self._deadlines.at(time.monotonic() + max(timeout, 0.0), expire)
        try:
            return await fut
        except SandboxCrashed:
            if expired:
                raise TimeoutError from None
            raise
        finally:
            deadline.cancel()

    def _pick(self, key: str) -> _Child:
        """The key's home child (by a hash of the key), unless it is down or busy.

        A key served by one child keeps one warm interpreter, so the pool holds children x
        capacity distinct interpreters instead of the same ones in every child. A home
        ``_SPILL`` calls behind spills the call to another child that holds the key's
        interpreter. Building one elsewhere costs a dozen calls and keeps a second copy, so
        the call goes to a child without it only for a burst (``_SPILL`` calls of this key
        queued at its home) or when the home has answered nothing for ``_STALL_S`` (a slow
        script holds it) while another child is idle. So a burst on one key, or a child held
        by another tenant's slow script, still spreads, and uniform traffic over many
        tenants does not copy every interpreter into every child."""
        live = [c for c in self._children if not (c.dead or c.draining)]
        if not live:
            raise SandboxCrashed("no sandbox child is running")
        home = self._children[zlib.crc32(key.encode()) % len(self._children)]
        if home not in live:
            return min(live, key=lambda c: (len(c.pending), key not in c.known))
        least = min(live, key=lambda c: len(c.pending))
        queued = len(home.pending)
        stalled = bool(queued) and not least.pending and time.monotonic() - home.progress > _STALL_S
        if queued - len(least.pending) < _SPILL and not stalled:
            return home
        warm = [c for c in live if key in c.known and queued - len(c.pending) >= _SPILL]
        if warm:
            return min(warm, key=lambda c: len(c.pending))
        return least if stalled or home.queued.get(key, 0) >= _SPILL else home

    async def warm(self, job: ScriptJob) -> bool:
        """Load ``job``'s script into its home child's interpreter without running it;
        whether it loaded (a starting worker warms its recently active tenants)."""
        child = self._pick(job.key)
        if job.key in child.known:
            return True
        header: dict[str, Any] = {
            "op": "warm",
            "key": job.key,
            "name": job.action,
            "style": job.style,
            "code": job.code,
            "deadline": time.monotonic() + job.timeout_ms / 1000,
        }
        reply, _ = await self._call(child, header, b"", timeout=job.timeout_ms / 1000 + 1)
        if reply.get("ok"):
            child.known.add(job.key)
        return bool(reply.get("ok"))

    async def run(self, job: ScriptJob) -> ScriptRun:
        """Run ``job``; raise a ``ScriptError`` subclass when the script does not finish well."""
        if len(job.input) > self._settings.max_input_bytes:
            raise InvalidResult(f"input larger than {self._settings.max_input_bytes} bytes")
        now = time.monotonic()
        deadline = now + job.timeout_ms / 1000
        if job.deadline is not None:
            deadline = min(deadline, job.deadline)
        budget_ms = (deadline - now) * 1000
        grace = self._settings.grace_ms / 1000
        key = job.key
        header: dict[str, Any] = {
            "op": "run",
            "key": key,
            "name": job.action,
            "style": job.style,
            "deadline": deadline,
            "hosts": list(job.allowed_hosts),
        }
        for _ in range(3):
            route = job.affinity or key
            child = self._pick(route)
            if key not in child.known:
                header["code"] = job.code
            child.queued[route] = child.queued.get(route, 0) + 1
            try:  # (_send gives the header a fresh id each attempt)
                reply, body = await self._call(
                    child,
                    header,
                    job.input,
                    timeout=deadline - time.monotonic() + grace,
                    engine_timed=not job.allowed_hosts,
                )
            except TimeoutError as exc:
                late = ScriptTimeout(budget_ms)
                started = exc.started if isinstance(exc, _Expired) else None
                if started is not None:
                    # no answer by the deadline and grace: on a loaded machine the child's
                    # own report comes too late, so judge the run by when the child took it
                    late.ran_ms = max(0.0, (deadline - started) * 1000)
                raise late from None
            finally:
                left = child.queued.pop(route) - 1
                if left:
                    child.queued[route] = left
            if reply.get("need_code"):
                child.known.discard(key)
                continue
            if "code" in header:
                child.known.add(key)
                if len(child.known) > 2 * self._settings.interpreters_per_child:
                    child.known.clear()
            header.pop("code", None)
            if reply.get("evicted"):
                child.known.discard(key)
            if "batched" in reply:
                self.batched += 1
            if reply.get("ok"):
                return ScriptRun(body, list(reply.get("logs") or []), float(reply.get("ms", 0)))
            raise script_error(reply, budget_ms)
        raise SandboxCrashed("sandbox child kept losing the script")

    async def compile(
        self, source: str, *, language: str, name: str, style: str = "auto", timeout_s: float = 60
    ) -> Compiled:
        """Compile JS/TS ``source`` to one runnable artifact and detect its style.

        Runs in a dedicated child (started on first use; loading TypeScript's compiler takes
        ~0.7 s), so compiling never blocks the event loop or the children serving sign-ins.
        """
        if len(source.encode()) > self._settings.max_script_bytes:
            raise CompileError(f"script larger than {self._settings.max_script_bytes} bytes")
        digest = hashlib.sha256(f"{language}\0{name}\0{style}\0{source}".encode()).hexdigest()
        cached = self._compiled.get(digest)
        if cached is not None:
            self._compiled.move_to_end(digest)
            return cached
        compiled = await self._compile(
            source, language=language, name=name, style=style, timeout_s=timeout_s
        )
        self._compiled[digest] = compiled
        while len(self._compiled) > _COMPILED_CACHE:
            self._compiled.popitem(last=False)
        return compiled

    async def _compile(
        self, source: str, *, language: str, name: str, style: str, timeout_s: float
    ) -> Compiled:
        async with self._compile_lock:
            if self._compiler is None or self._compiler.dead:
                self._compiler = await self._spawn(max(self._settings.memory_mb, 1024))
            header = {
                "op": "compile",
                "name": name,
                "language": language,
                "style": style,
                "deadline": time.monotonic() + timeout_s,
            }
            try:
                reply, body = await self._call(
                    self._compiler, header, source.encode(), timeout=timeout_s + 1
                )
            except TimeoutError:
                raise CompileError(f"compiling took longer than {timeout_s:g} s") from None
        modules = tuple((str(n), int(ln), int(col)) for n, ln, col in reply.get("modules") or ())
        if reply.get("ok"):
            exports = tuple(str(e) for e in reply.get("exports") or ())
            return Compiled(body.decode(), ScriptStyle(reply["style"]), exports, modules)
        err = reply.get("error") or {}
        if err.get("type") == "timeout":
            raise CompileError(f"compiling took longer than {timeout_s:g} s")
        if err.get("type") == "compile":
            raise CompileError(
                str(err.get("message")),
                line=err.get("line"),
                column=err.get("column"),
                modules=modules,
            )
        raise CompileError(f"the script could not be loaded: {err.get('message')}", modules=modules)
