// The `key_revoked` answer. Revocation flags the key, then destroys its connections; a request that
// races it (parsed on a connection that is still open, kept alive from an earlier call, when its key
// is flagged or its account already closed) gets 403 `key_revoked` in its dialect's shape with
// `x-should-retry: false`, the connection closes, and nothing else is touched. The gateway's own
// revoke (keys.test.ts) destroys the connections in the same tick, so the race is staged here on
// the request handler with a key record this test flips.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createRequestHandler, type ProxyContext } from '../src/http/handler.ts';
import type { KeyRecord } from '../src/keys/store.ts';
import type { KeyAccount } from '../src/metering/accounting.ts';
import { Refusals } from '../src/metering/refusals.ts';
import { anthropicHeaders, openaiHeaders, request } from './support/http.ts';

describe('key_revoked: a request racing its key revocation', () => {
  let dir: string;
  let server: http.Server;
  let socketPath: string;
  const key = { id: 'k-revoked', group: 'g', revoked: false, inFlight: 0 } as KeyRecord;
  const accounts = new Map<string, KeyAccount>([[key.id, { limits: { maxRefusalsPerMinute: 120 } } as KeyAccount]]);
  const touched: string[] = [];

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gw-rv-'));
    socketPath = path.join(dir, 'gateway.sock');
    const context = {
      keyOf: (_socket: Socket) => key,
      accounting: { get: (id: string) => accounts.get(id) },
      refusals: new Refusals(),
      // Anything past the key check: a revoked key must never get this far.
      routing: () => {
        touched.push('routing');
        throw new Error('a revoked key reached the router');
      },
      onCall: () => touched.push('onCall'),
      onInternalError: (error: unknown) => touched.push(`internal error: ${String(error)}`),
    } as unknown as ProxyContext;
    server = http.createServer({ keepAliveTimeout: 60_000 }, createRequestHandler(context));
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });

  test('on a kept-alive connection: 403 key_revoked, Anthropic shape, x-should-retry: false, connection closed', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      // A call while the key is live opens the connection and leaves it open.
      const hello = await request({ socketPath, path: '/api/hello', agent });
      assert.equal(hello.status, 200);
      const [connection] = Object.values(agent.freeSockets).flat();
      assert.ok(connection, 'a kept-alive connection is open');
      const closed = new Promise((resolve) => connection.once('close', resolve));

      key.revoked = true;
      const res = await request({
        socketPath,
        path: '/v1/messages',
        headers: anthropicHeaders(),
        body: '{"model":"claude-sonnet-4-5","max_tokens":1,"messages":[]}',
        agent,
      });
      assert.equal(res.status, 403);
      assert.equal(res.headers['x-should-retry'], 'false');
      assert.equal(res.headers['x-gateway-error'], 'key_revoked');
      assert.equal(res.headers.connection, 'close');
      assert.deepEqual(JSON.parse(res.body), { type: 'error', error: { type: 'permission_error', message: 'this key has been revoked or has expired' } });
      await closed;
      assert.deepEqual(touched, [], 'nothing past the key check ran');
    } finally {
      agent.destroy();
      key.revoked = false;
    }
  });

  test('OpenAI shape on an OpenAI path; a HEAD gets the status with no body', async () => {
    key.revoked = true;
    try {
      const res = await request({ socketPath, path: '/v1/chat/completions', headers: openaiHeaders(), body: '{"model":"gpt-5.1","messages":[]}' });
      assert.equal(res.status, 403);
      assert.equal(res.headers['x-should-retry'], 'false');
      assert.deepEqual(JSON.parse(res.body), {
        error: { message: 'this key has been revoked or has expired', type: 'permission_error', param: null, code: 'key_revoked' },
      });
      const head = await request({ socketPath, method: 'HEAD', path: '/v1/models', headers: openaiHeaders() });
      assert.equal(head.status, 403);
      assert.equal(head.body, '');
      assert.deepEqual(touched, []);
    } finally {
      key.revoked = false;
    }
  });

  test('a key whose account is already closed (revocation finishing) gets the same 403', async () => {
    const account = accounts.get(key.id)!;
    accounts.delete(key.id);
    try {
      const res = await request({ socketPath, path: '/api/hello' });
      assert.equal(res.status, 403);
      assert.equal(res.headers['x-gateway-error'], 'key_revoked');
      assert.deepEqual(touched, []);
    } finally {
      accounts.set(key.id, account);
    }
    assert.equal((await request({ socketPath, path: '/api/hello' })).status, 200, 'the same handler serves the live key');
  });
});
