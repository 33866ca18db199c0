// The two upstreams the services tests stand behind the gateway (test/support/mcp-server.ts and
// rest-service.ts), checked directly: the MCP server with the SDK's own client, the REST stand-in with
// fetch. If these drift, a gateway test could pass against an upstream that no longer checks anything.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { eventually } from './support/fixture.ts';
import { request } from './support/http.ts';
import { MCP_TICKET_MARKER, startMcpServer } from './support/mcp-server.ts';
import { STREAM_EVENTS, startRestService, type RestCredential } from './support/rest-service.ts';

const TOKEN = 'real-service-token-9b1d4e';

function sdkClient(url: string, token: string): { client: Client; transport: StreamableHTTPClientTransport } {
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { authorization: `Bearer ${token}` } } });
  return { client: new Client({ name: 'support-test', version: '1.0.0' }), transport };
}

const textOf = (result: unknown): string => ((result as { content: { type: string; text?: string }[] }).content ?? []).map((c) => c.text ?? '').join('');

const initializeBody = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '0' } },
});
const mcpHeaders = (extra: Record<string, string> = {}) => ({
  'content-type': 'application/json',
  accept: 'application/json, text/event-stream',
  authorization: `Bearer ${TOKEN}`,
  ...extra,
});

for (const jsonResponse of [false, true]) {
  test(`MCP server: the SDK client initializes, lists and calls tools, gets the GET stream, ends the session (jsonResponse=${jsonResponse})`, async () => {
    const mcp = await startMcpServer({ token: TOKEN, jsonResponse });
    try {
      const { client, transport } = sdkClient(mcp.url, TOKEN);
      let toolsChanged = 0;
      client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
        toolsChanged++;
      });
      await client.connect(transport);
      assert.equal(mcp.sessions().length, 1);
      assert.equal(transport.sessionId, mcp.sessions()[0]);

      const { tools } = await client.listTools();
      assert.deepEqual(tools.map((t) => t.name).sort(), ['echo_headers', 'lookup_ticket']);
      const ticket = await client.callTool({ name: 'lookup_ticket', arguments: { id: 'T-42' } });
      assert.equal(textOf(ticket), `TICKET T-42: ${MCP_TICKET_MARKER} status=open`);
      const echoed = await client.callTool({ name: 'echo_headers', arguments: {} });
      assert.equal(textOf(echoed), `authorization=Bearer ${TOKEN}`);
      assert.deepEqual(mcp.toolCalls, [
        { name: 'lookup_ticket', args: { id: 'T-42' } },
        { name: 'echo_headers', args: {} },
      ]);

      // A notification with no request behind it can only travel on the client's GET stream.
      await eventually(() => mcp.requests.some((r) => r.method === 'GET'));
      await mcp.notifyToolsChanged();
      await eventually(() => toolsChanged === 1);

      await transport.terminateSession();
      assert.deepEqual(mcp.sessions(), []);
      await client.close();
      assert.ok(mcp.requests.some((r) => r.method === 'DELETE'));
      assert.ok(mcp.requests.every((r) => r.headers.authorization === `Bearer ${TOKEN}` && r.headers.host === `127.0.0.1:${mcp.port}`));
      assert.equal(mcp.unauthorized, 0);
    } finally {
      await mcp.close();
    }
  });
}

test('MCP server: POST answers are SSE by default and JSON when asked, with a session id', async () => {
  for (const [jsonResponse, type] of [
    [false, 'text/event-stream'],
    [true, 'application/json'],
  ] as const) {
    const mcp = await startMcpServer({ token: TOKEN, jsonResponse });
    try {
      const res = await request({ port: mcp.port, method: 'POST', path: '/mcp', headers: mcpHeaders(), body: initializeBody });
      assert.equal(res.status, 200);
      assert.match(String(res.headers['content-type']), new RegExp(`^${type}`));
      assert.match(String(res.headers['mcp-session-id']), /^[0-9a-f-]{36}$/);
      assert.match(res.body, /"serverInfo":\{"name":"gateway-test-mcp"/);
    } finally {
      await mcp.close();
    }
  }
});

test('MCP server: refuses a missing or wrong bearer token with 401 and counts it; unknown sessions get 404', async () => {
  const mcp = await startMcpServer({ token: TOKEN });
  try {
    const { authorization: _, ...withoutToken } = mcpHeaders();
    const bare = await request({ port: mcp.port, method: 'POST', path: '/mcp', headers: withoutToken, body: initializeBody });
    assert.equal(bare.status, 401);
    assert.deepEqual(JSON.parse(bare.body), { error: 'unauthorized' });
    assert.equal(mcp.unauthorized, 1);

    const { client, transport } = sdkClient(mcp.url, 'not-the-token');
    await assert.rejects(client.connect(transport), (error: { code?: number }) => error.code === 401);
    assert.equal(mcp.unauthorized, 2);
    assert.deepEqual(mcp.sessions(), []);

    const stale = await request({ port: mcp.port, method: 'GET', path: '/mcp', headers: mcpHeaders({ 'mcp-session-id': 'gone' }) });
    assert.equal(stale.status, 404);
    const noSession = await request({
      port: mcp.port,
      method: 'POST',
      path: '/mcp',
      headers: mcpHeaders(),
      body: '{"jsonrpc":"2.0","id":2,"method":"tools/list"}',
    });
    assert.equal(noSession.status, 400);
    assert.equal(mcp.requests.length, 4);
  } finally {
    await mcp.close();
  }
});

test('MCP server: close() ends an open session and its GET stream promptly', async () => {
  const mcp = await startMcpServer({ token: TOKEN });
  const { client, transport } = sdkClient(mcp.url, TOKEN);
  await client.connect(transport);
  await eventually(() => mcp.requests.some((r) => r.method === 'GET'));
  const started = performance.now();
  await mcp.close();
  assert.ok(performance.now() - started < 500, 'close took too long');
  assert.deepEqual(mcp.sessions(), []);
  await client.close();
});

const credentials: { credential: RestCredential; good: { path: string; headers: Record<string, string> }; bad: Record<string, string> }[] = [
  {
    credential: { kind: 'bearer', token: TOKEN },
    good: { path: '/api/tickets/7', headers: { authorization: `Bearer ${TOKEN}` } },
    bad: { authorization: 'Bearer nope' },
  },
  {
    credential: { kind: 'basic', user: 'bot', token: TOKEN },
    good: { path: '/api/tickets/7', headers: { authorization: `Basic ${Buffer.from(`bot:${TOKEN}`).toString('base64')}` } },
    bad: { authorization: `Bearer ${TOKEN}` },
  },
  {
    credential: { kind: 'header', name: 'X-Api-Key', token: TOKEN },
    good: { path: '/api/tickets/7', headers: { 'x-api-key': TOKEN } },
    bad: { 'x-api-key': 'nope' },
  },
  { credential: { kind: 'query', name: 'api_key', token: TOKEN }, good: { path: `/api/tickets/7?api_key=${TOKEN}`, headers: {} }, bad: {} },
];

for (const { credential, good, bad } of credentials) {
  test(`REST stand-in: ${credential.kind} credential accepted when right, 401 otherwise`, async () => {
    const svc = await startRestService({ credential });
    try {
      const ok = await fetch(`${svc.url}${good.path}`, { headers: good.headers });
      assert.equal(ok.status, 200);
      assert.deepEqual(await ok.json(), { id: '7', title: 'Printer on fire', status: 'open' });
      const refused = await fetch(`${svc.url}/api/tickets/7`, { headers: bad });
      assert.equal(refused.status, 401);
      assert.deepEqual(await refused.json(), { error: 'bad credential' });
      assert.deepEqual(
        svc.requests.map((r) => [r.path, r.authorized]),
        [
          [good.path, true],
          ['/api/tickets/7', false],
        ],
      );
    } finally {
      await svc.close();
    }
  });
}

test('REST stand-in: every route behaves as the services tests expect', async () => {
  const svc = await startRestService({ credential: { kind: 'bearer', token: TOKEN } });
  const auth = { authorization: `Bearer ${TOKEN}` };
  try {
    const created = await fetch(`${svc.url}/api/tickets?draft=1`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: '{"title":"x"}',
    });
    assert.equal(created.status, 201);
    assert.deepEqual(await created.json(), { id: 'new-1', received_bytes: 13 });
    assert.equal(svc.requests[0]?.path, '/api/tickets?draft=1');
    assert.equal(svc.requests[0]?.body.toString(), '{"title":"x"}');

    const echo = await fetch(`${svc.url}/api/echo-headers`, { headers: { ...auth, 'x-probe': 'p1' } });
    const { headers } = (await echo.json()) as { headers: Record<string, string> };
    assert.equal(headers.authorization, `Bearer ${TOKEN}`);
    assert.equal(headers['x-probe'], 'p1');

    const reflect = await fetch(`${svc.url}/api/reflect-auth-header`, { headers: auth });
    assert.equal(reflect.headers.get('x-seen-authorization'), `Bearer ${TOKEN}`);
    assert.equal(reflect.headers.get('x-seen-credential'), `Bearer ${TOKEN}`);
    assert.equal(reflect.headers.get('set-cookie'), `session=${TOKEN}`);

    const same = await fetch(`${svc.url}/api/redirect-same`, { headers: auth, redirect: 'manual' });
    assert.equal(same.status, 302);
    assert.equal(same.headers.get('location'), `${svc.url}/api/tickets/1`);
    const away = await fetch(`${svc.url}/api/redirect-away`, { headers: auth, redirect: 'manual' });
    assert.equal(away.status, 302);
    assert.equal(away.headers.get('location'), 'http://example.invalid/x');

    const upstream401 = await fetch(`${svc.url}/api/unauthorized`, { headers: auth });
    assert.equal(upstream401.status, 401);
    assert.equal(upstream401.headers.get('www-authenticate'), 'Bearer realm="x"');

    const missing = await fetch(`${svc.url}/api/nothing`, { headers: auth });
    assert.equal(missing.status, 404);
    await missing.body?.cancel();

    const stream = await request({ port: svc.port, path: '/api/stream', headers: auth });
    assert.equal(stream.status, 200);
    assert.match(String(stream.headers['content-type']), /^text\/event-stream/);
    assert.equal(stream.body.match(/^event: tick$/gm)?.length, STREAM_EVENTS);
    // Events arrive spread out (two 50 ms gaps), not as one buffered body.
    const first = stream.chunks[0]?.at ?? 0;
    const last = stream.chunks.at(-1)?.at ?? 0;
    assert.ok(stream.chunks.length >= STREAM_EVENTS && last - first >= 90, `events not spread: ${last - first} ms`);
  } finally {
    await svc.close();
  }
});

test('REST stand-in: /api/slow never answers; close() drops it', async () => {
  const svc = await startRestService({ credential: { kind: 'bearer', token: TOKEN } });
  const outcome = new Promise<string>((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: svc.port, path: '/api/slow', headers: { authorization: `Bearer ${TOKEN}` }, agent: false }, (res) =>
      resolve(`answered ${res.statusCode}`),
    );
    req.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
  await eventually(() => svc.requests.length === 1);
  await svc.close();
  assert.equal(await outcome, 'ECONNRESET');
});
