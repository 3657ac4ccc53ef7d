"""What the tests share, by role: the in-process worker and the session's servers
(``workers``), a tenant's actions and flows set up, triggered and audited (``tenants``),
the CLI and worker processes (``processes``), the console served (``console``), the
cluster's gate flow (``cluster``), NATS roles as deploy/nats.conf gives them (``roles``),
Ory and Keycloak servers (``ory``, ``keycloak``). Fixtures live in tests/conftest.py and
use these."""
