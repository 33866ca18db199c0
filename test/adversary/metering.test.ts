// Class 5 of issue 12 (the parts that decide what the upstream is asked): a streaming chat request
// that carries its own `stream_options` still gets usage from the provider, and a `background`
// Responses call, which the provider would run and bill after the call, is refused.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { eventually, startFixture, type Fixture } from '../support/fixture.ts';
import { openaiHeaders, request } from '../support/http.ts';

describe('usage the gateway must see', () => {
  let fx: Fixture;
  let socketPath: string;
  before(async () => {
    fx = await startFixture();
    socketPath = (await fx.gateway.mint({ group: 'metered' })).socketPath;
  });
  after(() => fx.close());

  for (const [sent, usageChunkExpected] of [
    ['{}', false],
    ['null', false],
    ['{"include_usage":false}', false],
    ['{"include_usage":true}', true],
  ] as const) {
    test(`stream_options ${sent}: usage is asked for and reported; the client sees the usage chunk only if it asked`, async () => {
      const before = fx.calls.length;
      const body = `{"model":"gpt-4o-mini","stream":true,"stream_options":${sent},"messages":[{"role":"user","content":"hi"}]}`;
      const res = await request({ socketPath, path: '/v1/chat/completions', headers: openaiHeaders(), body });
      assert.equal(res.status, 200);
      const forwarded = JSON.parse(fx.standin.requests.at(-1)!.body.toString()) as { stream_options: { include_usage: boolean } };
      assert.equal(forwarded.stream_options.include_usage, true);
      assert.equal(res.body.includes('"choices":[],"usage"'), usageChunkExpected);
      await eventually(() => fx.calls.length > before);
      assert.equal(fx.calls.at(-1)!.usageReported, true, 'charged from the usage the provider reported');
    });
  }

  test("background: true on /v1/responses is refused with 400 in OpenAI's shape, never forwarded", async () => {
    const before = fx.standin.requests.length;
    const res = await request({ socketPath, path: '/v1/responses', headers: openaiHeaders(), body: '{"model":"gpt-5","background":true,"input":"hi"}' });
    assert.equal(res.status, 400);
    const error = (JSON.parse(res.body) as { error: { type: string; message: string } }).error;
    assert.equal(error.type, 'invalid_request_error');
    assert.match(error.message, /background/);
    assert.equal(fx.standin.requests.length, before);
  });
});
