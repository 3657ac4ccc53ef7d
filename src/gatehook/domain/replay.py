"""Recording and replay, the pure part: redacting a recorded trigger request, and summing up
how the decisions of a replay differ from the recorded ones."""

from __future__ import annotations

from collections import Counter
from typing import Any

__all__ = ["REDACTED", "ReplayReport", "compare", "redact"]

REDACTED = "[redacted]"


def redact(record: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """``record`` (changed in place, and returned) with every dotted path (``user.email``,
    ``context.idp.token``, ``_reply.claims.email``) replaced by ``[redacted]`` where it
    exists. The caller owns the record: a freshly parsed request is not copied again."""
    out = record
    for path in paths:
        node: Any = out
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict) and keys[-1] in node:
            node[keys[-1]] = REDACTED
    return out


def compare(recorded: dict[str, Any], replayed: dict[str, Any]) -> list[str]:
    """Which parts of a decision changed: ``decision``, ``reason``, ``claims``,
    ``metadata``, ``user_updates`` (empty: the same)."""
    kinds = []
    for part in ("decision", "reason", "claims", "metadata", "user_updates"):
        if recorded.get(part) != replayed.get(part):
            kinds.append(part)
    return kinds


class ReplayReport:
    """Counts and examples of a replay."""

    def __init__(self, examples: int = 5) -> None:
        self.replayed = 0
        self.changed = 0
        self.by_kind: Counter[str] = Counter()
        self.transitions: Counter[str] = Counter()
        self.examples: list[dict[str, Any]] = []
        self.errors = 0
        self._max_examples = examples

    def add(self, request_id: str, recorded: dict[str, Any], replayed: dict[str, Any]) -> None:
        """One recorded request and its replayed decision."""
        self.replayed += 1
        kinds = compare(recorded, replayed)
        if not kinds:
            return
        self.changed += 1
        self.by_kind.update(kinds)
        self.transitions[f"{recorded.get('decision')} -> {replayed.get('decision')}"] += 1
        if len(self.examples) < self._max_examples:
            self.examples.append(
                {
                    "request_id": request_id,
                    "changed": kinds,
                    "recorded": {k: recorded.get(k) for k in kinds},
                    "replayed": {k: replayed.get(k) for k in kinds},
                }
            )

    def as_dict(self) -> dict[str, Any]:
        """The report as the API returns it."""
        return {
            "replayed": self.replayed,
            "changed": self.changed,
            "by_kind": dict(self.by_kind),
            "transitions": dict(self.transitions),
            "errors": self.errors,
            "examples": self.examples,
        }
