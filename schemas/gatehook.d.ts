// Generated from schemas/action-input.json and schemas/action-output.json by
// scripts/gen_schemas.py: do not edit. docs/contract.md describes every field.
declare namespace gatehook {
  /** What an action receives: the trigger, the request's parts, and its own config. */
  interface Input {
    tenant: string;
    flow_type: string;
    trigger: string;
    request_id: string;
    signin_id: string | null;
    /** the running action's name */
    action: string | null;
    /** the slot's decision before this action (templates) */
    decision_so_far: string | null;
    /** time this action has before its timeout (templates) */
    time_left_ms: number | null;
    user: User;
    request: RequestInfo;
    state: Record<string, unknown>;
    context: Record<string, unknown>;
    config: Record<string, unknown>;
    /** the custom action's secrets (Auth0: event.secrets) */
    secrets: Record<string, string>;
    /** Auth0 Actions that use api.cache: its live entries, key -> {value, expires_at}, as the run began */
    cache: Record<string, Record<string, unknown>>;
  }

  /** What one action returns: a decision kind and mutations. Validated before use. */
  interface Result {
    kind?: "continue" | "block" | "demand_mfa" | "redirect";
    reason?: string | null;
    message?: string | null;
    redirect_url?: string | null;
    claims?: Record<string, unknown>;
    user_updates?: Record<string, unknown>;
    metadata?: MetadataEntry[];
    saml_attributes?: Record<string, string[]>;
    user_grants?: UserGrant[];
    access_token_claims?: Record<string, unknown>;
    access_token_scopes?: ScopeChanges;
    mfa?: MfaRequest | null;
    /** Auth0 style: the action's cache writes, stored after the run (not in the reply) */
    cache?: CacheWrite[];
  }

  /** One change an Auth0 Action made to its cache (`api.cache.set` / `delete`). */
  interface CacheWrite {
    op: "set" | "delete";
    key: string;
    value?: string | null;
    /** ms since the epoch */
    expires_at?: number | null;
  }

  /** One metadata entry to append to the user. */
  interface MetadataEntry {
    key: string;
    value?: unknown;
  }

  /** How the user should do multi-factor authentication (Auth0's `api.multifactor.enable` and `api.authentication.challengeWith` / `challengeWithAny` / `enrollWith` / `enrollWithAny`); it comes with `decision: demand_mfa`. */
  interface MfaRequest {
    /** enable: multifactor.enable(provider); challenge / enroll: the factors */
    mode: "enable" | "challenge" | "enroll";
    /** multifactor.enable's provider: any, guardian, duo... */
    provider?: string | null;
    allow_remember_browser?: boolean;
    provider_options?: Record<string, unknown>;
    /** the factors ({type, options}) in order, the preferred first */
    factors?: Record<string, unknown>[];
    /** true: the user picks one of the factors */
    any?: boolean;
  }

  /** Facts about the HTTP request behind the sign-in. */
  interface RequestInfo {
    ip: string | null;
    user_agent: string | null;
    application_id: string | null;
    risk_score: number | null;
    [field: string]: unknown;
  }

  /** Scopes added to and removed from the access token (Auth0's `api.accessToken.addScope` and `removeScope`), in the order asked; a scope is in one list at most. */
  interface ScopeChanges {
    add?: string[];
    remove?: string[];
  }

  /** The user the sign-in is about, as the login service knows it. */
  interface User {
    id: string | null;
    username: string | null;
    email: string | null;
    email_verified: boolean | null;
    groups: string[];
    metadata: Record<string, unknown>;
    [field: string]: unknown;
  }

  /** A grant to give the user: a project and roles in it. */
  interface UserGrant {
    project_id: string;
    roles?: string[];
    [field: string]: unknown;
  }
}

// The sandbox's globals (docs/contract.md, "Actions programming model"); nothing else
// (no process, no timers, no DOM) exists in it.
declare namespace gatehook {
  interface Logger {
    log(...values: unknown[]): void;
    info(...values: unknown[]): void;
    debug(...values: unknown[]): void;
    warn(...values: unknown[]): void;
    error(...values: unknown[]): void;
  }
  interface HttpResponse {
    status: number;
    ok: boolean;
    headers: Record<string, string>;
    body: string;
    text(): string;
    json(): unknown;
  }
  interface FetchResponse {
    ok: boolean;
    status: number;
    url: string;
    headers: { get(name: string): string | null; has(name: string): boolean };
    text(): Promise<string>;
    json(): Promise<unknown>;
  }
  interface HttpOptions {
    method?: string;
    headers?: Record<string, string>;
    body?: string;
  }
}
declare const console: gatehook.Logger;
/** Only the action's allowed hosts are reachable; the call counts against its timeout. */
declare function fetch(url: string, init?: gatehook.HttpOptions): Promise<gatehook.FetchResponse>;
declare function require(module: "zitadel/http"): {
  /** Synchronous; only the action's allowed hosts are reachable. */
  fetch(url: string, options?: gatehook.HttpOptions): gatehook.HttpResponse;
};
declare function require(module: "zitadel/log"): gatehook.Logger;
declare function require(module: "zitadel/uuid"): { v1(): string; v4(): string };
