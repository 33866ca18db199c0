// Containment class 4 (spending past a budget), the pricing part of class 5 and the rate part of
// class 6: one key's hostile requests against the budget, price and rate checks. The upstreams here
// bill the worst case each request allows, so spend measures what the reservation let through.
import assert from 'node:assert/strict';
import http from 'node:http';
import { describe, test } from 'node:test';
import { REAL_ANTHROPIC_KEY, deadPort, eventually, startFixture } from '../support/fixture.ts';
import { anthropicHeaders, openaiHeaders, request, type HttpExchange } from '../support/http.ts';
import type { RecordedRequest } from '../../src/dev/standin.ts';
import type { ServerResponse } from 'node:http';

/** An OpenAI upstream that spends every output token the request allows: n x its limit (or `modelMax`). */
function worstCaseChat(modelMax: number) {
  return (request: RecordedRequest, res: ServerResponse): boolean => {
    if (!request.url.startsWith('/v1/chat/completions')) return false;
    const body = JSON.parse(request.body.toString()) as { model: string; n?: number; max_completion_tokens?: number; max_tokens?: number };
    const limit = body.max_completion_tokens ?? body.max_tokens ?? modelMax;
    const n = body.n ?? 1;
    const usage = { prompt_tokens: Math.ceil(request.body.length / 4), completion_tokens: n * limit, prompt_tokens_details: { cached_tokens: 0 } };
    const choices = Array.from({ length: n }, (_, index) => ({ index, message: { role: 'assistant', content: 'x' }, finish_reason: 'length' }));
    const text = JSON.stringify({ id: 'c', object: 'chat.completion', model: body.model, choices, usage });
    // Hold the answer a moment: concurrent calls overlap, as real long generations do.
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    }, 40);
    return true;
  };
}

const chat = (extra: object) => JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], ...extra });
const statuses = (results: HttpExchange[]) =>
  results
    .map((r) => r.status)
    .sort()
    .join(',');

describe('budget containment', () => {
  test('n:128 with concurrent calls: spend stays within the budget plus the input estimate', async () => {
    const fx = await startFixture({ override: worstCaseChat(16_384) });
    try {
      const budgetUsd = 1;
      const key = await fx.gateway.mint({ group: 'n', budgetUsd });
      const results = await Promise.all(
        Array.from({ length: 6 }, () =>
          request({ socketPath: key.socketPath, path: '/v1/chat/completions', headers: openaiHeaders(), body: chat({ n: 128 }) }),
        ),
      );
      await eventually(() => fx.calls.length === 6, 10_000);
      const spent = fx.gateway.inspect().keys[0]!.spentUsd;
      console.log(`# n:128 x 6 concurrent, budget $${budgetUsd}: spent $${spent.toFixed(4)}; statuses ${statuses(results)}`);
      // The only error left is the input estimate: a few hundred bytes here, well under a cent.
      assert.ok(spent <= budgetUsd + 0.001, `spent ${spent} against a budget of ${budgetUsd}`);
      assert.ok(
        results.some((r) => r.status === 200),
        'the first call is served, lowered to what the budget affords',
      );
      const clamped = fx.calls.find((c) => c.status === 200)!;
      assert.ok(clamped.clampedMaxTokens! > 1024 && clamped.clampedMaxTokens! < 16_384, `clamped to ${clamped.clampedMaxTokens}`);
      const refused = results.find((r) => r.status === 429)!;
      assert.match(refused.body, /insufficient_quota/);
      assert.match(refused.body, /left/);
    } finally {
      await fx.close();
    }
  });

  test('no max_tokens: reserved at the model maximum, so concurrent calls cannot overshoot', async () => {
    const fx = await startFixture({ override: worstCaseChat(16_384) });
    try {
      const budgetUsd = 0.03; // about three worst-case gpt-4o-mini calls ($0.0098 each)
      const key = await fx.gateway.mint({ group: 'm', budgetUsd });
      const results = await Promise.all(
        Array.from({ length: 8 }, () => request({ socketPath: key.socketPath, path: '/v1/chat/completions', headers: openaiHeaders(), body: chat({}) })),
      );
      await eventually(() => fx.calls.length === 8, 10_000);
      const spent = fx.gateway.inspect().keys[0]!.spentUsd;
      console.log(`# 8 concurrent calls without max_tokens, budget $${budgetUsd}: spent $${spent.toFixed(4)}; statuses ${statuses(results)}`);
      assert.ok(spent <= budgetUsd + 0.001, `spent ${spent} against a budget of ${budgetUsd}`);
      assert.ok(results.filter((r) => r.status === 200).length >= 3);
    } finally {
      await fx.close();
    }
  });

  test('whitespace padding does not inflate a reservation, and input is capped at the context window', async () => {
    const fx = await startFixture();
    try {
      fx.gateway.setGroupBudget('team', 20);
      const key = await fx.gateway.mint({ group: 'team' });
      const padded = `{"model":"claude-sonnet-4-5","max_tokens":64,${' '.repeat(12 * 1024 * 1024)}"messages":[{"role":"user","content":"hi"}]}`;
      const res = await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: padded });
      assert.equal(res.status, 200);
      // Long real content: 3 MB of text would be 1M tokens at 3 bytes each; Opus 4.5 reads at most 200k.
      const long = JSON.stringify({ model: 'claude-opus-4-5', max_tokens: 64, messages: [{ role: 'user', content: 'x'.repeat(3_000_000) }] });
      // (Another group: the stand-in bills the padding above as input, as no real provider would.)
      const other = await fx.gateway.mint({ group: 'other' });
      assert.equal((await request({ socketPath: other.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: long })).status, 200);
      await eventually(() => fx.calls.length === 2);
      const [pad, big] = fx.calls;
      console.log(`# 12 MiB of whitespace reserved $${pad!.reservedUsd!.toFixed(4)}; 3 MB of text on Opus reserved $${big!.reservedUsd!.toFixed(4)}`);
      assert.ok(pad!.reservedUsd! < 0.01, `padding reserved $${pad!.reservedUsd}`);
      // 200k tokens at the 1-hour cache-write rate ($10) plus 64 output tokens.
      assert.ok(big!.reservedUsd! <= (200_000 * 10 + 64 * 25) / 1e6 + 1e-9, `long input reserved $${big!.reservedUsd}`);
    } finally {
      await fx.close();
    }
  });

  test('parallel calls on a small budget wait for the calls in flight, then succeed', async () => {
    const fx = await startFixture({ eventDelayMs: 10 });
    try {
      const key = await fx.gateway.mint({ group: 'small', budgetUsd: 0.003 });
      const body = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 64, stream: true, messages: [{ role: 'user', content: 'hi' }] });
      const results = await Promise.all(
        Array.from({ length: 10 }, () => request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body })),
      );
      console.log(`# 10 parallel calls on $0.003: statuses ${statuses(results)}`);
      assert.deepEqual(
        results.map((r) => r.status),
        Array(10).fill(200),
      );
      const snapshot = fx.gateway.inspect().keys[0]!;
      assert.ok(snapshot.spentUsd <= 0.003);
    } finally {
      await fx.close();
    }
  });

  test('a call that only waits for room is refused with 429 when the wait ends, and a hung-up waiter leaves the queue', async () => {
    let release: (() => void) | undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const fx = await startFixture(
      {
        async override(_request, res) {
          await held;
          res.writeHead(500).end();
          return true;
        },
      },
      { budgetWaitMs: 200, retry: { attempts: 1 } },
    );
    try {
      const key = await fx.gateway.mint({ group: 'w', budgetUsd: 0.002 });
      const body = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] });
      const first = request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body });
      await eventually(() => fx.gateway.inspect().keys[0]!.reservedUsd > 0);
      // A waiter that hangs up: it must not stay queued, nor hold the key's concurrency.
      const gone = http.request({ socketPath: key.socketPath, path: '/v1/messages', method: 'POST', headers: anthropicHeaders() });
      gone.on('error', () => {});
      gone.end(body);
      await eventually(() => fx.gateway.inspect().keys[0]!.inFlight === 2);
      gone.destroy();
      await eventually(() => fx.gateway.inspect().keys[0]!.inFlight === 1);
      const second = await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body });
      assert.equal(second.status, 429);
      assert.ok(Number(second.headers['retry-after']) >= 1);
      assert.match(second.body, /held by calls in flight/);
      release!();
      assert.equal((await first).status, 500);
      await eventually(() => fx.gateway.inspect().keys[0]!.inFlight === 0);
      assert.equal(fx.gateway.inspect().keys[0]!.reservedUsd, 0);
    } finally {
      await fx.close();
    }
  });

  test('Claude Code max_tokens 128000 on a small budget: served, with the limit lowered in the upstream body', async () => {
    const fx = await startFixture();
    try {
      const key = await fx.gateway.mint({ group: 'cc', budgetUsd: 0.5 });
      const body = JSON.stringify({ model: 'claude-sonnet-4-5-20250929', max_tokens: 128_000, messages: [{ role: 'user', content: 'hi' }] });
      const res = await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body });
      assert.equal(res.status, 200);
      await eventually(() => fx.calls.length === 1);
      const sent = JSON.parse(fx.standin.requests.at(-1)!.body.toString()) as { max_tokens: number };
      const record = fx.calls[0]!;
      console.log(`# max_tokens 128000 on $0.50: upstream got max_tokens ${sent.max_tokens}, reserved $${record.reservedUsd!.toFixed(4)}`);
      assert.equal(sent.max_tokens, record.clampedMaxTokens);
      assert.ok(sent.max_tokens > 1024 && sent.max_tokens < 64_000);
      assert.ok(record.reservedUsd! <= 0.5);
      // Nothing left worth a call: refused with what is left, in the budget status.
      const poor = await fx.gateway.mint({ group: 'cc', budgetUsd: 0.01 });
      const refused = await request({ socketPath: poor.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body });
      assert.equal(refused.status, 402);
      assert.match(refused.body, /\$0\.0100 left/);
    } finally {
      await fx.close();
    }
  });

  test('rpm=5 with 60 request heads sent before their bodies: at most 5 are served', async () => {
    const fx = await startFixture();
    try {
      const key = await fx.gateway.mint({ group: 'r', rpm: 5 });
      const body = JSON.stringify({ model: 'claude-haiku-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] });
      let answered = 0;
      const pending = Array.from({ length: 60 }, () => {
        const req = http.request({
          socketPath: key.socketPath,
          path: '/v1/messages',
          method: 'POST',
          agent: false,
          headers: { ...anthropicHeaders(), 'content-length': String(Buffer.byteLength(body)) },
        });
        const done = new Promise<number>((resolve) => {
          req.on('response', (res) => {
            answered++;
            res.resume();
            res.on('end', () => resolve(res.statusCode!));
          });
          req.on('error', () => resolve(0));
        });
        req.flushHeaders();
        return { req, done };
      });
      // Every head has been seen: either answered already or waiting for its body.
      await eventually(() => answered + fx.gateway.inspect().keys[0]!.inFlight >= 60, 5000);
      for (const { req } of pending) req.end(body);
      const codes = await Promise.all(pending.map((p) => p.done));
      const served = codes.filter((c) => c === 200).length;
      console.log(`# rpm=5, 60 heads then bodies: ${served} served`);
      assert.equal(served, 5);
      assert.equal(codes.filter((c) => c === 429).length, 55);
      assert.equal(fx.gateway.inspect().keys[0]!.requestsLastMinute, 5, 'refused requests are not counted');
    } finally {
      await fx.close();
    }
  });
});

describe('pricing containment', () => {
  test('a fallback is reserved at the dearest candidate and billed at the model that served', async () => {
    const port = await deadPort();
    const fx = await startFixture({}, (url) => ({
      providers: {
        primary: { kind: 'anthropic', baseUrl: `http://127.0.0.1:${port}`, apiKey: REAL_ANTHROPIC_KEY },
        anthropic: { baseUrl: url, apiKey: REAL_ANTHROPIC_KEY },
      },
      routes: [
        { models: ['cheap-first'], provider: 'primary', rename: 'claude-haiku-4-5', fallbacks: ['anthropic:claude-opus-4-1'] },
        { models: ['dear-first'], provider: 'primary', rename: 'claude-opus-4-1', fallbacks: ['anthropic:claude-haiku-4-5'] },
      ],
    }));
    try {
      const key = await fx.gateway.mint({ group: 'f' });
      for (const model of ['cheap-first', 'dear-first']) {
        const body = JSON.stringify({ model, max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] });
        assert.equal((await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body })).status, 200);
      }
      await eventually(() => fx.calls.length === 2);
      const [cheapFirst, dearFirst] = fx.calls;
      console.log(
        `# fallback billing: ${cheapFirst!.priceEntry} $${cheapFirst!.costUsd.toFixed(6)}, ${dearFirst!.priceEntry} $${dearFirst!.costUsd.toFixed(6)}`,
      );
      assert.equal(cheapFirst!.priceEntry, 'claude-opus-4-1', 'served by Opus: billed as Opus');
      assert.equal(dearFirst!.priceEntry, 'claude-haiku-4-5', 'served by Haiku: billed as Haiku');
      const cost = (c: typeof cheapFirst, input: number, output: number) => (c!.inputTokens! * input + c!.outputTokens! * output) / 1e6;
      assert.ok(Math.abs(cheapFirst!.costUsd - cost(cheapFirst, 15, 75)) < 1e-12);
      assert.ok(Math.abs(dearFirst!.costUsd - cost(dearFirst, 1, 5)) < 1e-12);
      // Both reserved at the dearer (Opus) output rate: 100 tokens at $75.
      for (const call of fx.calls) assert.ok(call.reservedUsd! >= (100 * 75) / 1e6, `reserved ${call.reservedUsd}`);
    } finally {
      await fx.close();
    }
  });

  test('pro models are priced as pro, unknown tiers do not inherit the base price, priority costs more', async () => {
    const fx = await startFixture({}, { unknownModelPrice: 'deny' });
    try {
      const key = await fx.gateway.mint({ group: 'p' });
      const send = (extra: object) =>
        request({ socketPath: key.socketPath, path: '/v1/chat/completions', headers: openaiHeaders(), body: chat({ max_completion_tokens: 100, ...extra }) });
      assert.equal((await send({ model: 'gpt-5-pro' })).status, 200);
      assert.equal((await send({ model: 'gpt-5-pro-2025-10-06' })).status, 200);
      const unknownTier = await send({ model: 'gpt-5-ultra' });
      assert.equal(unknownTier.status, 403, 'an unknown tier is an unknown model, not gpt-5');
      assert.equal((await send({ model: 'gpt-5' })).status, 200);
      assert.equal((await send({ model: 'gpt-5', service_tier: 'priority' })).status, 200);
      await eventually(() => fx.calls.length === 5);
      const [pro, dated, , standard, priority] = fx.calls;
      console.log(
        `# gpt-5-pro billed via ${pro!.priceEntry} $${pro!.costUsd.toFixed(6)}; gpt-5 $${standard!.costUsd.toFixed(6)}, priority $${priority!.costUsd.toFixed(6)}`,
      );
      assert.equal(pro!.priceEntry, 'gpt-5-pro');
      assert.equal(dated!.priceEntry, 'gpt-5-pro');
      assert.ok(Math.abs(pro!.costUsd - (pro!.inputTokens! * 15 + pro!.outputTokens! * 120) / 1e6) < 1e-12);
      const standardRate = (c: typeof pro) => (c!.inputTokens! * 1.25 + c!.outputTokens! * 10) / 1e6;
      assert.ok(Math.abs(standard!.costUsd - standardRate(standard)) < 1e-12);
      assert.ok(Math.abs(priority!.costUsd - 2 * standardRate(priority)) < 1e-12, 'priority is billed at twice the standard rate');
      assert.ok(priority!.reservedUsd! > 1.9 * standard!.reservedUsd!);
    } finally {
      await fx.close();
    }
  });
});
