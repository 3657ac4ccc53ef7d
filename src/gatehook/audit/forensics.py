""" "Why did sign-ins start failing at 14:00?": pure analysis over audit events.

For each action version, the failure rate (``error`` + ``block`` outcomes) before and after
the moment asked about; the management changes in the window; and the most likely culprit:
the change after which an action version's failure rate jumped the most, with the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from gatehook.domain.contract import AuditEvent

__all__ = ["Culprit", "Rate", "Report", "why"]

CHANGES = (
    "flow.action_attached",
    "flow.action_updated",
    "flow.action_published",
    "flow.action_detached",
)


@dataclass
class Rate:
    """Executions and failures of one action version in one period."""

    runs: int = 0
    failures: int = 0

    @property
    def rate(self) -> float:
        """Failures / runs (0 when it did not run)."""
        return self.failures / self.runs if self.runs else 0.0


@dataclass
class Culprit:
    """The change most likely behind the failures, and the evidence."""

    change: AuditEvent
    action: str
    version: str
    before: Rate
    after: Rate

    def evidence(self) -> str:
        """One sentence a person can act on."""
        c = self.change
        return (
            f"{c.type} by {c.actor} at {c.at.isoformat()} ({c.action}@{c.version}, "
            f"flow revision {c.flow_revision_before} -> {c.flow_revision}): failure rate of "
            f"{self.action} went from {self.before.rate:.0%} ({self.before.failures}/"
            f"{self.before.runs}) to {self.after.rate:.0%} "
            f"({self.after.failures}/{self.after.runs})"
        )


@dataclass
class Report:
    """Rates per action version before/after, the changes in the window, the culprit."""

    at: datetime
    rates: dict[tuple[str, str], tuple[Rate, Rate]] = field(default_factory=dict)
    changes: list[AuditEvent] = field(default_factory=list)
    culprit: Culprit | None = None


def _failed(e: AuditEvent) -> bool:
    return e.outcome is not None and e.outcome.value in ("error", "block")


def why(events: list[AuditEvent], at: datetime) -> Report:
    """Analyse ``events`` (one tenant, a window around ``at``)."""
    report = Report(at=at)
    executions = [e for e in events if e.type == "flow.action_executed" and e.action]
    report.changes = sorted((e for e in events if e.type in CHANGES), key=lambda e: e.at)
    for e in executions:
        key = (e.action or "", e.version or "")
        before, after = report.rates.setdefault(key, (Rate(), Rate()))
        bucket = before if e.at < at else after
        bucket.runs += 1
        bucket.failures += _failed(e)

    best: tuple[float, Culprit] | None = None
    for change in report.changes:
        if change.type == "flow.action_published":
            continue  # publishing alone changes no flow; the attach/update that follows does
        action = change.action or ""
        prior = Rate()
        later = Rate()
        for e in executions:
            if e.action != action:
                continue
            bucket = prior if e.at < change.at else later
            bucket.runs += 1
            bucket.failures += _failed(e)
        if later.runs == 0:
            continue
        jump = later.rate - prior.rate
        if jump > 0 and (best is None or jump > best[0]):
            best = (jump, Culprit(change, action, change.version or "?", prior, later))
    report.culprit = best[1] if best else None
    return report
