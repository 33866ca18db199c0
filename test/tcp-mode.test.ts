// TCP mode (issue 19, docs/deploy.md): a key that also listens on a TCP address, where every request
// must show the key's token. Real listeners on 127.0.0.1 and the stand-in provider: the token opens
// the key's port and only that one, is never passed on (provider, egress destination) nor shown
// (keys, inspect, control listing, log, audit), refusals close the connection, revocation closes the
// port, allowFrom filters sources, leases bring a key back on its port, and contribute/render give
// a container the env and flags for it.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { startControlServer, controlSocketPath } from '../src/control/socket.ts';
import { startStandin, type Standin } from '../src/dev/standin.ts';
import { createGateway, type Gateway, type KeyInfo } from '../src/index.ts';
import { contribute, type Contribution } from '../src/runner/contribute.ts';
import { firstHost, rules } from '../src/runner/network.ts';
import { render } from '../src/runner/render.ts';
import { ValidationError } from '../src/util/validation.ts';
import { eventually, providersAt, REAL_ANTHROPIC_KEY, REAL_OPENAI_KEY, startFixture, type Fixture } from './support/fixture.ts';
import { anthropicHeaders, openaiHeaders, request } from './support/http.ts';

const message = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] });
const chat = JSON.stringify({ model: 'gpt-5.1', messages: [{ role: 'user', content: 'hi' }] });
const LOOPBACK = { host: '127.0.0.1' };
const DEST = 'dest.test';

/** A pino logger at debug whose lines are kept in memory, and the text of all of them. */
function memoryLogger(): { logger: pino.Logger; text(): string } {
  const lines: string[] = [];
  return { logger: pino({ level: 'debug' }, { write: (line: string) => lines.push(line) }), text: () => lines.join('') };
}

/** The key's port and token, from mint's answer (which alone carries the token). */
function tcpOf(key: KeyInfo): { port: number; token: string } {
  assert.ok(key.tcp, 'a TCP key');
  assert.ok(key.tcp.token, "mint's answer carries the token");
  return { port: key.tcp.port, token: key.tcp.token };
}

const anthropicCall = (port: number, headers: Record<string, string>) =>
  request({ port, path: '/v1/messages', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', ...headers }, body: message });
const openaiCall = (port: number, headers: Record<string, string>) =>
  request({ port, path: '/v1/chat/completions', headers: { 'content-type': 'application/json', ...headers }, body: chat });

/** Writes `payload` on a fresh connection to the port and collects what comes back until the server closes it. */
function rawExchange(port: number, payload: string): Promise<{ text: string; status: number }> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    // A refused source is reset, perhaps before the request is written: what came back is the answer.
    socket.on('error', () => undefined);
    socket.on('close', () => resolve({ text, status: Number(text.split(' ')[1] ?? 0) }));
    socket.write(payload);
  });
}

function rawMessages(headers = ''): string {
  return `POST /v1/messages HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nAnthropic-Version: 2023-06-01\r\n${headers}Content-Length: ${Buffer.byteLength(message)}\r\n\r\n${message}`;
}

/** How a TCP connection to the port ends: 'connected', or the error code. */
function connectResult(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.on('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
  });
}

/** A CONNECT on the key's TCP port: the answer's status and head, and the socket (a tunnel when 200). */
function connectTunnel(port: number, authority: string, headers = ''): Promise<{ status: number; head: string; socket: net.Socket }> {
  const socket = net.connect({ host: '127.0.0.1', port });
  socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${headers}\r\n`);
  let received = '';
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      received += chunk.toString('latin1');
      const end = received.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.off('data', onData);
      socket.pause();
      resolve({ status: Number(received.split(' ')[1]), head: received.slice(0, end), socket });
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.once('end', () => resolve({ status: Number(received.split(' ')[1] ?? 0), head: received, socket }));
  });
}

/** A plain HTTP GET over an open tunnel; the whole answer as text. */
function getOverTunnel(socket: net.Socket, host: string): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.once('close', () => resolve(text));
    socket.resume();
    socket.write(`GET /through-tunnel HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
  });
}

/** An absolute-form (proxy) GET on the key's TCP port. */
function proxyGet(
  port: number,
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: url, headers: { host: new URL(url).host, ...headers }, agent: false });
    req.once('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.once('error', reject);
    req.end();
  });
}

const basic = (token: string) => `Basic ${Buffer.from(`gateway:${token}`).toString('base64')}`;

/** A plain HTTP "destination" on loopback for egress, recording each request's headers. */
async function startDestination(): Promise<{ server: http.Server; port: number; seen: http.IncomingHttpHeaders[] }> {
  const seen: http.IncomingHttpHeaders[] = [];
  const server = http.createServer((req, res) => {
    seen.push(req.headers);
    res.end(`plain ${req.method} ${req.url}`);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as net.AddressInfo).port, seen };
}

function isValidation(field: string): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof ValidationError, String(error));
    assert.equal(error.field, field);
    return true;
  };
}

describe('TCP mode', { timeout: 30_000 }, () => {
  let fx: Fixture;
  let log: ReturnType<typeof memoryLogger>;
  let destination: Awaited<ReturnType<typeof startDestination>>;
  // Every token minted here: none may show up in the log, the audit file or the provider's requests.
  const tokens: string[] = [];
  const mint = async (request: Parameters<Gateway['mint']>[0]) => {
    const key = await fx.gateway.mint(request);
    if (key.tcp?.token) tokens.push(key.tcp.token);
    return key;
  };

  before(async () => {
    log = memoryLogger();
    destination = await startDestination();
    // dest.test is the destination's name: an absolute-form request to 127.0.0.1 itself would be
    // taken for the container's own loopback, the gateway's API.
    fx = await startFixture({}, { logger: log.logger, egress: { hosts: { [DEST]: ['127.0.0.1'] } } });
  });
  after(async () => {
    await fx.close();
    destination.server.close();
  });

  test('mint answers the port and a gwtok- token; keys() and inspect() never show the token', async () => {
    const key = await mint({ group: 'tcp', tcp: LOOPBACK });
    const { port, token } = tcpOf(key);
    assert.equal(key.tcp!.host, '127.0.0.1');
    assert.ok(port > 0 && port < 65536);
    assert.match(token, /^gwtok-[A-Za-z0-9_-]{43}$/);
    const listed = fx.gateway.keys().find((k) => k.id === key.id);
    assert.deepEqual(listed?.tcp, { host: '127.0.0.1', port });
    assert.ok(!JSON.stringify(fx.gateway.keys()).includes(token));
    const inspected = fx.gateway.inspect().keys.find((k) => k.id === key.id);
    assert.deepEqual(inspected?.tcp, { host: '127.0.0.1', port });
    assert.ok(!JSON.stringify(fx.gateway.inspect()).includes(token));
    // Nor the digest's bytes in any form the snapshot could carry.
    assert.ok(!('tokenDigest' in inspected!));
  });

  test('the control API gives the token (and the env) once, on mint; its key listing never', async () => {
    const server = await startControlServer(fx.gateway, { logger: pino({ level: 'silent' }), info: () => ({}) });
    try {
      const socketPath = controlSocketPath(fx.gateway.stateDir);
      const minted = await request({
        socketPath,
        path: '/v1/keys',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ group: 'ctl', tcp: LOOPBACK }),
      });
      assert.equal(minted.status, 201, minted.body);
      const answer = JSON.parse(minted.body) as KeyInfo & { env: Record<string, string> };
      const { port, token } = tcpOf(answer);
      tokens.push(token);
      assert.equal(answer.env.ANTHROPIC_API_KEY, token);
      assert.equal(answer.env.ANTHROPIC_BASE_URL, `http://127.0.0.1:${port}`);
      const listing = await request({ socketPath, path: '/v1/keys' });
      assert.ok(listing.body.includes(answer.id));
      assert.ok(!listing.body.includes(token));
      const one = await request({ socketPath, path: `/v1/keys/${answer.id}` });
      assert.equal(one.status, 200);
      assert.deepEqual((JSON.parse(one.body) as KeyInfo).tcp, { host: '127.0.0.1', port });
      assert.equal((await anthropicCall(port, { 'x-api-key': token })).status, 200);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  test('x-api-key: TOKEN reaches the provider with the real key; the token never leaves the gateway', async () => {
    const key = await mint({ group: 'tcp', tcp: LOOPBACK });
    const { port, token } = tcpOf(key);
    const before = fx.standin.requests.length;
    const res = await anthropicCall(port, { 'x-api-key': token });
    assert.equal(res.status, 200, res.body);
    const upstream = fx.standin.requests.slice(before);
    assert.equal(upstream.length, 1);
    assert.equal(upstream[0]!.headers['x-api-key'], REAL_ANTHROPIC_KEY);
    assert.ok(!JSON.stringify(upstream[0]!.headers).includes(token));
    assert.ok(!upstream[0]!.body.toString().includes(token));
    await eventually(() => fx.calls.some((call) => call.keyId === key.id));
  });

  test('Authorization: Bearer, api-key and Authorization: token are accepted', async () => {
    const key = await mint({ group: 'tcp', tcp: LOOPBACK });
    const { port, token } = tcpOf(key);
    const before = fx.standin.requests.length;
    assert.equal((await openaiCall(port, { authorization: `Bearer ${token}` })).status, 200);
    assert.equal(fx.standin.requests.at(-1)!.headers.authorization, `Bearer ${REAL_OPENAI_KEY}`);
    assert.equal((await openaiCall(port, { 'api-key': token })).status, 200);
    assert.equal((await anthropicCall(port, { authorization: `token ${token}` })).status, 200);
    const upstream = fx.standin.requests.slice(before);
    assert.equal(upstream.length, 3);
    for (const seen of upstream) assert.ok(!JSON.stringify(seen.headers).includes(token));
  });

  test("no token: 401 in the provider's shape, not retried, and the connection is closed", async () => {
    const key = await mint({ group: 'tcp', tcp: LOOPBACK });
    const { port } = tcpOf(key);
    const before = fx.standin.requests.length;
    const anthropic = await rawExchange(port, rawMessages());
    assert.equal(anthropic.status, 401, anthropic.text);
    assert.match(anthropic.text, /\r\nx-should-retry: false\r\n/i);
    assert.match(anthropic.text, /\r\nconnection: close\r\n/i);
    const anthropicBody = JSON.parse(anthropic.text.slice(anthropic.text.indexOf('\r\n\r\n') + 4)) as { type: string; error: { type: string } };
    assert.deepEqual([anthropicBody.type, anthropicBody.error.type], ['error', 'authentication_error']);

    const openai = await openaiCall(port, {});
    assert.equal(openai.status, 401);
    assert.equal(openai.headers['x-should-retry'], 'false');
    assert.equal(openai.headers.connection, 'close');
    const openaiBody = JSON.parse(openai.body) as { error: { type: string; message: string } };
    assert.equal(openaiBody.error.type, 'invalid_request_error');
    assert.match(openaiBody.error.message, /token/);
    assert.equal(fx.standin.requests.length, before, 'nothing reached the provider');
  });

  test("a wrong token, another live key's token, the token with one more character: 401", async () => {
    const key = await mint({ group: 'tcp', tcp: LOOPBACK });
    const other = await mint({ group: 'tcp', tcp: LOOPBACK });
    const { port, token } = tcpOf(key);
    const before = fx.standin.requests.length;
    for (const candidate of ['gwtok-not-the-token', tcpOf(other).token, `${token}x`, token.slice(0, -1), `${token} `.repeat(2)]) {
      assert.equal((await anthropicCall(port, { 'x-api-key': candidate })).status, 401, candidate);
    }
    assert.equal((await openaiCall(port, { authorization: `Bearer ${tcpOf(other).token}` })).status, 401);
    assert.equal(fx.standin.requests.length, before);
    // The other key's token opens the other key's port.
    assert.equal((await anthropicCall(tcpOf(other).port, { 'x-api-key': tcpOf(other).token })).status, 200);
  });

  test('keep-alive: a second request on a connection without the token is refused though the first had it', async () => {
    const key = await mint({ group: 'tcp', tcp: LOOPBACK });
    const { port, token } = tcpOf(key);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await request({ port, path: '/v1/messages', headers: anthropicHeaders({ 'x-api-key': token }), body: message, agent });
      assert.equal(first.status, 200);
      const [socket] = Object.values(agent.freeSockets).flat();
      assert.ok(socket, 'the connection is kept alive');
      const closed = new Promise((resolve) => socket.once('close', resolve));
      const before = fx.standin.requests.length;
      const second = await request({ port, path: '/v1/messages', headers: anthropicHeaders(), body: message, agent });
      assert.equal(second.status, 401);
      await closed;
      assert.equal(fx.standin.requests.length, before);
    } finally {
      agent.destroy();
    }
  });

  test("the same key's Unix socket needs no token", async () => {
    const key = await mint({ group: 'tcp', tcp: LOOPBACK });
    const res = await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message });
    assert.equal(res.status, 200);
  });

  test('revoke closes the TCP port and an open keep-alive connection', async () => {
    const key = await mint({ group: 'tcp', tcp: LOOPBACK });
    const { port, token } = tcpOf(key);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      assert.equal((await request({ port, path: '/v1/messages', headers: anthropicHeaders({ 'x-api-key': token }), body: message, agent })).status, 200);
      const [socket] = Object.values(agent.freeSockets).flat();
      assert.ok(socket);
      const closed = new Promise((resolve) => socket.once('close', resolve));
      assert.equal(await connectResult(port), 'connected');
      assert.equal(await fx.gateway.revoke(key.id), true);
      await closed;
      assert.equal(await connectResult(port), 'ECONNREFUSED');
    } finally {
      agent.destroy();
    }
  });

  test('allowFrom: a source it does not list is closed without an answer; one it lists is served', async () => {
    const barred = await mint({ group: 'tcp', tcp: { host: '127.0.0.1', allowFrom: ['10.9.9.9'] } });
    const refused = await rawExchange(tcpOf(barred).port, rawMessages(`x-api-key: ${tcpOf(barred).token}\r\n`));
    assert.equal(refused.text, '', 'no HTTP answer at all');
    const admitted = await mint({ group: 'tcp', tcp: { host: '127.0.0.1', allowFrom: ['127.0.0.0/8'] } });
    assert.deepEqual(admitted.tcp!.allowFrom, ['127.0.0.0/8']);
    assert.equal((await anthropicCall(tcpOf(admitted).port, { 'x-api-key': tcpOf(admitted).token })).status, 200);
  });

  test('a source refused again and again is logged as a count, not a line per connection', async () => {
    const barred = await mint({ group: 'flood', tcp: { host: '127.0.0.1', allowFrom: ['10.9.9.9'] } });
    const lines = () =>
      log
        .text()
        .split('\n')
        .filter((line) => line.includes(barred.id) && line.includes('does not allow')).length;
    for (let i = 0; i < 30; i++) await rawExchange(tcpOf(barred).port, '');
    assert.equal(lines(), 1, 'one warning for a burst of refused connections');
  });

  test('IPv6: a key listens on ::1 and allowFrom matches IPv6 sources', async () => {
    const key = await mint({ group: 'v6', tcp: { host: '::1', allowFrom: ['::1/128'] } });
    const { port, token } = tcpOf(key);
    const call = (headers: Record<string, string>) =>
      new Promise<number>((resolve, reject) => {
        const req = http.request({ host: '::1', port, method: 'POST', path: '/v1/messages', headers: anthropicHeaders(headers), agent: false }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.end(message);
      });
    assert.equal(await call({ 'x-api-key': token }), 200);
    assert.equal(await call({}), 401);
    // ipv6Only: the IPv4 loopback is not the same listener.
    assert.equal(await connectResult(port), 'ECONNREFUSED');
    const c = await contribute(fx.gateway, { group: 'v6', tcp: { host: '::1', network: 'gwnet' } });
    tokens.push(tcpOf(c.key).token);
    assert.equal(c.baseUrl, `http://[::1]:${c.key.tcp!.port}`);
    await c.close();
  });

  test('validation: a name, the wildcard without allowFrom, a bad CIDR, a bad port, an unknown field; no key is left', async () => {
    const before = fx.gateway.keys().length;
    const field = 'mint `tcp`';
    await assert.rejects(fx.gateway.mint({ group: 'g', tcp: { host: 'localhost' } }), isValidation(`${field}.host`));
    await assert.rejects(fx.gateway.mint({ group: 'g', tcp: { host: '0.0.0.0' } }), isValidation(`${field}.host`));
    await assert.rejects(fx.gateway.mint({ group: 'g', tcp: { host: '::' } }), isValidation(`${field}.host`));
    for (const allowFrom of [['10.0.0.0/33'], ['10.0.0.0/8/1'], ['not-an-ip'], ['10.0.0.0/'], [], ['::1/129']]) {
      await assert.rejects(
        fx.gateway.mint({ group: 'g', tcp: { host: '127.0.0.1', allowFrom } }),
        isValidation(`${field}.allowFrom`),
        JSON.stringify(allowFrom),
      );
    }
    for (const port of [65536, -1, 1.5, '80' as unknown as number]) {
      await assert.rejects(fx.gateway.mint({ group: 'g', tcp: { host: '127.0.0.1', port } }), isValidation(`${field}.port`), String(port));
    }
    await assert.rejects(fx.gateway.mint({ group: 'g', tcp: { host: '127.0.0.1', hots: 'x' } as never }), isValidation(`${field}.hots`));
    // The wildcard with a source list is allowed.
    const wildcard = await mint({ group: 'g', tcp: { host: '0.0.0.0', allowFrom: ['127.0.0.1'] } });
    assert.equal((await anthropicCall(tcpOf(wildcard).port, { 'x-api-key': tcpOf(wildcard).token })).status, 200);
    await fx.gateway.revoke(wildcard.id);
    assert.equal(fx.gateway.keys().length, before);
  });

  test('egress over TCP: the proxy needs the token as its password, then the policy decides', async () => {
    const key = await mint({ group: 'tcp', tcp: LOOPBACK, egress: [`${DEST}:${destination.port}`] });
    const { port, token } = tcpOf(key);
    const authority = `${DEST}:${destination.port}`;
    const bare = await connectTunnel(port, authority);
    assert.equal(bare.status, 407);
    assert.match(bare.head, /proxy-authenticate: basic/i);
    const wrong = await connectTunnel(port, authority, `Proxy-Authorization: ${basic(`${token}x`)}\r\n`);
    assert.equal(wrong.status, 407);

    const seenBefore = destination.seen.length;
    const tunnel = await connectTunnel(port, authority, `Proxy-Authorization: ${basic(token)}\r\n`);
    assert.equal(tunnel.status, 200, tunnel.head);
    assert.match(await getOverTunnel(tunnel.socket, authority), /plain GET \/through-tunnel/);
    // Past the guard the policy still decides: a port the key's rule does not name is its 403.
    const policy = await connectTunnel(port, '127.0.0.1:1', `Proxy-Authorization: ${basic(token)}\r\n`);
    assert.equal(policy.status, 403, policy.head);
    policy.socket.destroy();

    const plainBare = await proxyGet(port, `http://${authority}/plain`);
    assert.equal(plainBare.status, 407);
    assert.match(String(plainBare.headers['proxy-authenticate']), /^Basic/);
    const plain = await proxyGet(port, `http://${authority}/plain`, { 'proxy-authorization': basic(token) });
    assert.equal(plain.status, 200, plain.body);
    assert.equal(plain.body, 'plain GET /plain');
    const seen = destination.seen.slice(seenBefore);
    assert.equal(seen.length, 2);
    for (const headers of seen) assert.ok(!JSON.stringify(headers).includes(token), 'the destination never sees the token');
  });

  test('contribute in TCP mode: no mount, no shim, the network, and an env whose values work as a client uses them', async () => {
    const c = await contribute(fx.gateway, { group: 'contrib', tcp: { host: '127.0.0.1', network: 'gwnet' } });
    try {
      const { port, token } = tcpOf(c.key);
      tokens.push(token);
      assert.deepEqual(c.mounts, []);
      assert.equal(c.network, 'gwnet');
      assert.deepEqual(c.wrap(['a']), ['a']);
      assert.equal(c.baseUrl, `http://127.0.0.1:${port}`);
      assert.equal(c.env.ANTHROPIC_BASE_URL, c.baseUrl);
      assert.equal(c.env.OPENAI_BASE_URL, `${c.baseUrl}/v1`);
      assert.equal(c.env.ANTHROPIC_API_KEY, token);
      assert.equal(c.env.OPENAI_API_KEY, token);
      assert.ok(!('GATEWAY_SHIM_PORT' in c.env));
      assert.ok(!('HTTPS_PROXY' in c.env), 'no egress, no proxy variables');

      // As the clients would: their base URL and their API key.
      const anthropicBase = new URL(c.env.ANTHROPIC_BASE_URL!);
      const a = await request({
        port: Number(anthropicBase.port),
        path: '/v1/messages',
        headers: anthropicHeaders({ 'x-api-key': c.env.ANTHROPIC_API_KEY! }),
        body: message,
      });
      assert.equal(a.status, 200);
      const openaiBase = new URL(c.env.OPENAI_BASE_URL!);
      const o = await request({
        port: Number(openaiBase.port),
        path: `${openaiBase.pathname}/chat/completions`,
        headers: openaiHeaders({ authorization: `Bearer ${c.env.OPENAI_API_KEY}` }),
        body: chat,
      });
      assert.equal(o.status, 200);
    } finally {
      await c.close();
    }
  });

  test("contribute in TCP mode: each of Claude Code's modes sends the token", async () => {
    const tcp = { host: '127.0.0.1', network: 'gwnet' };
    const bedrock = await contribute(fx.gateway, { group: 'contrib', tcp, claudeVia: 'bedrock' });
    const vertex = await contribute(fx.gateway, { group: 'contrib', tcp, claudeVia: 'vertex' });
    const foundry = await contribute(fx.gateway, { group: 'contrib', tcp, claudeVia: 'foundry' });
    try {
      for (const c of [bedrock, vertex, foundry]) tokens.push(tcpOf(c.key).token);
      assert.equal(bedrock.env.AWS_BEARER_TOKEN_BEDROCK, tcpOf(bedrock.key).token);
      assert.equal(bedrock.env.ANTHROPIC_BEDROCK_BASE_URL, bedrock.baseUrl);
      assert.ok(!('CLAUDE_CODE_SKIP_BEDROCK_AUTH' in bedrock.env));
      assert.equal(vertex.env.ANTHROPIC_CUSTOM_HEADERS, `x-api-key: ${tcpOf(vertex.key).token}`);
      assert.equal(vertex.env.ANTHROPIC_VERTEX_BASE_URL, `${vertex.baseUrl}/v1`);
      assert.equal(foundry.env.ANTHROPIC_FOUNDRY_API_KEY, tcpOf(foundry.key).token);
      assert.ok(!('CLAUDE_CODE_SKIP_FOUNDRY_AUTH' in foundry.env));
    } finally {
      await Promise.all([bedrock.close(), vertex.close(), foundry.close()]);
    }
  });

  test('contribute in TCP mode with egress: the proxy URL carries the token, NO_PROXY the host, and it works', async () => {
    const c = await contribute(fx.gateway, {
      group: 'contrib',
      egress: [`${DEST}:${destination.port}`],
      tcp: { host: '127.0.0.1', network: 'gwnet' },
    });
    try {
      const { port, token } = tcpOf(c.key);
      tokens.push(token);
      const proxy = new URL(c.env.HTTP_PROXY!);
      assert.equal(c.env.HTTPS_PROXY, c.env.HTTP_PROXY);
      assert.equal(c.env.http_proxy, c.env.HTTP_PROXY);
      assert.deepEqual([proxy.hostname, Number(proxy.port), decodeURIComponent(proxy.password)], ['127.0.0.1', port, token]);
      assert.ok(c.env.NO_PROXY!.split(',').includes('127.0.0.1'));
      // As curl would: the URL's user:password as preemptive Basic proxy credentials.
      const credentials = Buffer.from(`${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`).toString('base64');
      const res = await proxyGet(Number(proxy.port), `http://${DEST}:${destination.port}/via-env`, { 'proxy-authorization': `Basic ${credentials}` });
      assert.equal(res.status, 200, res.body);
      assert.equal(res.body, 'plain GET /via-env');
    } finally {
      await c.close();
    }
  });

  test('contribute: reachAs changes the URLs, not the listener; a missing, none or host network is refused', async () => {
    const c = await contribute(fx.gateway, { group: 'contrib', tcp: { host: '127.0.0.1', network: 'gwnet', reachAs: 'host.docker.internal' } });
    try {
      const { port, token } = tcpOf(c.key);
      tokens.push(token);
      assert.equal(c.key.tcp!.host, '127.0.0.1');
      assert.equal(c.baseUrl, `http://host.docker.internal:${port}`);
      assert.equal(c.env.ANTHROPIC_BASE_URL, c.baseUrl);
      assert.equal((await anthropicCall(port, { 'x-api-key': token })).status, 200, 'the listener is where the key listens');
    } finally {
      await c.close();
    }
    const before = fx.gateway.keys().length;
    for (const network of [undefined, '', 'none', 'host']) {
      await assert.rejects(
        contribute(fx.gateway, { group: 'contrib', tcp: { host: '127.0.0.1', network } as never }),
        isValidation('tcp.network'),
        String(network),
      );
    }
    assert.equal(fx.gateway.keys().length, before, 'no key minted for a refused contribution');
  });

  test('render: podman joins the network with no key mount and no shim; bwrap refuses TCP mode', async () => {
    const c: Contribution = await contribute(fx.gateway, { group: 'contrib', tcp: { host: '127.0.0.1', network: 'gwnet' } });
    try {
      tokens.push(tcpOf(c.key).token);
      const argv = render('podman', c, { image: 'localhost/agent', command: c.wrap(['claude', '-p', 'hi']) }, { uid: 0 });
      assert.ok(argv.includes('--network=gwnet'));
      assert.ok(!argv.includes('--network=none'));
      assert.ok(!argv.includes('-v'), argv.join(' '));
      assert.ok(!argv.some((arg) => arg.includes(c.key.dir) || arg.includes('shim.mjs')), argv.join(' '));
      assert.deepEqual(argv.slice(argv.indexOf('localhost/agent') + 1), ['claude', '-p', 'hi']);
      assert.throws(() => render('bwrap', c, { command: ['claude'] }), /TCP mode/);
    } finally {
      await c.close();
    }
  });

  test('no token in any log line nor the audit file; the refusals are logged with the key', async () => {
    // Refusals of every kind, on a key of their own so their log lines are told apart.
    const key = await mint({ group: 'logged', tcp: LOOPBACK, egress: [`${DEST}:${destination.port}`] });
    const { port, token } = tcpOf(key);
    assert.equal((await anthropicCall(port, { 'x-api-key': token })).status, 200);
    assert.equal((await anthropicCall(port, { 'x-api-key': `${token}x` })).status, 401);
    (await connectTunnel(port, `${DEST}:${destination.port}`, `Proxy-Authorization: ${basic(`${token}x`)}\r\n`)).socket.destroy();
    const barred = await mint({ group: 'logged', tcp: { host: '127.0.0.1', allowFrom: ['10.9.9.9'] } });
    await rawExchange(tcpOf(barred).port, rawMessages(`x-api-key: ${tcpOf(barred).token}\r\n`));
    await fx.gateway.revoke(key.id);
    // The audit file is written asynchronously: closing the gateway flushes it.
    await fx.gateway.close({ drainMs: 1000 });

    const text = log.text();
    const refusal = text
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as { level: number; msg: string; key?: string; refused?: number; remote?: string })
      .filter((line) => line.level === 40);
    assert.ok(
      refusal.some((line) => line.key === key.id && /without the key's token/.test(line.msg) && line.refused! >= 1),
      'the token refusal is a warning naming the key',
    );
    assert.ok(refusal.some((line) => line.key === barred.id && /does not allow/.test(line.msg) && line.remote === '127.0.0.1'));
    const audit = readFileSync(path.join(fx.stateDir, 'audit.jsonl'), 'utf8');
    assert.ok(audit.includes(key.id), 'the key was audited');
    assert.ok(tokens.length >= 15, String(tokens.length));
    for (const minted of tokens) {
      const secret = minted.slice('gwtok-'.length);
      assert.ok(!text.includes(secret), 'a token in the log');
      assert.ok(!audit.includes(secret), 'a token in the audit file');
      for (const seen of fx.standin.requests) assert.ok(!JSON.stringify(seen).includes(secret), 'a token sent to the provider');
    }
    assert.ok(!text.includes(REAL_ANTHROPIC_KEY));
  });
});

describe('TCP mode across a restart (persistKeys)', { timeout: 30_000 }, () => {
  let standin: Standin;
  let stateDir: string;
  let blocker: net.Server | undefined;
  before(async () => {
    standin = await startStandin({ anthropicApiKey: REAL_ANTHROPIC_KEY, openaiApiKey: REAL_OPENAI_KEY });
    stateDir = await mkdtemp(path.join(tmpdir(), 'gw-tcp-'));
  });
  after(async () => {
    blocker?.close();
    await standin.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  const open = (logger = pino({ level: 'silent' })) =>
    createGateway({ stateDir, persistKeys: true, logger, providers: providersAt(Number(new URL(standin.url).port)) });

  test('a restored key listens on its port again and its token still works; one whose port is taken is not restored', async () => {
    let gateway = await open();
    const key = await gateway.mint({ group: 'kept', tcp: LOOPBACK });
    const { port, token } = tcpOf(key);
    assert.equal((await anthropicCall(port, { 'x-api-key': token })).status, 200);
    await gateway.close({ drainMs: 100 });
    assert.equal(await connectResult(port), 'ECONNREFUSED');

    assert.ok(!readFileSync(path.join(stateDir, 'leases.jsonl'), 'utf8').includes(token.slice('gwtok-'.length)), 'the lease holds a digest, not the token');
    gateway = await open();
    const restored = gateway.keys().find((k) => k.id === key.id);
    assert.deepEqual(restored?.tcp, { host: '127.0.0.1', port });
    assert.equal((await anthropicCall(port, { 'x-api-key': token })).status, 200);
    assert.equal((await anthropicCall(port, { 'x-api-key': `${token}x` })).status, 401);

    const lost = await gateway.mint({ group: 'lost', tcp: LOOPBACK });
    await gateway.close({ drainMs: 100 });
    // Something else takes the lost key's port while the gateway is down.
    const taken = net.createServer((socket) => socket.destroy());
    blocker = taken;
    await new Promise<void>((resolve) => taken.listen(lost.tcp!.port, '127.0.0.1', resolve));

    const log = memoryLogger();
    gateway = await open(log.logger);
    try {
      assert.ok(
        gateway.keys().some((k) => k.id === key.id),
        'the other key is restored',
      );
      assert.ok(!gateway.keys().some((k) => k.id === lost.id), 'the key whose port is taken is not');
      assert.equal((await anthropicCall(port, { 'x-api-key': token })).status, 200);
      const why = log
        .text()
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as { msg: string; key?: string; err?: { code?: string } })
        .find((line) => line.key === lost.id);
      assert.match(why?.msg ?? '', /not restored/);
      assert.equal(why?.err?.code, 'EADDRINUSE');
      assert.ok(!existsSync(path.join(stateDir, 'keys', lost.id)), 'its directory is gone with its lease');
    } finally {
      await gateway.close({ drainMs: 100 });
    }
    // Its lease ended: with the port free again, the next start does not bring it back either.
    await new Promise((resolve) => taken.close(resolve));
    blocker = undefined;
    gateway = await open();
    try {
      assert.ok(!gateway.keys().some((k) => k.id === lost.id));
      assert.ok(gateway.keys().some((k) => k.id === key.id));
    } finally {
      await gateway.close({ drainMs: 100 });
    }
  });
});

describe('runner/network: the pure parts', () => {
  test('rules: only the container to the listener, from the bridge; nothing forwarded', () => {
    const text = rules('llmgw_abc', 'llmgw-abc', { hostAddress: '10.89.3.1', containerAddress: '10.89.3.2', port: 40123 });
    assert.match(text, /^table inet llmgw_abc \{/);
    assert.ok(text.includes('iifname "llmgw-abc" ip saddr 10.89.3.2 ip daddr 10.89.3.1 tcp dport 40123 accept'), text);
    const input = text.slice(text.indexOf('chain input'), text.indexOf('chain forward'));
    // The accept comes before the drop that follows it, and the chain's hook runs before the host's own filter.
    assert.ok(input.indexOf('accept\n') < input.indexOf('iifname "llmgw-abc" drop'));
    assert.match(input, /type filter hook input priority filter - 1; policy accept;/);
    const forward = text.slice(text.indexOf('chain forward'));
    assert.match(forward, /iifname "llmgw-abc" drop/);
    assert.match(forward, /oifname "llmgw-abc" drop/);
  });

  test('firstHost: the first address after the network that is not the gateway', () => {
    assert.equal(firstHost('10.89.0.0/24', '10.89.0.1'), '10.89.0.2');
    assert.equal(firstHost('10.89.0.0/24', '10.89.0.254'), '10.89.0.1');
    assert.equal(firstHost('172.18.0.0/16', '172.18.0.1'), '172.18.0.2');
    assert.equal(firstHost('10.0.255.0/24', '10.0.255.1'), '10.0.255.2');
    assert.equal(firstHost('192.168.255.252/30', '192.168.255.253'), '192.168.255.254');
  });
});
