// Metering, budgets, limits and the audit trail through the whole gateway.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { createGateway } from '../src/index.ts';
import { REAL_ANTHROPIC_KEY, REAL_OPENAI_KEY, eventually, startFixture } from './support/fixture.ts';
import { anthropicHeaders, openaiHeaders, request, sseData } from './support/http.ts';

const fixture = (name: string): Buffer => readFileSync(new URL(`fixtures/${name}`, import.meta.url));

const message = (extra: object = {}) =>
  JSON.stringify({ model: 'claude-sonnet-4-5-20250929', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }], ...extra });

describe('metering through the gateway', () => {
  test('recorded Claude Code streams are metered exactly and audited without a credential', async () => {
    const streams = ['anthropic-stream-cache-write.sse', 'anthropic-stream-cache-read.sse'];
    let next = 0;
    const fx = await startFixture({
      override(_request, res) {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'request-id': `req_${next}` });
        res.end(fixture(streams[next++ % streams.length]!));
        return true;
      },
    });
    try {
      const key = await fx.gateway.mint({ group: 'family', label: 'chat-1' });
      for (let i = 0; i < 2; i++) {
        const res = await request({
          socketPath: key.socketPath,
          path: '/v1/messages?beta=true',
          headers: anthropicHeaders({ 'x-claude-code-session-id': 's-1' }),
          body: message({ stream: true }),
        });
        assert.equal(res.body, fixture(streams[i]!).toString(), 'the stream reached the client unchanged');
      }
      await eventually(() => fx.calls.length === 2);
      const [write, read] = fx.calls;
      assert.deepEqual(
        [write!.inputTokens, write!.cacheWriteTokens, write!.cacheWrite1hTokens, write!.cacheReadTokens, write!.outputTokens],
        [4, 2210, 16024, 0, 97],
      );
      assert.deepEqual([read!.inputTokens, read!.cacheWriteTokens, read!.cacheReadTokens, read!.outputTokens], [312, 0, 18234, 9]);
      assert.equal(Math.round(write!.costUsd * 1e9) / 1e9, 0.1058985);
      assert.equal(Math.round(read!.costUsd * 1e9) / 1e9, 0.0065412);

      const snapshot = fx.gateway.inspect();
      const live = snapshot.keys.find((k) => k.id === key.id)!;
      assert.equal(Math.round(live.spentUsd * 1e9), Math.round((write!.costUsd + read!.costUsd) * 1e9));
      assert.equal(live.recentCalls.length, 2);
      assert.equal(live.recentCalls[0]!.upstreamRequestId, 'req_1', 'newest first');
      assert.equal(live.reservedUsd, 0);
      assert.equal(snapshot.groups.find((g) => g.group === 'family')!.spentUsd, live.spentUsd);

      await fx.gateway.close();
      const lines = (await readFile(path.join(fx.stateDir, 'audit.jsonl'), 'utf8')).trim().split('\n');
      assert.equal(lines.length, 2);
      const record = JSON.parse(lines[0]!) as Record<string, unknown>;
      for (const field of [
        'time',
        'keyId',
        'group',
        'label',
        'sessionId',
        'dialect',
        'model',
        'stream',
        'status',
        'inputTokens',
        'outputTokens',
        'cacheWriteTokens',
        'cacheReadTokens',
        'costUsd',
        'latencyMs',
        'ttfbMs',
        'upstreamRequestId',
      ]) {
        assert.ok(field in record, `audit record has ${field}`);
      }
      assert.equal(record.sessionId, 's-1');
      const everything = lines.join('\n') + (await readFile(path.join(fx.stateDir, 'spend.jsonl'), 'utf8'));
      assert.ok(!everything.includes(REAL_ANTHROPIC_KEY) && !everything.includes(REAL_OPENAI_KEY));
    } finally {
      await fx.close();
    }
  });

  test('chat streams: usage is requested upstream, hidden from a client that did not ask, shown to one that did', async () => {
    const fx = await startFixture();
    try {
      const { socketPath } = await fx.gateway.mint({ group: 'g' });
      const body = '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}';
      const plain = await request({ socketPath, path: '/v1/chat/completions', headers: openaiHeaders(), body });
      assert.equal(fx.standin.requests.at(-1)!.body.toString(), `${body.slice(0, -1)},"stream_options":{"include_usage":true}}`);
      const chunks = sseData(plain.body) as { choices: unknown[]; usage?: unknown }[];
      assert.ok(
        chunks.every((chunk) => chunk.choices.length > 0),
        'no usage-only chunk reached the client',
      );
      assert.ok(plain.body.endsWith('data: [DONE]\n\n'));

      const askingBody = '{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}';
      const asking = await request({ socketPath, path: '/v1/chat/completions', headers: openaiHeaders(), body: askingBody });
      assert.equal(fx.standin.requests.at(-1)!.body.toString(), askingBody);
      const askingChunks = sseData(asking.body) as { choices: unknown[]; usage?: unknown }[];
      assert.ok(askingChunks.at(-1)!.usage, 'the usage chunk reached the client that asked');
      // Not vacuous: the plain client got every chunk but that one.
      assert.equal(chunks.length, askingChunks.length - 1);

      await eventually(() => fx.calls.length === 2);
      for (const call of fx.calls) {
        assert.ok(call.outputTokens! > 0 && call.costUsd > 0, 'both calls metered');
        assert.equal(call.usageReported, true);
      }
    } finally {
      await fx.close();
    }
  });

  test('50 concurrent streams against a small budget wait their turn and never pass it', async () => {
    const fx = await startFixture({ eventDelayMs: 5 });
    try {
      const budgetUsd = 0.003;
      const key = await fx.gateway.mint({ group: 'small', budgetUsd, maxConcurrent: 64 });
      const results = await Promise.all(
        Array.from({ length: 50 }, () =>
          request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message({ stream: true }) }),
        ),
      );
      await eventually(() => fx.calls.length === 50);
      const served = results.filter((r) => r.status === 200);
      const exhausted = results.filter((r) => r.status === 402);
      // Calls that do not fit beside the ones in flight wait for them instead of bouncing with 429.
      assert.equal(served.length + exhausted.length, 50, `statuses ${results.map((r) => r.status).join(',')}`);
      assert.ok(served.length > 2 && exhausted.length > 0, `served ${served.length}, exhausted ${exhausted.length}`);
      await eventually(() => fx.gateway.inspect().keys[0]!.inFlight === 0);
      const spent = fx.gateway.inspect().keys[0]!.spentUsd;
      const recorded = fx.calls.reduce((sum, call) => sum + call.costUsd, 0);
      assert.ok(Math.abs(spent - recorded) < 1e-12, 'spend equals the sum of the audit records');
      // Every reservation was an upper bound, taken only where it fit: the budget is never passed.
      assert.ok(spent <= budgetUsd, `spent ${spent} > ${budgetUsd}`);
      const refused = exhausted[0]!;
      assert.equal(refused.headers['x-should-retry'], 'false', 'clients stop instead of retrying');
      const refusal = JSON.parse(refused.body) as { error: { type: string; message: string } };
      assert.equal(refusal.error.type, 'billing_error');
      assert.match(refusal.error.message, /budget exhausted for key: (spent \$\d+\.\d{4} of|\$\d+\.\d{4} left of) \$0\.0030/);
      console.log(`# budget $${budgetUsd}: ${served.length} of 50 concurrent served, spent $${spent.toFixed(6)}`);
    } finally {
      await fx.close();
    }
  });

  test('a group budget is shared by its keys and survives a gateway restart', async () => {
    const fx = await startFixture();
    try {
      // About four calls: each reserves $0.00115 (its worst case) and spends about $0.0002.
      fx.gateway.setGroupBudget('team', 0.0018);
      const a = await fx.gateway.mint({ group: 'team' });
      const b = await fx.gateway.mint({ group: 'team' });
      let served = 0;
      for (let i = 0; i < 6; i++) {
        const socketPath = i % 2 ? b.socketPath : a.socketPath;
        const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() });
        if (res.status === 200) served++;
        else {
          assert.equal(res.status, 402);
          assert.match(res.body, /budget exhausted for group team/);
        }
      }
      assert.ok(served >= 2 && served < 6, `served ${served}`);
      const spent = fx.gateway.inspect().groups.find((g) => g.group === 'team')!.spentUsd;
      await fx.gateway.close();

      const again = await createGateway({
        stateDir: fx.stateDir,
        logger: pino({ level: 'silent' }),
        providers: { anthropic: { baseUrl: fx.standin.url, apiKey: REAL_ANTHROPIC_KEY } },
        groupBudgets: { team: 0.0018 },
      });
      try {
        assert.ok(Math.abs(again.inspect().groups.find((g) => g.group === 'team')!.spentUsd - spent) < 1e-12);
        const key = await again.mint({ group: 'team' });
        const res = await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() });
        assert.equal(res.status, 402, 'the restored spend still counts');
      } finally {
        await again.close();
      }
    } finally {
      await fx.close();
    }
  });

  test('limits: requests per minute, concurrency, models and body size answer before the upstream', async () => {
    const fx = await startFixture({ eventDelayMs: 30 });
    try {
      const rpm = await fx.gateway.mint({ group: 'g', rpm: 2 });
      const statuses = [];
      for (let i = 0; i < 3; i++) {
        statuses.push(await request({ socketPath: rpm.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() }));
      }
      assert.deepEqual(
        statuses.map((r) => r.status),
        [200, 200, 429],
      );
      const limited = statuses[2]!;
      assert.ok(Number(limited.headers['retry-after']) >= 1 && Number(limited.headers['retry-after']) <= 60);
      assert.equal((JSON.parse(limited.body) as { error: { type: string } }).error.type, 'rate_limit_error');
      assert.equal(limited.headers['x-should-retry'], undefined, 'a rate limit is worth retrying after retry-after');

      const single = await fx.gateway.mint({ group: 'g', maxConcurrent: 1 });
      const first = request({ socketPath: single.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message({ stream: true }) });
      await eventually(() => fx.gateway.inspect().keys.find((k) => k.id === single.id)!.inFlight === 1);
      const second = await request({ socketPath: single.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() });
      assert.equal(second.status, 429);
      assert.equal((await first).status, 200);

      const scoped = await fx.gateway.mint({ group: 'g', models: ['claude-haiku-*', 'gpt-5*'] });
      const denied = await request({ socketPath: scoped.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() });
      assert.equal(denied.status, 403);
      assert.equal((JSON.parse(denied.body) as { error: { type: string } }).error.type, 'permission_error');
      const allowed = await request({
        socketPath: scoped.socketPath,
        path: '/v1/messages',
        headers: anthropicHeaders(),
        body: message({ model: 'claude-haiku-4-5' }),
      });
      assert.equal(allowed.status, 200);

      const small = await fx.gateway.mint({ group: 'g', maxBodyBytes: 100 });
      const big = await request({
        socketPath: small.socketPath,
        path: '/v1/messages',
        headers: anthropicHeaders(),
        body: message({ system: 'x'.repeat(200) }),
      });
      assert.equal(big.status, 413);
    } finally {
      await fx.close();
    }
  });

  test('tokens per minute: the next request waits once the window is full', async () => {
    const fx = await startFixture();
    try {
      const key = await fx.gateway.mint({ group: 'g', tpm: 10 });
      const first = await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() });
      assert.equal(first.status, 200);
      const second = await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() });
      assert.equal(second.status, 429);
      assert.match(second.body, /10 tokens per minute/);
    } finally {
      await fx.close();
    }
  });

  test('unknown models: refused when so configured, else charged the default price and flagged', async () => {
    const deny = await startFixture({}, { unknownModelPrice: 'deny' });
    try {
      const { socketPath } = await deny.gateway.mint({ group: 'g' });
      const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message({ model: 'mystery-1' }) });
      assert.equal(res.status, 403);
      assert.match(res.body, /no price configured/);
      assert.equal(deny.standin.requests.length, 0);
    } finally {
      await deny.close();
    }
    const lenient = await startFixture();
    try {
      const { socketPath } = await lenient.gateway.mint({ group: 'g' });
      const res = await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message({ model: 'mystery-1' }) });
      assert.equal(res.status, 200);
      await eventually(() => lenient.calls.length === 1);
      assert.equal(lenient.calls[0]!.priceSource, 'default');
      assert.ok(lenient.calls[0]!.costUsd > 0);
    } finally {
      await lenient.close();
    }
  });

  test('count_tokens and models cost nothing', async () => {
    const fx = await startFixture();
    try {
      const key = await fx.gateway.mint({ group: 'g', budgetUsd: 0 });
      const counted = await request({ socketPath: key.socketPath, path: '/v1/messages/count_tokens', headers: anthropicHeaders(), body: message() });
      assert.equal(counted.status, 200, 'free endpoints work even with nothing left to spend');
      const models = await request({ socketPath: key.socketPath, path: '/v1/models', headers: openaiHeaders() });
      assert.equal(models.status, 200);
      const paid = await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message() });
      assert.equal(paid.status, 402);
      // OpenAI's own convention for spent quota: 429 insufficient_quota, which no client retries.
      const chat = await request({
        socketPath: key.socketPath,
        path: '/v1/chat/completions',
        headers: openaiHeaders(),
        body: '{"model":"gpt-5-mini","messages":[]}',
      });
      assert.equal(chat.status, 429);
      assert.equal(chat.headers['x-should-retry'], 'false');
      assert.equal((JSON.parse(chat.body) as { error: { type: string } }).error.type, 'insufficient_quota');
      await eventually(() => fx.calls.length === 4);
      assert.deepEqual(
        fx.calls.map((c) => c.costUsd),
        [0, 0, 0, 0],
      );
      assert.deepEqual(
        fx.calls.map((c) => c.status),
        [200, 200, 402, 429],
      );
    } finally {
      await fx.close();
    }
  });
});
