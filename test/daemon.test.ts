// `gateway serve` and its CLI, run as real processes: config errors, the control socket, keys and
// inspect, credential refresh, SIGHUP reload, draining on SIGTERM, and surviving SIGKILL.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { loadConfig } from '../src/config/load.ts';
import { startStandin, type Standin, type StandinOptions } from '../src/dev/standin.ts';
import { eventually } from './support/fixture.ts';
import { anthropicHeaders, request } from './support/http.ts';

const cliPath = new URL('../src/cli/main.ts', import.meta.url).pathname;
const exec = promisify(execFile);

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [cliPath, ...args], { env: { ...process.env, ...env } });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const { code, stdout, stderr } = error as { code: number; stdout: string; stderr: string };
    return { code, stdout, stderr };
  }
}

const message = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] });

describe('configuration errors name the file and the field', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gw-cfg-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const cases: [string, string, RegExp][] = [
    ['not TOML', 'state_dir = "/tmp\n[x', /not valid TOML/],
    ['an unknown field', 'stat_dir = "/tmp/x"', /stat_dir: unknown field/],
    ['a wrong type', '[limits]\nrpm = "many"', /limits\.rpm: must be a non-negative integer/],
    ['a bad URL', '[providers.openai]\nbase_url = "ftp://x"\napi_key_env = "K"', /providers\.openai\.base_url: must be an http\(s\) URL/],
    ['a provider without a credential', '[providers.anthropic]\nbase_url = "https://api.anthropic.com"', /providers\.anthropic: names no credential/],
    ['a bad duration', '[limits]\nttl = "soon"', /limits\.ttl: must be a duration/],
    ['a price without output', '[prices."my-model"]\ninput = 1', /prices\."my-model": needs both input and output/],
    ['a literal key', '[providers.openai]\napi_key = "sk-live"', /providers\.openai\.api_key: unknown field/],
    ['a custom provider without a kind', '[providers.vllm]\nbase_url = "http://127.0.0.1:8000"\napi_key_env = "K"', /providers\.vllm\.kind: is required/],
    ['a route to an unknown provider', '[[routes]]\nmodels = ["fast"]\nprovider = "nowhere"', /routes\[0\]\.provider: no provider named "nowhere"/],
    ['a bad fallback', '[[routes]]\nmodels = ["x"]\nprovider = "anthropic"\nfallbacks = ["ghost:m"]', /routes\[0\]\.fallbacks\[0\]: no provider named "ghost"/],
    ['zero attempts', '[retry]\nattempts = 0', /retry\.attempts: must be at least 1/],
    ['a bad proxy URL', '[network]\nhttps_proxy = "proxy:3128"', /network\.https_proxy: must be an http\(s\) URL/],
    ['an unknown egress preset', '[limits]\negress = ["nmp"]', /limits\.egress\[0\]: no egress preset named "nmp"/],
    ['a bad egress rule', '[egress.groups]\nci = [{ host = "a b" }]', /egress\.groups\.ci\[0\]\.host: must be a host name/],
    ['a bad egress port', '[egress.presets]\nmine = ["docs.example.com:99999"]', /egress\.presets\.mine\[0\]: port must be 1-65535/],
    ['a bad pinned address', '[egress.hosts]\n"registry.internal" = "10.0.0"', /egress\.hosts\.registry\.internal: must list IP addresses/],
    ['a bad DNS server', '[egress]\ndns_servers = ["dns.example"]', /egress\.dns_servers: must list servers/],
  ];
  for (const [what, text, expected] of cases) {
    test(what, async () => {
      const file = path.join(dir, `${what.replace(/\W+/g, '-')}.toml`);
      await writeFile(file, text);
      const result = await cli(['serve', '--config', file, '--state-dir', path.join(dir, 'state')]);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, new RegExp(`^gateway: ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
      assert.match(result.stderr, expected);
      assert.equal(result.stderr.trim().split('\n').length, 1, 'one line');
    });
  }

  test("the README's example config is valid", async () => {
    const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
    const example = readme.slice(readme.indexOf('## Configuration')).match(/```toml\n([\s\S]*?)```/)![1]!;
    const file = path.join(dir, 'readme.toml');
    await writeFile(file, example);
    const config = await loadConfig(file);
    assert.ok(config.providers.anthropic && config.routes.length > 0 && config.network.proxyUrl);
  });

  test('a missing config file', async () => {
    const result = await cli(['inspect', '--config', path.join(dir, 'nope.toml')]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /nope\.toml: cannot read the config file \(ENOENT\)/);
  });

  test('no daemon running: exit 1 with a hint', async () => {
    const result = await cli(['inspect', '--state-dir', path.join(dir, 'empty')]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /no gateway daemon is running with state dir .* \(start one with `gateway serve`\)/);
  });

  test('--help for every command has examples', async () => {
    for (const command of [['serve'], ['keys', 'mint'], ['inspect'], ['demo']]) {
      const result = await cli([...command, '--help']);
      assert.equal(result.code, 0);
      assert.match(result.stdout, /Examples:/, command.join(' '));
    }
  });
});

describe('the daemon', () => {
  let standin: Standin;
  let dir: string;
  let stateDir: string;
  let configFile: string;
  let keyFile: string;
  let daemon: ChildProcess | undefined;
  let logs = '';

  const REAL_KEY = 'real-daemon-key-5c2e9f';
  const standinOptions: StandinOptions = { anthropicApiKey: REAL_KEY };
  const ROTATED_KEY = 'real-daemon-key-rotated-81ad';

  async function startDaemon(): Promise<void> {
    const started = logs.split('gateway serving').length;
    daemon = spawn(process.execPath, [cliPath, 'serve', '--config', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    daemon.stderr!.on('data', (chunk: Buffer) => (logs += chunk.toString()));
    await eventually(() => logs.split('gateway serving').length > started, 10_000);
  }

  async function stopDaemon(signal: NodeJS.Signals): Promise<number | null> {
    const proc = daemon!;
    daemon = undefined;
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    proc.kill(signal);
    return exited;
  }

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gw-d-'));
    stateDir = path.join(dir, 's');
    keyFile = path.join(dir, 'anthropic.key');
    configFile = path.join(dir, 'gateway.toml');
    await writeFile(keyFile, `${REAL_KEY}\n`, { mode: 0o600 });
    standin = await startStandin(standinOptions);
    await writeFile(
      configFile,
      `state_dir = "${stateDir}"\n[providers.anthropic]\nbase_url = "${standin.url}"\napi_key_file = "${keyFile}"\n[providers.openai]\nbase_url = "${standin.url}"\napi_key_env = "NO_SUCH_ENV_VAR"\n[budgets]\nfamily = 5\n`,
    );
    await startDaemon();
  });
  after(async () => {
    if (daemon) await stopDaemon('SIGKILL');
    await standin.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('keys mint --json, a call through the socket, inspect, revoke', async () => {
    const minted = await cli(['keys', 'mint', '--config', configFile, '--group', 'family', '--label', 'chat-1', '--budget-usd', '1', '--ttl', '1h', '--json']);
    assert.equal(minted.code, 0, minted.stderr);
    const key = JSON.parse(minted.stdout) as { id: string; group: string; dir: string; socketPath: string; env: Record<string, string> };
    assert.equal(key.group, 'family');
    assert.equal(key.socketPath, path.join(stateDir, 'keys', key.id, 'gateway.sock'));
    assert.equal(key.env.ANTHROPIC_BASE_URL, 'http://127.0.0.1:9460');
    assert.ok(!JSON.stringify(key).includes(REAL_KEY));

    const res = await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message });
    assert.equal(res.status, 200);
    assert.equal(standin.requests.at(-1)!.headers['x-api-key'], REAL_KEY);

    const table = await cli(['inspect', '--config', configFile]);
    assert.equal(table.code, 0);
    assert.match(table.stdout, new RegExp(`${key.id}\\s+family\\s+chat-1\\s+\\S+\\s+59m\\d\\ds\\s+\\$0\\.\\d{4}/\\$1\\.0000`));
    const detail = JSON.parse((await cli(['inspect', key.id, '--json', '--config', configFile])).stdout) as {
      recentCalls: { status: number; model: string }[];
      spentUsd: number;
    };
    assert.equal(detail.recentCalls[0]!.status, 200);
    assert.ok(detail.spentUsd > 0);
    const human = await cli(['inspect', key.id, '--config', configFile]);
    assert.match(human.stdout, /POST \/v1\/messages\s+claude-sonnet-4-5\s+200/);

    const revoked = await cli(['keys', 'revoke', key.id, '--config', configFile]);
    assert.equal(revoked.code, 0);
    await assert.rejects(stat(key.dir));
    assert.equal((await cli(['keys', 'revoke', key.id, '--config', configFile])).code, 1);
    assert.ok(!logs.includes(REAL_KEY), 'the real key is not in the daemon log');
    assert.ok(!table.stdout.includes(REAL_KEY) && !human.stdout.includes(REAL_KEY), 'nor in inspect');
    const cmdline = await readFile(`/proc/${daemon!.pid}/cmdline`, 'utf8');
    assert.ok(!cmdline.includes(REAL_KEY), 'nor in the process arguments');
    const audit = await readFile(path.join(stateDir, 'audit.jsonl'), 'utf8').catch(() => '');
    assert.ok(!audit.includes(REAL_KEY), 'nor in the audit file');
  });

  test('keys mint --egress: the env carries the proxy, a refusal shows in inspect, an unknown preset is an error', async () => {
    const minted = await cli([
      'keys',
      'mint',
      '--config',
      configFile,
      '--group',
      'builders',
      '--egress',
      'npm,docs.python.org:443',
      '--egress-budget-bytes',
      '1000000',
      '--json',
    ]);
    assert.equal(minted.code, 0, minted.stderr);
    const key = JSON.parse(minted.stdout) as { id: string; socketPath: string; egress: boolean; env: Record<string, string> };
    assert.equal(key.egress, true);
    assert.equal(key.env.HTTPS_PROXY, 'http://127.0.0.1:9460');
    assert.equal(key.env.http_proxy, 'http://127.0.0.1:9460');
    assert.equal(key.env.NO_PROXY, '127.0.0.1,localhost,::1');
    const answer = await new Promise<string>((resolve) => {
      const socket = net.connect(key.socketPath, () => socket.end('CONNECT evil.example:443 HTTP/1.1\r\nhost: evil.example:443\r\n\r\n'));
      let text = '';
      socket.on('data', (chunk) => (text += chunk));
      socket.on('close', () => resolve(text));
    });
    assert.match(answer, /^HTTP\/1\.1 403/);
    assert.match(answer, /this key allows: registry\.npmjs\.org:443, registry\.yarnpkg\.com:443, docs\.python\.org:443/);
    const human = await cli(['inspect', key.id, '--config', configFile]);
    assert.match(human.stdout, /egress {5}0 tunnels and 0 requests \(0 open\), 0 B down and 0 B up of 1\.0 MB, 1 refused/);
    assert.match(human.stdout, /CONNECT evil\.example:443\s+403\s+not_allowed/);
    const table = await cli(['inspect', '--config', configFile]);
    assert.match(table.stdout, /0 open, 0 B\/0 B, 1 refused/);
    const unknown = await cli(['keys', 'mint', '--config', configFile, '--group', 'builders', '--egress', 'nmp']);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /no egress preset named "nmp"/);
    await cli(['keys', 'revoke', key.id, '--config', configFile]);
  });

  test('inspect --watch redraws the table in place every second', async () => {
    const key = JSON.parse((await cli(['keys', 'mint', '--config', configFile, '--group', 'family', '--label', 'watched', '--json'])).stdout) as { id: string };
    const watch = spawn(process.execPath, [cliPath, 'inspect', '--watch', '--config', configFile]);
    let screen = '';
    watch.stdout!.on('data', (chunk: Buffer) => (screen += chunk.toString()));
    try {
      await eventually(() => screen.split('\x1b[H\x1b[2J').length >= 3, 5000);
      assert.match(screen, /gateway inspect --watch \(Ctrl-C to stop\)/);
      assert.match(screen, new RegExp(`${key.id}\\s+family\\s+watched`));
      assert.match(screen, /GROUP\s+KEYS\s+SPEND\/BUDGET/);
    } finally {
      watch.kill('SIGINT');
      await cli(['keys', 'revoke', key.id, '--config', configFile]);
    }
  });

  test('a rotated credential file is picked up without a restart', async () => {
    const key = JSON.parse((await cli(['keys', 'mint', '--config', configFile, '--group', 'family', '--json'])).stdout) as { socketPath: string };
    standinOptions.anthropicApiKey = ROTATED_KEY;
    const changes = logs.split('credentials changed').length;
    // Tools replace credential files by rename; the daemon watches the directory.
    await writeFile(`${keyFile}.new`, `${ROTATED_KEY}\n`, { mode: 0o600 });
    await rename(`${keyFile}.new`, keyFile);
    // The daemon logs the change as it swaps the credential in: the next call carries it.
    await eventually(() => logs.split('credentials changed').length > changes, 5000);
    const status = (await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message })).status;
    assert.equal(status, 200);
    assert.equal(standin.requests.at(-1)!.headers['x-api-key'], ROTATED_KEY);
    assert.match(logs, /credentials changed/);
    assert.ok(!logs.includes(ROTATED_KEY));
  });

  test('SIGHUP reloads the config without dropping live keys', async () => {
    const key = JSON.parse((await cli(['keys', 'mint', '--config', configFile, '--group', 'family', '--json'])).stdout) as { id: string; socketPath: string };
    assert.equal((await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message })).status, 200);
    await writeFile(configFile, (await readFile(configFile, 'utf8')).replace('family = 5', 'family = 0'));
    daemon!.kill('SIGHUP');
    await eventually(() => logs.includes('configuration reloaded'), 5000);
    const refused = await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message });
    assert.equal(refused.status, 402);
    assert.match(refused.body, /budget exhausted for group family/);
    await writeFile(configFile, (await readFile(configFile, 'utf8')).replace('family = 0', 'family = 5'));
    daemon!.kill('SIGHUP');
    await eventually(() => logs.split('configuration reloaded').length === 3, 5000);
    assert.equal((await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message })).status, 200);
  });

  test('SIGHUP reloads prices, default limits (for keys minted after) and providers (base URL and credential)', async () => {
    const inspectKey = async (id: string) =>
      JSON.parse((await cli(['inspect', id, '--json', '--config', configFile])).stdout) as {
        limits: { rpm?: number };
        recentCalls: { costUsd: number; inputTokens: number; outputTokens: number; priceEntry?: string }[];
      };
    const HUP_KEY = 'real-daemon-key-after-hup-0b6d';
    const moved = await startStandin({ anthropicApiKey: HUP_KEY });
    const hupKeyFile = path.join(dir, 'anthropic-hup.key');
    await writeFile(hupKeyFile, `${HUP_KEY}\n`, { mode: 0o600 });
    const original = await readFile(configFile, 'utf8');
    const live = JSON.parse((await cli(['keys', 'mint', '--config', configFile, '--group', 'family', '--json'])).stdout) as { id: string; socketPath: string };
    try {
      assert.equal((await request({ socketPath: live.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message })).status, 200);
      const before = (await inspectKey(live.id)).recentCalls[0]!;
      assert.ok(Math.abs(before.costUsd - (before.inputTokens * 3 + before.outputTokens * 15) / 1e6) < 1e-12, 'the shipped price first');
      const movedBefore = moved.requests.length;

      const edited = original.replace(`base_url = "${standin.url}"\napi_key_file = "${keyFile}"`, `base_url = "${moved.url}"\napi_key_file = "${hupKeyFile}"`);
      assert.notEqual(edited, original);
      await writeFile(configFile, `${edited}[prices."claude-sonnet-4-5"]\ninput = 1000\noutput = 2000\n[limits]\nrpm = 1\n`);
      const reloads = logs.split('configuration reloaded').length;
      daemon!.kill('SIGHUP');
      await eventually(() => logs.split('configuration reloaded').length > reloads, 5000);

      // The live key: the new provider with its new credential, the new price, its own old limits.
      const standinBefore = standin.requests.length;
      for (let i = 0; i < 2; i++) {
        assert.equal((await request({ socketPath: live.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message })).status, 200);
      }
      assert.equal(standin.requests.length, standinBefore, 'the old base URL is not called');
      assert.equal(moved.requests.length, movedBefore + 2);
      assert.equal(moved.requests.at(-1)!.headers['x-api-key'], HUP_KEY);
      const after = await inspectKey(live.id);
      assert.equal(after.limits.rpm, undefined, 'a live key keeps the limits it was minted with');
      const charged = after.recentCalls[0]!;
      assert.ok(Math.abs(charged.costUsd - (charged.inputTokens * 1000 + charged.outputTokens * 2000) / 1e6) < 1e-12, `the new price: ${charged.costUsd}`);
      assert.equal(charged.priceEntry, 'claude-sonnet-4-5');

      // A key minted after the reload gets the new default rpm of 1.
      const fresh = JSON.parse((await cli(['keys', 'mint', '--config', configFile, '--group', 'family', '--json'])).stdout) as {
        id: string;
        socketPath: string;
      };
      assert.equal((await inspectKey(fresh.id)).limits.rpm, 1);
      assert.equal((await request({ socketPath: fresh.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message })).status, 200);
      assert.equal((await request({ socketPath: fresh.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message })).status, 429);
      await cli(['keys', 'revoke', fresh.id, '--config', configFile]);
    } finally {
      await cli(['keys', 'revoke', live.id, '--config', configFile]);
      await writeFile(configFile, original);
      const reloads = logs.split('configuration reloaded').length;
      daemon!.kill('SIGHUP');
      await eventually(() => logs.split('configuration reloaded').length > reloads, 5000);
      await moved.close();
    }
  });

  test('SIGTERM drains a stream in flight; the next start brings the key back in the same directory', async () => {
    const key = JSON.parse((await cli(['keys', 'mint', '--config', configFile, '--group', 'family', '--json'])).stdout) as {
      id: string;
      dir: string;
      socketPath: string;
    };
    const inode = (await stat(key.dir)).ino;
    standinOptions.eventDelayMs = 100;
    const streaming = request({
      socketPath: key.socketPath,
      path: '/v1/messages',
      headers: anthropicHeaders(),
      body: JSON.stringify({ ...JSON.parse(message), stream: true }),
    });
    await eventually(() => logs.length > 0 && standin.requests.length > 0 && standin.requests.at(-1)!.body.includes('"stream":true'));
    const code = await stopDaemon('SIGTERM');
    standinOptions.eventDelayMs = 0;
    const res = await streaming;
    assert.equal(code, 0);
    assert.equal(res.status, 200);
    assert.ok(res.body.includes('event: message_stop'), 'the stream was drained to its end');
    assert.equal((await stat(key.dir)).ino, inode, 'the directory stays for the bind mounts');
    await assert.rejects(stat(key.socketPath), 'its socket is gone while the daemon is down');

    await startDaemon();
    assert.equal((await stat(key.dir)).ino, inode);
    const after = await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message });
    assert.equal(after.status, 200);
  });

  test('SIGKILL mid-session: after a restart the same socket answers and spend is continuous', async () => {
    const key = JSON.parse((await cli(['keys', 'mint', '--config', configFile, '--group', 'family', '--budget-usd', '1', '--json'])).stdout) as {
      id: string;
      dir: string;
      socketPath: string;
    };
    assert.equal((await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message })).status, 200);
    const spentBefore = (JSON.parse((await cli(['inspect', key.id, '--json', '--config', configFile])).stdout) as { spentUsd: number }).spentUsd;
    assert.ok(spentBefore > 0);
    const groupBefore = (
      JSON.parse((await cli(['inspect', '--json', '--config', configFile])).stdout) as { groups: { group: string; spentUsd: number }[] }
    ).groups.find((g) => g.group === 'family')!.spentUsd;
    await stopDaemon('SIGKILL');

    await startDaemon();
    const restored = JSON.parse((await cli(['inspect', key.id, '--json', '--config', configFile])).stdout) as {
      spentUsd: number;
      limits: { budgetUsd: number };
    };
    assert.equal(restored.spentUsd, spentBefore);
    assert.equal(restored.limits.budgetUsd, 1);
    const groupAfter = (
      JSON.parse((await cli(['inspect', '--json', '--config', configFile])).stdout) as { groups: { group: string; spentUsd: number }[] }
    ).groups.find((g) => g.group === 'family')!.spentUsd;
    assert.ok(Math.abs(groupAfter - groupBefore) < 1e-12, 'group spend survived');
    assert.equal((await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message })).status, 200);
    const spentAfter = (JSON.parse((await cli(['inspect', key.id, '--json', '--config', configFile])).stdout) as { spentUsd: number }).spentUsd;
    assert.ok(Math.abs(spentAfter - 2 * spentBefore) < 1e-12, 'the same call costs the same again, on top');
  });
});
