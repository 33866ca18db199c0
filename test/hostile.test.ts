// Every container is assumed hostile: malformed HTTP, slow senders, connection floods and
// property-based fuzzing of routing and header handling. Each gets a clear error or a closed
// connection; the gateway stays up and other keys are unaffected; no credential ever crosses.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { GatewayError } from '../src/wire/errors.ts';
import { headersForUpstream } from '../src/wire/headers.ts';
import { authenticate, resolveUpstreams } from '../src/upstream/providers.ts';
import { resolveRoute } from '../src/wire/endpoints.ts';
import { REAL_ANTHROPIC_KEY, REAL_OPENAI_KEY, startFixture, type Fixture } from './support/fixture.ts';
import { anthropicHeaders, request } from './support/http.ts';

/** Sends raw bytes on a fresh connection; resolves with everything received until the gateway closes it. */
function raw(socketPath: string, bytes: string | Buffer, { endAfterMs = 3000 } = {}): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    let received = '';
    const timer = setTimeout(() => socket.destroy(), endAfterMs);
    socket.on('data', (chunk) => (received += chunk.toString('latin1')));
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(received);
    });
    socket.on('error', () => undefined);
    socket.write(bytes);
  });
}

const statusOf = (response: string) => Number(response.split(' ')[1]);
const message = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] });

describe('malformed and hostile requests', () => {
  let fx: Fixture;
  let socketPath: string;
  let otherKey: string;
  const everything: string[] = [];

  before(async () => {
    fx = await startFixture({}, { timeouts: { clientHeadersMs: 500, clientBodyIdleMs: 500 }, maxConnectionsPerKey: 20 });
    socketPath = (await fx.gateway.mint({ group: 'hostile' })).socketPath;
    otherKey = (await fx.gateway.mint({ group: 'bystander' })).socketPath;
  });
  after(async () => {
    // The gateway is still up and serving, and nothing the containers received held a real key.
    const res = await request({ socketPath: otherKey, path: '/v1/messages', headers: anthropicHeaders(), body: message });
    assert.equal(res.status, 200);
    const all = everything.join('\n') + JSON.stringify(fx.gateway.inspect());
    assert.ok(!all.includes(REAL_ANTHROPIC_KEY) && !all.includes(REAL_OPENAI_KEY), 'a real key crossed');
    await fx.close();
  });

  const cases: [string, string, number][] = [
    ['garbage bytes', '\x00\x01\x02 not http at all\r\n\r\n', 400],
    // Egress is refused for a key without an egress policy (issue 14): an answer, not a silent close.
    ['a CONNECT request', 'CONNECT api.anthropic.com:443 HTTP/1.1\r\nhost: api.anthropic.com:443\r\n\r\n', 403],
    [
      'an absolute-form target',
      `POST http://evil.example/v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${message.length}\r\n\r\n${message}`,
      403,
    ],
    ['CRLF smuggled into a header value', 'GET /v1/models HTTP/1.1\r\nhost: x\r\nx-evil: a\rb\r\n\r\n', 400],
    [
      'conflicting Content-Length and Transfer-Encoding',
      'POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n',
      400,
    ],
    ['two different Content-Lengths', 'POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!', 400],
    ['a huge header', `GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(64 * 1024)}\r\n\r\n`, 431],
    ['a percent-encoded path', 'GET /v1/%2e%2e/v1/models HTTP/1.1\r\nhost: x\r\n\r\n', 404],
    ['a dot-dot path', 'POST /v1/../v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}', 404],
  ];
  for (const [what, bytes, expected] of cases) {
    test(what, async () => {
      const before = fx.standin.requests.length;
      const response = await raw(socketPath, bytes);
      everything.push(response);
      assert.equal(statusOf(response), expected, response.slice(0, 200));
      assert.equal(fx.standin.requests.length, before, 'nothing was forwarded');
    });
  }

  test('thousands of small headers past the 16 KiB header limit: 431, nothing forwarded', async () => {
    const before = fx.standin.requests.length;
    const headers = Array.from({ length: 3000 }, (_, i) => `x-h${i}: ${i}\r\n`).join('');
    const response = await raw(socketPath, `GET /v1/models HTTP/1.1\r\nhost: x\r\n${headers}\r\n`);
    everything.push(response);
    assert.equal(statusOf(response), 431, response.slice(0, 100));
    assert.equal(fx.standin.requests.length, before);
  });

  test('a sender too slow with its headers gets 408 and is closed', async () => {
    const started = Date.now();
    const response = await raw(socketPath, 'POST /v1/messages HTTP/1.1\r\nhost: x\r\n', { endAfterMs: 8000 });
    assert.equal(statusOf(response), 408);
    assert.ok(Date.now() - started < 7000);
  });

  test('a sender too slow with its body gets 408 in the provider shape and is never forwarded', async () => {
    const before = fx.standin.requests.length;
    const response = await raw(
      socketPath,
      'POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nanthropic-version: 2023-06-01\r\ncontent-length: 100\r\n\r\n{"model":',
      { endAfterMs: 8000 },
    );
    everything.push(response);
    assert.equal(statusOf(response), 408);
    assert.match(response, /"type":"error"/);
    assert.equal(fx.standin.requests.length, before);
  });

  test("a flood of idle connections hits the key's cap; other keys are unaffected", async () => {
    const sockets: net.Socket[] = [];
    let refused = 0;
    await Promise.all(
      Array.from({ length: 40 }, () => {
        const socket = net.connect(socketPath);
        sockets.push(socket);
        return new Promise<void>((resolve) => {
          socket.on('connect', () => resolve());
          socket.on('close', () => {
            refused++;
            resolve();
          });
          socket.on('error', () => resolve());
        });
      }),
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.ok(refused >= 20, `only ${refused} of 40 connections beyond a cap of 20 were closed`);
    const bystander = await request({ socketPath: otherKey, path: '/v1/messages', headers: anthropicHeaders(), body: message });
    assert.equal(bystander.status, 200);
    for (const socket of sockets) socket.destroy();
  });
});

describe('property-based: routing and header handling', () => {
  const upstreams = resolveUpstreams({ anthropic: { apiKey: REAL_ANTHROPIC_KEY }, openai: { apiKey: REAL_OPENAI_KEY } });
  const headerName = fc.stringMatching(/^[a-z][a-z0-9-]{0,30}$/);
  const headerValue = fc.string({ maxLength: 60 });
  const dangerous = [
    'authorization',
    'x-api-key',
    'api-key',
    'proxy-authorization',
    'cookie',
    'x-forwarded-for',
    'forwarded',
    'host',
    'connection',
    'transfer-encoding',
    'openai-organization',
  ];

  test('routing: any method and path either routes to a known endpoint or fails with a GatewayError', () => {
    const path = fc.oneof(
      fc.webPath(),
      fc.constantFrom('/v1/messages', '/v1/messages/count_tokens', '/v1/chat/completions', '/v1/responses', '/v1/models', '/v1/models/gpt-5'),
      fc.string({ maxLength: 80 }).map((s) => `/${s}`),
    );
    fc.assert(
      fc.property(fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'PATCH', 'OPTIONS'), path, fc.boolean(), (method, p, anthropic) => {
        try {
          const route = resolveRoute(method, p, anthropic ? { 'anthropic-version': '2023-06-01' } : {});
          assert.ok(
            ['/v1/messages', '/v1/messages/count_tokens', '/v1/chat/completions', '/v1/responses', '/v1/models'].includes(p) ||
              /^\/v1\/models\/[A-Za-z0-9._:@-]+$/.test(p),
          );
          assert.ok(route.endpoint);
        } catch (error) {
          assert.ok(error instanceof GatewayError, String(error));
        }
      }),
      { numRuns: 2000 },
    );
  });

  test('headers: whatever the client sends, exactly one real credential goes upstream and no client credential does', () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.oneof(headerName, fc.constantFrom(...dangerous)), headerValue, { maxKeys: 20 }),
        fc.constantFrom<'anthropic' | 'openai'>('anthropic', 'openai'),
        (incoming, provider) => {
          const out = headersForUpstream(incoming);
          const upstream = upstreams.get(provider)!;
          authenticate(upstream, upstream.credentials[0], { method: 'POST', origin: upstream.origin, path: '/v1/messages', headers: out, body: null });
          for (const name of dangerous) {
            if (name === 'authorization' && provider === 'openai') continue;
            if (name === 'x-api-key' && provider === 'anthropic') continue;
            assert.equal(out[name], undefined, `${name} forwarded`);
          }
          if (provider === 'anthropic') {
            assert.equal(out['x-api-key'], REAL_ANTHROPIC_KEY);
            assert.equal(out.authorization, undefined);
          } else {
            assert.equal(out.authorization, `Bearer ${REAL_OPENAI_KEY}`);
            assert.equal(out['x-api-key'], undefined);
          }
          // Everything else passes unchanged, but for names the Connection header lists (hop-by-hop too).
          const listed = String(incoming.connection ?? '')
            .split(',')
            .map((t) => t.trim().toLowerCase());
          for (const [name, value] of Object.entries(incoming)) {
            if (listed.includes(name)) continue;
            if (
              dangerous.includes(name) ||
              name.startsWith('x-forwarded-') ||
              [
                'keep-alive',
                'te',
                'trailer',
                'upgrade',
                'via',
                'x-real-ip',
                'expect',
                'content-length',
                'accept-encoding',
                'proxy-connection',
                'http2-settings',
                'openai-project',
              ].includes(name)
            )
              continue;
            assert.equal(out[name], value, name);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});
