// The runner: contributions, renderers, and `gateway run` launching a real bubblewrap sandbox with
// no network, talking through the shim and the key's socket to the stand-in provider.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { contribute } from '../src/runner/contribute.ts';
import { render } from '../src/runner/render.ts';
import { startStandin } from '../src/dev/standin.ts';
import { REAL_ANTHROPIC_KEY, REAL_OPENAI_KEY, startFixture } from './support/fixture.ts';
import { skipUnless } from './support/requirements.ts';

const exec = promisify(execFile);
const cliPath = new URL('../src/cli/main.ts', import.meta.url).pathname;

describe('contribution and renderers', () => {
  test('a contribution: the key dir read-only at /run/gateway, client env, labels, no network; close revokes', async () => {
    const fx = await startFixture();
    try {
      const c = await contribute(fx.gateway, { group: 'family', label: 'chat-7', budgetUsd: 1 });
      assert.deepEqual(c.mounts, [{ source: c.key.dir, target: '/run/gateway', readOnly: true }]);
      assert.equal(c.network, 'none');
      assert.deepEqual(c.labels, { 'llm-gateway.key': c.key.id, 'llm-gateway.group': 'family', 'llm-gateway.label': 'chat-7' });
      assert.equal(c.env.ANTHROPIC_BASE_URL, 'http://127.0.0.1:9460');
      assert.equal(c.env.OPENAI_BASE_URL, 'http://127.0.0.1:9460/v1');
      assert.equal(c.env.CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC, '1');
      assert.equal(c.env.OPENAI_AGENTS_DISABLE_TRACING, '1');
      assert.ok(!c.env.ANTHROPIC_API_KEY!.startsWith('sk-'), 'placeholders must not look like real keys');
      assert.ok(!JSON.stringify(c.env).includes(REAL_ANTHROPIC_KEY) && !JSON.stringify(c.env).includes(REAL_OPENAI_KEY));
      assert.deepEqual((await readdir(c.key.dir)).sort(), ['gateway.sock', 'shim.mjs']);
      assert.deepEqual(c.wrap(['claude', '-p', 'hi']), ['node', '/run/gateway/shim.mjs', '--port', '9460', '--', 'claude', '-p', 'hi']);
      await c.close();
      await c.close();
      assert.equal(existsSync(c.key.dir), false);
    } finally {
      await fx.close();
    }
  });

  test('podman, docker and bwrap argv', async () => {
    const fx = await startFixture();
    try {
      const c = await contribute(fx.gateway, { group: 'g' });
      const podman = render('podman', c, { image: 'localhost/agent', command: ['claude', '-p', 'x'], user: '1000:1000', workdir: '/src' });
      assert.deepEqual(podman.slice(0, 4), ['podman', 'run', '--rm', '--network=none']);
      assert.ok(podman.includes(`${c.key.dir}:/run/gateway:ro,Z`));
      assert.ok(podman.includes('/src:/workspace:Z'));
      assert.ok(podman.includes(`llm-gateway.key=${c.key.id}`));
      assert.ok(podman.includes('ANTHROPIC_BASE_URL=http://127.0.0.1:9460'));
      assert.deepEqual(podman.slice(podman.indexOf('localhost/agent')), [
        'localhost/agent',
        'node',
        '/run/gateway/shim.mjs',
        '--port',
        '9460',
        '--',
        'claude',
        '-p',
        'x',
      ]);
      const docker = render('docker', c, { image: 'agent', command: ['codex'], shim: false });
      assert.equal(docker[0], 'docker');
      assert.ok(!docker.includes('--userns=keep-id'));
      assert.deepEqual(docker.slice(-2), ['agent', 'codex']);
      const bwrap = render('bwrap', c, { command: ['claude'] });
      assert.deepEqual(bwrap.slice(0, 3), ['bwrap', '--clearenv', '--unshare-net']);
      assert.ok(bwrap.join(' ').includes(`--ro-bind ${c.key.dir} /run/gateway`));
      assert.throws(() => render('podman', c, { command: ['x'] }), /needs an image/);
    } finally {
      await fx.close();
    }
  });
});

describe('gateway run', { skip: skipUnless(existsSync('/usr/bin/bwrap'), 'bubblewrap is not installed') }, () => {
  test('a bwrap sandbox reaches the stand-in only through its socket, never sees a real key, and the key dies with it', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'gw-run-test-'));
    const standin = await startStandin({ anthropicApiKey: REAL_ANTHROPIC_KEY });
    try {
      const stateDir = path.join(dir, 's');
      const configFile = path.join(dir, 'gateway.toml');
      await writeFile(configFile, `state_dir = "${stateDir}"\n[providers.anthropic]\nbase_url = "${standin.url}"\napi_key_env = "TEST_REAL_ANTHROPIC_KEY"\n`);
      const port = new URL(standin.url).port;
      // Inside: one call through the shim, then a direct connection to the stand-in's port, which
      // inside the sandbox is its own empty loopback.
      const script = `
        const res = await fetch(process.env.ANTHROPIC_BASE_URL + '/v1/messages', { method: 'POST',
          headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-api-key': process.env.ANTHROPIC_API_KEY },
          body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] }) });
        console.log('status', res.status, (await res.json()).content[0].text);
        const direct = await fetch('http://127.0.0.1:${port}/v1/models').then(() => 'reached', (e) => e.cause?.code ?? String(e));
        console.log('direct', direct);
        console.log('env', JSON.stringify(process.env));
        process.exit(7);`;
      const nodeDir = path.dirname(path.dirname(process.execPath));
      const result = await exec(
        process.execPath,
        [
          cliPath,
          'run',
          '--runtime',
          'bwrap',
          '--config',
          configFile,
          '--mount',
          `${nodeDir}:/opt/node:ro`,
          '--',
          '/opt/node/bin/node',
          '--input-type=module',
          '-e',
          script,
        ],
        { env: { ...process.env, TEST_REAL_ANTHROPIC_KEY: REAL_ANTHROPIC_KEY } },
      ).then(
        (r) => ({ code: 0, ...r }),
        (e: { code: number; stdout: string; stderr: string }) => e,
      );
      assert.equal(result.code, 7, result.stderr);
      assert.match(result.stdout, /status 200 \[stand-in provider\]/);
      assert.match(result.stdout, /direct ECONNREFUSED/);
      assert.equal(standin.requests.length, 1);
      assert.equal(standin.requests[0]!.headers['x-api-key'], REAL_ANTHROPIC_KEY);
      assert.ok(!result.stdout.includes(REAL_ANTHROPIC_KEY) && !result.stderr.includes(REAL_ANTHROPIC_KEY));
    } finally {
      await standin.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
