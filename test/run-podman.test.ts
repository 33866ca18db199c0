// `gateway run --runtime podman`, as an operator runs it: the CLI, the daemon's keys, a real
// --network=none container, the container's exit status, and Ctrl-C.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startStandin, type Standin } from '../src/dev/standin.ts';
import { eventually, REAL_ANTHROPIC_KEY } from './support/fixture.ts';
import { skipUnless } from './support/requirements.ts';
import { buildTestImage, podmanAvailable } from './support/podman.ts';

const cliPath = new URL('../src/cli/main.ts', import.meta.url).pathname;

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe('gateway run --runtime podman', { skip: skipUnless(podmanAvailable(), 'podman is not installed') }, () => {
  let dir: string;
  let standin: Standin;
  let daemon: ChildProcess;
  let env: NodeJS.ProcessEnv;
  let mountArgs: string[];
  let image: string;

  function cli(args: string[], onStart?: (child: ChildProcess) => void): Promise<Result> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [cliPath, ...args], { env });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk) => (stdout += chunk));
      child.stderr.on('data', (chunk) => (stderr += chunk));
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
      onStart?.(child);
    });
  }

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gw-run-p-'));
    standin = await startStandin({ anthropicApiKey: REAL_ANTHROPIC_KEY });
    // This host's podman needs runc and explicit ulimits (shared notes): a containers.conf of our own.
    const containersConf = path.join(dir, 'containers.conf');
    await writeFile(containersConf, '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n[engine]\nruntime = "runc"\n');
    const configFile = path.join(dir, 'gateway.toml');
    await writeFile(configFile, `state_dir = "${path.join(dir, 's')}"\n[providers.anthropic]\nbase_url = "${standin.url}"\napi_key_env = "TEST_REAL_KEY"\n`);
    env = { ...process.env, CONTAINERS_CONF: containersConf, GATEWAY_CONFIG: configFile, TEST_REAL_KEY: REAL_ANTHROPIC_KEY };
    const built = buildTestImage();
    image = built.image;
    mountArgs = built.mounts.flatMap((m) => ['--mount', `${m.source}:${m.target}:ro`]);
    daemon = spawn(process.execPath, [cliPath, 'serve'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let logs = '';
    daemon.stderr!.on('data', (chunk) => (logs += chunk));
    await eventually(() => logs.includes('gateway serving'), 10_000);
  });

  after(async () => {
    daemon.kill('SIGTERM');
    await new Promise((resolve) => daemon.once('exit', resolve));
    await standin.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('runs the container with the daemon key, streams its output, exits with its status, revokes the key', async () => {
    const script =
      "const r = await fetch(process.env.ANTHROPIC_BASE_URL + '/v1/messages', { method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-api-key': process.env.ANTHROPIC_API_KEY }, body: JSON.stringify({ model: 'claude-haiku-4-5', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] }) });" +
      "console.log('answer', r.status, (await r.json()).content[0].text); process.exit(3);";
    const result = await cli([
      'run',
      '--group',
      'ops',
      '--label',
      'podman-run',
      '--user',
      '1000:1000',
      ...mountArgs,
      '--',
      image,
      'node',
      '--input-type=module',
      '-e',
      script,
    ]);
    assert.equal(result.code, 3, result.stderr);
    assert.match(result.stdout, /answer 200 \[stand-in provider\] Hello through the gateway/);
    assert.match(result.stderr, /gateway: key [0-9a-z]{16} \(daemon\), podman starting/);
    assert.equal(standin.requests.at(-1)!.headers['x-api-key'], REAL_ANTHROPIC_KEY);
    assert.ok(!result.stdout.includes(REAL_ANTHROPIC_KEY) && !result.stderr.includes(REAL_ANTHROPIC_KEY));
    const live = await cli(['inspect', '--json']);
    assert.deepEqual((JSON.parse(live.stdout) as { keys: unknown[] }).keys, [], 'the key was revoked when the container exited');
    const group = (JSON.parse(live.stdout) as { groups: { group: string; spentUsd: number }[] }).groups.find((g) => g.group === 'ops');
    assert.ok(group && group.spentUsd > 0, 'the call was charged to the group');
  });

  test('Ctrl-C stops the container and revokes the key', async () => {
    let started = 0;
    const result = await cli(['run', '--group', 'ops', ...mountArgs, '--', image, 'sh', '-c', 'echo started; sleep 30'], (child) => {
      child.stdout!.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('started') && !started) {
          started = Date.now();
          child.kill('SIGINT');
        }
      });
    });
    assert.ok(started > 0, result.stderr);
    assert.ok(Date.now() - started < 15_000, 'stopped well before the command would have ended');
    assert.notEqual(result.code, 0);
    const live = await cli(['inspect', '--json']);
    assert.deepEqual((JSON.parse(live.stdout) as { keys: unknown[] }).keys, []);
  });
});
