"""The starters of a new custom action: "Empty Action" and a few written as TypeScript,
each a complete action to edit (the console's editor opens with it)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["STARTERS", "Starter", "starter"]

# gatehook.Input and gatehook.Result are declared by the editor (schemas/gatehook.d.ts, from
# the contract's models); TypeScript's types are erased when the action is published.
_TYPES = """// input: what the action gets; the result: what it decides (docs/contract.md).
"""


@dataclass(frozen=True, slots=True)
class Starter:
    """One starter: its id, what it does, and the source the editor opens with."""

    id: str
    title: str
    source: str
    language: str = "ts"
    allowed_hosts: tuple[str, ...] = ()

    def for_action(self, name: str) -> str:
        """The source for an action called ``name`` (ZITADEL style names its function)."""
        return self.source.replace("ACTION_NAME", name)


STARTERS: tuple[Starter, ...] = (
    Starter(
        "empty",
        "Empty Action",
        _TYPES
        + """
export async function execute(input: gatehook.Input): Promise<gatehook.Result> {
  return { kind: 'continue' };
}
""",
    ),
    Starter(
        "block-domain",
        "Block sign-ins from other e-mail domains",
        _TYPES
        + """
const ALLOWED = ['acme.com'];

export async function execute(input: gatehook.Input): Promise<gatehook.Result> {
  const domain = (input.user.email ?? '').split('@')[1] ?? '';
  if (!ALLOWED.includes(domain.toLowerCase())) {
    return { kind: 'block', reason: 'domain_not_allowed', message: 'Use your company account.' };
  }
  return { kind: 'continue' };
}
""",
    ),
    Starter(
        "add-claim",
        "Add a claim to the token",
        _TYPES
        + """
export async function execute(input: gatehook.Input): Promise<gatehook.Result> {
  const tier = String(input.user.metadata['tier'] ?? 'free');
  return { kind: 'continue', claims: { 'https://acme.com/tier': tier } };
}
""",
    ),
    Starter(
        "mfa-risk",
        "Demand MFA on a risky sign-in",
        _TYPES
        + """
const THRESHOLD = 0.7;

export async function execute(input: gatehook.Input): Promise<gatehook.Result> {
  if ((input.request.risk_score ?? 0) >= THRESHOLD) {
    return { kind: 'demand_mfa', reason: 'risky_signin' };
  }
  return { kind: 'continue' };
}
""",
    ),
    Starter(
        "redirect-group",
        "Redirect a group to its own page",
        _TYPES
        + """
export async function execute(input: gatehook.Input): Promise<gatehook.Result> {
  if ((input.user.groups ?? []).includes('contractors')) {
    return { kind: 'redirect', redirect_url: 'https://acme.com/contractor-terms' };
  }
  return { kind: 'continue' };
}
""",
    ),
    Starter(
        "http-api",
        "Call an allowed HTTP API",
        _TYPES
        + """
// The host must be in the action's allowed hosts; the call counts against its timeout.
const http = require('zitadel/http');

export async function execute(input: gatehook.Input): Promise<gatehook.Result> {
  const res = http.fetch('https://api.acme.com/users/' + encodeURIComponent(input.user.id ?? ''));
  if (!res.ok) return { kind: 'continue' };  // no answer: let the sign-in through
  const profile = res.json() as { plan?: string };
  return { kind: 'continue', claims: { plan: profile.plan ?? 'unknown' } };
}
""",
        allowed_hosts=("api.acme.com",),
    ),
    Starter(
        "zitadel",
        "ZITADEL Actions v1 style",
        """// ZITADEL v1 style: a function named after the action (a JavaScript identifier, such
// as tagIdp), reading ctx.v1 and writing through api.
function ACTION_NAME(ctx, api) {
  const user = ctx.v1.getUser();
  api.v1.claims.setClaim('email_domain', (user.email || '').split('@')[1] || '');
}
""",
        language="js",
    ),
)


def starter(starter_id: str | None) -> Starter | None:
    """The starter called ``starter_id`` (None: none or unknown)."""
    return next((s for s in STARTERS if s.id == starter_id), None)
