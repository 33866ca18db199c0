// Services behind a key's socket, as a container uses them: `/svc/NAME/...` forwarded to the service
// with the host's credential injected (bearer, a named header, Basic or a query parameter) and the
// client's own dropped; the prefix stripped, bodies and event streams passed through as they come;
// the credential masked out of what comes back; an MCP server used with the official SDK client over
// the key's socket; one audit record per call; reconfigure; the key's `mcp.json`. The upstreams are
// the REST stand-in and the SDK's MCP server (test/support), on loopback.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import type { KeyInfo } from '../src/index.ts';
import { eventually } from './support/fixture.ts';
import { request } from './support/http.ts';
import { MCP_TICKET_MARKER, startMcpServer, type McpTestServer } from './support/mcp-server.ts';
import { STREAM_EVENTS, startRestService, type RestService } from './support/rest-service.ts';
import {
  gatewayError,
  requestStreaming,
  socketFetch,
  startGatedUpstream,
  startServicesGateway,
  type GatedUpstream,
  type ServicesGateway,
} from './support/services-fixture.ts';

const TOKEN = 'real-svc-token-4c8e1a7b2d';
const MCP_TOKEN = 'real-mcp-token-6d2f9b3e1a';
const BASIC = Buffer.from(`bot:${TOKEN}`).toString('base64');
const MASKED = '*'.repeat(TOKEN.length);
/** What a container might send of its own: none of it may reach a service. */
const CLIENT_CREDENTIALS = { authorization: 'Bearer container-fake', cookie: 'sid=container', 'x-api-key': 'container-fake' };

let bearer: RestService;
let keyed: RestService;
let basic: RestService;
let query: RestService;
let mcpSse: McpTestServer;
let mcpJson: McpTestServer;
let gated: GatedUpstream;
let gw: ServicesGateway;
/** Granted every service by name. */
let key: KeyInfo;

/** A broken gateway (one that buffers, or never answers) fails a test in this time instead of hanging it. */
const BOUNDED = { timeout: 5000 };

before(async () => {
  [bearer, keyed, basic, query, mcpSse, mcpJson, gated] = await Promise.all([
    startRestService({ credential: { kind: 'bearer', token: TOKEN } }),
    startRestService({ credential: { kind: 'header', name: 'X-Api-Key', token: TOKEN } }),
    startRestService({ credential: { kind: 'basic', user: 'bot', token: TOKEN } }),
    startRestService({ credential: { kind: 'query', name: 'api_key', token: TOKEN } }),
    startMcpServer({ token: MCP_TOKEN }),
    startMcpServer({ token: MCP_TOKEN, jsonResponse: true }),
    startGatedUpstream(TOKEN),
  ]);
  gw = await startServicesGateway({
    rest: { baseUrl: bearer.url, credential: TOKEN },
    'rest-base': { baseUrl: `${bearer.url}/api`, credential: TOKEN },
    keyed: { baseUrl: keyed.url, credential: TOKEN, inject: { header: 'x-api-key' } },
    'keyed-pass': { baseUrl: keyed.url, credential: TOKEN, inject: { header: 'x-api-key' }, passClientAuth: true },
    basic: { baseUrl: basic.url, credential: TOKEN, inject: { basic: 'bot' } },
    query: { baseUrl: query.url, credential: TOKEN, inject: { query: 'api_key' } },
    nostream: { baseUrl: bearer.url, credential: TOKEN, stream: false },
    gated: { baseUrl: gated.url, credential: TOKEN },
    'gated-pass': { baseUrl: gated.url, credential: TOKEN, passClientAuth: true, inject: { header: 'x-api-key' } },
    'ops-only': { baseUrl: bearer.url, credential: TOKEN, groups: ['ops'] },
    tickets: { kind: 'mcp', baseUrl: mcpSse.url, credential: MCP_TOKEN },
    'tickets-json': { kind: 'mcp', baseUrl: mcpJson.url, credential: MCP_TOKEN },
  });
  key = await gw.gateway.mint({
    group: 'g',
    services: ['rest', 'rest-base', 'keyed', 'keyed-pass', 'basic', 'query', 'nostream', 'gated', 'gated-pass', 'tickets', 'tickets-json'],
  });
});

after(async () => {
  await gw.close();
  await Promise.all([bearer, keyed, basic, query, mcpSse, mcpJson, gated].map((server) => server.close()));
});

const get = (p: string, headers: Record<string, string> = {}, socketPath = key.socketPath) => request({ socketPath, path: p, headers });

test(
  "injection: bearer, a named header, Basic and a query parameter reach the stand-in, which answers 200 only to the real credential; the client's own never do",
  BOUNDED,
  async () => {
    const cases = [
      { name: 'rest', standin: bearer, header: 'authorization', value: `Bearer ${TOKEN}` },
      { name: 'keyed', standin: keyed, header: 'x-api-key', value: TOKEN },
      { name: 'basic', standin: basic, header: 'authorization', value: `Basic ${BASIC}` },
      { name: 'query', standin: query, header: undefined, value: undefined },
    ];
    for (const { name, standin, header, value } of cases) {
      const res = await get(`/svc/${name}/api/tickets/7?x=1`, CLIENT_CREDENTIALS);
      assert.equal(res.status, 200, `${name}: ${res.body}`);
      assert.deepEqual(JSON.parse(res.body), { id: '7', title: 'Printer on fire', status: 'open' });
      const seen = standin.requests.at(-1)!;
      assert.equal(seen.authorized, true, name);
      for (const sent of ['authorization', 'cookie', 'x-api-key']) {
        assert.equal(seen.headers[sent], sent === header ? value : undefined, `${name}: ${sent}`);
      }
      assert.equal(seen.path, name === 'query' ? `/api/tickets/7?x=1&api_key=${TOKEN}` : '/api/tickets/7?x=1', name);
    }
  },
);

test('injection: a client-supplied value of the query parameter is replaced, not duplicated', BOUNDED, async () => {
  const res = await get('/svc/query/api/tickets/8?api_key=container-fake&a=1&api_key=again&b=2');
  assert.equal(res.status, 200, res.body);
  assert.equal(query.requests.at(-1)!.path, `/api/tickets/8?a=1&b=2&api_key=${TOKEN}`);
});

test("passClientAuth: the client's Authorization and Cookie pass when the credential goes in another header, its x-api-key does not", BOUNDED, async () => {
  const res = await get('/svc/keyed-pass/api/echo-headers', CLIENT_CREDENTIALS);
  assert.equal(res.status, 200, res.body);
  const seen = keyed.requests.at(-1)!;
  assert.equal(seen.headers.authorization, 'Bearer container-fake');
  assert.equal(seen.headers.cookie, 'sid=container');
  assert.equal(seen.headers['x-api-key'], TOKEN);
  // Without passClientAuth the same service drops both (checked against the same upstream).
  await get('/svc/keyed/api/echo-headers', CLIENT_CREDENTIALS);
  assert.equal(keyed.requests.at(-1)!.headers.authorization, undefined);
  assert.equal(keyed.requests.at(-1)!.headers.cookie, undefined);
  // Set-Cookie comes back with it (and only with it), unless it reveals the credential.
  assert.equal((await get('/svc/gated-pass/cookie')).headers['set-cookie']?.[0], 'pref=dark; Path=/');
  assert.equal((await get('/svc/gated/cookie')).headers['set-cookie'], undefined);
});

test('paths: the prefix is stripped and the rest passed as sent, query and body included; /svc/NAME alone is the base path exactly', BOUNDED, async () => {
  const body = JSON.stringify({ title: 'printer', note: 'x'.repeat(3000) });
  const created = await request({
    socketPath: key.socketPath,
    method: 'POST',
    path: '/svc/rest/api/tickets?draft=1&q=a%20b',
    headers: { 'content-type': 'application/json' },
    body,
  });
  assert.equal(created.status, 201, created.body);
  assert.deepEqual(JSON.parse(created.body), { id: 'new-1', received_bytes: Buffer.byteLength(body) });
  assert.equal(bearer.requests.at(-1)!.path, '/api/tickets?draft=1&q=a%20b');
  assert.equal(bearer.requests.at(-1)!.body.toString(), body);

  // Under a base path: escapes are not decoded on the way.
  const ticket = await get('/svc/rest-base/tickets/T%2D9?x=%41');
  assert.equal(ticket.status, 200, ticket.body);
  assert.equal(JSON.parse(ticket.body).id, 'T-9');
  assert.equal(bearer.requests.at(-1)!.path, '/api/tickets/T%2D9?x=%41');

  for (const [sent, received] of [
    ['/svc/rest-base', '/api'],
    ['/svc/rest-base?x=1', '/api?x=1'],
    ['/svc/rest-base/', '/api/'],
    ['/svc/rest', '/'],
    ['/svc/rest?x=1', '/?x=1'],
  ]) {
    const before = bearer.requests.length;
    const res = await get(sent!);
    // The stand-in has no route there: its own 404 comes back, not the gateway's.
    assert.equal(res.status, 404, `${sent}: ${res.body}`);
    assert.deepEqual(JSON.parse(res.body), { error: 'no such route' }, sent);
    assert.equal(bearer.requests.length, before + 1, sent);
    assert.equal(bearer.requests.at(-1)!.path, received, sent);
  }
});

test("grants: a service given to a group works for its keys without naming it; KeyInfo lists each key's services", BOUNDED, async () => {
  const ops = await gw.gateway.mint({ group: 'ops' });
  const other = await gw.gateway.mint({ group: 'g', services: ['rest'] });
  try {
    assert.deepEqual(ops.services, [{ name: 'ops-only', kind: 'http' }]);
    assert.deepEqual(other.services, [{ name: 'rest', kind: 'http' }]);
    assert.deepEqual(gw.gateway.keys().find((k) => k.id === ops.id)?.services, [{ name: 'ops-only', kind: 'http' }]);
    const granted = await get('/svc/ops-only/api/tickets/1', {}, ops.socketPath);
    assert.equal(granted.status, 200, granted.body);
    const refused = await get('/svc/ops-only/api/tickets/1', {}, other.socketPath);
    assert.equal(refused.status, 404);
    assert.equal(gatewayError(refused).code, 'not_found');
    // A grant to the group is not a grant to every service.
    assert.equal((await get('/svc/rest/api/tickets/1', {}, ops.socketPath)).status, 404);
  } finally {
    await gw.gateway.revoke(ops.id);
    await gw.gateway.revoke(other.id);
  }
});

test(
  'responses: a reflected credential is masked in the body (content-length still right); headers that reveal it and set-cookie are dropped',
  BOUNDED,
  async () => {
    for (const name of ['rest', 'basic', 'keyed']) {
      const echo = await get(`/svc/${name}/api/echo-headers`);
      assert.equal(echo.status, 200, echo.body);
      assert.equal(Number(echo.headers['content-length']), Buffer.byteLength(echo.body), name);
      assert.ok(!echo.body.includes(TOKEN) && !echo.body.includes(BASIC), `${name}: ${echo.body}`);
      const { headers } = JSON.parse(echo.body) as { headers: Record<string, string> };
      if (name === 'keyed') assert.equal(headers['x-api-key'], MASKED);
      else assert.match(headers.authorization!, /^(Bearer|Basic) \*+$/, name);

      const reflect = await get(`/svc/${name}/api/reflect-auth-header`);
      assert.equal(reflect.status, 200);
      assert.deepEqual(JSON.parse(reflect.body), { ok: true });
      for (const header of ['x-seen-credential', 'set-cookie']) assert.equal(reflect.headers[header], undefined, `${name}: ${header}`);
      // The x-api-key service sends no Authorization: the stand-in reflects an empty one, which reveals nothing.
      assert.equal(reflect.headers['x-seen-authorization'], name === 'keyed' ? '' : undefined, name);
      assert.ok(!JSON.stringify(reflect.headers).includes(TOKEN));
    }
  },
);

test('responses: an upstream 401 is answered 502 without www-authenticate, never 401', BOUNDED, async () => {
  const res = await get('/svc/rest/api/unauthorized');
  assert.equal(res.status, 502);
  assert.equal(res.headers['www-authenticate'], undefined);
  const error = gatewayError(res);
  assert.equal(error.code, 'upstream_failed');
  assert.match(error.message, /service rest refused the gateway's credential \(401\)/);
});

test('redirects: one inside the service points back through the socket, one elsewhere is left as is; neither is followed', BOUNDED, async () => {
  const before = bearer.requests.length;
  const same = await get('/svc/rest/api/redirect-same');
  assert.equal(same.status, 302);
  assert.equal(same.headers.location, '/svc/rest/api/tickets/1');
  const sameBase = await get('/svc/rest-base/redirect-same');
  assert.equal(sameBase.headers.location, '/svc/rest-base/tickets/1');
  const away = await get('/svc/rest/api/redirect-away');
  assert.equal(away.status, 302);
  assert.equal(away.headers.location, 'http://example.invalid/x');
  assert.deepEqual(
    bearer.requests.slice(before).map((r) => r.path),
    ['/api/redirect-same', '/api/redirect-same', '/api/redirect-away'],
  );
});

test('SSE: events are relayed one by one, each before the upstream sends the next', BOUNDED, async () => {
  const ticks = await get('/svc/rest/api/stream');
  assert.equal(ticks.status, 200);
  assert.match(String(ticks.headers['content-type']), /^text\/event-stream/);
  assert.deepEqual(
    [...ticks.body.matchAll(/^data: (.*)$/gm)].map((m) => JSON.parse(m[1]!).n),
    Array.from({ length: STREAM_EVENTS }, (_, i) => i + 1),
  );

  // The gated upstream sends its second event only once the client has the first: a gateway that
  // buffered the stream would deadlock here until the gate times out.
  const seenFirst: string[] = [];
  const res = await requestStreaming({ socketPath: key.socketPath, path: '/svc/gated/sse' }, (text) => {
    if (seenFirst.length === 0) {
      seenFirst.push(text);
      gated.next.release();
    }
  });
  assert.equal(res.status, 200);
  assert.equal(seenFirst[0], 'event: one\ndata: 1\n\n');
  assert.equal(res.body, 'event: one\ndata: 1\n\nevent: two\ndata: 2\n\n');
});

test('SSE: a service configured with stream: false answers an event stream with 502', BOUNDED, async () => {
  const res = await get('/svc/nostream/api/stream');
  assert.equal(res.status, 502);
  assert.equal(gatewayError(res).code, 'upstream_failed');
  assert.match(gatewayError(res).message, /event stream/);
  // The same service's ordinary answers pass.
  assert.equal((await get('/svc/nostream/api/tickets/1')).status, 200);
});

const textOf = (result: unknown): string => ((result as { content: { text?: string }[] }).content ?? []).map((c) => c.text ?? '').join('');

for (const [name, server] of [
  ['tickets', () => mcpSse],
  ['tickets-json', () => mcpJson],
] as const) {
  test(
    `MCP (${name === 'tickets' ? 'SSE' : 'JSON'} answers): the SDK client over the key's socket initializes, lists and calls tools, gets the GET stream's notification, ends the session`,
    BOUNDED,
    async () => {
      const mcp = server();
      const before = mcp.requests.length;
      const socket = socketFetch(key.socketPath);
      const transport = new StreamableHTTPClientTransport(new URL(`http://127.0.0.1/svc/${name}`), {
        fetch: socket.fetch,
        requestInit: { headers: { authorization: 'Bearer container-fake' } },
      });
      const client = new Client({ name: 'svc-test', version: '1.0.0' });
      let toolsChanged = 0;
      client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
        toolsChanged++;
      });
      try {
        await client.connect(transport);
        assert.equal(mcp.sessions().length, 1);
        // The server's Mcp-Session-Id reached the client, and the client's came back on later requests.
        const sessionId = transport.sessionId;
        assert.equal(sessionId, mcp.sessions()[0]);

        const { tools } = await client.listTools();
        assert.deepEqual(tools.map((t) => t.name).sort(), ['echo_headers', 'lookup_ticket']);
        assert.equal(textOf(await client.callTool({ name: 'lookup_ticket', arguments: { id: 'T-42' } })), `TICKET T-42: ${MCP_TICKET_MARKER} status=open`);
        const echoed = textOf(await client.callTool({ name: 'echo_headers', arguments: {} }));
        assert.ok(!echoed.includes(MCP_TOKEN), echoed);
        assert.equal(echoed, `authorization=Bearer ${'*'.repeat(MCP_TOKEN.length)}`);

        // A notification with no request behind it travels on the GET stream, through the gateway.
        await eventually(() => mcp.requests.slice(before).some((r) => r.method === 'GET'));
        await mcp.notifyToolsChanged();
        await eventually(() => toolsChanged === 1);

        await transport.terminateSession();
        assert.deepEqual(mcp.sessions(), []);
        const seen = mcp.requests.slice(before);
        assert.ok(seen.some((r) => r.method === 'DELETE'));
        // After initialize, every request carried the session id through the gateway.
        assert.ok(seen.slice(1).every((r) => r.headers['mcp-session-id'] === sessionId));
        assert.ok(seen.every((r) => r.headers.authorization === `Bearer ${MCP_TOKEN}` && r.path === '/mcp'));
        assert.equal(mcp.unauthorized, 0);
      } finally {
        await client.close();
        await socket.close();
      }
      const records = gw.calls.filter((r) => r.keyId === key.id && r.upstream === name);
      assert.ok(records.length >= 5, `${records.length} records`);
      assert.ok(records.every((r) => r.dialect === 'service' && r.path === `/svc/${name}`));
      assert.ok(records.some((r) => r.method === 'GET' && r.stream));
      assert.ok(records.some((r) => r.method === 'DELETE' && r.status === 200));
    },
  );
}

test(
  'audit: one record per call with the service, method, path, status, bytes and latency; refusals rejected; no record or audit line holds the credential',
  BOUNDED,
  async () => {
    const mine = await startServicesGateway({
      rest: { baseUrl: bearer.url, credential: TOKEN },
      basic: { baseUrl: basic.url, credential: TOKEN, inject: { basic: 'bot' } },
    });
    const audited = await mine.gateway.mint({ group: 'audit', services: ['rest', 'basic'] });
    let lines: string[];
    try {
      const body = '{"title":"audited"}';
      const created = await request({ socketPath: audited.socketPath, method: 'POST', path: '/svc/rest/api/tickets?x=1', body });
      assert.equal(created.status, 201);
      const echo = await request({ socketPath: audited.socketPath, path: '/svc/basic/api/echo-headers', headers: CLIENT_CREDENTIALS });
      const reflect = await request({ socketPath: audited.socketPath, path: '/svc/rest/api/reflect-auth-header' });
      const refused = await request({ socketPath: audited.socketPath, path: '/svc/rest/api/../x' });
      const upstream401 = await request({ socketPath: audited.socketPath, path: '/svc/rest/api/unauthorized' });
      assert.equal(refused.status, 400);
      await eventually(() => mine.calls.length === 5);
      const [post, echoed, reflected, rejected, failed] = mine.calls;
      assert.deepEqual(
        mine.calls.map((r) => [r.dialect, r.endpoint, r.upstream, r.method, r.path, r.status, r.outcome, r.keyId]),
        [
          ['service', 'service', 'rest', 'POST', '/svc/rest/api/tickets', 201, 'complete', audited.id],
          ['service', 'service', 'basic', 'GET', '/svc/basic/api/echo-headers', 200, 'complete', audited.id],
          ['service', 'service', 'rest', 'GET', '/svc/rest/api/reflect-auth-header', 200, 'complete', audited.id],
          ['service', 'service', 'rest', 'GET', '/svc/rest/api/../x', 400, 'rejected', audited.id],
          ['service', 'service', 'rest', 'GET', '/svc/rest/api/unauthorized', 502, 'upstream_failed', audited.id],
        ],
      );
      assert.equal(post!.requestBytes, Buffer.byteLength(body));
      assert.equal(post!.responseBytes, Buffer.byteLength(created.body));
      assert.equal(echoed!.responseBytes, Buffer.byteLength(echo.body));
      assert.equal(reflected!.responseBytes, Buffer.byteLength(reflect.body));
      assert.equal(rejected!.errorKind, 'invalid_request');
      assert.equal(failed!.errorKind, 'upstream_failed');
      assert.equal(upstream401.status, 502);
      for (const record of mine.calls) {
        assert.ok(record.latencyMs > 0 && record.latencyMs < 5000, String(record.latencyMs));
        assert.equal(record.costUsd, 0);
      }
    } finally {
      lines = await mine.close();
    }
    assert.equal(lines.length, 5);
    assert.ok(lines.every((line) => JSON.parse(line).dialect === 'service'));
    for (const text of [JSON.stringify(mine.calls), ...lines]) {
      assert.ok(!text.includes(TOKEN) && !text.includes(BASIC), text);
    }
  },
);

test('reconfigure: the next call uses the new token; a service removed is a 404', BOUNDED, async () => {
  const rotated = 'rotated-svc-token-0e5c7a9f31';
  const standin = await startRestService({ credential: { kind: 'bearer', token: rotated } });
  const mine = await startServicesGateway({ rot: { baseUrl: standin.url, credential: TOKEN } });
  try {
    const k = await mine.gateway.mint({ group: 'g', services: ['rot'] });
    const old = await request({ socketPath: k.socketPath, path: '/svc/rot/api/tickets/1' });
    assert.equal(old.status, 502);
    assert.equal(standin.requests.at(-1)!.headers.authorization, `Bearer ${TOKEN}`);

    mine.gateway.reconfigure({ services: { rot: { baseUrl: standin.url, credential: rotated } } });
    const fresh = await request({ socketPath: k.socketPath, path: '/svc/rot/api/echo-headers' });
    assert.equal(fresh.status, 200, fresh.body);
    assert.equal(standin.requests.at(-1)!.headers.authorization, `Bearer ${rotated}`);
    // The new token is the one masked now.
    assert.ok(!fresh.body.includes(rotated) && fresh.body.includes('*'.repeat(rotated.length)));

    mine.gateway.reconfigure({ services: {} });
    const before = standin.requests.length;
    const gone = await request({ socketPath: k.socketPath, path: '/svc/rot/api/tickets/1' });
    assert.equal(gone.status, 404);
    assert.equal(gatewayError(gone).code, 'not_found');
    assert.equal(standin.requests.length, before);
  } finally {
    await mine.close();
    await standin.close();
  }
});

test('mcp.json: a key with an MCP service gets one in its directory (shimPort honoured); a key without none', BOUNDED, async () => {
  const withMcp = await gw.gateway.mint({ group: 'g', services: ['tickets', 'rest'], shimPort: 7777 });
  const withoutMcp = await gw.gateway.mint({ group: 'g', services: ['rest'] });
  const plain = await gw.gateway.mint({ group: 'g' });
  try {
    const config = JSON.parse(await readFile(path.join(withMcp.dir, 'mcp.json'), 'utf8'));
    assert.deepEqual(config, { mcpServers: { tickets: { type: 'http', url: 'http://127.0.0.1:7777/svc/tickets' } } });
    assert.equal((await stat(path.join(withMcp.dir, 'mcp.json'))).mode & 0o777, 0o644);
    assert.deepEqual(withMcp.services, [
      { name: 'rest', kind: 'http' },
      { name: 'tickets', kind: 'mcp' },
    ]);
    const defaultPort = await gw.gateway.mint({ group: 'g', services: ['tickets-json'] });
    assert.deepEqual(JSON.parse(await readFile(path.join(defaultPort.dir, 'mcp.json'), 'utf8')), {
      mcpServers: { 'tickets-json': { type: 'http', url: 'http://127.0.0.1:9460/svc/tickets-json' } },
    });
    await gw.gateway.revoke(defaultPort.id);
    for (const k of [withoutMcp, plain]) await assert.rejects(stat(path.join(k.dir, 'mcp.json')), { code: 'ENOENT' });
  } finally {
    for (const k of [withMcp, withoutMcp, plain]) await gw.gateway.revoke(k.id);
  }
});
