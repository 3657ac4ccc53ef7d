"""The one place that reads the environment: ``GATEHOOK_*`` variables into settings.

Top-level fields map to ``GATEHOOK_<FIELD>`` (``GATEHOOK_NATS_URL``); nested models use
``__`` (``GATEHOOK_SANDBOX__POOL_SIZE=4``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gatehook.errors import ConfigError

__all__ = [
    "AuditSettings",
    "CacheSettings",
    "ConsoleSettings",
    "GatewaySettings",
    "MetricsSettings",
    "MongoSettings",
    "NatsSettings",
    "OidcSettings",
    "RolloutSettings",
    "SandboxSettings",
    "SecretsSettings",
    "Settings",
    "TargetSettings",
    "WarmSettings",
    "WebhookSettings",
]


class SandboxSettings(BaseModel):
    """Limits of the JS/TS sandbox; see ``gatehook.sandbox``."""

    isolation: Literal["process", "worker"] = Field(
        default="process",
        description="where scripts run: 'process' in the supervised sandbox children; 'worker'"
        " in the worker process itself (scripts with allowed_hosts still in children); see"
        " docs/sandbox.md",
    )
    context_memory_mb: int = Field(
        default=32, ge=1, le=1024, description="heap limit of one script context (the engine's)"
    )
    stack_kb: int = Field(
        default=512, ge=64, le=4096, description="stack limit of one script context (the engine's)"
    )
    max_jobs: int = Field(
        default=100_000, ge=100, description="promise jobs one call may run (endless chains end)"
    )
    slice_ms: float = Field(
        default=5.0,
        ge=0.1,
        le=50,
        description="isolation 'worker': how long a script may hold the event loop before it"
        " runs again (from the start, in a fresh context) in the sandbox children",
    )
    pool_size: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=64,
        description="sandbox child processes (fewer lowers the tail on a machine shared with"
        " nats-server; more isolates tenants' slow scripts)",
        json_schema_extra={"doc_default": "the CPU count"},
    )
    memory_mb: int = Field(
        default=512, ge=64, description="address-space cap of each sandbox child (RLIMIT_AS)"
    )
    interpreters_per_child: int = Field(
        default=4096, ge=1, description="warm interpreters a child holds at most (by count)"
    )
    interpreter_memory_mb: int = Field(
        default=160,
        ge=8,
        description="memory a child's warm interpreters may hold (least recently used dropped"
        " past it); keep it well under memory_mb",
    )
    default_timeout_ms: int = Field(
        default=1000, ge=1, le=30_000, description="an action's timeout unless it sets one"
    )
    max_input_bytes: int = Field(
        default=256 * 1024, ge=1024, description="an execution's input at most"
    )
    max_output_bytes: int = Field(
        default=256 * 1024, ge=1024, description="an execution's result (larger: invalid_result)"
    )
    max_log_bytes: int = Field(
        default=8 * 1024, ge=0, description="an execution's logs (truncated with a marker)"
    )
    max_script_bytes: int = Field(
        default=256 * 1024, ge=1024, description="a script's source (larger: refused at publish)"
    )
    http_max_response_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="a response body zitadel/http reads at most"
    )
    http_allow_private: bool = Field(
        default=False, description="let zitadel/http reach private addresses (tests only)"
    )
    grace_ms: int = Field(
        default=40,
        ge=5,
        description="a script call is answered with timeout by its deadline plus this, whatever"
        " the script does",
    )
    per_tenant_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="floor of a tenant's sandbox calls in flight (default: pool size - 1, >= 1);"
        " a tenant with fast calls grows past it, a slow one falls back to it",
    )


class WebhookSettings(BaseModel):
    """Outbound deliveries of the webhook-emit and slack-notify templates."""

    allow_private: bool = Field(
        default=False, description="let webhook templates reach private addresses"
    )
    queue_size: int = Field(
        default=1000, ge=1, description="background deliveries waiting (more are dropped, counted)"
    )
    senders: int = Field(default=4, ge=1, le=64, description="deliveries at once per worker")
    max_attempts: int = Field(default=4, ge=1, le=20, description="tries of one delivery")
    backoff_s: float = Field(default=0.5, gt=0, description="first wait between tries (doubling)")
    timeout_ms: int = Field(default=3000, ge=10, description="one try's timeout")
    max_response_bytes: int = Field(
        default=64 * 1024, ge=1024, description="a response body read at most"
    )
    ca_file: str | None = Field(default=None, description="PEM file of extra trusted CAs")


class TargetSettings(BaseModel):
    """Calls to target actions' HTTP endpoints (``transport.targets``)."""

    allow_private: bool = Field(
        default=False, description="let targets reach private addresses (tests, on-premise)"
    )
    max_response_bytes: int = Field(
        default=256 * 1024, ge=1024, description="a target's answer (larger: the call fails)"
    )
    connections: int = Field(default=256, ge=1, description="pooled connections per worker")
    connections_per_host: int = Field(
        default=32, ge=1, description="pooled connections per endpoint host"
    )
    breaker_failures: int = Field(default=5, ge=1, description="consecutive failures to open")
    breaker_cooldown_s: float = Field(
        default=10.0, gt=0, description="how long an open breaker skips calls before a probe"
    )
    async_in_flight: int = Field(
        default=256, ge=1, description="async targets in flight; more are dropped and counted"
    )
    ca_file: str | None = Field(default=None, description="PEM file of extra trusted CAs")


class RolloutSettings(BaseModel):
    """Canary counting, shadow runs and recordings for replay (``service.rollouts``)."""

    recordings_max_age_s: float = Field(
        default=7 * 24 * 3600, gt=0, description="how long recorded trigger inputs are kept"
    )

    report_s: float = Field(
        default=0.25, gt=0, description="how often a worker reports counts and checks canaries"
    )
    shadow_in_flight: int = Field(
        default=8, ge=1, description="shadow runs at once per worker; more are dropped, counted"
    )


class MetricsSettings(BaseModel):
    """The Prometheus/health HTTP port (off unless a port is given)."""

    port: int | None = Field(
        default=None, ge=0, le=65535, description="serve /metrics and /healthz on this port"
    )
    host: str = Field(default="127.0.0.1", description="the address the port listens on")
    tenant_labels: bool = Field(
        default=False, description="label request metrics by tenant (cardinality: tenants)"
    )


class OidcSettings(BaseModel):
    """Console sign-in with OpenID Connect (authorization code + PKCE); off without an issuer.

    The operator's name comes from the ID token's ``name_claim``; their roles per tenant from
    ``roles_claim``: an object ``{"acme": "editor", "globex": "viewer"}`` or a list
    ``["acme:editor", "*:viewer"]`` (``*``: every tenant).
    """

    issuer: str | None = Field(default=None, description="https://login.example.com")
    client_id: str = Field(default="gatehook-console", description="the console's client")
    client_secret: SecretStr | None = Field(default=None, description="unset: a public client")
    redirect_url: str | None = Field(
        default=None, description="the console's /oidc/callback as the browser reaches it"
    )
    scopes: str = Field(default="openid profile", description="the scopes asked for")
    name_claim: str = Field(
        default="preferred_username", description="the ID token claim naming the operator"
    )
    roles_claim: str = Field(
        default="gatehook_roles", description="the claim with the operator's roles per tenant"
    )
    token_sign_in: bool = Field(
        default=True, description="also offer the shared token (off: OpenID Connect only)"
    )


class ConsoleSettings(BaseModel):
    """The web console (``gatehook console``): where it listens and who may use it.

    Operators sign in with one shared ``token``. Without a token the console refuses to start
    on a non-loopback address; on loopback it makes a random one and prints it.
    """

    host: str = Field(default="127.0.0.1", description="where gatehook console listens")
    port: int = Field(default=8089, ge=0, le=65535, description="its port")
    token: SecretStr | None = Field(
        default=None,
        description="the shared operator token, at least 16 characters (unset: a random one,"
        " loopback only)",
    )
    tenants: list[str] = Field(default_factory=list, description="tenants offered by the picker")
    session_ttl_s: float = Field(
        default=12 * 3600, gt=0, description="how long a console session lasts"
    )
    secure_cookie: bool = Field(default=False, description="set when served behind HTTPS")
    oidc: OidcSettings = Field(default_factory=lambda: OidcSettings())
    editor_assets: Path | None = Field(
        default=None,
        description="the Monaco editor's min/vs folder (default: the one scripts/bootstrap"
        " installs in src/gatehook/console/editor); missing: scripts in plain text areas",
    )


class CacheSettings(BaseModel):
    """``GATEHOOK_CACHE__*``: how much each worker keeps of the stored flows (entries; each
    cache drops its least recently used past its size)."""

    tenants: int = Field(default=100_000, ge=1, description="tenants' current revisions")
    flow_revisions: int = Field(default=20_000, ge=1, description="flow revisions")
    action_versions: int = Field(default=40_000, ge=1, description="versions (and configs)")
    signin_pins: int = Field(
        default=100_000, ge=1, description="sign-ins' pinned revisions (~300 bytes each)"
    )


class WarmSettings(BaseModel):
    """``GATEHOOK_WARM__*``: what a starting worker loads before it takes requests."""

    tenants: int = Field(
        default=5000, ge=0, description="the most recently active tenants to load (0: none)"
    )
    within_s: float = Field(default=3600.0, gt=0, description="active within this long")
    budget_s: float = Field(default=20.0, gt=0, description="give up warming after this long")
    concurrency: int = Field(default=16, ge=1, le=256, description="storage reads at once")
    report_s: float = Field(
        default=60.0, gt=0, description="how often a worker records its active tenants"
    )


class AuditSettings(BaseModel):
    """The JetStream streams that receive audit events and decision records."""

    stream: str = Field(default="GATEHOOK_AUDIT", description="the audit stream's name")
    max_age_s: float = Field(
        default=30 * 24 * 3600, description="how long the audit stream keeps events"
    )
    max_bytes: int = Field(default=-1, description="size limit of the stream (-1: none)")
    duplicate_window_s: float = Field(
        default=600.0,
        gt=0,
        description="how long the streams deduplicate message ids: a retried request_id is"
        " answered with its first reply for this long",
    )
    replicas: int = Field(
        default=1, description="replicas of every stream gatehook creates (3 on a cluster)"
    )
    lanes: int = Field(
        default=0,
        ge=0,
        le=16,
        description="streams a decision's record is written to, each led by another node, so"
        " that a node's death costs a failover, not a leader election (docs/deployment.md);"
        " 0: one per replica (1 on a single node, 3 with 3 replicas)",
    )
    failover_ms: int = Field(
        default=250,
        ge=20,
        le=5000,
        description="with several lanes: a record not acknowledged within this long is sent"
        " to the next lane",
    )
    lane_max_age_s: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="how long a lane's audit stream keeps events (the audit stream sources"
        " them within milliseconds: this is the longest outage of its leader that loses"
        " nothing)",
    )
    rebalance_s: float = Field(
        default=30.0,
        gt=0,
        description="how often a worker checks that each lane's leader sits on its own"
        " node, and moves it there by step-down (every 2 s while one does not)",
    )
    placement_wait_s: float = Field(
        default=20.0,
        ge=0,
        description="with several lanes: how long a starting worker places the lanes' leaders,"
        " one per node, before it serves (it serves anyway after that, and logs it)",
    )

    @model_validator(mode="after")
    def _lanes_follow_the_replicas(self) -> AuditSettings:
        # one lane per replica unless set: a replicated stream's leader can die, and with
        # one lane that pauses every decision until the cluster elects another (4-9 s)
        if self.lanes == 0:
            self.lanes = max(1, min(16, self.replicas))
        return self


class NatsSettings(BaseModel):
    """TLS and credentials of every NATS connection gatehook makes (the URL in
    ``GATEHOOK_NATS_URL`` may carry ``user:password@`` too; these take precedence)."""

    tls_ca_file: Path | None = Field(default=None, description="PEM CA the server is checked with")
    tls_cert_file: Path | None = Field(default=None, description="PEM client certificate")
    tls_key_file: Path | None = Field(default=None, description="PEM key of the client cert")
    tls_hostname: str | None = Field(default=None, description="the name the cert must carry")
    creds_file: Path | None = Field(default=None, description="a .creds file (JWT + nkey)")
    user: str | None = Field(default=None, description="NATS user (or in the URL)")
    password: SecretStr | None = Field(default=None, description="its password")
    principal: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_\-]+$",
        description="the NATS user's name in management subjects, when the user is not in"
        " the URL or GATEHOOK_NATS__USER (a .creds file)",
    )
    inbox_prefix: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$",
        description="the prefix of this connection's reply subjects (default: _INBOX.<user>"
        " with a user here or in the URL, else _INBOX); deploy/nats.conf lets each role read"
        " only its own",
    )
    connect_timeout_s: int = Field(
        default=2, ge=1, le=60, description="how long a worker's connection attempt may take"
    )

    @property
    def tls(self) -> bool:
        """Whether TLS is configured here (a ``tls://`` URL also turns it on)."""
        return any((self.tls_ca_file, self.tls_cert_file, self.tls_hostname))


class MongoSettings(BaseModel):
    """TLS of the MongoDB connection (options of the URL work too)."""

    tls: bool = Field(default=False, description="TLS to MongoDB")
    tls_ca_file: Path | None = Field(default=None, description="PEM CA the server is checked with")
    tls_cert_key_file: Path | None = Field(
        default=None, description="PEM client certificate and key, one file"
    )
    tls_allow_invalid_hostnames: bool = Field(
        default=False, description="accept a server certificate issued for another host name"
    )


class GatewaySettings(BaseModel):
    """``gatehook http``: the HTTP front identity providers call (ZITADEL, Kratos, Okta,
    Hydra)."""

    host: str = Field(default="127.0.0.1", description="where gatehook http listens")
    port: int = Field(default=8090, ge=0, le=65535, description="its port")
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, description="larger bodies: 413")
    zitadel_deadline_ms: int = Field(
        default=4500, ge=50, le=60_000, description="answer ZITADEL by then (its target timeout)"
    )
    kratos_deadline_ms: int = Field(
        default=2500, ge=50, le=60_000, description="answer Ory Kratos by then"
    )
    okta_deadline_ms: int = Field(
        default=2500, ge=50, le=60_000, description="Okta waits 3 s for an inline hook"
    )
    hydra_deadline_ms: int = Field(
        default=2500, ge=50, le=60_000, description="answer Ory Hydra's token hook by then"
    )
    keys_ttl_s: float = Field(
        default=30.0, gt=0, description="how long a tenant's provider secrets are cached"
    )
    concurrency: int = Field(
        default=512,
        ge=1,
        description="provider calls in flight (admitted per tenant as GATEHOOK_ADMISSION__* says)",
    )
    idle_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="a connection without a complete request this long is closed (idle, or"
        " headers trickled); a body must arrive by the route's deadline",
    )
    refused_audit_per_s: float = Field(
        default=20.0, gt=0, description="refusals audited per second at most (the rest counted)"
    )
    tls_cert_file: Path | None = Field(default=None, description="PEM certificate: serve HTTPS")
    tls_key_file: Path | None = Field(default=None, description="PEM key of the certificate")


class AdmissionSettings(BaseModel):
    """Admission per tenant, before the shared limit (``service.admission``): of a worker's
    ``GATEHOOK_CONCURRENCY`` slots, and of the gateway's ``GATEHOOK_GATEWAY__CONCURRENCY``,
    each tenant with work in flight may hold its fair share (the slots split by weight between
    the tenants with work in flight), at most ``max_share`` of them when alone; a tenant over
    its share is refused at once (retryable), the others keep being served. A tenant whose
    requests take more than its share of the worker's time (their steps on the event loop)
    while the loop is busy has its limit cut, so that the others' requests do not wait behind
    its many."""

    max_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="the part of the slots one tenant may hold when no other has work in flight",
    )
    floor: int = Field(
        default=4,
        ge=1,
        description="requests a tenant is always admitted (into a reserve past the shared limit"
        " when others have filled it)",
    )
    weights: dict[str, float] = Field(
        default_factory=dict,
        description='tenant -> weight of its share (default 1), e.g. {"acme": 2}',
    )
    busy: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="while requests take at least this part of the event loop's time, a tenant"
        " taking more than its share of it has its limit cut to a quarter each window (down"
        " to the floor; doubled back when not); 1: never",
    )
    window_ms: int = Field(
        default=100, ge=10, le=10_000, description="how often the shares of time are weighed"
    )
    refusal_delay_ms: int = Field(
        default=100,
        ge=0,
        le=5000,
        description="a refused request is answered after this long (0: at once): a flooder"
        " that retries at once cannot turn refusals into a storm that takes the CPU others"
        " need",
    )

    @field_validator("weights")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [t for t, w in value.items() if not w > 0]
        if bad:
            raise ValueError(f"weights must be above 0 (not for {', '.join(bad[:5])})")
        return value


class SecretsSettings(BaseModel):
    """The key that seals tenants' secrets at rest (AES-256-GCM, ``gatehook.security``).

    Without a key, secrets are stored in clear (a warning at start); once values are sealed,
    a worker refuses to start without the key that sealed them.
    """

    key: SecretStr | None = Field(default=None, description="base64 of 32 random bytes")
    key_file: Path | None = Field(default=None, description="a file holding the key (base64)")
    old_keys: list[SecretStr] = Field(
        default_factory=list, description="earlier keys, to open values until rotated"
    )

    def current_key(self) -> str | None:
        """The key's text, from ``key`` or else ``key_file``."""
        if self.key is not None:
            return self.key.get_secret_value()
        if self.key_file is not None:
            try:
                return self.key_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read GATEHOOK_SECRETS__KEY_FILE: {exc}") from None
        return None


class Settings(BaseSettings):
    """Everything gatehook can be configured with; built once and passed down."""

    model_config = SettingsConfigDict(
        env_prefix="GATEHOOK_", env_nested_delimiter="__", extra="ignore"
    )

    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        description="a NATS server, or a comma-separated list of a cluster's servers",
    )
    queue_group: str = Field(default="gatehook-workers", description="the workers' queue group")
    mongodb_url: str = Field(
        default="mongodb://127.0.0.1:27017", description="MongoDB (or FerretDB), a replica set's"
    )
    mongodb_database: str = Field(default="gatehook", description="the database's name")
    mongodb_timeout_ms: int = Field(
        default=2000,
        ge=50,
        description="server selection and connect timeout (fail fast: unavailable replies)",
    )
    nats: NatsSettings = NatsSettings()
    mongodb: MongoSettings = MongoSettings()
    sandbox: SandboxSettings = SandboxSettings()
    audit: AuditSettings = AuditSettings()
    webhooks: WebhookSettings = WebhookSettings()
    targets: TargetSettings = TargetSettings()
    rollouts: RolloutSettings = RolloutSettings()
    metrics: MetricsSettings = MetricsSettings()
    console: ConsoleSettings = ConsoleSettings()
    secrets: SecretsSettings = SecretsSettings()
    gateway: GatewaySettings = GatewaySettings()
    cache: CacheSettings = CacheSettings()
    warm: WarmSettings = WarmSettings()
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object a line, with request_id, tenant, ..."
    )
    worker_name: str = Field(
        default_factory=lambda: f"worker-{os.getpid()}",
        description="the actor of execution events; worker i of --processes adds -<i>",
        json_schema_extra={"doc_default": "worker-<pid>"},
    )
    concurrency: int = Field(default=256, ge=1, description="trigger requests in flight per worker")
    admission: AdmissionSettings = AdmissionSettings()
    trigger_transport: Literal["lean", "faststream"] = Field(
        default="lean", description="raw nats-py subscription (lean) or a FastStream subscriber"
    )
    gc_tuning: bool = Field(
        default=True,
        description="freeze the start-up heap and collect young objects less often"
        " (gatehook.process.loop); off only to compare",
    )
    request_budget_ms: int = Field(
        default=2000,
        ge=10,
        le=60_000,
        description="a reply is sent within this (a request may carry a shorter deadline_ms)",
    )
    trusted_principals: list[str] = Field(
        default_factory=lambda: ["gatehook-console"],
        description="NATS users whose management calls name the operator they act for (the"
        " console); anyone else's changes are recorded under their own user",
    )
    drain_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="on SIGTERM, how long in-flight requests get to finish (keep the"
        " orchestrator's grace period longer)",
    )
    pin_ttl_s: float = Field(
        default=3600.0, gt=0, description="how long a sign-in stays on its flow revisions"
    )
    pin_wait_ms: int = Field(
        default=500,
        ge=1,
        description="how long a new sign-in waits for MongoDB to store its pin (at most half"
        " its remaining budget) before it is decided on the cached revisions, its pin written"
        " later",
    )
    deferred_pins: int = Field(
        default=10_000, ge=0, description="pins a worker holds for MongoDB's return (0: none)"
    )
    flow_cache_ttl_s: float = Field(
        default=300.0,
        gt=0,
        description="safety net: a tenant's current revisions are reloaded this long after"
        " they were loaded even if no change broadcast came",
    )
    cold_reads: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="storage reads at once for requests whose flows are not cached",
    )
    max_payload_bytes: int = Field(
        default=256 * 1024, ge=1024, description="larger trigger requests get bad_request"
    )

    @property
    def nats_servers(self) -> list[str]:
        """``nats_url`` as the list of servers it names."""
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    @property
    def nats_principal(self) -> str | None:
        """The name this process's NATS user goes by in subjects: ``GATEHOOK_NATS__PRINCIPAL``,
        else the user of ``GATEHOOK_NATS__USER`` or of the first URL (None: unknown)."""
        if self.nats.principal:
            return self.nats.principal
        user = self.nats.user
        if user is None and self.nats_servers:
            user = urlsplit(self.nats_servers[0]).username
        if user and all(c.isalnum() or c in "-_" for c in user):
            return user
        return None

    @property
    def nats_inbox_prefix(self) -> str:
        """Where replies to this process's requests go: ``GATEHOOK_NATS__INBOX_PREFIX``, else
        ``_INBOX.<user>`` (the user of ``GATEHOOK_NATS__USER`` or of the first URL), else
        ``_INBOX``. Each role's NATS user may subscribe to its own prefix only, so no other
        client can read the replies it gets."""
        if self.nats.inbox_prefix:
            return self.nats.inbox_prefix
        user = self.nats_principal
        return f"_INBOX.{user}" if user else "_INBOX"

    test_nats_url: str | None = Field(
        default=None, description="tests/dev: use this NATS server instead of starting one"
    )
    test_mongodb_url: str | None = Field(
        default=None, description="tests/dev: use this MongoDB instead of starting a server"
    )
