"""TypeScript's transpiler in a QuickJS-ng context of its own, for the compile child.

The compiler is TypeScript's own ``transpileModule`` (``typescriptServices.js``, the copy the
``dukpy`` package bundles and pins: TypeScript 5.7), evaluated in QuickJS-ng rather than in
dukpy's interpreter: the same code, so the same output, about ten times faster per
transpile (13 ms against 130 ms for a five-line action here; ``benchmarks/tenants.py``
provisions through it), and under the engine's limits. A script is hostile input to the
compiler too: each transpile runs under a CPU-time limit, the context's heap is capped, and
deep nesting ends in a stack error, not a crash. After a time or memory limit the context is
discarded (the caller builds a new one, ~0.7 s).

The context holds no host function: the script's text is data to the compiler, never run.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import quickjs

from gatehook.sandbox.engine import classify

__all__ = ["Diagnostic", "ModuleRef", "TranspileFailed", "Transpiler"]

_MEMORY = 512 << 20  # the compiler's heap: ~30 MB loaded, a large script's AST on top
_STACK = 1 << 20  # below the thread's own stack, so the engine's check fires first
_LOAD_S = 30.0  # loading the compiler, under a loaded machine's worst CPU share
_TRANSPILE = (
    "(function (src, file) {"
    " var r = ts.transpileModule(src, {compilerOptions: {module: ts.ModuleKind.CommonJS,"
    " target: ts.ScriptTarget.ES2020, removeComments: false}, fileName: file,"
    " reportDiagnostics: true});"
    " return JSON.stringify({out: r.outputText, diags: (r.diagnostics || []).map(function (d) {"
    " return {msg: ts.flattenDiagnosticMessageText(d.messageText, '\\n'), start: d.start};"
    " })});"
    "})"
)
# The modules a script names in its syntax: require('x') and import('x') with a literal name,
# import/export ... from 'x', import x = require('x'). Strings, comments and template
# literals are not calls, so a "require('fs')" inside one is not a module reference; a name
# computed at run time is not seen here and is the runtime's to refuse. Type-only imports are
# erased by the compiler and load nothing.
_MODULES = """(function (src, file) {
  var K = ts.SyntaxKind, out = [];
  var kind = file.slice(-3) === '.ts' ? ts.ScriptKind.TS : ts.ScriptKind.JS;
  var sf = ts.createSourceFile(file, src, ts.ScriptTarget.ES2020, true, kind);
  function lit(n) {
    return !!n && (n.kind === K.StringLiteral || n.kind === K.NoSubstitutionTemplateLiteral);
  }
  function add(n, spec) { out.push({name: spec.text, start: n.getStart(sf)}); }
  function visit(n) {
    if (n.kind === K.CallExpression && n.arguments.length && lit(n.arguments[0]) &&
        ((n.expression.kind === K.Identifier && n.expression.text === 'require') ||
         n.expression.kind === K.ImportKeyword)) {
      add(n, n.arguments[0]);
    } else if ((n.kind === K.ImportDeclaration || n.kind === K.ExportDeclaration) &&
               lit(n.moduleSpecifier) && !n.isTypeOnly &&
               !(n.importClause && n.importClause.isTypeOnly)) {
      add(n, n.moduleSpecifier);
    } else if (n.kind === K.ExternalModuleReference && lit(n.expression)) {
      add(n, n.expression);
    }
    ts.forEachChild(n, visit);
  }
  visit(sf);
  return JSON.stringify(out);
})"""


def _services() -> Path:
    spec = importlib.util.find_spec("dukpy")
    if spec is None or spec.origin is None:
        raise ImportError("dukpy (it ships TypeScript's transpiler) is not installed")
    return Path(spec.origin).parent / "jsmodules" / "typescriptServices.js"


@dataclass(frozen=True, slots=True)
class ModuleRef:
    """A module a script names in its syntax, and where (1-based line and column)."""

    name: str
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """TypeScript's first syntax diagnostic: its message and its 1-based line and column."""

    message: str
    line: int
    column: int


class TranspileFailed(Exception):
    """The compiler itself failed on a script (a limit, or an error of its own); ``error`` is
    the reply-shaped error, ``discard`` whether the context must be rebuilt."""

    def __init__(self, error: dict[str, Any], discard: bool) -> None:
        super().__init__(error.get("message"))
        self.error = error
        self.discard = discard


class Transpiler:
    """One QuickJS-ng context holding TypeScript's compiler. Not thread-safe."""

    def __init__(self) -> None:
        ctx = quickjs.Context()
        ctx.set_memory_limit(_MEMORY)
        ctx.set_max_stack_size(_STACK)
        ctx.set_time_limit(_LOAD_S)
        ctx.eval(_services().read_text() + "\n;globalThis.ts = ts; 0")
        self._fn = ctx.eval(_TRANSPILE)
        self._modules = ctx.eval(_MODULES)
        ctx.set_time_limit(-1)
        self._ctx = ctx

    def transpile(self, source: str, language: str | None, seconds: float) -> str | Diagnostic:
        """CommonJS ES2020 JavaScript for ``source``, or its first syntax diagnostic. Raises
        ``TranspileFailed`` when the compiler ran out of time, memory or stack."""
        file = "action." + ("ts" if language == "ts" else "js")
        self._ctx.set_time_limit(max(seconds, 0.05))
        try:
            raw = self._fn(source, file)
        except (quickjs.JSException, MemoryError) as exc:
            error = classify(exc)
            if isinstance(exc, quickjs.StackOverflow):
                error = {"type": "compile", "message": "the script is nested too deeply"}
            raise TranspileFailed(error, discard=error["type"] in ("timeout", "memory")) from None
        finally:
            self._ctx.set_time_limit(-1)
        res = json.loads(raw)
        if not res["diags"]:
            return str(res["out"])
        first = res["diags"][0]
        line, column = _place(source, int(first.get("start") or 0))
        return Diagnostic(str(first["msg"]), line, column)

    def modules(self, source: str, language: str | None, seconds: float) -> list[ModuleRef]:
        """The modules ``source`` names in its syntax (see ``_MODULES``), in source order.
        Raises ``TranspileFailed`` as ``transpile`` does."""
        file = "action." + ("ts" if language == "ts" else "js")
        self._ctx.set_time_limit(max(seconds, 0.05))
        try:
            raw = self._modules(source, file)
        except (quickjs.JSException, MemoryError) as exc:
            error = classify(exc)
            if isinstance(exc, quickjs.StackOverflow):
                error = {"type": "compile", "message": "the script is nested too deeply"}
            raise TranspileFailed(error, discard=error["type"] in ("timeout", "memory")) from None
        finally:
            self._ctx.set_time_limit(-1)
        return [
            ModuleRef(str(m["name"]), *_place(source, int(m["start"]))) for m in json.loads(raw)
        ]


def _place(source: str, start: int) -> tuple[int, int]:
    """The 1-based line and column of character offset ``start``."""
    line = source.count("\n", 0, start) + 1
    return line, start - (source.rfind("\n", 0, start) + 1) + 1
