// The Prometheus metrics end to end: real calls through a gateway's key socket feed the counters, the
// scrape reads gauges from inspect(), a client cannot grow the model label without bound, nothing
// secret reaches the scrape body, and a real Prometheus scrapes and sums the same numbers.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { STANDIN_REPLY } from '../src/dev/standin.ts';
import type { CallRecord } from '../src/metering/call-record.ts';
import { startMetricsServer } from '../src/telemetry/metrics.ts';
import type { TelemetrySink } from '../src/telemetry/sink.ts';
import { deadPort, REAL_ANTHROPIC_KEY, REAL_OPENAI_KEY, eventually, startFixture, type Fixture } from './support/fixture.ts';
import { anthropicHeaders, openaiHeaders, request } from './support/http.ts';
import { runs, skipUnless } from './support/requirements.ts';

const PROMETHEUS = '/usr/bin/prometheus';
const PROMPT = 'metrics-prompt-needle-5c1e9a';
const CLIENT_CREDENTIAL = 'placeholder-from-container';

interface Setup {
  fx: Fixture;
  sink: TelemetrySink & { url: string };
  records: CallRecord[];
  close(): Promise<void>;
}

/** A gateway with the stand-in provider, its call records fed to a metrics server on a free loopback port. */
async function startWithMetrics(keyLabels = false): Promise<Setup> {
  const records: CallRecord[] = [];
  let sink: (TelemetrySink & { url: string }) | undefined;
  const onCall = (record: CallRecord) => {
    records.push(record);
    sink?.onCall(record);
  };
  const fx = await startFixture({}, { onCall });
  sink = await startMetricsServer({ listen: { host: '127.0.0.1', port: 0 }, gateway: fx.gateway, keyLabels });
  const started = sink;
  return {
    fx,
    sink: started,
    records,
    async close() {
      await started.close();
      await fx.close();
    },
  };
}

const anthropicBody = (model: string, stream: boolean) => JSON.stringify({ model, max_tokens: 64, stream, messages: [{ role: 'user', content: PROMPT }] });

/** One streaming 200, one plain 200 and one refusal (model not allowed) on a key of `group`. */
async function makeCalls(setup: Setup, group: string): Promise<{ keyId: string }> {
  const key = await setup.fx.gateway.mint({ group, models: ['claude-*'] });
  const stream = await request({
    socketPath: key.socketPath,
    path: '/v1/messages',
    headers: anthropicHeaders(),
    body: anthropicBody('claude-sonnet-4-5', true),
  });
  assert.equal(stream.status, 200);
  assert.match(stream.body, /message_stop/);
  const plain = await request({
    socketPath: key.socketPath,
    path: '/v1/messages',
    headers: anthropicHeaders(),
    body: anthropicBody('claude-haiku-4-5', false),
  });
  assert.equal(plain.status, 200);
  const refused = await request({
    socketPath: key.socketPath,
    path: '/v1/chat/completions',
    headers: openaiHeaders(),
    body: JSON.stringify({ model: 'gpt-5.1', messages: [{ role: 'user', content: PROMPT }] }),
  });
  assert.equal(refused.status, 403);
  await eventually(() => setup.records.length === 3);
  return { keyId: key.id };
}

async function scrape(url: string): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return res.text();
}

/** Parses the text format into `name{labels}` → value (labels as the scrape writes them). */
function samples(body: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of body.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    out.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return out;
}

/** Sum of the samples of `name` whose labels include every `label="value"` given. */
function sum(all: Map<string, number>, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const [series, value] of all) {
    if (series !== name && !series.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => series.includes(`${k}="${v}"`))) total += value;
  }
  return total;
}

const total = (records: CallRecord[], field: keyof CallRecord) => records.reduce((acc, r) => acc + ((r[field] as number | undefined) ?? 0), 0);

describe('metrics', () => {
  test('counters from call records, gauges from inspect(), nothing secret, 404 elsewhere', { timeout: 20_000 }, async () => {
    const setup = await startWithMetrics(true);
    try {
      setup.fx.gateway.setGroupBudget('team-a', 5);
      const { keyId } = await makeCalls(setup, 'team-a');
      const body = await scrape(setup.sink.url);
      const all = samples(body);
      const ok = setup.records.filter((r) => r.status === 200);
      assert.equal(ok.length, 2);
      assert.ok(total(ok, 'outputTokens') > 0 && total(ok, 'inputTokens') > 0);

      assert.equal(sum(all, 'llm_gateway_requests_total', { group: 'team-a', provider: 'anthropic', status: '200', error_kind: 'none' }), 2);
      assert.equal(sum(all, 'llm_gateway_requests_total', { model: 'claude-sonnet-4-5', status: '200' }), 1);
      assert.equal(sum(all, 'llm_gateway_requests_total', { provider: 'none', model: 'gpt-5.1', status: '403', error_kind: 'model_not_allowed' }), 1);
      assert.equal(sum(all, 'llm_gateway_tokens_total', { kind: 'output' }), total(ok, 'outputTokens'));
      assert.equal(sum(all, 'llm_gateway_tokens_total', { kind: 'input' }), total(ok, 'inputTokens'));
      assert.equal(
        sum(all, 'llm_gateway_tokens_total', { model: 'claude-sonnet-4-5', kind: 'output' }),
        ok.find((r) => r.model === 'claude-sonnet-4-5')!.outputTokens,
      );
      const cost = total(setup.records, 'costUsd');
      assert.ok(cost > 0);
      assert.ok(Math.abs(sum(all, 'llm_gateway_cost_usd_total', { group: 'team-a' }) - cost) < 1e-12);
      assert.equal(sum(all, 'llm_gateway_request_duration_seconds_count', { group: 'team-a' }), 3);
      // The refusal never reached an upstream: no time to first byte.
      assert.equal(sum(all, 'llm_gateway_time_to_first_byte_seconds_count', { provider: 'anthropic' }), 2);

      assert.equal(all.get('llm_gateway_group_budget_usd{group="team-a"}'), 5);
      assert.ok(Math.abs(all.get('llm_gateway_group_spent_usd{group="team-a"}')! - cost) < 1e-12);
      assert.equal(all.get('llm_gateway_group_reserved_usd{group="team-a"}'), 0);
      assert.ok(Math.abs(all.get('llm_gateway_group_remaining_usd{group="team-a"}')! - (5 - cost)) < 1e-12);
      assert.equal(all.get('llm_gateway_live_keys'), 1);
      assert.equal(all.get('llm_gateway_in_flight_calls'), 0);
      assert.ok(Math.abs(all.get(`llm_gateway_key_spent_usd{key="${keyId}",group="team-a"}`)! - cost) < 1e-12);
      assert.ok(all.has('process_cpu_user_seconds_total'), 'default process metrics');

      for (const secret of [REAL_ANTHROPIC_KEY, REAL_OPENAI_KEY, CLIENT_CREDENTIAL, PROMPT, STANDIN_REPLY]) {
        assert.ok(!body.includes(secret), `the scrape holds ${secret}`);
      }

      // Gauges follow the gateway: a revoked key's series are gone at the next scrape.
      await setup.fx.gateway.revoke(keyId);
      const after = samples(await scrape(setup.sink.url));
      assert.equal(after.get('llm_gateway_live_keys'), 0);
      assert.equal(sum(after, 'llm_gateway_key_spent_usd'), 0);

      const base = setup.sink.url.replace(/\/metrics$/, '');
      for (const [path, method] of [
        ['/', 'GET'],
        ['/metrics/x', 'GET'],
        ['/metrics', 'POST'],
      ] as const) {
        const res = await fetch(base + path, { method, signal: AbortSignal.timeout(5000) });
        assert.equal(res.status, 404, `${method} ${path}`);
        await res.body?.cancel();
      }
    } finally {
      await setup.close();
    }
  });

  test('the model label is capped: 300 distinct models give at most 200 series and `other`', { timeout: 60_000 }, async () => {
    const setup = await startWithMetrics();
    try {
      const key = await setup.fx.gateway.mint({ group: 'many-models' });
      const models = Array.from({ length: 300 }, (_, i) => `claude-probe-${i}-${'x'.repeat(200)}`);
      // Eight at a time: well under the key's concurrency limit.
      for (let i = 0; i < models.length; i += 8) {
        const batch = models
          .slice(i, i + 8)
          .map((model) => request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: anthropicBody(model, false) }));
        for (const res of await Promise.all(batch)) assert.equal(res.status, 200);
      }
      await eventually(() => setup.records.length === 300);
      const all = samples(await scrape(setup.sink.url));
      const seen = new Set<string>();
      for (const series of all.keys()) {
        if (!series.startsWith('llm_gateway_requests_total{')) continue;
        const model = /model="([^"]*)"/.exec(series)![1]!;
        seen.add(model);
        assert.ok(model.length <= 128, 'model label cut short');
      }
      assert.equal(seen.size, 201);
      assert.ok(seen.has('other'));
      assert.equal(sum(all, 'llm_gateway_requests_total'), 300);
      assert.equal(sum(all, 'llm_gateway_requests_total', { model: 'other' }), 100);
    } finally {
      await setup.close();
    }
  });

  test('a real Prometheus scrapes the tokens and cost', { timeout: 60_000, skip: skipUnless(runs(PROMETHEUS), 'prometheus is not installed') }, async (t) => {
    const setup = await startWithMetrics();
    const dir = await mkdtemp(path.join(tmpdir(), 'prometheus-test-'));
    let prometheus: ChildProcess | undefined;
    try {
      await makeCalls(setup, 'team-p');
      const output = total(setup.records, 'outputTokens');
      const cost = total(setup.records, 'costUsd');
      assert.ok(output > 0 && cost > 0);

      const target = new URL(setup.sink.url).host;
      const config = path.join(dir, 'prometheus.yml');
      await writeFile(config, `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gateway\n    static_configs:\n      - targets: ['${target}']\n`);
      const port = await deadPort();
      prometheus = spawn(
        PROMETHEUS,
        [`--config.file=${config}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let log = '';
      prometheus.stderr!.on('data', (chunk: Buffer) => {
        log = (log + chunk.toString()).slice(-4000);
      });
      const api = `http://127.0.0.1:${port}`;
      const started = performance.now();
      try {
        await poll(async () => (await get(`${api}/-/ready`)).status === 200, 20_000);
        await poll(async () => (await query(api, 'sum(llm_gateway_tokens_total{kind="output"})')) === output, 20_000);
        const scraped = await query(api, 'sum(llm_gateway_cost_usd_total{group="team-p"})');
        assert.ok(scraped !== undefined && Math.abs(scraped - cost) < 1e-9, `cost ${scraped} != ${cost}`);
        const refused = await query(api, 'sum(llm_gateway_requests_total{error_kind="model_not_allowed"})');
        assert.equal(refused, 1);
      } catch (err) {
        throw new Error(`${(err as Error).message}\nprometheus log:\n${log}`);
      }
      t.diagnostic(`prometheus saw the calls ${Math.round(performance.now() - started)} ms after it started`);
    } finally {
      if (prometheus && prometheus.exitCode === null && prometheus.signalCode === null) {
        const exited = new Promise((resolve) => prometheus!.once('exit', resolve));
        prometheus.kill('SIGKILL');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
      await setup.close();
    }
  });
});

async function get(url: string): Promise<{ status: number; text: string }> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    return { status: res.status, text: await res.text() };
  } catch {
    return { status: 0, text: '' };
  }
}

/** The single value of an instant query, or undefined while it has none. */
async function query(api: string, promql: string): Promise<number | undefined> {
  const res = await get(`${api}/api/v1/query?query=${encodeURIComponent(promql)}`);
  if (res.status !== 200) return undefined;
  const parsed = JSON.parse(res.text) as { data: { result: { value: [number, string] }[] } };
  const value = parsed.data.result[0]?.value[1];
  return value === undefined ? undefined : Number(value);
}

/** Resolves once `check` holds, every 200 ms; fails after `timeoutMs`. */
async function poll(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met in ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
