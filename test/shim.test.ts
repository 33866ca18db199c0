// The in-container shim against a real HTTP server on a real Unix socket (standing in for the gateway).
// The shim runs as a child process exactly as in a container: `node shim/shim.mjs --port 0 --socket ...`.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { isRoot, skipUnless } from './support/requirements.ts';

const SHIM = new URL('../shim/shim.mjs', import.meta.url).pathname;

interface Shim {
  proc: ChildProcess;
  port: number;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts the shim and resolves once its readiness line on stderr names the port. */
async function startShim(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Shim> {
  const proc = spawn(process.execPath, [SHIM, '--port', '0', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (b: Buffer) => (out += b));
  proc.stderr!.on('data', (b: Buffer) => (err += b));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const port = await new Promise<number>((resolve, reject) => {
    const onData = () => {
      const m = /^shim: listening on 127\.0\.0\.1:(\d+) -> /m.exec(err);
      if (m) {
        proc.stderr!.off('data', onData);
        resolve(Number(m[1]));
      }
    };
    proc.stderr!.on('data', onData);
    exited.then(({ code }) => reject(new Error(`shim exited ${code} before ready: ${err}`)));
  });
  return { proc, port, stdout: () => out, stderr: () => err, exited };
}

/** Resolves when the shim's stdout has shown `text`; fails the test if the shim exits first. */
async function outputIncludes(shim: Shim, text: string): Promise<void> {
  while (!shim.stdout().includes(text)) {
    const exited = shim.exited.then(({ code }) => Promise.reject(new Error(`shim exited ${code} before printing ${text}`)));
    await Promise.race([once(shim.proc.stdout!, 'data'), exited]);
  }
}

async function stopShim(shim: Shim): Promise<void> {
  if (shim.proc.exitCode === null && shim.proc.signalCode === null) {
    shim.proc.kill('SIGTERM');
    await shim.exited;
  }
}

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'shim-test-'));
}

async function listenUnix(server: net.Server, path: string): Promise<void> {
  server.listen(path);
  await once(server, 'listening');
}

/** `server` on the Unix socket `sock`, a shim relaying to it, and both torn down (with `dir`) after the test. */
async function serveThroughShim(t: TestContext, server: net.Server, dir: string, sock: string): Promise<Shim> {
  await listenUnix(server, sock);
  const shim = await startShim(['--socket', sock]);
  t.after(async () => {
    await stopShim(shim);
    await close(server);
    rmSync(dir, { recursive: true, force: true });
  });
  return shim;
}

async function close(server: net.Server): Promise<void> {
  (server as http.Server).closeAllConnections?.();
  await new Promise((resolve) => server.close(resolve));
}

interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

function request(port: number, opts: http.RequestOptions, body?: Buffer | string): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, agent: false, ...opts }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Runs a command to completion without blocking this process's event loop. */
function run(file: string, args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { encoding: 'utf8' }, (err, stdout, stderr) =>
      resolve({ status: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr }),
    );
  });
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

test('relays a large body byte for byte in both directions', async (t) => {
  const dir = tempDir();
  const sock = join(dir, 'gateway.sock');
  const upBody = randomBytes(8 * 1024 * 1024);
  const downBody = randomBytes(12 * 1024 * 1024 + 7);
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const got = Buffer.concat(chunks);
      res.writeHead(200, { 'x-received-sha256': sha256(got), 'x-received-length': String(got.length), 'x-url': req.url });
      res.end(downBody);
    });
  });
  const shim = await serveThroughShim(t, server, dir, sock);

  const res = await request(shim.port, { method: 'POST', path: '/v1/messages?beta=true' }, upBody);
  assert.equal(res.status, 200);
  assert.equal(res.headers['x-url'], '/v1/messages?beta=true');
  assert.equal(res.headers['x-received-length'], String(upBody.length));
  assert.equal(res.headers['x-received-sha256'], sha256(upBody));
  assert.equal(res.body.length, downBody.length);
  assert.ok(res.body.equals(downBody), 'response body differs');
  assert.equal(shim.stdout(), '', 'the shim must never write to stdout');
});

test('an SSE stream arrives event by event, not coalesced', async (t) => {
  const dir = tempDir();
  const sock = join(dir, 'gateway.sock');
  const EVENTS = 6;
  // Lockstep: the server sends the next event only once the client has received the previous one, so
  // a relay that held an event back would stall the stream (and time the test out) however loaded the
  // machine is, and one chunk per event is guaranteed by construction rather than by timing.
  let received: () => void = () => undefined;
  const server = http.createServer(async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.flushHeaders();
    for (let i = 0; i < EVENTS; i++) {
      const delivered = new Promise<void>((resolve) => (received = resolve));
      res.write(`event: delta\ndata: {"i":${i}}\n\n`);
      await delivered;
    }
    res.end();
  });
  const shim = await serveThroughShim(t, server, dir, sock);

  const arrivals: string[] = [];
  await new Promise<void>((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: shim.port, path: '/v1/responses', agent: false }, (res) => {
        res.setEncoding('utf8');
        res.on('data', (text: string) => {
          arrivals.push(text);
          received();
        });
        res.on('end', resolve);
      })
      .on('error', reject);
  });
  assert.deepEqual(
    arrivals,
    Array.from({ length: EVENTS }, (_, i) => `event: delta\ndata: {"i":${i}}\n\n`),
  );
});

test('a half-close travels through: the client ends its side and still gets the answer', async (t) => {
  const dir = tempDir();
  const sock = join(dir, 'gateway.sock');
  // A raw server that only answers once the client has finished sending (its FIN arrived).
  const server = net.createServer({ allowHalfOpen: true }, (conn) => {
    let got = '';
    conn.on('data', (b: Buffer) => (got += b));
    conn.on('end', () => setTimeout(() => conn.end(`got ${got.length} bytes: ${got}`), 100));
  });
  const shim = await serveThroughShim(t, server, dir, sock);

  const conn = net.connect({ host: '127.0.0.1', port: shim.port, allowHalfOpen: true });
  await once(conn, 'connect');
  conn.end('hello, then FIN');
  let reply = '';
  conn.on('data', (b: Buffer) => (reply += b));
  await once(conn, 'end');
  assert.equal(reply, 'got 15 bytes: hello, then FIN');
  conn.destroy();
});

test('without a gateway socket: a well-formed 502 in the provider error shape, and recovery', async (t) => {
  const dir = tempDir();
  const sock = join(dir, 'gateway.sock');
  const shim = await startShim(['--socket', sock]);
  let server: http.Server | undefined;
  t.after(async () => {
    await stopShim(shim);
    if (server) await close(server);
    rmSync(dir, { recursive: true, force: true });
  });

  const anthropicShape = (res: Response) => {
    assert.equal(res.status, 502);
    assert.equal(res.headers['content-type'], 'application/json');
    const body = JSON.parse(res.body.toString());
    assert.equal(body.type, 'error');
    assert.equal(body.error.type, 'api_error');
    assert.match(body.error.message, /gateway unreachable/);
  };

  await t.test('Anthropic shape for /v1/messages', async () => {
    anthropicShape(await request(shim.port, { method: 'POST', path: '/v1/messages?beta=true' }, '{"model":"x"}'));
  });
  await t.test('Anthropic shape for any path with an anthropic-version header', async () => {
    anthropicShape(await request(shim.port, { path: '/v1/models', headers: { 'anthropic-version': '2023-06-01' } }));
  });
  await t.test('OpenAI shape otherwise', async () => {
    const res = await request(shim.port, { method: 'POST', path: '/v1/chat/completions' }, '{"model":"x"}');
    assert.equal(res.status, 502);
    const body = JSON.parse(res.body.toString());
    assert.deepEqual(Object.keys(body), ['error']);
    assert.equal(body.error.type, 'api_error');
    assert.equal(body.error.code, 'gateway_unreachable');
    assert.equal(body.error.param, null);
    assert.match(body.error.message, /gateway unreachable/);
  });
  await t.test('the 502 survives a large request body the shim never reads in full', async () => {
    anthropicShape(await request(shim.port, { method: 'POST', path: '/v1/messages' }, randomBytes(4 * 1024 * 1024)));
  });

  await t.test('a gateway coming up on the same path is used without restarting the shim', async () => {
    const start = async () => {
      server = http.createServer((req, res) => res.end(`up ${req.url}`));
      await listenUnix(server, sock);
    };
    await start();
    let res = await request(shim.port, { path: '/v1/models' });
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'up /v1/models');

    await close(server!); // removes the socket file
    res = await request(shim.port, { path: '/v1/models' });
    assert.equal(res.status, 502);

    await start(); // "gateway restart": a new socket at the same path
    res = await request(shim.port, { path: '/v1/models' });
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'up /v1/models');
  });
  assert.equal(shim.stdout(), '');
});

test('--check reports reachability and isolation without leaving the machine', async (t) => {
  const dir = tempDir();
  const sock = join(dir, 'gateway.sock');
  let helloStatus = 200;
  const server = http.createServer((req, res) => {
    res.statusCode = req.method === 'HEAD' && req.url === '/api/hello' ? helloStatus : 404;
    res.end();
  });
  await listenUnix(server, sock);
  t.after(async () => {
    await close(server);
    rmSync(dir, { recursive: true, force: true });
  });
  // A private network namespace (unshare -n) gives a known network: only a loopback, or a veth pair
  // with a default route that leads nowhere off the machine. Needs root, as on CI.
  // Run asynchronously: the test server answering the check lives in this very process.
  const inNetns = (setup: string) => run('unshare', ['-n', 'sh', '-c', `${setup} exec "$0" "$@"`, process.execPath, SHIM, '--check', '--socket', sock]);

  await t.test('isolated namespace, gateway answering: exit 0', { skip: skipUnless(isRoot, 'unshare -n needs root') }, async () => {
    const r = await inNetns('');
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.stdout, `gateway: ok HEAD /api/hello on ${sock} answered 200\nnetwork: ok isolated (only loopback, no default route)\n`);
  });
  await t.test('an interface and a default route: each reported, exit 1', { skip: skipUnless(isRoot, 'unshare -n needs root') }, async () => {
    const r = await inNetns(
      'ip link add v0 type veth peer name v1 && ip addr add 198.51.100.7/24 dev v0 && ip link set v0 up &&' +
        ' ip link set v1 up && ip route add default dev v0 &&',
    );
    assert.equal(r.status, 1, r.stdout + r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines[0], `gateway: ok HEAD /api/hello on ${sock} answered 200`);
    assert.ok(
      lines.some((l) => /^network: FAIL interface v0 has 198\.51\.100\.7/.test(l)),
      r.stdout,
    );
    assert.ok(lines.includes('network: FAIL default route via v0 (/proc/net/route)'), r.stdout);
  });
  await t.test('gateway answering something else than 200: exit 1', { skip: skipUnless(isRoot, 'unshare -n needs root') }, async () => {
    helloStatus = 404;
    const r = await inNetns('');
    helloStatus = 200;
    assert.equal(r.status, 1);
    assert.match(r.stdout, /^gateway: FAIL HEAD \/api\/hello on .* answered 404$/m);
  });
  await t.test('no socket: exit 1', async () => {
    const r = await run(process.execPath, [SHIM, '--check', '--socket', join(dir, 'missing.sock')]);
    assert.equal(r.status, 1);
    assert.match(r.stdout, /^gateway: FAIL .*missing\.sock unreachable \(ENOENT\)$/m);
  });
});

test('-- CMD: base URLs in the env, exit status, signal forwarding', async (t) => {
  const dir = tempDir();
  const sock = join(dir, 'gateway.sock');
  const server = http.createServer((req, res) => res.end(`gateway saw ${req.method} ${req.url}`));
  await listenUnix(server, sock);
  t.after(async () => {
    await close(server);
    rmSync(dir, { recursive: true, force: true });
  });
  const env = { ...process.env };
  delete env.ANTHROPIC_BASE_URL;
  delete env.OPENAI_BASE_URL;

  await t.test('sets both base URLs, the child reaches the gateway through them, exit status passes', async () => {
    const script = `
      const a = process.env.ANTHROPIC_BASE_URL, o = process.env.OPENAI_BASE_URL;
      const r = await fetch(a + '/v1/messages', { method: 'POST', body: '{}' });
      console.log(JSON.stringify({ a, o, status: r.status, text: await r.text() }));
      process.exit(7);`;
    const shim = await startShim(['--socket', sock, '--', process.execPath, '--input-type=module', '-e', script], env);
    const { code } = await shim.exited;
    assert.equal(code, 7, shim.stderr());
    const seen = JSON.parse(shim.stdout());
    assert.equal(seen.a, `http://127.0.0.1:${shim.port}`);
    assert.equal(seen.o, `http://127.0.0.1:${shim.port}/v1`);
    assert.equal(seen.status, 200);
    assert.equal(seen.text, 'gateway saw POST /v1/messages');
  });

  await t.test('keeps base URLs that are already set', async () => {
    const preset = { ...env, ANTHROPIC_BASE_URL: 'http://127.0.0.1:1/custom', OPENAI_BASE_URL: 'http://127.0.0.1:1/v9' };
    const shim = await startShim(
      ['--socket', sock, '--', process.execPath, '-e', 'console.log(process.env.ANTHROPIC_BASE_URL, process.env.OPENAI_BASE_URL)'],
      preset,
    );
    assert.equal((await shim.exited).code, 0);
    assert.equal(shim.stdout(), 'http://127.0.0.1:1/custom http://127.0.0.1:1/v9\n');
  });

  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    await t.test(`forwards ${sig} to the child and exits with its status`, async () => {
      const script = `process.on('${sig}', () => { console.log('child got ${sig}'); process.exit(42); });
        console.log('ready'); setInterval(() => {}, 1000);`;
      const shim = await startShim(['--socket', sock, '--', process.execPath, '-e', script], env);
      await outputIncludes(shim, 'ready');
      shim.proc.kill(sig);
      const { code } = await shim.exited;
      assert.equal(code, 42);
      assert.equal(shim.stdout(), `ready\nchild got ${sig}\n`);
    });
  }

  await t.test('a child killed by a signal gives 128 + signal number', async () => {
    const shim = await startShim(['--socket', sock, '--', process.execPath, '-e', "process.kill(process.pid, 'SIGKILL')"], env);
    assert.equal((await shim.exited).code, 137);
  });

  await t.test('a missing command gives 127', async () => {
    const shim = await startShim(['--socket', sock, '--', join(dir, 'no-such-command')], env);
    assert.equal((await shim.exited).code, 127);
    assert.match(shim.stderr(), /shim: cannot run .*no-such-command/);
  });
});

test("a second shim for the same key runs its command on the first one's port; for another key it fails", async (t) => {
  const dir = tempDir();
  const gatewayFor = (key: string) => http.createServer((_req, res) => res.writeHead(200, { 'x-gateway-key': key }).end());
  const [mine, other] = [gatewayFor('key-one'), gatewayFor('key-two')];
  const [mineSock, otherSock] = [join(dir, 'one.sock'), join(dir, 'two.sock')];
  await listenUnix(other, otherSock);
  const first = await serveThroughShim(t, mine, dir, mineSock);
  t.after(() => close(other));
  const command = [process.execPath, '-e', 'console.log(process.env.ANTHROPIC_BASE_URL); process.exit(5)'];
  const env = { ...process.env };
  delete env.ANTHROPIC_BASE_URL;

  const same = spawn(process.execPath, [SHIM, '--port', String(first.port), '--socket', mineSock, '--', ...command], { env });
  let out = '';
  let err = '';
  same.stdout.on('data', (b: Buffer) => (out += b));
  same.stderr.on('data', (b: Buffer) => (err += b));
  const [code] = (await once(same, 'exit')) as [number];
  assert.equal(code, 5, err);
  assert.match(err, /already relayed to this key's gateway/);
  assert.equal(out.trim(), `http://127.0.0.1:${first.port}`);

  const foreign = await run(process.execPath, [SHIM, '--port', String(first.port), '--socket', otherSock, '--', ...command]);
  assert.equal(foreign.status, 1);
  assert.match(foreign.stderr, /cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE/);
});
