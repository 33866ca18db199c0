// The shim in a real `--network=none` podman container, as the runner will use it: the host's gateway
// (here a stand-in HTTP server) listens on a Unix socket in a directory; that DIRECTORY is bind-mounted
// read-only at /run/gateway together with a copy of shim.mjs; the agent runs as uid 1000.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { skipUnless } from './support/requirements.ts';
import { buildTestImage, podmanAvailable, podmanRun, type Mount } from './support/podman.ts';

const SHIM = new URL('../shim/shim.mjs', import.meta.url).pathname;
const CONTAINER_DIR = new URL('../container', import.meta.url).pathname;

/** A script for `node -e` inside the container: one POST to /v1/messages through the shim. */
const FETCH_MESSAGES = `
  const r = await fetch(process.env.ANTHROPIC_BASE_URL + '/v1/messages?beta=true', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({ model: 'm', max_tokens: 1, messages: [] }),
  });
  console.log(JSON.stringify({ uid: process.getuid(), base: process.env.ANTHROPIC_BASE_URL, status: r.status, body: await r.json() }));
`;

test('the shim in a --network=none podman container', async (t) => {
  const skip = skipUnless(podmanAvailable(), 'podman is not installed (CI installs it: .ci/run)');
  if (skip) {
    t.skip(skip);
    return;
  }
  const { image, mounts: libMounts } = buildTestImage();

  // The gateway's per-key directory: socket + shim copy, readable (and the socket connectable) by uid 1000.
  const dir = mkdtempSync(join(tmpdir(), 'shim-podman-'));
  chmodSync(dir, 0o755);
  copyFileSync(SHIM, join(dir, 'shim.mjs'));
  chmodSync(join(dir, 'shim.mjs'), 0o644);
  const sock = join(dir, 'gateway.sock');

  let generation = 1;
  let onMessages: (() => void) | undefined;
  const handler: http.RequestListener = (req, res) => {
    if (req.method === 'HEAD' && req.url === '/api/hello') return void res.end();
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ generation, path: req.url, version: req.headers['anthropic-version'] }));
      onMessages?.();
    });
  };
  const listen = async (server: http.Server) => {
    server.listen(sock);
    await once(server, 'listening');
    chmodSync(sock, 0o666); // the container's uid 1000 must be allowed to connect
    return server;
  };
  let gateway = await listen(http.createServer(handler));
  // The same server on a host TCP port: reachable from the host, must not be from inside.
  const tcp = http.createServer(handler).listen(0, '127.0.0.1');
  await once(tcp, 'listening');
  const tcpPort = (tcp.address() as net.AddressInfo).port;

  t.after(async () => {
    gateway.closeAllConnections();
    tcp.closeAllConnections();
    await Promise.all([new Promise((r) => gateway.close(r)), new Promise((r) => tcp.close(r))]);
    rmSync(dir, { recursive: true, force: true });
  });

  const gatewayMount: Mount = { source: dir, target: '/run/gateway', readOnly: true };
  const run = (args: string[], extraMounts: Mount[] = []) =>
    podmanRun({ image, mounts: [...libMounts, gatewayMount, ...extraMounts], user: '1000', network: 'none', args, timeoutMs: 60_000 });

  await t.test('a client as uid 1000 reaches the gateway through the shim and the read-only socket mount', async () => {
    const script = `${FETCH_MESSAGES}
      try { require('fs').writeFileSync('/run/gateway/x', ''); console.log('mount is writable'); }
      catch (e) { console.log(e.code); }`;
    const r = await run(['node', '/run/gateway/shim.mjs', '--', 'node', '--input-type=commonjs', '-e', `(async () => { ${script} })()`]);
    assert.equal(r.code, 0, r.stderr);
    const [line, writeResult] = r.stdout.trim().split('\n');
    const seen = JSON.parse(line!);
    assert.equal(seen.uid, 1000);
    assert.equal(seen.base, 'http://127.0.0.1:9460');
    assert.equal(seen.status, 200);
    assert.deepEqual(seen.body, { generation: 1, path: '/v1/messages?beta=true', version: '2023-06-01' });
    assert.equal(writeResult, 'EROFS', 'the gateway directory must be mounted read-only');
    assert.match(r.stderr, /^shim: listening on 127\.0\.0\.1:9460 -> \/run\/gateway\/gateway\.sock$/m);
  });

  await t.test('a direct connection to the host is impossible from inside', async () => {
    // Control: the port answers on the host.
    const res = await fetch(`http://127.0.0.1:${tcpPort}/v1/messages`, { method: 'POST', body: '{}' });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    // Inside, 127.0.0.1 is the container's own loopback: nothing listens there on that port.
    const script = `require('net').connect(${tcpPort}, '127.0.0.1')
      .on('connect', () => { console.log('connected'); process.exit(1); })
      .on('error', (e) => { console.log(e.code); process.exit(0); });`;
    const r = await run(['node', '-e', script]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout.trim(), /^(ECONNREFUSED|ENETUNREACH)$/);
  });

  await t.test('--check inside reports the gateway answering and the network isolated', async () => {
    const r = await run(['node', '/run/gateway/shim.mjs', '--check']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(
      r.stdout,
      'gateway: ok HEAD /api/hello on /run/gateway/gateway.sock answered 200\n' + 'network: ok isolated (only loopback, no default route)\n',
    );
  });

  await t.test('a gateway restart (new socket, same path) is seen through the directory mount', async () => {
    // On the first /v1/messages the host "restarts" the gateway: the socket file is removed and a
    // new one created at the same path. A file mount would keep the old inode; a directory mount
    // shows the new socket, and the shim opens a new connection per request.
    onMessages = () => {
      onMessages = undefined;
      setImmediate(async () => {
        gateway.closeAllConnections();
        await new Promise((r) => gateway.close(r));
        generation = 2;
        gateway = await listen(http.createServer(handler));
      });
    };
    const script = `(async () => {
      const seen = [];
      for (const deadline = Date.now() + 20000; Date.now() < deadline; ) {
        const r = await fetch(process.env.ANTHROPIC_BASE_URL + '/v1/messages', { method: 'POST', body: '{}' });
        const body = await r.json();
        const g = r.status === 200 ? body.generation : r.status;
        if (seen[seen.length - 1] !== g) seen.push(g);
        if (g === 2) break;
        await new Promise((res) => setTimeout(res, 50));
      }
      console.log(JSON.stringify(seen));
    })()`;
    const r = await run(['node', '/run/gateway/shim.mjs', '--', 'node', '-e', script]);
    assert.equal(r.code, 0, r.stderr);
    const seen: unknown[] = JSON.parse(r.stdout);
    assert.equal(seen[0], 1);
    assert.equal(seen[seen.length - 1], 2, `generations seen: ${r.stdout}`);
    assert.ok(
      seen.every((g) => g === 1 || g === 2 || g === 502),
      `generations seen: ${r.stdout}`,
    );
  });

  await t.test('container/entrypoint.sh starts the mounted shim, waits for it, then execs the command', async () => {
    const r = await run(
      ['sh', '/opt/container/entrypoint.sh', 'node', '--input-type=commonjs', '-e', `(async () => { ${FETCH_MESSAGES} })()`],
      [{ source: CONTAINER_DIR, target: '/opt/container', readOnly: true }],
    );
    assert.equal(r.code, 0, r.stderr);
    const seen = JSON.parse(r.stdout);
    assert.equal(seen.status, 200);
    assert.equal(seen.base, 'http://127.0.0.1:9460');
    assert.equal(seen.body.path, '/v1/messages?beta=true');
    assert.match(r.stderr, /shim: listening on 127\.0\.0\.1:9460 -> \/run\/gateway\/gateway\.sock/);
  });
});
