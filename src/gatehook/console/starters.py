"""The starters of a new custom action: "Empty Action" and a few written as TypeScript,
each a complete action to edit (the console's editor opens with it)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["STARTERS", "Starter", "starter"]

_TYPES = """// What the action gets and returns (docs/contract.md, "Actions programming model").
interface Input {
  tenant: string;
  flow_type: string;
  trigger: string;
  request_id: string;
  signin_id?: string | null;
  user: { id?: string; username?: string; email?: string; email_verified?: boolean;
          groups: string[]; metadata: Record<string, unknown>; [field: string]: unknown };
  request: { ip?: string; user_agent?: string; application_id?: string; risk_score?: number;
             [field: string]: unknown };
  state: Record<string, unknown>;
  context: Record<string, unknown>;
  config: Record<string, unknown>;
  secrets: Record<string, string>;
}
interface Result {
  kind: 'continue' | 'block' | 'demand_mfa' | 'redirect';
  reason?: string;
  message?: string;
  redirect_url?: string;
  claims?: Record<string, unknown>;
  user_updates?: Record<string, unknown>;
  metadata?: { key: string; value: unknown }[];
}
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
export async function execute(input: Input): Promise<Result> {
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

export async function execute(input: Input): Promise<Result> {
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
export async function execute(input: Input): Promise<Result> {
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

export async function execute(input: Input): Promise<Result> {
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
export async function execute(input: Input): Promise<Result> {
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

export async function execute(input: Input): Promise<Result> {
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
