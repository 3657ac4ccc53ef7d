"""Rollouts, the pure part: which sign-ins a canary takes, when it is rolled back, and what
a shadow run changed against the live one (docs/contract.md, "Slot entries with a rollout")."""

from __future__ import annotations

import hashlib
from typing import Any

from gatehook.domain.contract import ActionOutput
from gatehook.domain.model import Rollout

__all__ = ["diff_outputs", "in_canary", "should_roll_back"]


def in_canary(rollout_id: str, key: str, percent: int) -> bool:
    """Whether the sign-in (or request) ``key`` runs the canary: a hash of the rollout and
    the key, so one sign-in stays on one side for the whole rollout, on every worker."""
    if percent <= 0:
        return False
    if percent >= 100:
        return True
    digest = hashlib.sha256(f"{rollout_id}\n{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 < percent * 100


def should_roll_back(rollout: Rollout, runs: int, failures: int) -> bool:
    """Past ``min_runs``, a failure rate above ``error_rate`` rolls the canary back."""
    return (
        rollout.live
        and rollout.canary is not None
        and runs >= rollout.min_runs
        and failures / runs > rollout.error_rate
    )


def _keys(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[str]]:
    return {
        "added": sorted(k for k in after if k not in before),
        "removed": sorted(k for k in before if k not in after),
        "changed": sorted(k for k in after if k in before and after[k] != before[k]),
    }


def diff_outputs(
    live: ActionOutput | None,
    live_error: str | None,
    shadow: ActionOutput | None,
    shadow_error: str | None,
) -> dict[str, Any]:
    """What the shadow version would have done differently from the live one: decision and
    reason, and the keys added, removed or changed in claims, metadata and user_updates.
    ``kinds`` lists which of those differ (empty: the same)."""
    live_kind = live.kind if live is not None else "error"
    shadow_kind = shadow.kind if shadow is not None else "error"
    out: dict[str, Any] = {
        "decision": {"live": live_kind, "shadow": shadow_kind},
        "reason": {
            "live": live.reason if live is not None else live_error,
            "shadow": shadow.reason if shadow is not None else shadow_error,
        },
    }
    kinds = []
    if live_kind != shadow_kind:
        kinds.append("decision")
    if out["reason"]["live"] != out["reason"]["shadow"]:
        kinds.append("reason")
    empty = ActionOutput()
    a, b = live or empty, shadow or empty
    parts = {
        "claims": (a.claims, b.claims),
        "metadata": (
            {m.key: m.value for m in a.metadata},
            {m.key: m.value for m in b.metadata},
        ),
        "user_updates": (a.user_updates, b.user_updates),
    }
    for name, (before, after) in parts.items():
        keys = _keys(before, after)
        out[name] = keys
        if any(keys.values()):
            kinds.append(name)
    out["kinds"] = kinds
    return out
