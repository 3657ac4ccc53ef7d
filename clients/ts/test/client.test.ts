// Runs against a real worker: tests/e2e/test_clients.py starts one, sets up the tenant in
// GATEHOOK_TEST_TENANT (a flow blocking evil.example) and runs `npm test` here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { BadRequest, GatehookClient, Unavailable, inboxPrefix } from "../src/index.js";

const url = process.env.GATEHOOK_NATS_URL;
const tenant = process.env.GATEHOOK_TEST_TENANT;
if (!url || !tenant) throw new Error("run through tests/e2e/test_clients.py");
const PA = ["external_authentication", "post_authentication"] as const;

test("decisions from a real worker", async () => {
  // replies under the login service's own prefix (what deploy/nats.conf lets it read)
  const nc = await connect({ servers: url, inboxPrefix: inboxPrefix("acme-login") });
  try {
    const client = new GatehookClient(nc, { timeoutMs: 5000 });
    const ok = await client.trigger(tenant, ...PA, { user: { id: "u1", email: "ann@acme.com" } });
    assert.equal(ok.decision, "continue");
    assert.deepEqual(ok.claims, { via: "ts" });
    assert.equal(ok.actions[0].outcome, "continue");
    const blocked = await client.trigger(tenant, ...PA, { user: { email: "eve@evil.example" } });
    assert.equal(blocked.decision, "block");
    assert.equal(blocked.reason, "domain");
    await assert.rejects(
      client.trigger(tenant, "external_authentication", "no_such_trigger", {}),
      BadRequest,
    );
  } finally {
    await nc.close();
  }
});

test("a retry keeps the request_id; the deadline bounds the call", async () => {
  const nc = await connect({ servers: url });
  try {
    const seen: string[] = [];
    const sub = nc.subscribe("tstest.trigger.>", {
      callback: (_err, msg) => {
        seen.push(msg.string());
        if (seen.length === 2) {
          msg.respond('{"request_id":"r","decision":"continue","claims":{},"actions":[],"error":null}');
        }
      },
    });
    const client = new GatehookClient(nc, { timeoutMs: 300, prefix: "tstest.trigger" });
    const reply = await client.trigger("t", ...PA, { user: { id: "u1" } });
    assert.equal(reply.decision, "continue");
    assert.equal(seen.length, 2);
    assert.equal(seen[0], seen[1]);
    sub.unsubscribe();
    const silent = nc.subscribe("tstest2.trigger.>", { callback: () => {} });
    const slow = new GatehookClient(nc, { timeoutMs: 5000, prefix: "tstest2.trigger" });
    const started = Date.now();
    await assert.rejects(slow.trigger("t", ...PA, {}, 200), Unavailable);
    assert.ok(Date.now() - started < 2000);
    silent.unsubscribe();
  } finally {
    await nc.close();
  }
});
