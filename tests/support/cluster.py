"""The gate flow the cluster and failover tests run: one script that lets everyone in."""

from __future__ import annotations

__all__ = ["GATE_FILE", "SUBJECT"]

SUBJECT = "gatehook.v1.trigger.{}.external_authentication.post_authentication"
GATE_FILE = {  # one script that lets everyone in, in post_authentication
    "actions": [
        {
            "name": "gate",
            "source": "export async function execute(i) { return {kind: 'continue'}; }",
        }
    ],
    "flows": {"external_authentication": {"post_authentication": ["gate@latest"]}},
}
