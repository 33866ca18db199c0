// Rate windows over injected time: rpm and tpm release exactly 60 s after what filled them, and the
// wait a refused request is told (the 429's retry-after) is exact, with no real waiting.
import assert from 'node:assert/strict';
import { after, before, describe, mock, test } from 'node:test';
import { RateWindow } from '../src/metering/rates.ts';
import { startFixture, type Fixture } from './support/fixture.ts';
import { anthropicHeaders, request } from './support/http.ts';

const T0 = 1_700_000_000_000;

describe('RateWindow', () => {
  test('rpm: full at the limit, released exactly 60 s after the oldest request', () => {
    const window = new RateWindow();
    window.startRequest(T0);
    window.startRequest(T0 + 10_000);
    assert.deepEqual(window.check({ rpm: 2 }, T0 + 10_000), { waitMs: 50_000, limit: 'rpm' });
    assert.deepEqual(window.check({ rpm: 2 }, T0 + 59_999), { waitMs: 1, limit: 'rpm' });
    // The first request leaves the window at T0 + 60 s: one slot free, the second still counted.
    assert.deepEqual(window.check({ rpm: 2 }, T0 + 60_000), { waitMs: 0 });
    assert.equal(window.requestsLastMinute(T0 + 60_000), 1);
    window.startRequest(T0 + 60_000);
    assert.deepEqual(window.check({ rpm: 2 }, T0 + 60_000), { waitMs: 10_000, limit: 'rpm' });
    assert.equal(window.requestsLastMinute(T0 + 130_000), 0);
  });

  test('tpm: the wait is until enough tokens have left the window, not just the oldest', () => {
    const window = new RateWindow();
    window.addTokens(400, T0);
    window.addTokens(400, T0 + 5_000);
    window.addTokens(400, T0 + 20_000);
    // 1200 in the window: under a limit of 1000 the first entry's leaving is enough (800 left),
    // under 800 the second must leave too.
    assert.deepEqual(window.check({ tpm: 1000 }, T0 + 30_000), { waitMs: 30_000, limit: 'tpm' });
    assert.deepEqual(window.check({ tpm: 800 }, T0 + 30_000), { waitMs: 35_000, limit: 'tpm' });
    assert.deepEqual(window.check({ tpm: 800 }, T0 + 64_999), { waitMs: 1, limit: 'tpm' });
    assert.deepEqual(window.check({ tpm: 800 }, T0 + 65_000), { waitMs: 0 });
    assert.equal(window.tokensLastMinute(T0 + 65_000), 400);
    assert.equal(window.tokensLastMinute(T0 + 80_000), 0);
  });

  test('zero tokens are not recorded; rpm is checked before tpm', () => {
    const window = new RateWindow();
    window.addTokens(0, T0);
    assert.equal(window.tokensLastMinute(T0), 0);
    window.startRequest(T0);
    window.addTokens(10, T0);
    assert.equal(window.check({ rpm: 1, tpm: 10 }, T0 + 1).limit, 'rpm');
    assert.equal(window.check({ rpm: 2, tpm: 10 }, T0 + 1).limit, 'tpm');
  });

  test('a long queue expires in order (the compaction keeps the sum exact)', () => {
    const window = new RateWindow();
    for (let i = 0; i < 1000; i++) window.startRequest(T0 + i * 60);
    // At T0 + 90 s, the requests started at or before T0 + 30 s (i <= 500) have left: 499 remain.
    assert.equal(window.requestsLastMinute(T0 + 90_000), 499);
    assert.deepEqual(window.check({ rpm: 499 }, T0 + 90_000), { waitMs: 60, limit: 'rpm' });
    assert.equal(window.requestsLastMinute(T0 + 200_000), 0);
  });
});

describe('rate limits through a key, on an injected clock', () => {
  let fx: Fixture;
  before(async () => {
    fx = await startFixture();
    mock.timers.enable({ apis: ['Date'], now: T0 });
  });
  after(async () => {
    mock.timers.reset();
    await fx.close();
  });

  const body = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] });
  const call = (socketPath: string) => request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body });

  test('rpm 2: the third request gets 429 with the exact retry-after, and passes 60 s after the first', async () => {
    const key = await fx.gateway.mint({ group: 'g', rpm: 2 });
    assert.equal((await call(key.socketPath)).status, 200);
    mock.timers.tick(15_000);
    assert.equal((await call(key.socketPath)).status, 200);
    mock.timers.tick(15_000);
    const refused = await call(key.socketPath);
    assert.equal(refused.status, 429);
    assert.equal(refused.headers['retry-after'], '30');
    assert.equal(refused.headers['x-gateway-error'], 'rate_limited');
    assert.match(refused.body, /"type":"rate_limit_error".*2 requests per minute; retry in 30 s/);
    mock.timers.tick(29_999);
    assert.equal((await call(key.socketPath)).headers['retry-after'], '1');
    mock.timers.tick(1);
    assert.equal((await call(key.socketPath)).status, 200);
    assert.equal(fx.standin.requests.length, 3, 'refused requests never reached the provider');
  });

  test('tpm: the tokens of finished calls fill the window; it releases after 60 s', async () => {
    const key = await fx.gateway.mint({ group: 'g', tpm: 1 });
    const before = fx.standin.requests.length;
    assert.equal((await call(key.socketPath)).status, 200);
    const refused = await call(key.socketPath);
    assert.equal(refused.status, 429);
    assert.equal(refused.headers['retry-after'], '60');
    assert.match(refused.body, /1 tokens per minute/);
    mock.timers.tick(59_999);
    assert.equal((await call(key.socketPath)).headers['retry-after'], '1');
    mock.timers.tick(1);
    assert.equal((await call(key.socketPath)).status, 200);
    assert.equal(fx.standin.requests.length - before, 2);
  });
});
