// Provider routing and resilience against several fake upstreams that fail in each way: model
// routes and renames, fallbacks, retries only before the first byte, credential failover,
// timeouts, per-upstream beta dropping, Azure, and an outbound proxy with an extra CA.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { startStandin, type RecordedRequest, type Standin, type StandinOptions } from '../src/dev/standin.ts';
import { eventually, REAL_ANTHROPIC_KEY, REAL_OPENAI_KEY, deadPort, startFixture, type Fixture } from './support/fixture.ts';
import { anthropicHeaders, openaiHeaders, request, sseData } from './support/http.ts';
import type { GatewayOptions } from '../src/index.ts';

const message = (extra: object = {}) => JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }], ...extra });

/** Answers each request with the next scripted status (then the stand-in's normal answer). */
function scripted(statuses: (number | { status: number; headers?: Record<string, string> })[]): StandinOptions['override'] {
  let next = 0;
  return (_request: RecordedRequest, res) => {
    const step = statuses[next++];
    if (step === undefined) return false;
    const { status, headers = {} } = typeof step === 'number' ? { status: step } : step;
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify({ type: 'error', error: { type: 'scripted', message: `scripted ${status}` } }));
    return true;
  };
}

async function withGateway(
  backups: Record<string, StandinOptions>,
  options: (primaryUrl: string, backups: Record<string, Standin>) => Partial<GatewayOptions>,
  primary: Partial<StandinOptions>,
  run: (fx: Fixture, backups: Record<string, Standin>, socketPath: string) => Promise<void>,
): Promise<void> {
  const started: Record<string, Standin> = {};
  for (const [name, standinOptions] of Object.entries(backups)) started[name] = await startStandin(standinOptions);
  const fx = await startFixture(primary, (url) => options(url, started));
  try {
    const { socketPath } = await fx.gateway.mint({ group: 'resilience' });
    await run(fx, started, socketPath);
  } finally {
    await fx.close();
    for (const standin of Object.values(started)) await standin.close();
  }
}

const BACKUP_KEY = 'real-backup-key-44d1';
const fastRetry = { baseBackoffMs: 10 };

describe('model routes', () => {
  test('an alias is renamed upstream by splicing the body; pricing follows the real model', async () => {
    await withGateway(
      {},
      (url) => ({
        providers: { anthropic: { baseUrl: url, apiKey: REAL_ANTHROPIC_KEY } },
        routes: [{ models: ['fast'], provider: 'anthropic', rename: 'claude-haiku-4-5-20251001' }],
      }),
      {},
      async (fx, _backups, socketPath) => {
        const body = '{"model" :  "fast", "max_tokens":8, "messages":[{"role":"user","content":"model: fast"}]}';
        const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body });
        assert.equal(res.status, 200);
        assert.equal(
          fx.standin.requests[0]!.body.toString(),
          '{"model" :  "claude-haiku-4-5-20251001", "max_tokens":8, "messages":[{"role":"user","content":"model: fast"}]}',
        );
        await eventually(() => fx.calls.length === 1);
        assert.equal(fx.calls[0]!.model, 'fast');
        assert.equal(fx.calls[0]!.upstreamModel, 'claude-haiku-4-5-20251001');
        // Haiku 4.5 at $1 / $5 per MTok, not the default price of an unknown "fast".
        const { inputTokens = 0, outputTokens = 0 } = fx.calls[0]!;
        assert.ok(Math.abs(fx.calls[0]!.costUsd - (inputTokens * 1 + outputTokens * 5) / 1e6) < 1e-12);
      },
    );
  });

  test('model globs choose the provider; Claude Code models without a route go to the default', async () => {
    await withGateway(
      { opus: { anthropicApiKey: BACKUP_KEY } },
      (url, backups) => ({
        providers: {
          anthropic: { baseUrl: url, apiKey: REAL_ANTHROPIC_KEY },
          'opus-host': { kind: 'anthropic', baseUrl: backups.opus!.url, apiKey: BACKUP_KEY },
        },
        routes: [{ models: ['claude-opus-*'], provider: 'opus-host' }],
      }),
      {},
      async (fx, backups, socketPath) => {
        for (const model of ['claude-opus-4-5', 'claude-haiku-4-5-20251001', 'claude-sonnet-4-5']) {
          assert.equal((await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message({ model }) })).status, 200);
        }
        assert.equal(backups.opus!.requests.length, 1);
        assert.equal(backups.opus!.requests[0]!.headers['x-api-key'], BACKUP_KEY);
        assert.equal(fx.standin.requests.length, 2);
        await eventually(() => fx.calls.length === 3);
        assert.deepEqual(
          fx.calls.map((c) => c.upstream),
          ['opus-host', 'anthropic', 'anthropic'],
        );
      },
    );
  });

  test("a group's allowed models apply to all its keys, on top of each key's own", async () => {
    await withGateway(
      {},
      (url) => ({
        providers: { anthropic: { baseUrl: url, apiKey: REAL_ANTHROPIC_KEY } },
        groupModels: { resilience: ['claude-haiku-*', 'claude-sonnet-*'] },
      }),
      {},
      async (fx, _b, socketPath) => {
        assert.equal((await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() })).status, 200);
        const opus = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message({ model: 'claude-opus-4-5' }) });
        assert.equal(opus.status, 403);
        assert.match(opus.body, /group resilience may not use model claude-opus-4-5/);
        const narrower = await fx.gateway.mint({ group: 'resilience', models: ['claude-haiku-*'] });
        const sonnet = await request({ socketPath: narrower.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() });
        assert.equal(sonnet.status, 403, 'the key narrows its group further');
        fx.gateway.reconfigure({ groupModels: {} });
        assert.equal(
          (await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message({ model: 'claude-opus-4-5' }) })).status,
          200,
        );
        assert.equal(fx.standin.requests.length, 2);
      },
    );
  });
});

describe('retries and fallbacks, only before the first byte', () => {
  test('connection refused: the fallback serves the call', async () => {
    const port = await deadPort();
    await withGateway(
      { backup: { anthropicApiKey: BACKUP_KEY } },
      (_url, backups) => ({
        providers: {
          anthropic: { baseUrl: `http://127.0.0.1:${port}`, apiKey: REAL_ANTHROPIC_KEY },
          backup: { kind: 'anthropic', baseUrl: backups.backup!.url, apiKey: BACKUP_KEY },
        },
        routes: [{ models: ['claude-*'], provider: 'anthropic', fallbacks: ['backup'] }],
        retry: fastRetry,
      }),
      {},
      async (fx, backups, socketPath) => {
        const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message({ stream: true }) });
        assert.equal(res.status, 200);
        assert.equal((sseData(res.body).at(-1) as { type: string }).type, 'message_stop');
        assert.equal(backups.backup!.requests.length, 1);
        await eventually(() => fx.calls.length === 1);
        assert.deepEqual([fx.calls[0]!.upstream, fx.calls[0]!.attempts], ['backup', 2]);
      },
    );
  });

  test('529 overloaded: straight to the fallback, with the fallback model name', async () => {
    await withGateway(
      { backup: { anthropicApiKey: BACKUP_KEY } },
      (url, backups) => ({
        providers: {
          anthropic: { baseUrl: url, apiKey: REAL_ANTHROPIC_KEY },
          backup: { kind: 'anthropic', baseUrl: backups.backup!.url, apiKey: BACKUP_KEY },
        },
        routes: [{ models: ['claude-sonnet-*'], provider: 'anthropic', fallbacks: ['backup:claude-sonnet-4-5-backup'] }],
        // A backoff would take seconds: the test would see it.
        retry: { baseBackoffMs: 5000 },
      }),
      { override: scripted([529]) },
      async (fx, backups, socketPath) => {
        const started = performance.now();
        const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() });
        assert.equal(res.status, 200);
        assert.ok(performance.now() - started < 2000, 'no backoff before a different upstream');
        assert.match(backups.backup!.requests[0]!.body.toString(), /"model":"claude-sonnet-4-5-backup"/);
        assert.equal(fx.standin.requests.length, 1);
      },
    );
  });

  test('500 then success: the same upstream again after a backoff', async () => {
    await withGateway(
      {},
      (url) => ({ providers: { anthropic: { baseUrl: url, apiKey: REAL_ANTHROPIC_KEY } }, retry: fastRetry }),
      { override: scripted([500]) },
      async (fx, _b, socketPath) => {
        const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() });
        assert.equal(res.status, 200);
        assert.equal(fx.standin.requests.length, 2);
        await eventually(() => fx.calls.length === 1);
        assert.equal(fx.calls[0]!.attempts, 2);
      },
    );
  });

  test('a body that arrives in pieces goes upstream byte for byte, on every attempt', async () => {
    await withGateway(
      {},
      (url) => ({ providers: { anthropic: { baseUrl: url, apiKey: REAL_ANTHROPIC_KEY } }, retry: fastRetry }),
      { override: scripted([500]) },
      async (fx, _b, socketPath) => {
        // Odd spacing a re-serialiser would change, and ~300 KB sent in five writes with pauses
        // between: the gateway keeps the socket's chunks as they came and sends them as they are.
        const text = 'é "quoted" \\u00e9 '.repeat(20_000);
        const body = Buffer.from(`{ "model" : "claude-sonnet-4-5","max_tokens":8,  "messages":[{"role":"user","content":"${text.replaceAll('"', '\\"')}"}] }`);
        const socket = net.connect(socketPath);
        let reply = '';
        socket.on('data', (chunk) => (reply += chunk));
        const closed = new Promise((resolve) => socket.once('close', resolve));
        socket.write(
          `POST /v1/messages HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\nanthropic-version: 2023-06-01\r\nx-api-key: placeholder\r\ncontent-length: ${body.length}\r\n\r\n`,
        );
        const piece = Math.ceil(body.length / 5);
        for (let at = 0; at < body.length; at += piece) {
          socket.write(body.subarray(at, at + piece));
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        await closed;
        assert.match(reply, /^HTTP\/1\.1 200 /);
        assert.equal(fx.standin.requests.length, 2);
        for (const sent of fx.standin.requests) assert.ok(sent.body.equals(body), 'the upstream received the exact bytes');
        await eventually(() => fx.calls.length === 1);
        assert.equal(fx.calls[0]!.requestBytes, body.length);
      },
    );
  });

  test('persistent 503: three attempts, then the upstream answer reaches the client unchanged', async () => {
    await withGateway(
      {},
      (url) => ({ providers: { anthropic: { baseUrl: url, apiKey: REAL_ANTHROPIC_KEY } }, retry: fastRetry }),
      { override: scripted([503, 503, 503, 503]) },
      async (fx, _b, socketPath) => {
        const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() });
        assert.equal(res.status, 503);
        assert.match(res.body, /scripted 503/);
        assert.equal(fx.standin.requests.length, 3);
      },
    );
  });

  test('429 with one credential and no fallback: back to the client at once with its retry-after', async () => {
    await withGateway(
      {},
      (url) => ({ providers: { anthropic: { baseUrl: url, apiKey: REAL_ANTHROPIC_KEY } } }),
      { override: scripted([{ status: 429, headers: { 'retry-after': '3' } }]) },
      async (fx, _b, socketPath) => {
        const started = performance.now();
        const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() });
        assert.equal(res.status, 429);
        assert.equal(res.headers['retry-after'], '3');
        assert.ok(performance.now() - started < 2000, 'not held for the 3 s retry-after');
        assert.equal(fx.standin.requests.length, 1);
      },
    );
  });

  test('400 and other client errors are never retried', async () => {
    await withGateway(
      {},
      (url) => ({ providers: { anthropic: { baseUrl: url, apiKey: REAL_ANTHROPIC_KEY } } }),
      { override: scripted([400]) },
      async (fx, _b, socketPath) => {
        assert.equal((await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() })).status, 400);
        assert.equal(fx.standin.requests.length, 1);
      },
    );
  });

  test('never after the client saw a byte: a stream cut mid-way is not retried', async () => {
    let hits = 0;
    await withGateway(
      {},
      (url) => ({ providers: { anthropic: { baseUrl: url, apiKey: REAL_ANTHROPIC_KEY } } }),
      {
        override(_request, res) {
          hits++;
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write('event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":3,"output_tokens":1}}}\n\n');
          setTimeout(() => res.socket?.destroy(), 20);
          return true;
        },
      },
      async (_fx, _b, socketPath) => {
        const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message({ stream: true }) });
        assert.deepEqual(
          sseData(res.body).map((e) => (e as { type: string }).type),
          ['message_start', 'error'],
        );
        assert.equal(hits, 1);
      },
    );
  });

  test('several keys: calls spread over them, and a rate-limited key is skipped for the next', async () => {
    const keys = ['real-key-a-1111', 'real-key-b-2222'];
    const seen: string[] = [];
    await withGateway(
      {},
      (url) => ({ providers: { anthropic: { baseUrl: url, apiKeys: keys } } }),
      {
        anthropicApiKey: undefined,
        override(request, res) {
          const key = String(request.headers['x-api-key']);
          seen.push(key);
          if (key === keys[0] && seen.filter((k) => k === keys[0]).length === 2) {
            res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '30' });
            res.end('{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}');
            return true;
          }
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end('{"type":"message","content":[],"usage":{"input_tokens":1,"output_tokens":1}}');
          return true;
        },
      },
      async (_fx, _b, socketPath) => {
        const statuses = [];
        for (let i = 0; i < 6; i++) statuses.push((await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() })).status);
        assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200]);
        // a, b, a (429 -> b at once), then a cools down for its retry-after: b, b, b.
        assert.deepEqual(seen.slice(0, 4), [keys[0], keys[1], keys[0], keys[1]]);
        assert.ok(
          seen.slice(4).every((key) => key === keys[1]),
          seen.join(' '),
        );
      },
    );
  });
});

describe('timeouts', () => {
  test('no response headers in time: 504 in the provider shape, and an audit record', async () => {
    await withGateway(
      {},
      (url) => ({ providers: { openai: { baseUrl: url, apiKey: REAL_OPENAI_KEY, timeouts: { firstByteMs: 200 } } } }),
      { override: () => true },
      async (fx, _b, socketPath) => {
        const res = await request({ socketPath, path: '/v1/chat/completions', headers: openaiHeaders(), body: '{"model":"gpt-5","messages":[]}' });
        assert.equal(res.status, 504);
        assert.equal((JSON.parse(res.body) as { error: { code: string } }).error.code, 'upstream_timeout');
        await eventually(() => fx.calls.length === 1);
        assert.equal(fx.calls[0]!.errorKind, 'upstream_timeout');
      },
    );
  });

  test('a stream that goes silent mid-way ends with an error event', async () => {
    await withGateway(
      {},
      (url) => ({ providers: { anthropic: { baseUrl: url, apiKey: REAL_ANTHROPIC_KEY, timeouts: { idleMs: 200 } } } }),
      {
        override(_request, res) {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write('event: ping\ndata: {"type":"ping"}\n\n');
          return true; // and then nothing
        },
      },
      async (_fx, _b, socketPath) => {
        const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message({ stream: true }) });
        const events = sseData(res.body) as { type: string; error?: { message: string } }[];
        assert.equal(events.at(-1)!.type, 'error');
        assert.match(events.at(-1)!.error!.message, /stalled mid-response/);
      },
    );
  });

  test('a call over its total time limit is cut, even while events still flow', async () => {
    await withGateway(
      {},
      (url) => ({ providers: { anthropic: { baseUrl: url, apiKey: REAL_ANTHROPIC_KEY, timeouts: { totalMs: 300 } } } }),
      { eventDelayMs: 100, streamEvents: 8 },
      async (_fx, _b, socketPath) => {
        const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message({ stream: true }) });
        const events = sseData(res.body) as { type: string; error?: { message: string } }[];
        assert.equal(events.at(-1)!.type, 'error');
        assert.match(events.at(-1)!.error!.message, /total time limit/);
      },
    );
  });
});

describe('provider kinds and the network', () => {
  test('betas an upstream rejects are dropped for that upstream only', async () => {
    await withGateway(
      { bedrock: { anthropicApiKey: BACKUP_KEY } },
      (url, backups) => ({
        providers: {
          anthropic: { baseUrl: url, apiKey: REAL_ANTHROPIC_KEY },
          bedrock: {
            kind: 'anthropic',
            baseUrl: backups.bedrock!.url,
            apiKey: BACKUP_KEY,
            dropBetas: ['context-management-2025-06-27', 'afk-mode-2026-01-31'],
          },
        },
        routes: [{ models: ['*-via-bedrock'], provider: 'bedrock' }],
      }),
      {},
      async (fx, backups, socketPath) => {
        const betas = 'claude-code-20250219,context-management-2025-06-27,interleaved-thinking-2025-05-14,afk-mode-2026-01-31';
        await request({
          socketPath,
          path: '/v1/messages',
          headers: anthropicHeaders({ 'anthropic-beta': betas }),
          body: message({ model: 'claude-sonnet-4-5-via-bedrock' }),
        });
        await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders({ 'anthropic-beta': betas }), body: message() });
        assert.equal(backups.bedrock!.requests[0]!.headers['anthropic-beta'], 'claude-code-20250219,interleaved-thinking-2025-05-14');
        assert.equal(fx.standin.requests[0]!.headers['anthropic-beta'], betas);
      },
    );
  });

  test("Azure OpenAI: its api-key header, the api-version query, the resource's path", async () => {
    await withGateway(
      {},
      (url) => ({
        providers: { openai: { kind: 'azure-openai', baseUrl: `${url}/openai`, apiKey: REAL_OPENAI_KEY, apiVersion: '2025-04-01-preview' } },
      }),
      {
        override(request, res) {
          res.writeHead(request.headers['api-key'] === REAL_OPENAI_KEY && !request.headers.authorization ? 200 : 401, { 'content-type': 'application/json' });
          res.end('{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}');
          return true;
        },
      },
      async (fx, _b, socketPath) => {
        const res = await request({ socketPath, path: '/v1/chat/completions?x=1', headers: openaiHeaders(), body: '{"model":"gpt-4o","messages":[]}' });
        assert.equal(res.status, 200);
        assert.equal(fx.standin.requests[0]!.url, '/openai/v1/chat/completions?x=1&api-version=2025-04-01-preview');
      },
    );
  });

  test('through an outbound proxy to an HTTPS upstream trusted by an extra CA', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'gw-tls-'));
    let tunnels = 0;
    const proxy = http.createServer();
    proxy.on('connect', (req, client: net.Socket, head) => {
      tunnels++;
      const [host, port] = String(req.url).split(':');
      const upstream = net.connect(Number(port), host, () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        upstream.write(head);
        upstream.pipe(client).pipe(upstream);
      });
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    try {
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'rsa:2048',
          '-nodes',
          '-days',
          '1',
          '-subj',
          '/CN=127.0.0.1',
          '-addext',
          'subjectAltName=IP:127.0.0.1',
          '-keyout',
          path.join(dir, 'key.pem'),
          '-out',
          path.join(dir, 'cert.pem'),
        ],
        { stdio: 'ignore' },
      );
      const cert = readFileSync(path.join(dir, 'cert.pem'), 'utf8');
      const tls = { key: readFileSync(path.join(dir, 'key.pem'), 'utf8'), cert };
      const proxyUrl = `http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;
      await withGateway(
        {},
        (url) => ({
          providers: { anthropic: { baseUrl: url, apiKey: REAL_ANTHROPIC_KEY } },
          network: { proxyUrl, extraCaPem: cert },
        }),
        { tls },
        async (fx, _b, socketPath) => {
          assert.ok(fx.standin.url.startsWith('https://'));
          const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message({ stream: true }) });
          assert.equal(res.status, 200);
          assert.equal(fx.standin.requests[0]!.headers['x-api-key'], REAL_ANTHROPIC_KEY);
          assert.equal(tunnels, 1, 'the call went through the proxy');
        },
      );
      // Without the extra CA the same upstream is refused: certificates are verified.
      await withGateway(
        {},
        (url) => ({ providers: { anthropic: { baseUrl: url, apiKey: REAL_ANTHROPIC_KEY } }, retry: { attempts: 1 } }),
        { tls },
        async (fx, _b, socketPath) => {
          const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() });
          assert.equal(res.status, 502);
          assert.equal(fx.standin.requests.length, 0);
        },
      );
    } finally {
      proxy.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
