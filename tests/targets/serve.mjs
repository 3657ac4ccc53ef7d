// Serves a Cloudflare-Workers-style module (`export default { async fetch(req, env) }`) with
// Node 20's http and the Workers globals Node already has (Request, Response, URL,
// TextEncoder, crypto.subtle), on 127.0.0.1 and a free port, keep-alive on.
// Usage: SIGNING_KEY=... node serve.mjs worker.mjs   (prints {"port": N} when listening)
import http from 'node:http';
import { pathToFileURL } from 'node:url';

const worker = (await import(pathToFileURL(process.argv[2]).href)).default;
const env = { SIGNING_KEY: process.env.SIGNING_KEY ?? '' };
const skip = new Set(['host', 'connection', 'content-length', 'transfer-encoding', 'keep-alive']);

const server = http.createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const headers = Object.entries(req.headers).filter(([k]) => !skip.has(k));
  const request = new Request(`http://127.0.0.1${req.url}`, {
    method: req.method,
    headers,
    body: req.method === 'GET' || req.method === 'HEAD' ? undefined : Buffer.concat(chunks),
  });
  let response;
  try {
    response = await worker.fetch(request, env, { waitUntil() {} });
  } catch (err) {
    response = new Response(String(err), { status: 500 });
  }
  const body = Buffer.from(await response.arrayBuffer());
  res.writeHead(response.status, Object.fromEntries(response.headers));
  res.end(body);
});
server.keepAliveTimeout = 30_000;
server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
