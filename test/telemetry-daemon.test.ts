// `gateway serve` with telemetry: `[telemetry]` from the file (mistakes name the field), and a daemon
// started with --metrics and --ui feeds both every call record, then closes them when it stops.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { ConfigError, loadConfig } from '../src/config/load.ts';
import { startDaemon } from '../src/control/daemon.ts';
import { startStandin, type Standin } from '../src/dev/standin.ts';
import { deadPort, REAL_ANTHROPIC_KEY } from './support/fixture.ts';
import { anthropicHeaders, request } from './support/http.ts';

describe('[telemetry] in the config file', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gw-tel-cfg-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('listeners, the OTLP endpoint and the page token source are read', async () => {
    const file = path.join(dir, 'ok.toml');
    await writeFile(
      file,
      `[telemetry]
metrics_listen = "127.0.0.1:9464"
metrics_key_labels = true
otlp_endpoint = "http://127.0.0.1:4318/v1/traces"
otlp_sample_ratio = 0.25
ui_listen = "[::1]:9470"
ui_token_env = "GATEWAY_UI_TOKEN"
`,
    );
    assert.deepEqual((await loadConfig(file)).telemetry, {
      metricsListen: { host: '127.0.0.1', port: 9464 },
      metricsKeyLabels: true,
      otlpEndpoint: 'http://127.0.0.1:4318/v1/traces',
      otlpSampleRatio: 0.25,
      uiListen: { host: '::1', port: 9470 },
      uiToken: { env: 'GATEWAY_UI_TOKEN' },
    });
  });

  for (const [name, text, field] of [
    ['bad-listen.toml', '[telemetry]\nmetrics_listen = "everywhere"\n', 'telemetry.metrics_listen'],
    ['bad-port.toml', '[telemetry]\nui_listen = "127.0.0.1:99999"\n', 'telemetry.ui_listen'],
    ['bad-otlp.toml', '[telemetry]\notlp_endpoint = "collector:4318"\n', 'telemetry.otlp_endpoint'],
    ['bad-flag.toml', '[telemetry]\notlp = "yes"\n', 'telemetry.otlp'],
    ['bad-ratio.toml', '[telemetry]\notlp_sample_ratio = 1.5\n', 'telemetry.otlp_sample_ratio'],
    ['unknown.toml', '[telemetry]\nprometheus = true\n', 'telemetry.prometheus'],
  ] as const) {
    test(`${field}: a mistake names the file and the field (${name})`, async () => {
      const file = path.join(dir, name);
      await writeFile(file, text);
      await assert.rejects(loadConfig(file), (error: unknown) => error instanceof ConfigError && error.message.startsWith(`${file}: ${field}: `));
    });
  }
});

describe('gateway serve --metrics --ui', () => {
  let dir: string;
  let standin: Standin;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gw-tel-'));
    standin = await startStandin({ anthropicApiKey: REAL_ANTHROPIC_KEY });
  });
  after(async () => {
    await standin.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('every call reaches the metrics and the page; both close with the daemon', async () => {
    const configFile = path.join(dir, 'gateway.toml');
    await writeFile(
      configFile,
      `state_dir = "${path.join(dir, 'state')}"
[providers.anthropic]
base_url = "${standin.url}"
api_key_env = "TEL_TEST_ANTHROPIC_KEY"
`,
    );
    process.env.TEL_TEST_ANTHROPIC_KEY = REAL_ANTHROPIC_KEY;
    const [metricsPort, uiPort] = [await deadPort(), await deadPort()];
    const daemon = await startDaemon({ configFile, logger: pino({ level: 'silent' }), metrics: `127.0.0.1:${metricsPort}`, ui: `127.0.0.1:${uiPort}` });
    let stopped = false;
    try {
      const key = await daemon.gateway.mint({ group: 'watched' });
      const answer = await request({
        socketPath: key.socketPath,
        method: 'POST',
        path: '/v1/messages',
        headers: anthropicHeaders(),
        body: JSON.stringify({ model: 'claude-haiku-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] }),
      });
      assert.equal(answer.status, 200);
      const scrape = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
      const text = await scrape.text();
      assert.match(text, /llm_gateway_requests_total\{[^}]*group="watched"[^}]*status="200"[^}]*\} 1/);
      assert.ok(!text.includes(REAL_ANTHROPIC_KEY));
      const page = await fetch(`http://127.0.0.1:${uiPort}/`);
      assert.equal(page.status, 200);
      assert.match(page.headers.get('content-type') ?? '', /text\/html/);
      await daemon.shutdown();
      stopped = true;
      await assert.rejects(fetch(`http://127.0.0.1:${metricsPort}/metrics`));
      await assert.rejects(fetch(`http://127.0.0.1:${uiPort}/`));
    } finally {
      if (!stopped) await daemon.shutdown();
      delete process.env.TEL_TEST_ANTHROPIC_KEY;
    }
  });
});
