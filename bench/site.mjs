// The "internet" the egress rows reach, in a process of its own: an HTTPS server (certificate for
// bench.test, made by run.mjs at start) and a plain HTTP server, both on loopback. The gateway
// reaches them as bench.test, pinned to 127.0.0.1 by its egress.hosts.
//   GET /bytes?n=N   N bytes of body (from one reused buffer, each write waiting for drain)
//   GET /small       a short body
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';

const CHUNK = Buffer.alloc(256 * 1024, 'x');
const SMALL = Buffer.from('hello from bench.test\n');
// Forked by bench/run.mjs, so the IPC channel is always there; its messages are plain JSON.
const send = /** @type {NonNullable<typeof process.send>} */ (process.send).bind(process);

/** @type {http.RequestListener} */
function handle(req, res) {
  const url = new URL(req.url ?? '/', 'http://bench.test');
  if (url.pathname === '/bytes') {
    let left = Math.max(0, Number(url.searchParams.get('n')) || 0);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': left });
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, CHUNK.length);
        left -= n;
        if (!res.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) return void res.once('drain', pump);
      }
      res.end();
    };
    return pump();
  }
  res.writeHead(url.pathname === '/small' ? 200 : 404, { 'content-type': 'text/plain', 'content-length': SMALL.length });
  res.end(SMALL);
}

const secure = https.createServer(
  { key: readFileSync(String(process.env.BENCH_SITE_KEY)), cert: readFileSync(String(process.env.BENCH_SITE_CERT)), keepAliveTimeout: 60_000, noDelay: true },
  handle,
);
const plain = http.createServer({ keepAliveTimeout: 60_000, noDelay: true }, handle);
// Clients that hang up right after the handshake (the connect rows) are the workload, not errors.
secure.on('tlsClientError', () => undefined);
for (const server of [secure, plain]) server.on('clientError', (_error, socket) => socket.destroy());

await Promise.all([secure, plain].map((server) => new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)))));
const portOf = (/** @type {http.Server} */ server) => /** @type {import('node:net').AddressInfo} */ (server.address()).port;
send({ type: 'ready', httpsPort: portOf(secure), httpPort: portOf(plain) });
process.on('message', (/** @type {any} */ msg) => {
  if (msg.type === 'exit') process.exit(0);
});
process.on('disconnect', () => process.exit(0));
