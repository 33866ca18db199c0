// What the client sees when the upstream or the configuration fails, and OAuth credential injection.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { describe, test } from 'node:test';
import { REAL_ANTHROPIC_KEY, REAL_OPENAI_KEY, eventually, deadPort, providersAt, startFixture } from './support/fixture.ts';
import { anthropicHeaders, openaiHeaders, request, sseData } from './support/http.ts';

const message = (extra: object = {}) => JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }], ...extra });

function assertNoRealKey(text: string): void {
  assert.ok(!text.includes(REAL_ANTHROPIC_KEY) && !text.includes(REAL_OPENAI_KEY), 'a real key leaked');
}

describe('upstream failures and configuration', () => {
  test('an unreachable upstream is a 502 in the provider shape, naming no secret', async () => {
    const port = await deadPort();
    const fx = await startFixture(
      {},
      {
        providers: providersAt(port),
      },
    );
    try {
      const { socketPath } = await fx.gateway.mint({ group: 'g' });
      const anthropic = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() });
      assert.equal(anthropic.status, 502);
      assert.equal((JSON.parse(anthropic.body) as { error: { type: string } }).error.type, 'api_error');
      assert.match(anthropic.body, /anthropic upstream unreachable \(ECONNREFUSED\)/);
      const openai = await request({ socketPath, path: '/v1/responses', headers: openaiHeaders(), body: '{"model":"gpt-5.1"}' });
      assert.equal(openai.status, 502);
      assert.equal((JSON.parse(openai.body) as { error: { code: string } }).error.code, 'upstream_unreachable');
      assertNoRealKey(anthropic.body + openai.body + JSON.stringify([anthropic.headers, openai.headers]));
      await eventually(() => fx.calls.length === 2);
      assert.deepEqual(
        fx.calls.map((c) => [c.outcome, c.errorKind]),
        [
          ['upstream_failed', 'upstream_unreachable'],
          ['upstream_failed', 'upstream_unreachable'],
        ],
      );
    } finally {
      await fx.close();
    }
  });

  test('a provider without a credential answers 503 and is never called', async () => {
    // The stand-in as base URL: were the provider called anyway, the stand-in would count it.
    const fx = await startFixture({}, (url) => ({ providers: { anthropic: { baseUrl: url }, openai: { baseUrl: url } } }));
    try {
      const { socketPath } = await fx.gateway.mint({ group: 'g' });
      const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() });
      assert.equal(res.status, 503);
      assert.match(res.body, /no credential configured for provider anthropic/);
      assert.equal(fx.standin.requests.length, 0);
    } finally {
      await fx.close();
    }
  });

  test('an OAuth token goes upstream as a bearer token with the oauth beta merged into the client list', async () => {
    const token = 'real-oauth-token-9b1c';
    const fx = await startFixture({ anthropicApiKey: undefined, anthropicOauthToken: token }, (url) => ({
      providers: { anthropic: { baseUrl: url, oauthToken: token } },
    }));
    try {
      const { socketPath } = await fx.gateway.mint({ group: 'g' });
      const betas = 'claude-code-20250219, interleaved-thinking-2025-05-14';
      const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders({ 'anthropic-beta': betas }), body: message() });
      assert.equal(res.status, 200);
      const seen = fx.standin.requests.at(-1)!.headers;
      assert.equal(seen.authorization, `Bearer ${token}`);
      assert.equal(seen['x-api-key'], undefined);
      assert.equal(seen['anthropic-beta'], `${betas},oauth-2025-04-20`);
      await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() });
      assert.equal(fx.standin.requests.at(-1)!.headers['anthropic-beta'], 'oauth-2025-04-20');
      assert.ok(!res.body.includes(token));
    } finally {
      await fx.close();
    }
  });

  test('upstream error statuses and their headers reach the client unchanged', async () => {
    const body = '{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}';
    const fx = await startFixture({
      override(_request, res) {
        res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '7', 'anthropic-ratelimit-requests-remaining': '0', 'request-id': 'req_up' });
        res.end(body);
        return true;
      },
    });
    try {
      const { socketPath } = await fx.gateway.mint({ group: 'g' });
      const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() });
      assert.equal(res.status, 429);
      assert.equal(res.body, body);
      assert.equal(res.headers['retry-after'], '7');
      assert.equal(res.headers['anthropic-ratelimit-requests-remaining'], '0');
      assert.equal(res.headers['request-id'], 'req_up');
    } finally {
      await fx.close();
    }
  });

  test('an upstream that dies mid-stream ends the client stream with an error event', async () => {
    const fx = await startFixture({
      override(_request, res) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}\n\n');
        setTimeout(() => res.socket?.destroy(), 30);
        return true;
      },
    });
    try {
      const { socketPath } = await fx.gateway.mint({ group: 'g' });
      const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message({ stream: true }) });
      assert.equal(res.status, 200);
      const events = sseData(res.body) as { type: string; error?: { type: string; message: string } }[];
      assert.deepEqual(
        events.map((e) => e.type),
        ['message_start', 'error'],
      );
      assert.equal(events[1]!.error!.type, 'api_error');
      assert.match(events[1]!.error!.message, /mid-response/);
      await eventually(() => fx.calls.length === 1);
      assert.equal(fx.calls[0]!.outcome, 'upstream_failed');
    } finally {
      await fx.close();
    }
  });

  test('a client that hangs up mid-stream aborts the upstream request', async () => {
    let upstreamClosed = false;
    const fx = await startFixture({
      override(_request, res) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('event: ping\ndata: {"type":"ping"}\n\n');
        const timer = setInterval(() => res.write('event: ping\ndata: {"type":"ping"}\n\n'), 20);
        res.on('close', () => {
          upstreamClosed = true;
          clearInterval(timer);
        });
        return true;
      },
    });
    try {
      const { socketPath } = await fx.gateway.mint({ group: 'g' });
      const socket = net.connect(socketPath);
      const body = message({ stream: true });
      socket.write(
        `POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nanthropic-version: 2023-06-01\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
      );
      await new Promise((resolve) => socket.once('data', resolve));
      socket.destroy();
      await eventually(() => upstreamClosed);
      await eventually(() => fx.calls.length === 1);
      assert.equal(fx.calls[0]!.outcome, 'client_closed');
    } finally {
      await fx.close();
    }
  });

  test('a body over the limit is refused with 413 before it is forwarded', async () => {
    const fx = await startFixture({}, { maxBodyBytes: 1024 });
    try {
      const { socketPath } = await fx.gateway.mint({ group: 'g' });
      const big = message({ system: 'x'.repeat(4096) });
      const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: big });
      assert.equal(res.status, 413);
      assert.equal((JSON.parse(res.body) as { error: { type: string } }).error.type, 'request_too_large');
      assert.equal(fx.standin.requests.length, 0);
      // Without a content-length (chunked), the limit holds as the body arrives.
      const chunked = await new Promise<number>((resolve, reject) => {
        const socket = net.connect(socketPath);
        let reply = '';
        socket.on('data', (chunk) => (reply += chunk));
        socket.on('close', () => resolve(Number(reply.split(' ')[1])));
        socket.on('error', reject);
        socket.write('POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n');
        socket.write(`800\r\n${'x'.repeat(2048)}\r\n`);
      });
      assert.equal(chunked, 413);
      assert.equal(fx.standin.requests.length, 0);
    } finally {
      await fx.close();
    }
  });

  test('a request whose client leaves before the body is complete is never forwarded', async () => {
    const fx = await startFixture();
    try {
      const { socketPath } = await fx.gateway.mint({ group: 'g' });
      const socket = net.connect(socketPath);
      socket.write('POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"model":');
      // The gateway has the request once it counts it in flight; the client then leaves mid-body.
      await eventually(() => fx.gateway.inspect().keys[0]!.inFlight === 1);
      socket.destroy();
      await eventually(() => fx.calls.length === 1);
      assert.equal(fx.calls[0]!.outcome, 'client_closed');
      assert.equal(fx.standin.requests.length, 0);
    } finally {
      await fx.close();
    }
  });

  test('malformed SSE from the upstream is relayed as sent, metered as far as it can be, and settled', async () => {
    const garbage =
      'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":11,"output_tokens":1}}}\n\n' +
      'event: content_block_delta\ndata: {not json at all\n\n' +
      'data: \u0000\u0001 binary-ish\n\n' +
      'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":"many"}}\n\n' +
      'event: message_stop\ndata: {"type":"message_stop"}\n\n';
    const fx = await startFixture({
      override(_request, res) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.end(garbage);
        return true;
      },
    });
    try {
      const key = await fx.gateway.mint({ group: 'g', budgetUsd: 1 });
      const res = await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message({ stream: true }) });
      assert.equal(res.status, 200);
      assert.equal(res.body, garbage, "a transparent pipe: the bytes are the upstream's");
      await eventually(() => fx.calls.length === 1);
      const call = fx.calls[0]!;
      assert.equal(call.outcome, 'complete');
      assert.equal(call.inputTokens, 11);
      assert.ok(call.costUsd > 0 && call.costUsd < 0.001);
      const live = fx.gateway.inspect().keys[0]!;
      assert.equal(live.reservedUsd, 0, 'the reservation was settled');
      assert.ok(Math.abs(live.spentUsd - call.costUsd) < 1e-12);
    } finally {
      await fx.close();
    }
  });

  test('a response far larger than expected streams through whole, and is audited', async () => {
    const chunk = Buffer.alloc(1024 * 1024, 'x');
    const megabytes = 40;
    const fx = await startFixture({
      override(_request, res) {
        res.writeHead(200, { 'content-type': 'application/json' });
        let sent = 0;
        const more = () => {
          while (sent < megabytes) {
            sent++;
            if (!res.write(chunk)) return res.once('drain', more);
          }
          res.end();
        };
        more();
        return true;
      },
    });
    try {
      const { socketPath } = await fx.gateway.mint({ group: 'g' });
      let received = 0;
      await new Promise<void>((resolve, reject) => {
        const req = http.request({ socketPath, method: 'POST', path: '/v1/messages', headers: anthropicHeaders() }, (res) => {
          res.on('data', (data: Buffer) => {
            received += data.length;
          });
          res.on('end', resolve);
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end(message());
      });
      assert.equal(received, megabytes * chunk.length);
      await eventually(() => fx.calls.length === 1);
      assert.equal(fx.calls[0]!.responseBytes, megabytes * chunk.length);
      assert.equal(fx.calls[0]!.costUsd, 0, 'no usage in it: nothing to charge');
    } finally {
      await fx.close();
    }
  });
});
