// The floor for a Node gateway (issue 20): a node:http server on a Unix socket that swaps the
// credential header and pipes to an undici Pool, with no policy, metering or audit. What the gateway
// costs on top of this is its own work; what this costs is Node's. Forked by bench/run.mjs, which
// gets {type:'ready', socketPath} and stops it with {type:'exit'}. With BENCH_LISTEN_PORT it listens on
// that loopback TCP port instead, to be run by hand as another gateway (`run.mjs --other`).
import { mkdtempSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { Pool } from 'undici';

const upstream = new Pool(/** @type {string} */ (process.env.BENCH_UPSTREAM_URL), { connections: 256, pipelining: 1, keepAliveTimeout: 30_000 });
const realKey = /** @type {string} */ (process.env.BENCH_REAL_KEY);
const HOP = new Set(['host', 'connection', 'keep-alive', 'transfer-encoding', 'x-api-key', 'authorization']);

const server = http.createServer({ noDelay: true, keepAliveTimeout: 60_000 }, (req, res) => {
  /** @type {Record<string, string | string[]>} */
  const headers = { 'x-api-key': realKey };
  for (const [name, value] of Object.entries(req.headers)) if (value !== undefined && !HOP.has(name)) headers[name] = value;
  upstream
    .stream({ path: /** @type {string} */ (req.url), method: /** @type {any} */ (req.method), headers, body: req }, ({ statusCode, headers: back }) => {
      delete back.connection;
      delete back['keep-alive'];
      res.writeHead(statusCode, /** @type {any} */ (back));
      return res;
    })
    .catch(() => res.destroy());
});
const port = Number(process.env.BENCH_LISTEN_PORT ?? 0);
if (port) server.listen(port, '127.0.0.1', () => console.error(`bare relay: listening on 127.0.0.1:${port}`));
else {
  const socketPath = path.join(mkdtempSync('/tmp/gwbare-'), 'relay.sock');
  server.listen(socketPath, () => process.send?.({ type: 'ready', socketPath }));
}
process.on('message', (/** @type {any} */ msg) => {
  if (msg.type === 'exit') process.exit(0);
});
process.on('disconnect', () => process.exit(0));
