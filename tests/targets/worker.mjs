// A target as tenants write them for ZITADEL Actions v2 (Cloudflare Workers style): it checks
// the ZITADEL-Signature header itself with crypto.subtle, then answers by path.
let healthy = false; // for the circuit-breaker test: /flaky fails until told otherwise
let calls = 0;

export default {
  async fetch(req, env) {
    const url = new URL(req.url);
    if (req.method === 'GET' && url.pathname === '/control') {
      if (url.searchParams.has('healthy')) healthy = url.searchParams.get('healthy') === '1';
      return json({ healthy, calls });
    }
    if (req.method !== 'POST') return new Response('Not found', { status: 404 });
    calls += 1;
    const header = req.headers.get('zitadel-signature');
    if (!header) return new Response('Missing signature', { status: 400 });
    const raw = await req.text();
    if (!(await verify(header, raw, env.SIGNING_KEY))) {
      return new Response('Invalid signature', { status: 400 });
    }
    const body = JSON.parse(raw);
    switch (url.pathname) {
      case '/claims':
        return json({
          append_claims: [
            { key: 'group', value: 'ADMIN' },
            { key: 'tier', value: { level: 2 } },
            { key: 'urn:zitadel:iam:org:id', value: 'forged' },
          ],
        });
      case '/metadata':
        return json({ set_user_metadata: [{ key: 'dept', value: btoa('Engineering') }] });
      case '/log':
        return json({ append_log_claims: ['checked by the target', 'all good'] });
      case '/saml':
        return json({
          append_attribute: [
            {
              name: 'department',
              name_format: 'urn:oasis:names:tc:SAML:2.0:attrname-format:basic',
              value: ['Engineering'],
            },
          ],
        });
      case '/forbid':
        return json({ forwardedStatusCode: 403, forwardedErrorMessage: 'not from this network' });
      case '/echo':
        return new Response(raw, { headers: { 'Content-Type': 'application/json' } });
      case '/inspect':
        return json({ append_claims: [{ key: 'seen', value: body }] });
      case '/gatehook':
        return json(
          body.user.email.endsWith('@acme.com')
            ? { kind: 'continue', claims: { via: 'target', trigger: body.trigger } }
            : { kind: 'block', reason: 'domain', message: 'acme only' },
        );
      case '/slow':
        await new Promise((resolve) => setTimeout(resolve, 3000));
        return json({});
      case '/big':
        return json({ append_claims: [{ key: 'pad', value: 'x'.repeat(2 * 1024 * 1024) }] });
      case '/redirect':
        return new Response(null, { status: 302, headers: { Location: '/claims' } });
      case '/flaky':
        return healthy ? json({ append_claims: [{ key: 'ok', value: true }] }) : json({}, 503);
      default:
        return new Response('Not found', { status: 404 });
    }
  },
};

async function verify(header, raw, key) {
  const parts = Object.fromEntries(header.split(',').map((p) => p.split('=')));
  if (!parts.t || !parts.v1 || !key) return false;
  const enc = new TextEncoder();
  const hmacKey = await crypto.subtle.importKey(
    'raw', enc.encode(key), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign'],
  );
  const mac = await crypto.subtle.sign('HMAC', hmacKey, enc.encode(`${parts.t}.${raw}`));
  const hex = [...new Uint8Array(mac)].map((b) => b.toString(16).padStart(2, '0')).join('');
  const age = Math.abs(Date.now() / 1000 - Number(parts.t));
  return hex === parts.v1 && age < 300;
}

function json(obj, status = 200) {
  return new Response(JSON.stringify(obj), {
    status,
    headers: { 'Content-Type': 'application/json' },
  });
}
