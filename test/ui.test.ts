// The live page in a real headless Chromium (puppeteer-core driving Debian's /usr/bin/chromium) fed
// by an in-process gateway: calls and refusals show up as they happen, client-chosen text stays text,
// the CSP lets only the page's own script run. Also the server alone: tokens, Host names, the bound
// on open pages and on a page that stops reading.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import puppeteer, { type Browser } from 'puppeteer-core';
import type { CallRecord } from '../src/index.ts';
import { startUiServer } from '../src/telemetry/ui.ts';
import { REAL_ANTHROPIC_KEY, REAL_OPENAI_KEY, startFixture, type Fixture } from './support/fixture.ts';
import { anthropicHeaders, openaiHeaders, request } from './support/http.ts';
import { isRoot, skipUnless } from './support/requirements.ts';

const CHROMIUM = '/usr/bin/chromium';
const HOSTILE_LABEL = '<img src=x onerror="window.__pwned=1">';
type Ui = Awaited<ReturnType<typeof startUiServer>>;

function portOf(url: string): number {
  return Number(new URL(url).port);
}

/** The first `snapshot` event's data on /events, read over a plain socket. */
async function firstSnapshot(ui: Ui): Promise<{ raw: string; data: Record<string, unknown> }> {
  const socket = net.connect(portOf(ui.url), '127.0.0.1');
  socket.write(`GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  let text = '';
  try {
    for await (const chunk of socket) {
      text += chunk.toString();
      const match = /event: snapshot\ndata: (.*)\n\n/.exec(text);
      if (match) return { raw: match[1]!, data: JSON.parse(match[1]!) as Record<string, unknown> };
      if (text.length > 4 * 1024 * 1024) break;
    }
    throw new Error('no snapshot event');
  } finally {
    socket.destroy();
  }
}

describe('live page', () => {
  let fx: Fixture;
  let ui: Ui;

  before(async () => {
    fx = await startFixture({}, { onCall: (record) => ui.onCall(record) });
    ui = await startUiServer({ listen: { host: '127.0.0.1', port: 0 }, gateway: fx.gateway });
  });
  after(async () => {
    await ui?.close();
    await fx?.close();
  });

  describe('in Chromium', { skip: skipUnless(existsSync(CHROMIUM), `${CHROMIUM} is not installed`), timeout: 60_000 }, () => {
    let browser: Browser;
    before(async () => {
      browser = await puppeteer.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: isRoot ? ['--no-sandbox'] : [],
        timeout: 20_000,
      });
    });
    after(() => browser?.close());

    test('calls per minute show two calls, a refusal appears within 1 s, a hostile label stays text', async () => {
      const key = await fx.gateway.mint({ group: 'ui-tests', label: HOSTILE_LABEL, models: ['claude-*'] });
      const page = await browser.newPage();
      const problems: string[] = [];
      page.on('pageerror', (error) => problems.push(String(error)));
      page.on('console', (message) => {
        if (message.type() === 'error') problems.push(message.text());
      });
      page.on('request', (req) => {
        if (!req.url().startsWith(ui.url) && !req.url().startsWith('data:')) problems.push(`fetched ${req.url()}`);
      });
      try {
        const response = await page.goto(ui.url, { timeout: 10_000 });
        assert.equal(response?.status(), 200);
        const headers = response!.headers();
        assert.match(headers['content-security-policy']!, /script-src 'nonce-[^']+'/);
        assert.equal(headers['x-content-type-options'], 'nosniff');
        await page.waitForFunction(`document.querySelector('[data-testid=connection-state]').textContent === 'live'`, { timeout: 5000 });
        await page.waitForSelector(`[data-testid=keys-table] tr[data-key-id="${key.id}"]`, { timeout: 5000 });

        // The label is text in its cell, not an element: no <img>, no handler ran.
        const labelCell = await page.$eval(`tr[data-key-id="${key.id}"] td:nth-child(3)`, (td) => td.textContent);
        assert.equal(labelCell, HOSTILE_LABEL);
        assert.equal(await page.$$eval('img', (imgs) => imgs.length), 0);
        assert.equal(await page.evaluate('window.__pwned'), undefined);

        const message = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] });
        for (let i = 0; i < 2; i++) {
          const res = await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message });
          assert.equal(res.status, 200);
        }
        await page.waitForFunction(`document.querySelector('[data-testid=calls-total]').textContent === '2'`, { timeout: 2000 });
        const bars = await page.$$eval('[data-testid=calls-chart] rect', (rects) => rects.map((r) => Number(r.getAttribute('data-calls'))));
        assert.equal(
          bars.reduce((sum, n) => sum + n, 0),
          2,
        );
        // Both calls cost something: the group has its line in the spend chart.
        await page.waitForSelector('[data-testid=spend-chart] polyline[data-group="ui-tests"]', { timeout: 2000 });

        const refused = await request({
          socketPath: key.socketPath,
          path: '/v1/chat/completions',
          headers: openaiHeaders(),
          body: JSON.stringify({ model: 'gpt-5', messages: [{ role: 'user', content: 'hi' }] }),
        });
        assert.ok(refused.status >= 400);
        const started = performance.now();
        await page.waitForSelector('[data-testid=refusals] [data-testid=refusal][data-error-kind=model_not_allowed]', { timeout: 1000 });
        const shownMs = performance.now() - started;
        const refusal = await page.$eval('[data-testid=refusal]', (li) => li.textContent);
        assert.match(refusal ?? '', /model_not_allowed/);
        assert.match(refusal ?? '', /gpt-5/);
        assert.equal(await page.$eval('[data-testid=refusals-total]', (span) => span.textContent), '1');
        assert.equal(await page.$eval('[data-testid=calls-total]', (span) => span.textContent), '3');

        const body = await page.content();
        assert.ok(!body.includes(REAL_ANTHROPIC_KEY) && !body.includes(REAL_OPENAI_KEY), 'a real key on the page');
        assert.deepEqual(problems, [], 'the page ran without CSP violations, errors or outside fetches');
        await mkdir('test-artifacts', { recursive: true });
        await page.screenshot({ path: 'test-artifacts/ui.png', fullPage: true });
        console.log(`# refusal shown ${shownMs.toFixed(0)} ms after its response`);
      } catch (error) {
        // What the page itself said is the likeliest cause: keep it with the failure.
        throw new Error(`${(error as Error).message}; the page's errors: ${problems.join(' | ') || 'none'}`, { cause: error });
      } finally {
        await page.close();
      }
    });
  });

  test('the first snapshot carries the history and no recent calls or credentials', async () => {
    const key = await fx.gateway.mint({ group: 'history' });
    const body = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'secret prompt text' }] });
    assert.equal((await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body })).status, 200);
    const { raw, data } = await firstSnapshot(ui);
    const history = data.history as { minutes: { calls: number; spend: Record<string, number> }[] };
    assert.ok(history.minutes.reduce((sum, b) => sum + b.calls, 0) >= 1);
    assert.ok(
      history.minutes.some((b) => (b.spend.history ?? 0) > 0),
      'the group spent in the history',
    );
    assert.ok((data.keys as { id: string }[]).some((k) => k.id === key.id));
    for (const needle of ['recentCalls', 'secret prompt text', REAL_ANTHROPIC_KEY, REAL_OPENAI_KEY, key.socketPath]) {
      assert.ok(!raw.includes(needle), `${needle} in the snapshot`);
    }
  });

  test('a tokenless loopback page serves loopback Host names only (DNS rebinding)', async () => {
    const port = portOf(ui.url);
    assert.equal((await request({ port, path: '/', headers: { host: `localhost:${port}` } })).status, 200);
    assert.equal((await request({ port, path: '/', headers: { host: 'attacker.example' } })).status, 401);
    assert.equal((await request({ port, path: '/', method: 'POST', body: '' })).status, 405);
    assert.equal((await request({ port, path: '/nope' })).status, 404);
  });

  test('at most 16 pages; one that stops reading is dropped, not buffered for', { timeout: 30_000 }, async () => {
    const port = portOf(ui.url);
    const open: net.Socket[] = [];
    try {
      for (let i = 0; i < 16; i++) {
        const socket = net.connect(port, '127.0.0.1');
        socket.write(`GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
        open.push(socket);
        await new Promise((resolve) => socket.once('data', resolve));
      }
      assert.equal((await request({ port, path: '/events' })).status, 503);
      // Every page but one stops reading; then the gateway makes many calls.
      for (const socket of open.slice(1)) socket.pause();
      const record: CallRecord = {
        time: Date.now(),
        keyId: 'k'.repeat(16),
        group: 'flood',
        method: 'POST',
        path: '/v1/messages',
        model: 'm'.repeat(256),
        attempts: 1,
        stream: false,
        status: 200,
        outcome: 'complete',
        latencyMs: 1,
        requestBytes: 1,
        responseBytes: 1,
        costUsd: 0.001,
      };
      const reader = open[0]!;
      let readBytes = 0;
      reader.on('data', (chunk: Buffer) => (readBytes += chunk.length));
      let sentBytes = 0;
      for (let i = 0; i < 40_000; i++) {
        ui.onCall(record);
        sentBytes += 400;
        if (i % 1000 === 0) {
          // The reading page shares this process: let it read before it falls a page's buffer behind
          // (on a slow machine a burst could otherwise outrun it, and it would rightly be dropped).
          for (const deadline = Date.now() + 5000; sentBytes - readBytes > 256 * 1024 && !reader.destroyed && Date.now() < deadline; ) {
            await new Promise((resolve) => setTimeout(resolve, 2));
          }
          await new Promise((resolve) => setImmediate(resolve));
        }
      }
      // The stalled pages were cut: each ends (after what the kernel held) well short of the flood.
      const stalled = open[1]!;
      let stalledBytes = 0;
      stalled.on('data', (chunk: Buffer) => (stalledBytes += chunk.length));
      const ended = new Promise((resolve) => stalled.once('close', resolve));
      stalled.resume();
      await ended;
      assert.ok(stalledBytes < sentBytes, `a stalled page got ${stalledBytes} of ~${sentBytes} bytes`);
      // The page that kept reading is still connected and gets the flood (what is in flight still
      // arrives: on a busy machine the reader can be behind when the stalled page closes).
      for (const deadline = Date.now() + 10_000; readBytes < sentBytes / 2 && !reader.destroyed && Date.now() < deadline; ) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.ok(!reader.destroyed && readBytes >= sentBytes / 2, `the reading page got ${readBytes} bytes`);
      // Slots freed: a new page may open.
      const fresh = await firstSnapshot(ui);
      assert.ok(Array.isArray(fresh.data.keys));
      console.log(`# stalled page cut after ${stalledBytes} bytes; reading page got ${readBytes}`);
    } finally {
      for (const socket of open) socket.destroy();
    }
  });
});

describe('live page access', () => {
  const gateway = { inspect: () => ({ keys: [], groups: [], totals: { liveKeys: 0, inFlight: 0, spentUsd: 0 } }) };

  test('a non-loopback listener without a token is refused', async () => {
    await assert.rejects(startUiServer({ listen: { host: '0.0.0.0', port: 0 }, gateway }), /not a loopback address: give it a token/);
    await assert.rejects(startUiServer({ listen: { host: '192.0.2.1', port: 0 }, gateway }), /give it a token/);
  });

  test('with a token, requests without it (or with a wrong one) get 401', async () => {
    const token = 'page-token-5b1e';
    const ui = await startUiServer({ listen: { host: '127.0.0.1', port: 0 }, gateway, token });
    try {
      const port = portOf(ui.url);
      assert.equal((await request({ port, path: '/' })).status, 401);
      assert.equal((await request({ port, path: '/events' })).status, 401);
      assert.equal((await request({ port, path: '/?token=wrong' })).status, 401);
      assert.equal((await request({ port, path: '/', headers: { authorization: 'Bearer wrong' } })).status, 401);
      assert.equal((await request({ port, path: `/?token=${token}` })).status, 200);
      assert.equal((await request({ port, path: '/', headers: { authorization: `Bearer ${token}` } })).status, 200);
    } finally {
      await ui.close();
    }
  });
});
