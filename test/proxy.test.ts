// The proxy through real Unix sockets against the stand-in provider: credential swap, byte-exact
// pass-through, streaming, header hygiene and every error the gateway answers itself.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { STANDIN_REPLY } from '../src/dev/standin.ts';
import { REAL_ANTHROPIC_KEY, REAL_OPENAI_KEY, eventually, startFixture, type Fixture } from './support/fixture.ts';
import { anthropicHeaders, openaiHeaders, request, sseData } from './support/http.ts';

const CLAUDE_CODE_BETAS =
  'claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,per-turn-control-2026-07-01,mid-conversation-tool-changes-2026-07-01,thinking-token-count-2026-05-13';

function assertNoRealKey(...texts: string[]): void {
  for (const text of texts) {
    assert.ok(!text.includes(REAL_ANTHROPIC_KEY) && !text.includes(REAL_OPENAI_KEY), 'a real key leaked');
  }
}

describe('proxy', () => {
  let fx: Fixture;
  let socketPath: string;

  before(async () => {
    fx = await startFixture();
    socketPath = (await fx.gateway.mint({ group: 'tests' })).socketPath;
  });
  after(() => fx.close());

  test('Anthropic message: the real key goes upstream, the client credential does not', async () => {
    const body = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] });
    const res = await request({
      socketPath,
      path: '/v1/messages?beta=true',
      headers: anthropicHeaders({ authorization: 'Bearer container-oauth', 'anthropic-beta': CLAUDE_CODE_BETAS }),
      body,
    });
    assert.equal(res.status, 200);
    assert.equal((JSON.parse(res.body) as { content: { text: string }[] }).content[0]!.text, STANDIN_REPLY);
    const seen = fx.standin.requests.at(-1)!;
    assert.equal(seen.url, '/v1/messages?beta=true');
    assert.equal(seen.headers['x-api-key'], REAL_ANTHROPIC_KEY);
    assert.equal(seen.headers.authorization, undefined);
    assert.equal(seen.headers['anthropic-beta'], CLAUDE_CODE_BETAS);
    assert.equal(seen.headers['anthropic-version'], '2023-06-01');
    assert.ok(res.headers['request-id'], 'upstream request-id passed back');
    assertNoRealKey(res.body, JSON.stringify(res.headers));
  });

  test('request bodies reach the upstream byte for byte', async () => {
    // Odd spacing, escapes and a thinking signature: re-serializing would change every one of them.
    const body =
      '{ "model" : "claude-sonnet-4-5",\n "max_tokens":64, "messages":[{"role":"user","content":"caf\\u00e9 \u00e9 \\/"},' +
      '{"role":"assistant","content":[{"type":"thinking","thinking":"x","signature":"EqQBCkYIBxgCKkD+/=="}]}],"metadata":{"z":1.50}}';
    const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body });
    assert.equal(res.status, 200);
    assert.deepEqual(fx.standin.requests.at(-1)!.body, Buffer.from(body));
  });

  test('Anthropic streaming: events reach the client one by one, as sent', { timeout: 10_000 }, async () => {
    // Lockstep: the upstream sends the next event only once the client has received the previous
    // one, so a gateway that held an event back (buffering, coalescing) would stall the stream and
    // time the test out, however loaded the machine is; no timing is involved.
    let received: () => void = () => undefined;
    const lockstep = await startFixture({ pace: () => new Promise<void>((resolve) => (received = resolve)) });
    try {
      const key = await lockstep.gateway.mint({ group: 'tests' });
      const body = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 64, stream: true, messages: [{ role: 'user', content: 'hi' }] });
      const arrivals: string[] = [];
      const status = await new Promise<number>((resolve, reject) => {
        const req = http.request({ socketPath: key.socketPath, method: 'POST', path: '/v1/messages', headers: anthropicHeaders(), agent: false }, (res) => {
          res.setEncoding('utf8');
          res.on('data', (text: string) => {
            arrivals.push(text);
            received();
          });
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.end(body);
      });
      assert.equal(status, 200);
      // Each chunk is exactly one whole event, as the stand-in wrote it.
      for (const arrival of arrivals) assert.match(arrival, /^event: \w+\ndata: [^\n]+\n\n$/, 'one event per chunk');
      const types = arrivals.map((arrival) => /^event: (\w+)/.exec(arrival)![1]);
      const deltas = types.filter((type) => type === 'content_block_delta').length;
      assert.deepEqual(types, [
        'message_start',
        'content_block_start',
        'ping',
        ...Array<string>(deltas).fill('content_block_delta'),
        'content_block_stop',
        'message_delta',
        'message_stop',
      ]);
      assert.ok(deltas > 1);
      const text = sseData(arrivals.join(''))
        .map((event) => (event as { delta?: { text?: string } }).delta?.text ?? '')
        .join('');
      assert.equal(text, STANDIN_REPLY);
      await eventually(() => lockstep.calls.length === 1);
      const inputTokens = Math.ceil(Buffer.byteLength(body) / 4);
      assert.deepEqual([lockstep.calls[0]!.inputTokens, lockstep.calls[0]!.outputTokens], [inputTokens, deltas], 'and metered from the stream');
    } finally {
      await lockstep.close();
    }
  });

  test('count_tokens and Anthropic models', async () => {
    const counted = await request({
      socketPath,
      path: '/v1/messages/count_tokens?beta=true',
      headers: anthropicHeaders(),
      body: JSON.stringify({ model: 'claude-sonnet-4-5', messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(counted.status, 200);
    assert.ok((JSON.parse(counted.body) as { input_tokens: number }).input_tokens > 0);
    const models = await request({ socketPath, path: '/v1/models', headers: anthropicHeaders() });
    assert.equal(models.status, 200);
    assert.equal(fx.standin.requests.at(-1)!.headers['x-api-key'], REAL_ANTHROPIC_KEY);
    assert.equal((JSON.parse(models.body) as { data: { type: string }[] }).data[0]!.type, 'model');
  });

  test('OpenAI chat completions, JSON and streaming, with the real bearer token', async () => {
    const json = await request({
      socketPath,
      path: '/v1/chat/completions',
      headers: openaiHeaders({ 'x-stainless-lang': 'js', 'idempotency-key': 'stainless-retry-1' }),
      body: JSON.stringify({ model: 'gpt-5.1', messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(json.status, 200);
    const seen = fx.standin.requests.at(-1)!;
    assert.equal(seen.headers.authorization, `Bearer ${REAL_OPENAI_KEY}`);
    assert.equal(seen.headers['x-stainless-lang'], 'js');
    assert.equal(seen.headers['idempotency-key'], 'stainless-retry-1');

    const streamed = await request({
      socketPath,
      path: '/v1/chat/completions',
      headers: openaiHeaders(),
      body: JSON.stringify({ model: 'gpt-5.1', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(streamed.status, 200);
    assert.ok(streamed.body.endsWith('data: [DONE]\n\n'));
    const text = sseData(streamed.body)
      .map((chunk) => (chunk as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content ?? '')
      .join('');
    assert.equal(text, STANDIN_REPLY);
    assertNoRealKey(json.body, streamed.body, JSON.stringify(json.headers));
  });

  test('OpenAI responses, JSON and streaming, and OpenAI models', async () => {
    const json = await request({
      socketPath,
      path: '/v1/responses',
      headers: openaiHeaders(),
      body: JSON.stringify({ model: 'gpt-5.1', input: 'hi' }),
    });
    assert.equal(json.status, 200);
    assert.equal((JSON.parse(json.body) as { status: string }).status, 'completed');
    const streamed = await request({
      socketPath,
      path: '/v1/responses',
      headers: openaiHeaders(),
      body: JSON.stringify({ model: 'gpt-5.1', input: 'hi', stream: true }),
    });
    const types = sseData(streamed.body).map((event) => (event as { type: string }).type);
    assert.equal(types[0], 'response.created');
    assert.equal(types.at(-1), 'response.completed');
    const models = await request({ socketPath, path: '/v1/models', headers: openaiHeaders() });
    assert.equal((JSON.parse(models.body) as { object: string }).object, 'list');
    assert.equal(fx.standin.requests.at(-1)!.headers.authorization, `Bearer ${REAL_OPENAI_KEY}`);
  });

  test('hop-by-hop, cookies, client credentials and made-up proxy headers are not forwarded', async () => {
    await request({
      socketPath,
      path: '/v1/messages',
      headers: anthropicHeaders({
        cookie: 'session=1',
        'x-forwarded-for': '6.6.6.6',
        forwarded: 'for=6.6.6.6',
        'proxy-authorization': 'Basic eA==',
        'api-key': 'azure-style',
        'openai-organization': 'org-evil',
        connection: 'keep-alive, x-drop-me',
        'x-drop-me': '1',
        'x-claude-code-session-id': 'session-123',
        'user-agent': 'claude-cli/2.1.332 (external, cli)',
      }),
      body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8, messages: [] }),
    });
    const seen = fx.standin.requests.at(-1)!.headers;
    for (const name of ['cookie', 'x-forwarded-for', 'forwarded', 'proxy-authorization', 'api-key', 'openai-organization', 'x-drop-me']) {
      assert.equal(seen[name], undefined, `${name} was forwarded`);
    }
    assert.equal(seen['x-claude-code-session-id'], 'session-123');
    assert.equal(seen['user-agent'], 'claude-cli/2.1.332 (external, cli)');
    assert.equal(seen['accept-encoding'], 'identity');
    assert.equal(fx.calls.at(-1)!.sessionId, 'session-123');
  });

  test("Claude Code's HEAD /api/hello is answered locally", async () => {
    const before = fx.standin.requests.length;
    const res = await request({ socketPath, method: 'HEAD', path: '/api/hello' });
    assert.equal(res.status, 200);
    // The key's id, so a second shim can tell its port already serves this key.
    assert.equal(res.headers['x-gateway-key'], fx.gateway.keys().find((key) => key.socketPath === socketPath)!.id);
    assert.equal(fx.standin.requests.length, before);
  });

  test('unknown paths get a 404 in the dialect the client speaks and are never forwarded', async () => {
    const before = fx.standin.requests.length;
    const anthropic = await request({ socketPath, path: '/api/event_logging/v2/batch', headers: anthropicHeaders(), body: '{}' });
    assert.equal(anthropic.status, 404);
    assert.deepEqual(Object.keys(JSON.parse(anthropic.body) as object), ['type', 'error']);
    assert.equal((JSON.parse(anthropic.body) as { error: { type: string } }).error.type, 'not_found_error');
    const openai = await request({ socketPath, path: '/v1/files', headers: openaiHeaders() });
    assert.equal(openai.status, 404);
    assert.equal((JSON.parse(openai.body) as { error: { code: string } }).error.code, 'not_found');
    for (const path of ['/v1/../v1/messages', '/v1/%6dessages', '/v1/messages/']) {
      const res = await request({ socketPath, path, headers: anthropicHeaders(), body: '{}' });
      assert.equal(res.status, 404, path);
    }
    // An absolute-form target is egress, never an API call: refused for a key without egress.
    const absolute = await request({ socketPath, path: 'http://evil.example/v1/messages', headers: anthropicHeaders(), body: '{}' });
    assert.equal(absolute.status, 403);
    assert.equal(fx.standin.requests.length, before);
  });

  test('bad requests get the right status in the provider shape', async () => {
    const before = fx.standin.requests.length;
    const badJson = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: '{"model": "x",' });
    assert.equal(badJson.status, 400);
    assert.equal((JSON.parse(badJson.body) as { error: { type: string } }).error.type, 'invalid_request_error');
    assert.match(badJson.body, /not valid JSON/);

    const notObject = await request({ socketPath, path: '/v1/chat/completions', headers: openaiHeaders(), body: '[1,2]' });
    assert.equal(notObject.status, 400);
    assert.equal((JSON.parse(notObject.body) as { error: { type: string } }).error.type, 'invalid_request_error');

    const wrongType = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders({ 'content-type': 'text/plain' }), body: '{}' });
    assert.equal(wrongType.status, 415);

    const wrongMethod = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders() });
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.allow, 'POST');
    assert.equal(fx.standin.requests.length, before);
  });

  test('a WebSocket upgrade is refused at once, never relayed', async () => {
    const res = await request({
      socketPath,
      path: '/v1/responses',
      headers: { upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': '13' },
    });
    assert.equal(res.status, 426);
    assert.equal((JSON.parse(res.body) as { error: { code: string } }).error.code, 'upgrade_refused');
  });

  test('every call is reported once with its key, route and timing', async () => {
    const count = fx.calls.length;
    await request({ socketPath, path: '/v1/responses', headers: openaiHeaders(), body: JSON.stringify({ model: 'gpt-5.1', input: 'x', stream: true }) });
    await eventually(() => fx.calls.length === count + 1);
    const call = fx.calls.at(-1)!;
    assert.equal(call.dialect, 'openai');
    assert.equal(call.endpoint, 'responses');
    assert.equal(call.model, 'gpt-5.1');
    assert.equal(call.stream, true);
    assert.equal(call.status, 200);
    assert.equal(call.outcome, 'complete');
    assert.ok(call.ttfbMs! > 0 && call.latencyMs >= call.ttfbMs!);
    assert.ok(call.upstreamRequestId?.startsWith('req_'));
  });
});
