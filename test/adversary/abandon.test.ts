// Class 5 of issue 12, abandoned calls: a client that hangs up on a non-streaming call must not get
// it for free (the provider runs and bills it anyway), nor free its concurrency slot while the
// upstream still works on it. Streams keep being cut: the provider stops generating.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { ServerResponse } from 'node:http';
import { describe, test } from 'node:test';
import type { RecordedRequest } from '../../src/dev/standin.ts';
import { eventually, startFixture } from '../support/fixture.ts';
import { anthropicHeaders, request } from '../support/http.ts';

const message = (extra: object = {}) =>
  JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 20_000, messages: [{ role: 'user', content: 'think hard' }], ...extra });

/** A local upstream that holds each call until the test answers it (probes are answered at once). */
function slowUpstream() {
  const held: { req: RecordedRequest; res: ServerResponse; upstreamClosed: Promise<void> }[] = [];
  return {
    held,
    override(req: RecordedRequest, res: ServerResponse): boolean {
      if (req.body.includes('"probe"')) {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"usage":{"input_tokens":1,"output_tokens":1}}');
        return true;
      }
      // The standin has read the body; 'close' on the response means the gateway cut the connection.
      const upstreamClosed = new Promise<void>((resolve) => res.once('close', () => resolve()));
      held.push({ req, res, upstreamClosed });
      return true;
    },
  };
}

/**
 * A request on a new connection, refused because the abandoned call still holds the key's one slot.
 * It also orders the test after the gateway has seen the hang-up (events reach its loop in order).
 */
async function probeSlotHeld(socketPath: string): Promise<void> {
  const probe = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message({ metadata: { user_id: 'probe' } }) });
  assert.equal(probe.status, 429, 'the abandoned call still holds the slot');
  assert.match(probe.body, /1 concurrent requests/);
}

/** Sends a call and hangs up once the upstream holds it. */
async function abandon(socketPath: string, body: string, upstream: ReturnType<typeof slowUpstream>): Promise<void> {
  const before = upstream.held.length;
  const req = http.request({ socketPath, path: '/v1/messages', method: 'POST', headers: anthropicHeaders(), agent: false });
  req.on('error', () => undefined);
  req.end(body);
  await eventually(() => upstream.held.length > before);
  req.destroy();
}

describe('adversary: abandoned calls', () => {
  test('a non-streaming call the client abandons is read to its end, charged what the provider reports, and holds its slot until then', async () => {
    const upstream = slowUpstream();
    const fx = await startFixture({ override: (req, res) => upstream.override(req, res) });
    try {
      const key = await fx.gateway.mint({ group: 'g', maxConcurrent: 1 });
      await abandon(key.socketPath, message(), upstream);

      // The key's one slot is still taken: hanging up does not make room for another call.
      await probeSlotHeld(key.socketPath);
      assert.equal(upstream.held.length, 1, 'the refused call never went out');
      assert.equal(fx.gateway.inspect().keys[0]!.inFlight, 1);
      assert.equal(fx.calls.filter((call) => call.outcome === 'client_closed').length, 0, 'not settled while the upstream works');

      // The provider finishes and reports its usage: that is what the key is charged.
      const { res } = upstream.held[0]!;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({ id: 'msg_1', type: 'message', content: [{ type: 'text', text: 'done' }], usage: { input_tokens: 100_000, output_tokens: 20_000 } }),
      );
      await eventually(() => fx.calls.some((call) => call.outcome === 'client_closed'));
      const record = fx.calls.find((call) => call.outcome === 'client_closed')!;
      const reported = (100_000 * 3 + 20_000 * 15) / 1e6;
      assert.equal(record.usageReported, true);
      assert.deepEqual([record.inputTokens, record.outputTokens], [100_000, 20_000]);
      assert.ok(Math.abs(record.costUsd - reported) < 1e-12, `charged ${record.costUsd}, provider billed ${reported}`);
      const live = fx.gateway.inspect().keys[0]!;
      assert.equal(live.inFlight, 0);
      assert.ok(Math.abs(live.spentUsd - reported) < 1e-12);
      assert.equal(live.reservedUsd, 0);

      // The slot is free again.
      const after = request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() });
      await eventually(() => upstream.held.length === 2);
      upstream.held[1]!.res.writeHead(200, { 'content-type': 'application/json' }).end('{"usage":{"input_tokens":1,"output_tokens":1}}');
      assert.equal((await after).status, 200);
    } finally {
      for (const { res } of upstream.held) res.destroy(); // a failed test leaves none hanging
      await fx.close();
    }
  });

  test('a client cannot start unlimited calls by hanging up on them', async () => {
    const upstream = slowUpstream();
    const fx = await startFixture({ override: (req, res) => upstream.override(req, res) });
    try {
      const key = await fx.gateway.mint({ group: 'g', maxConcurrent: 3 });
      for (let i = 0; i < 3; i++) await abandon(key.socketPath, message(), upstream);
      const refused = await request({
        socketPath: key.socketPath,
        path: '/v1/messages',
        headers: anthropicHeaders(),
        body: message({ metadata: { user_id: 'probe' } }),
      });
      assert.equal(refused.status, 429);
      assert.equal(upstream.held.length, 3, 'three upstream calls at most');
      for (const { res } of upstream.held) res.writeHead(200, { 'content-type': 'application/json' }).end('{"usage":{"input_tokens":10,"output_tokens":10}}');
      await eventually(() => fx.calls.filter((call) => call.outcome === 'client_closed').length === 3);
      assert.equal(fx.gateway.inspect().keys[0]!.inFlight, 0);
    } finally {
      for (const { res } of upstream.held) res.destroy(); // a failed test leaves none hanging
      await fx.close();
    }
  });

  test('an abandoned call whose upstream reports no usage is charged its input estimate', async () => {
    const upstream = slowUpstream();
    const fx = await startFixture({ override: (req, res) => upstream.override(req, res) });
    try {
      const key = await fx.gateway.mint({ group: 'g', maxConcurrent: 1 });
      const body = message({ system: 'x'.repeat(40_000) });
      await abandon(key.socketPath, body, upstream);
      await probeSlotHeld(key.socketPath);
      // The upstream took the call; its connection breaks before any usage.
      const { res } = upstream.held[0]!;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"id":"msg_1","content":[');
      res.destroy();
      await eventually(() => fx.calls.some((call) => call.outcome === 'client_closed'));
      const record = fx.calls.find((call) => call.outcome === 'client_closed')!;
      assert.equal(record.outcome, 'client_closed');
      assert.equal(record.usageReported, false);
      assert.equal(record.inputTokens, Math.ceil(Buffer.byteLength(body) / 4));
      assert.ok(record.costUsd > 0.03, `charged ${record.costUsd}`);
    } finally {
      for (const { res } of upstream.held) res.destroy(); // a failed test leaves none hanging
      await fx.close();
    }
  });

  test('a stream the client abandons is still cut at once and charged what was delivered', async () => {
    const upstream = slowUpstream();
    const fx = await startFixture({ override: (req, res) => upstream.override(req, res) });
    try {
      const key = await fx.gateway.mint({ group: 'g' });
      const req = http.request({ socketPath: key.socketPath, path: '/v1/messages', method: 'POST', headers: anthropicHeaders(), agent: false });
      req.on('error', () => undefined);
      const firstEvent = new Promise<void>((resolve) => req.once('response', (res) => res.once('data', () => resolve())));
      req.end(message({ stream: true }));
      await eventually(() => upstream.held.length === 1);
      const { res, upstreamClosed } = upstream.held[0]!;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":500,"output_tokens":1}}}\n\n');
      await firstEvent;
      req.destroy();
      await upstreamClosed; // the gateway cut the upstream: the provider stops generating
      await eventually(() => fx.calls.length === 1);
      assert.equal(fx.calls[0]!.outcome, 'client_closed');
      assert.equal(fx.calls[0]!.inputTokens, 500);
      assert.equal(fx.gateway.inspect().keys[0]!.inFlight, 0);
    } finally {
      for (const { res } of upstream.held) res.destroy(); // a failed test leaves none hanging
      await fx.close();
    }
  });
});
