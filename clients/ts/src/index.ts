// gatehook client for login services on Node: ask a gatehook worker for a decision at a
// trigger point over NATS (docs/contract.md). Types follow schemas/trigger-request.json and
// schemas/trigger-reply.json. A call has a deadline; on a timeout, no responders, or a
// retryable "unavailable" reply it is sent once more with the same request_id, so the worker
// decides it once (same decision, one set of audit events).
import { randomBytes } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";

export interface User {
  id?: string;
  username?: string;
  email?: string;
  email_verified?: boolean;
  groups?: string[];
  metadata?: Record<string, unknown>;
  [extra: string]: unknown;
}

export interface RequestInfo {
  ip?: string;
  user_agent?: string;
  application_id?: string;
  risk_score?: number;
  [extra: string]: unknown;
}

export interface TriggerRequest {
  request_id?: string;
  signin_id?: string;
  user?: User;
  request?: RequestInfo;
  state?: Record<string, unknown>;
  context?: Record<string, unknown>;
  deadline_ms?: number;
}

export type Decision = "continue" | "block" | "demand_mfa" | "redirect";

export interface ActionTrace {
  name: string;
  version: string;
  outcome: Decision | "error" | "skipped" | "disabled";
  duration_ms: number;
  error: string | null;
}

export interface ReplyError {
  code: "bad_request" | "unavailable" | "internal";
  message: string;
  retryable: boolean;
}

export interface TriggerReply {
  request_id: string | null;
  decision: Decision | null;
  reason: string | null;
  message: string | null;
  redirect_url: string | null;
  claims: Record<string, unknown>;
  user_updates: Record<string, unknown>;
  metadata: { key: string; value: unknown }[];
  saml_attributes: Record<string, string[]>;
  user_grants: { project_id: string; roles: string[]; [extra: string]: unknown }[];
  flow_revision: number | null;
  actions: ActionTrace[];
  error: ReplyError | null;
  /** MongoDB did not store this new sign-in's pin in time: decided on cached revisions. */
  pin_deferred?: boolean;
}

/** The worker refused the request (it is not retried). */
export class BadRequest extends Error {}

/** No decision could be had, after the retry. */
export class Unavailable extends Error {}

/**
 * The reply prefix of a login service's NATS user, `_INBOX.<user>`: the one gatehook's
 * deploy/nats.conf lets it read. `connect({servers, inboxPrefix: inboxPrefix("acme-login")})`.
 */
export function inboxPrefix(user: string): string {
  return `_INBOX.${user}`;
}

export interface ClientOptions {
  /** Per attempt, in milliseconds (default 2000). */
  timeoutMs?: number;
  /** Retry once with the same request_id (default true). */
  retry?: boolean;
  /** The trigger subjects' prefix (tests point it elsewhere). */
  prefix?: string;
}

export class GatehookClient {
  private readonly timeoutMs: number;
  private readonly retry: boolean;
  private readonly prefix: string;

  constructor(
    private readonly nc: NatsConnection,
    options: ClientOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? 2000;
    this.retry = options.retry ?? true;
    this.prefix = options.prefix ?? "gatehook.v1.trigger";
  }

  /** Ask for the decision at tenant's flowType.trigger; `deadlineMs` bounds the whole call. */
  async trigger(
    tenant: string,
    flowType: string,
    trigger: string,
    request: TriggerRequest,
    deadlineMs?: number,
  ): Promise<TriggerReply> {
    const body = { ...request, request_id: request.request_id ?? randomBytes(16).toString("hex") };
    const payload = JSON.stringify(body);
    const subject = `${this.prefix}.${tenant}.${flowType}.${trigger}`;
    const end = deadlineMs === undefined ? Infinity : Date.now() + deadlineMs;
    let last: unknown;
    for (let attempt = 0; attempt < (this.retry ? 2 : 1); attempt++) {
      const left = end - Date.now();
      if (left <= 0) break;
      let reply: TriggerReply;
      try {
        const msg = await this.nc.request(subject, payload, {
          timeout: Math.min(this.timeoutMs, left),
        });
        reply = msg.json<TriggerReply>();
      } catch (err) {
        last = err; // a timeout or no responders: once more, same request_id
        continue;
      }
      if (reply.error === null) return reply;
      if (reply.error.code === "bad_request") throw new BadRequest(reply.error.message);
      last = new Unavailable(reply.error.message);
      if (!reply.error.retryable) throw last;
    }
    throw last instanceof Unavailable
      ? last
      : new Unavailable(`no decision: ${last instanceof Error ? last.message : "deadline passed"}`);
  }
}
