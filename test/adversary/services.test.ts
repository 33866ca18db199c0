// A hostile container against the services behind its socket: it names services it was not granted
// (or that do not exist, or with names that are not names), uses methods and paths the service does
// not allow, spells paths so an upstream would resolve them elsewhere, sends bodies past the limit,
// floods and holds requests open, and tries to get the host's credential back (reflected bodies split
// across chunks, reflected headers, redirects carrying it, its own copies of the query parameter).
// Every refusal is the gateway's JSON error with its status, and nothing refused reaches the upstream.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { KeyInfo } from '../../src/index.ts';
import { ValidationError } from '../../src/index.ts';
import { eventually } from '../support/fixture.ts';
import { request, type HttpExchange } from '../support/http.ts';
import { startRestService, type RestService } from '../support/rest-service.ts';
import {
  gatewayError,
  requestStreaming,
  startGatedUpstream,
  startServicesGateway,
  type GatedUpstream,
  type ServicesGateway,
} from '../support/services-fixture.ts';

const TOKEN = 'real-svc-token-8a1f3c5e7d';
const BASIC = Buffer.from(`bot:${TOKEN}`).toString('base64');

let rest: RestService;
let basic: RestService;
let query: RestService;
let held: GatedUpstream;
let split: GatedUpstream;
let gw: ServicesGateway;

/** A broken gateway (one that buffers, or never answers) fails a test in this time instead of hanging it. */
const BOUNDED = { timeout: 5000 };

before(async () => {
  [rest, basic, query, held, split] = await Promise.all([
    startRestService({ credential: { kind: 'bearer', token: TOKEN } }),
    startRestService({ credential: { kind: 'basic', user: 'bot', token: TOKEN } }),
    startRestService({ credential: { kind: 'query', name: 'api_key', token: TOKEN } }),
    startGatedUpstream(TOKEN),
    startGatedUpstream(TOKEN),
  ]);
  gw = await startServicesGateway({
    rest: { baseUrl: rest.url, credential: TOKEN },
    narrow: { baseUrl: rest.url, credential: TOKEN, methods: ['GET', 'HEAD'], paths: ['/api/tickets/*', '/api/stream', '/api/projects/**'] },
    small: { baseUrl: rest.url, credential: TOKEN, maxBodyBytes: 1024 },
    limited: { baseUrl: rest.url, credential: TOKEN, rpm: 2 },
    held: { baseUrl: held.url, credential: TOKEN, maxConcurrent: 1 },
    split: { baseUrl: split.url, credential: TOKEN },
    basic: { baseUrl: basic.url, credential: TOKEN, inject: { basic: 'bot' } },
    'basic-pass': { baseUrl: basic.url, credential: TOKEN, inject: { basic: 'bot' }, passClientAuth: true },
    query: { baseUrl: query.url, credential: TOKEN, inject: { query: 'api_key' } },
    tokenless: { baseUrl: rest.url },
  });
});

after(async () => {
  const lines = await gw.close();
  await Promise.all([rest, basic, query, held, split].map((server) => server.close()));
  // Whatever the attacks below did, no record of them holds the credential.
  for (const text of [JSON.stringify(gw.calls), ...lines]) assert.ok(!text.includes(TOKEN) && !text.includes(BASIC), text);
  assert.ok(lines.length > 0);
});

/** A fresh key for each attack, so one test's refusals never count against another's. */
const keyFor = (services: string[], group = 'g') => gw.gateway.mint({ group, services });
const send = (key: KeyInfo, method: string, path: string, headers: Record<string, string> = {}, body?: string | Buffer) =>
  request({ socketPath: key.socketPath, method, path, headers, body });

function assertRefused(res: HttpExchange, status: number, code: string, message?: RegExp): string {
  assert.equal(res.status, status, res.body);
  assert.equal(res.headers['content-type'], 'application/json');
  const error = gatewayError(res);
  assert.equal(error.code, code);
  if (message) assert.match(error.message, message);
  return error.message;
}

test('grants: a service the key was not given answers exactly like one that does not exist; names that are not names are not echoed', BOUNDED, async () => {
  const key = await keyFor(['rest']);
  const before = rest.requests.length;
  const ungranted = await send(key, 'GET', '/svc/narrow/api/tickets/1');
  const missing = await send(key, 'GET', '/svc/nothere/api/tickets/1');
  assertRefused(ungranted, 404, 'not_found', /^no service "narrow" for this key$/);
  assert.equal(ungranted.body, missing.body.replace('nothere', 'narrow'));
  const headersOf = (res: HttpExchange) => {
    const { date: _, 'content-length': __, ...rest } = res.headers;
    return rest;
  };
  assert.deepEqual(headersOf(ungranted), headersOf(missing));

  for (const path of ['/svc', '/svc/', '/svc//api', '/svc/NARROW/x', '/svc/na%72row/x', '/svc/..%2frest/x', '/svc/<img>/x', `/svc/${'a'.repeat(200)}/x`]) {
    const res = await send(key, 'GET', path);
    const message = assertRefused(res, 404, 'not_found');
    assert.equal(message, path === '/svc' ? message : 'no such service', path);
    assert.ok(!res.body.includes('<img>') && !res.body.includes('aaaa'), res.body);
  }
  assert.equal(rest.requests.length, before, 'nothing refused reached the upstream');
});

test('methods: one the service does not allow is 403 naming the allowed ones; nothing reaches the upstream', BOUNDED, async () => {
  const key = await keyFor(['narrow']);
  const before = rest.requests.length;
  for (const method of ['POST', 'DELETE', 'PUT', 'OPTIONS', 'PATCH']) {
    assertRefused(
      await send(key, method, '/svc/narrow/api/tickets/1', {}, 'x'),
      403,
      'service_not_allowed',
      new RegExp(`allows GET, HEAD: ${method} is refused`),
    );
  }
  assert.equal((await send(key, 'GET', '/svc/narrow/api/tickets/1')).status, 200);
  assert.equal(rest.requests.length, before + 1);
});

test('paths: outside the globs is 403 naming them; case, empty segments and encoded slashes (read either way) do not step around a glob', BOUNDED, async () => {
  const key = await keyFor(['narrow']);
  const before = rest.requests.length;
  for (const path of [
    '/api/echo-headers',
    '/api/tickets',
    '/api/tickets/1/x',
    '/API/tickets/1',
    '//api/tickets/1',
    '/api/tickets/a%2Fb',
    '/api%2Ftickets%2F1',
    '/api/streams',
    '',
  ]) {
    assertRefused(
      await send(key, 'GET', `/svc/narrow${path}`),
      403,
      'service_not_allowed',
      /allows the paths \/api\/tickets\/\*, \/api\/stream, \/api\/projects\/\*\*: /,
    );
  }
  assert.equal(rest.requests.length, before);
  assert.equal((await send(key, 'GET', '/svc/narrow/api/tickets/%41')).status, 200);
  assert.equal(rest.requests.at(-1)!.path, '/api/tickets/%41');
  // An encoded slash is fine where the globs allow both readings of it (GitLab's `group%2Fproject`).
  assert.equal((await send(key, 'GET', '/svc/narrow/api/projects/group%2Fname')).status, 404);
  assert.equal(rest.requests.at(-1)!.path, '/api/projects/group%2Fname');
});

test('traversal: .., %2e%2e, %2F.., ..;, %252e, a backslash, control characters: 400 and nothing reaches the upstream', BOUNDED, async () => {
  const key = await keyFor(['rest', 'narrow']);
  const before = rest.requests.length;
  for (const name of ['rest', 'narrow']) {
    for (const path of [
      '/api/tickets/1/../../echo-headers',
      '/api/tickets/..',
      '/api/tickets/1/%2e%2e/%2E%2E/echo-headers',
      '/api/tickets/1%2F..%2F..%2Fecho-headers',
      '/api/tickets/%2e./x',
      '/api/tickets/1/%252e%252e/%252e%252e/echo-headers',
      '/api/tickets/%252F/x',
      '/api/tickets/1\\..\\..\\echo-headers',
      '/api/tickets/1%5c..%5cecho-headers',
      '/api/tickets/./1',
      '/api/tickets/1/..;/..;/echo-headers',
      '/api/tickets/.;x/1',
      '/api/tickets/1%00',
      '/api/tickets/1%0d%0aX-Injected:%20yes',
      '/api/tickets/%zz',
      '/..',
    ]) {
      assertRefused(await send(key, 'GET', `/svc/${name}${path}`), 400, 'invalid_request', new RegExp(`^service ${name}: `));
    }
  }
  assert.equal(rest.requests.length, before);
});

test('bodies: past maxBodyBytes is 413, announced by content-length or sent chunked; nothing complete reaches the upstream', BOUNDED, async () => {
  const key = await keyFor(['small']);
  const before = rest.requests.length;
  const big = Buffer.alloc(4096, 'x');
  assertRefused(await send(key, 'POST', '/svc/small/api/tickets', { 'content-type': 'application/json' }, big), 413, 'body_too_large', /up to 1024 bytes/);

  // An announced length is refused on its headers: the client has sent 100 of its 4096 bytes and
  // waits, and the answer comes anyway (a gateway that read the body first would wait with it).
  const announced = await new Promise<number>((resolve, reject) => {
    const req = http.request(
      { socketPath: key.socketPath, method: 'POST', path: '/svc/small/api/tickets', headers: { 'content-length': '4096' }, agent: false },
      (res) => {
        clearTimeout(deadline);
        resolve(res.statusCode ?? 0);
        req.destroy();
      },
    );
    const deadline = setTimeout(() => {
      reject(new Error('no answer before the body was complete'));
      req.destroy();
    }, 2000);
    req.on('error', (error: NodeJS.ErrnoException) => (error.code === 'ECONNRESET' ? undefined : reject(error)));
    req.write(Buffer.alloc(100, 'x'));
  });
  assert.equal(announced, 413);

  // Chunked: no length to check up front, so the body is cut as it streams past the limit.
  const chunked = await new Promise<HttpExchange>((resolve, reject) => {
    const req = http.request({ socketPath: key.socketPath, method: 'POST', path: '/svc/small/api/tickets', agent: false }, (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, chunks: [] }));
    });
    req.on('error', reject);
    for (let i = 0; i < 8; i++) req.write(Buffer.alloc(512, 'y'));
    req.end();
  });
  assertRefused(chunked, 413, 'body_too_large');
  assert.equal(rest.requests.length, before);

  // Under the limit, chunked or not, bodies pass whole.
  const fits = await send(key, 'POST', '/svc/small/api/tickets', { 'transfer-encoding': 'chunked' }, Buffer.alloc(1024, 'z'));
  assert.equal(fits.status, 201, fits.body);
  assert.equal(JSON.parse(fits.body).received_bytes, 1024);
});

test("rate: past the service's rpm a key gets 429 with retry-after; another key is not limited by it", BOUNDED, async () => {
  const greedy = await keyFor(['limited']);
  const other = await keyFor(['limited']);
  for (let i = 0; i < 2; i++) assert.equal((await send(greedy, 'GET', '/svc/limited/api/tickets/1')).status, 200);
  const before = rest.requests.length;
  const limited = await send(greedy, 'GET', '/svc/limited/api/tickets/1');
  assertRefused(limited, 429, 'rate_limited', /2 requests per minute per key/);
  assert.ok(Number(limited.headers['retry-after']) >= 1, String(limited.headers['retry-after']));
  assert.equal(rest.requests.length, before);
  assert.equal((await send(other, 'GET', '/svc/limited/api/tickets/1')).status, 200);
});

test('concurrency: past maxConcurrent a key gets 429 while its request is open; another key is not held by it; freed when it ends', BOUNDED, async () => {
  const holder = await keyFor(['held']);
  const other = await keyFor(['held']);
  const open = send(holder, 'GET', '/svc/held/hold');
  await held.arrived;
  const second = await send(holder, 'GET', '/svc/held/hold');
  assertRefused(second, 429, 'rate_limited', /1 requests of this key are open already/);
  assert.equal(second.headers['retry-after'], '1');
  assert.deepEqual(held.seen, ['/hold']);
  const otherOpen = send(other, 'GET', '/svc/held/hold');
  await new Promise<void>((resolve) => {
    const poll = () => (held.seen.length === 2 ? resolve() : setTimeout(poll, 5));
    poll();
  });
  held.next.release();
  assert.equal((await open).body, 'released');
  assert.equal((await otherOpen).body, 'released');
  assert.equal((await send(holder, 'GET', '/svc/held/hold')).status, 200);
});

test('concurrency: a client that hangs up mid-stream frees its slot at once', BOUNDED, async () => {
  const upstream = await startGatedUpstream(TOKEN);
  const mine = await startServicesGateway({ once: { baseUrl: upstream.url, credential: TOKEN, maxConcurrent: 1 } });
  try {
    const key = await mine.gateway.mint({ group: 'g', services: ['once'] });
    await new Promise<void>((resolve, reject) => {
      const req = http.get({ socketPath: key.socketPath, path: '/svc/once/sse', agent: false }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', (error: NodeJS.ErrnoException) => (error.code === 'ECONNRESET' ? undefined : reject(error)));
    });
    await eventually(() => mine.calls.length === 1);
    assert.equal(mine.calls[0]!.outcome, 'client_closed');
    const next = await request({ socketPath: key.socketPath, path: '/svc/once/cookie' });
    assert.equal(next.status, 200, next.body);
  } finally {
    await mine.close();
    await upstream.close();
  }
});

test('configuration: a service without a credential is 503; minting a key with an unknown service is a ValidationError', BOUNDED, async () => {
  const key = await keyFor(['tokenless']);
  const before = rest.requests.length;
  assertRefused(await send(key, 'GET', '/svc/tokenless/api/tickets/1'), 503, 'provider_not_configured', /no credential configured for service tokenless/);
  assert.equal(rest.requests.length, before);
  await assert.rejects(
    gw.gateway.mint({ group: 'g', services: ['nope'] }),
    (error: Error) => error instanceof ValidationError && /no service "nope"/.test(error.message),
  );
  await assert.rejects(gw.gateway.mint({ group: 'g', services: ['rest', 'REST'] }), ValidationError);
});

test('hygiene: a credential split across two upstream writes is still masked', BOUNDED, async () => {
  const key = await keyFor(['split']);
  const chunks: string[] = [];
  const res = await requestStreaming({ socketPath: key.socketPath, path: '/svc/split/split' }, (text) => {
    chunks.push(text);
    // The upstream writes the second half only once the client has what came before it.
    if (chunks.length === 1) split.next.release();
  });
  assert.equal(res.status, 200);
  assert.equal(chunks[0], 'before:', "the token's first half is held back until it can be judged");
  assert.equal(res.body, `before:${'*'.repeat(TOKEN.length)}:after`);
});

test(
  "hygiene: Basic's base64 form and a query credential are masked when reflected; a redirect or a cookie carrying the token is dropped",
  BOUNDED,
  async () => {
    const key = await keyFor(['basic', 'basic-pass', 'query', 'split']);
    const echo = await send(key, 'GET', '/svc/basic/api/echo-headers');
    assert.equal(JSON.parse(echo.body).headers.authorization, `Basic ${'*'.repeat(BASIC.length)}`);
    for (const name of ['basic-pass', 'query']) {
      const reflect = await send(key, 'GET', `/svc/${name}/api/reflect-auth-header`);
      assert.equal(reflect.status, 200);
      assert.equal(reflect.headers['set-cookie'], undefined, `${name}: passClientAuth passes cookies, not one made of the token`);
      assert.equal(reflect.headers['x-seen-credential'], undefined, name);
      assert.ok(!JSON.stringify(reflect.headers).includes(TOKEN), name);
    }
    const leak = await send(key, 'GET', '/svc/split/leak-redirect');
    assert.equal(leak.status, 302);
    assert.equal(leak.headers.location, undefined);
  },
);

test("hygiene: the client's copies of the query parameter, however spelt, never reach the upstream beside the real one", BOUNDED, async () => {
  const key = await keyFor(['query']);
  for (const smuggled of ['api_key=x', 'api%5Fkey=x', 'api_key', 'api_key=&api_key=y', 'a=1&api_key=x#frag']) {
    const res = await send(key, 'GET', `/svc/query/api/tickets/1?${smuggled}`);
    // The stand-in answers 200 only to exactly one api_key, the real one.
    assert.equal(res.status, 200, `${smuggled}: ${res.body}`);
    const seen = new URL(query.requests.at(-1)!.path, 'http://x').searchParams;
    assert.deepEqual(seen.getAll('api_key'), [TOKEN], smuggled);
  }
});

test("hygiene: credentials the client sends in any header are dropped; the service sees only the host's", BOUNDED, async () => {
  const key = await keyFor(['rest']);
  const res = await send(key, 'GET', '/svc/rest/api/echo-headers', {
    Authorization: 'Bearer container-fake',
    'Proxy-Authorization': 'Basic Zm9vOmJhcg==',
    Cookie: 'sid=container',
    'X-Api-Key': 'container-fake',
    'Api-Key': 'container-fake',
    'X-Forwarded-For': '10.0.0.1',
    Connection: 'x-probe',
    'X-Probe': 'hop',
  });
  assert.equal(res.status, 200);
  const seen = rest.requests.at(-1)!.headers;
  assert.equal(seen.authorization, `Bearer ${TOKEN}`);
  for (const name of ['proxy-authorization', 'cookie', 'x-api-key', 'api-key', 'x-forwarded-for', 'x-probe']) assert.equal(seen[name], undefined, name);
});
