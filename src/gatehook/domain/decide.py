"""The decision rules of docs/contract.md as pure functions over the results of a slot's actions.

A slot runs its attachments in order. ``block`` and ``redirect`` end the slot; ``demand_mfa``
is remembered while the rest run. The final decision is the strongest seen
(block > demand_mfa > redirect > continue); a ``demand_mfa`` reply keeps a later
``redirect_url``. Mutations of every action that ran are merged in order (later wins for
keys), and a ``block`` reply carries none. An action error either becomes an ``error`` entry
(allowed to fail) or blocks with reason ``action_error`` (fail closed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gatehook.domain.contract import (
    ActionOutput,
    ActionTrace,
    Decision,
    MetadataEntry,
    MfaRequest,
    Outcome,
    ScopeChanges,
    TriggerReply,
    UserGrant,
)

__all__ = ["STRENGTH", "Step", "decide", "ends_slot", "reply_fields", "reply_of", "so_far"]

STRENGTH: dict[Decision, int] = {
    Decision.CONTINUE: 0,
    Decision.REDIRECT: 1,
    Decision.DEMAND_MFA: 2,
    Decision.BLOCK: 3,
}

_DEFAULT_REASON: dict[Decision, str] = {
    Decision.BLOCK: "blocked",
    Decision.DEMAND_MFA: "mfa_required",
    Decision.REDIRECT: "redirect",
}


# an output's kind -> its members (dict lookups: Enum calls cost more on the hot path)
_DECISION: dict[str, Decision] = {d.value: d for d in Decision}
_OUTCOME: dict[str, Outcome] = {d.value: Outcome(d.value) for d in Decision}


@dataclass(frozen=True, slots=True)
class Step:
    """One attachment's result: an ``output`` when it ran to the end, else an ``error``."""

    name: str
    version: str
    output: ActionOutput | None = None
    error: str | None = None
    allowed_to_fail: bool = False
    duration_ms: float = 0.0
    disabled: bool = False  # the kill switch: ``output`` is the fallback's

    def outcome(self) -> Outcome:
        """The trace outcome of this step."""
        if self.disabled:
            return Outcome.DISABLED
        if self.output is None:
            return Outcome.ERROR
        return _OUTCOME[self.output.kind]


def ends_slot(step: Step) -> bool:
    """Whether the slot stops after ``step``: block, redirect, or an error that fails closed."""
    if step.output is None:
        return not step.allowed_to_fail
    return step.output.kind in ("block", "redirect")


def so_far(steps: Sequence[Step]) -> Decision:
    """The strongest decision among ``steps`` (what ``decide`` would say, without the reply).

    Called before every template runs, so it builds nothing; only steps that did not end the
    slot come before another, so an error here can only be allowed to fail.
    """
    best = Decision.CONTINUE
    for step in steps:
        if step.output is not None:
            kind = _DECISION[step.output.kind]
            if STRENGTH[kind] > STRENGTH[best]:
                best = kind
    return best


def decide(
    request_id: str,
    flow_revision: int | None,
    steps: Sequence[Step],
    attachments: Sequence[tuple[str, str]] = (),
) -> TriggerReply:
    """Fold the ``steps`` of one slot into the reply.

    ``attachments`` lists the slot's (name, version) pairs in order; those without a step
    (because the slot ended early, or its budget ran out) are traced as ``skipped``. Steps
    after one that ends the slot are ignored (also traced as skipped), so the function is
    total over any sequence.
    """
    return reply_of(reply_fields(request_id, flow_revision, steps, attachments))


def reply_of(fields: dict[str, Any]) -> TriggerReply:
    """The reply model of ``reply_fields``' result (built from trusted values, unvalidated)."""
    traces = [ActionTrace.model_construct(**trace) for trace in fields["actions"]]
    scopes = ScopeChanges.model_construct(**fields["access_token_scopes"])
    return TriggerReply.model_construct(
        **{**fields, "actions": traces, "access_token_scopes": scopes}
    )


def reply_fields(
    request_id: str,
    flow_revision: int | None,
    steps: Sequence[Step],
    attachments: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """What ``decide`` says, as the reply's fields in its order (traces as plain dicts):
    the decision path encodes these at once, without building the models."""
    decision = Decision.CONTINUE
    decider: Step | None = None
    redirect_url: str | None = None
    claims: dict[str, Any] = {}
    user_updates: dict[str, Any] = {}
    metadata: list[MetadataEntry] = []
    saml: dict[str, list[str]] = {}
    grants: list[UserGrant] = []
    token_claims: dict[str, Any] = {}
    scopes: dict[str, list[str]] = {"add": [], "remove": []}
    mfa: MfaRequest | None = None
    traces: list[dict[str, Any]] = []
    fail_closed: Step | None = None
    ran = 0

    for step in steps:
        ran += 1
        traces.append(
            {
                "name": step.name,
                "version": step.version,
                "outcome": step.outcome(),
                "duration_ms": round(step.duration_ms, 3),
                "error": step.error,
            }
        )
        out = step.output
        if out is None:
            if not step.allowed_to_fail:
                fail_closed = step
                break
            continue
        kind = _DECISION[out.kind]
        if STRENGTH[kind] > STRENGTH[decision]:
            decision, decider = kind, step
        if kind is Decision.REDIRECT:
            redirect_url = out.redirect_url
        claims.update(out.claims)
        if out.user_updates:
            _merge_user_updates(user_updates, out.user_updates)
        metadata.extend(out.metadata)
        saml.update(out.saml_attributes)
        grants.extend(out.user_grants)
        if out.access_token_claims:
            token_claims.update(out.access_token_claims)
        changes = out.access_token_scopes
        if changes.add or changes.remove:
            _change_scopes(scopes, changes.add, changes.remove)
        if out.mfa is not None:
            mfa = out.mfa
        if ends_slot(step):
            break

    for step in steps[ran:]:
        traces.append(_skipped(step.name, step.version))
    for name, version in attachments[len(traces) :]:
        traces.append(_skipped(name, version))

    reason = message = None
    if fail_closed is not None:
        decision, reason = Decision.BLOCK, "action_error"
        message = f"action {fail_closed.name}@{fail_closed.version} failed: {fail_closed.error}"
    elif decider is not None and decider.output is not None:
        reason = decider.output.reason or _DEFAULT_REASON[decision]
        message = decider.output.message
    if decision is Decision.BLOCK:  # a block carries no mutations
        redirect_url, claims, user_updates, saml = None, {}, {}, {}
        metadata, grants, token_claims, mfa = [], [], {}, None
        scopes = {"add": [], "remove": []}
    return {
        "request_id": request_id,
        "decision": decision,
        "reason": reason,
        "message": message,
        "redirect_url": redirect_url,
        "claims": claims,
        "user_updates": user_updates,
        "metadata": metadata,
        "saml_attributes": saml,
        "user_grants": grants,
        "flow_revision": flow_revision,
        "actions": traces,
        "error": None,
        "pin_deferred": False,
        "access_token_claims": token_claims,
        "access_token_scopes": scopes,
        "mfa": mfa,
    }


_METADATA_KEYS = ("app_metadata", "user_metadata")  # Auth0's: merged per key across actions


def _merge_user_updates(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        before = into.get(key)
        if key in _METADATA_KEYS and isinstance(before, dict) and isinstance(value, dict):
            into[key] = {**before, **value}
        else:
            into[key] = value


def _change_scopes(scopes: dict[str, list[str]], add: list[str], remove: list[str]) -> None:
    """Later changes win: a scope removed after it was added is only in ``remove``."""
    for scope in add:
        if scope in scopes["remove"]:
            scopes["remove"].remove(scope)
        if scope not in scopes["add"]:
            scopes["add"].append(scope)
    for scope in remove:
        if scope in scopes["add"]:
            scopes["add"].remove(scope)
        if scope not in scopes["remove"]:
            scopes["remove"].append(scope)


def _skipped(name: str, version: str) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "outcome": Outcome.SKIPPED,
        "duration_ms": 0.0,
        "error": None,
    }
