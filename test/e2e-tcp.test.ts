// TCP mode (docs/deploy.md) end to end, with real parts: an internal podman network of the key's own
// (runner/network.ts, as root), a key listening on its host side with a token, its firewall table,
// and the real Claude Code in a container on that network with contribute()'s env, no mount of the
// key's directory and no shim, through the gateway to the stand-in provider (which answers only the
// real key). A probe container on the same network then shows the listener refusing requests without
// the key's token or with another key's, refusing connections once the key is revoked, and that
// nothing else of the host (its wildcard services, eth0, loopback, DNS) is reachable; the token is in
// no log line, no audit line and no upstream request. Last, `gateway run --transport tcp` through the
// CLI runs one container to completion and leaves neither its network nor its firewall table behind.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { promisify } from 'node:util';
import { pino } from 'pino';
import type { RecordedRequest } from '../src/dev/standin.ts';
import { STANDIN_REPLY } from '../src/dev/standin.ts';
import { createKeyNetwork, type KeyNetwork } from '../src/runner/network.ts';
import { contribute } from '../src/runner/contribute.ts';
import { gateway as cli } from './support/cli.ts';
import { deadPort, eventually, REAL_ANTHROPIC_KEY, startFixture } from './support/fixture.ts';
import { type ContainerReport, writeNeedles } from './support/needles.ts';
import {
  buildTestImage,
  type Mount,
  podmanAvailable,
  podmanRun,
  CONTAINER_CLIENTS as CLIENTS,
  CONTAINER_HOME as HOME,
  clientMounts,
} from './support/podman.ts';
import { isRoot, skipUnless } from './support/requirements.ts';

const exec = promisify(execFile);
const CONTAINER_TIMEOUT_MS = 100_000;
const STEP_TIMEOUT_MS = 120_000;

/** The networks named `llmgw-*` podman has now. */
async function keyNetworks(): Promise<string[]> {
  const { stdout } = await exec('podman', ['network', 'ls', '--format', '{{.Name}}']);
  return stdout.split('\n').filter((name) => name.startsWith('llmgw-'));
}

/** The nftables tables named `llmgw_*` (one per guarded key network). */
async function keyTables(): Promise<string[]> {
  const { stdout } = await exec('nft', ['list', 'tables']);
  return stdout
    .split('\n')
    .map((line) => line.trim().split(' ')[2] ?? '')
    .filter((name) => name.startsWith('llmgw_'));
}

/** The IPv4 address of the host's default route's interface (eth0 here). */
async function hostAddress(): Promise<string> {
  const { stdout } = await exec('ip', ['-4', '-o', 'route', 'get', '192.0.2.123']);
  return /\bsrc (\S+)/.exec(stdout)![1]!;
}

interface Probe {
  noToken: { status?: number; body?: string; error?: string };
  otherToken: { status?: number; body?: string; error?: string };
  ownToken: { status?: number; body?: string; error?: string };
  afterRevoke: string;
  wildcard: string;
  closedPort: string;
  eth0: string;
  loopback: string;
  lookup: string;
  resolvConf: string;
}

test('TCP mode: the real Claude Code on an internal podman network of its own, a token and a firewall', { timeout: 8 * 60_000 }, async (t) => {
  // Skipped only on a developer's machine without podman or root; CI (GATEWAY_REQUIRE_ALL_TESTS=1) fails instead.
  const skip =
    skipUnless(podmanAvailable(), 'podman is not installed (CI installs it: .ci/run)') ||
    skipUnless(isRoot, "TCP mode's network needs root (its bridge and firewall table; rootless podman keeps bridges out of the host's reach)");
  if (skip) {
    t.skip(skip);
    return;
  }
  const started = Date.now();
  const { image, mounts: libMounts } = buildTestImage();

  // Every log line the gateway writes, down to debug, to search for the token.
  const logLines: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void logLines.push(line) });
  // The stand-in runs `onModels` (when set) on each /v1/models request before answering it.
  let onModels: (() => Promise<void>) | undefined;
  const fx = await startFixture(
    {
      override: async (request: RecordedRequest) => {
        if (request.url === '/v1/models') await onModels?.();
        return false;
      },
    },
    { logger },
  );
  const standinPort = Number(new URL(fx.standin.url).port);
  const needles = writeNeedles({ anthropic: REAL_ANTHROPIC_KEY });
  // A service of the host's on its wildcard address: without the firewall the container reaches it.
  const wildcard = http.createServer((_req, res) => res.end('wildcard-service\n'));
  await new Promise<void>((resolve) => wildcard.listen(0, '0.0.0.0', resolve));
  const wildPort = (wildcard.address() as AddressInfo).port;
  const configDir = mkdtempSync(join(tmpdir(), 'gw-tcp-'));
  const networksBefore = new Set(await keyNetworks());

  const tablesBefore = new Set(await keyTables());
  let net: KeyNetwork | undefined;
  t.after(async () => {
    await net?.close();
    // Whatever a failed step left: every key network and table this test made goes.
    for (const table of await keyTables().catch(() => [])) {
      if (!tablesBefore.has(table)) await exec('nft', ['delete', 'table', 'inet', table]).catch(() => undefined);
    }
    for (const name of await keyNetworks().catch(() => [])) {
      if (!networksBefore.has(name)) await exec('podman', ['network', 'rm', '-f', name]).catch(() => undefined);
    }
    await fx.close();
    await new Promise((resolve) => wildcard.close(resolve));
    needles.remove();
    rmSync(configDir, { recursive: true, force: true });
    t.diagnostic(`whole test: ${Date.now() - started} ms`);
  });
  net = await createKeyNetwork('podman');
  assert.match(net.name, /^llmgw-[0-9a-z]{8}$/);

  const c = await contribute(fx.gateway, {
    group: 'e2e-tcp',
    label: 'claude-tcp',
    owner: { uid: 1000, gid: 1000 },
    budgetUsd: 2,
    ttlMs: 10 * 60_000,
    tcp: { host: net.hostAddress, allowFrom: [net.containerAddress], network: net.name },
  });
  const token = c.key.tcp!.token!;
  const port = c.key.tcp!.port;
  const other = await fx.gateway.mint({ group: 'e2e-tcp', label: 'other', tcp: { host: net.hostAddress, allowFrom: [net.containerAddress] } });
  const otherToken = other.tcp!.token!;
  const onNetwork = { network: c.network, extraArgs: ['--ip', net.containerAddress], timeoutMs: CONTAINER_TIMEOUT_MS };

  const step = (name: string, fn: (t: TestContext) => Promise<void>) => t.test(name, { timeout: STEP_TIMEOUT_MS }, fn);

  await step('the contribution: the network, the listener, the token as API key, no mount, no shim', async () => {
    assert.match(token, /^gwtok-[A-Za-z0-9_-]{43}$/);
    assert.notEqual(token, otherToken);
    assert.equal(c.network, net.name);
    assert.deepEqual(c.mounts, []);
    assert.deepEqual(c.wrap(['claude', '-p', 'x']), ['claude', '-p', 'x']);
    assert.equal(c.baseUrl, `http://${net.hostAddress}:${port}`);
    assert.equal(c.env.ANTHROPIC_BASE_URL, c.baseUrl);
    assert.equal(c.env.ANTHROPIC_API_KEY, token);
    assert.equal(c.env.GATEWAY_SHIM_PORT, undefined);
    assert.deepEqual(c.key.tcp!.allowFrom, [net.containerAddress]);
  });

  await step('without the firewall table, the host’s wildcard service answers on the bridge address', async (t) => {
    const ms = Date.now();
    const r = await podmanRun({ image, ...onNetwork, args: ['wget', '-q', '-O', '-', `http://${net.hostAddress}:${wildPort}/`] });
    t.diagnostic(`control container: ${Date.now() - ms} ms`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'wildcard-service\n');
  });

  await net.guard(port);

  await step('the firewall table lets the container address reach the key’s port on the bridge address, nothing else', async () => {
    const table = net.name.replace('-', '_');
    assert.ok((await keyTables()).includes(table));
    const { stdout } = await exec('nft', ['list', 'table', 'inet', table]);
    assert.ok(stdout.includes(`iifname "${net.bridge}" ip saddr ${net.containerAddress} ip daddr ${net.hostAddress} tcp dport ${port} accept`), stdout);
    assert.ok(stdout.includes(`iifname "${net.bridge}" drop`), stdout);
    assert.ok(stdout.includes(`oifname "${net.bridge}" drop`), stdout);
  });

  await step('Claude Code (claude -p) on the network, with only the contribution’s env: a turn completes', async (t) => {
    const mounts: Mount[] = [
      ...libMounts,
      ...clientMounts(),
      { source: needles.dir, target: '/opt/clients/needles', readOnly: true },
      // Claude Code wants bash or zsh for its Bash tool (busybox sh is refused): the host's, read-only.
      { source: realpathSync('/bin/bash'), target: '/usr/local/bin/bash', readOnly: true },
      ...c.mounts,
    ];
    const firstRequest = fx.standin.requests.length;
    const ms = Date.now();
    const r = await podmanRun({
      image,
      ...onNetwork,
      mounts,
      env: {
        ...c.env,
        PATH: `/usr/local/bin:/bin:${CLIENTS}/.bin`,
        HOME,
        TERM: 'dumb',
        E2E_DIRECT_PORT: String(standinPort),
        E2E_NEEDLES: '/opt/clients/needles/needles.json',
      },
      user: '1000:1000',
      args: c.wrap(['sh', '/opt/clients/e2e/run.sh', 'claude', '-p', 'Say hello through the gateway.']),
    });
    t.diagnostic(`claude -p over TCP: ${Date.now() - ms} ms in the container`);
    assert.ok(!r.timedOut, `container timed out\n${r.stdout}\n${r.stderr}`);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as ContainerReport;
    const shown = `rc=${report.rc}\n--- stdout\n${report.stdout}\n--- stderr\n${report.stderr.slice(-4000)}`;
    assert.equal(report.rc, 0, shown);
    assert.equal(report.stdout.trim(), STANDIN_REPLY, shown);
    assert.equal(report.uid, 1000);
    // The container had the listener's URL and the token, no shim port; the key's directory was not there.
    assert.match(report.env, new RegExp(`^ANTHROPIC_BASE_URL=http://${net.hostAddress.replaceAll('.', '\\.')}:${port}$`, 'm'));
    assert.ok(!/^GATEWAY_SHIM_PORT=/m.test(report.env));
    assert.ok(!report.scan.paths.some((p) => p.startsWith('/run/gateway/')), 'something is mounted at /run/gateway');
    assert.ok(
      report.scan.hits.some((h) => h.needle === 'canary'),
      'the scan read nothing',
    );
    assert.deepEqual(
      report.scan.hits.filter((h) => h.needle !== 'canary'),
      [],
      'the real key is in a file readable in the container',
    );
    assert.ok(!report.env.includes(REAL_ANTHROPIC_KEY) && !report.stdout.includes(REAL_ANTHROPIC_KEY) && !report.stderr.includes(REAL_ANTHROPIC_KEY));
    assert.match(report.direct, /^(ECONNREFUSED|ENETUNREACH)$/, `the stand-in's port from the container: ${report.direct}`);
    // The stand-in answered the real key, which the gateway put in place of the token.
    const messages = fx.standin.requests.slice(firstRequest).filter((q) => q.url.startsWith('/v1/messages'));
    assert.ok(messages.length >= 1, shown);
    for (const q of messages) assert.equal(q.headers['x-api-key'], REAL_ANTHROPIC_KEY);
    // onCall fires after a call's last byte, the audit line after that: the container's exit orders neither.
    await eventually(() => fx.calls.filter((call) => call.keyId === c.key.id && call.endpoint === 'messages').length >= messages.length, 5000);
    const calls = fx.calls.filter((call) => call.keyId === c.key.id);
    assert.ok(
      calls.every((call) => call.status === 200 && call.group === 'e2e-tcp' && call.label === 'claude-tcp'),
      JSON.stringify(calls),
    );
    const auditFile = join(fx.stateDir, 'audit.jsonl');
    const audit = () =>
      existsSync(auditFile)
        ? readFileSync(auditFile, 'utf8')
            .split('\n')
            .filter((line) => line.includes(c.key.id))
            .map((line) => JSON.parse(line) as Record<string, unknown>)
        : [];
    await eventually(() => audit().length >= calls.length, 5000);
    assert.ok(audit().some((line) => line.endpoint === 'messages' && line.status === 200 && Number(line.outputTokens) > 0));
  });

  await step('a probe on the network: 401 without the token or with another key’s, refused once revoked; nothing else of the host answers', async (t) => {
    const closedPort = await deadPort();
    const eth0 = await hostAddress();
    const ms = Date.now();
    const running = podmanRun({
      image,
      ...onNetwork,
      mounts: [...libMounts, ...clientMounts()],
      env: {
        PROBE_HOST: net.hostAddress,
        PROBE_PORT: String(port),
        PROBE_TOKEN: token,
        PROBE_OTHER_TOKEN: otherToken,
        PROBE_WILD_PORT: String(wildPort),
        PROBE_CLOSED_PORT: String(closedPort),
        PROBE_ETH0: eth0,
      },
      user: '1000:1000',
      args: ['node', '/opt/clients/e2e/tcp-probe.mjs'],
    });
    // The probe's call with the key's own token is the cue: once it is metered, revoke the key.
    await eventually(() => fx.calls.some((call) => call.keyId === c.key.id && call.endpoint === 'models'), 60_000).catch(() => undefined);
    assert.equal(await fx.gateway.revoke(c.key.id), true);
    const r = await running;
    t.diagnostic(`probe container: ${Date.now() - ms} ms`);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const probe = JSON.parse(r.stdout.trim().split('\n').pop()!) as Probe;
    const show = JSON.stringify(probe, null, 1);
    t.diagnostic(
      `probe: ${JSON.stringify({ ...probe, noToken: probe.noToken.status, otherToken: probe.otherToken.status, ownToken: probe.ownToken.status, resolvConf: undefined })}`,
    );
    // Without a token, and with another live key's: 401 in Anthropic's error shape.
    for (const refused of [probe.noToken, probe.otherToken]) {
      assert.equal(refused.status, 401, show);
      const body = JSON.parse(refused.body!) as { type: string; error: { type: string; message: string } };
      assert.equal(body.type, 'error', show);
      assert.equal(body.error.type, 'authentication_error', show);
      assert.match(body.error.message, /token/, show);
    }
    // The key's own token goes through (so the 401s were the token's doing), and after the revoke the port refuses.
    assert.equal(probe.ownToken.status, 200, show);
    assert.match(probe.ownToken.body!, /claude-sonnet-4-5/, show);
    assert.equal(probe.afterRevoke, 'ECONNREFUSED', show);
    // The host's wildcard service and a closed port on the bridge address: dropped by the table.
    assert.equal(probe.wildcard, 'TIMEOUT', show);
    assert.equal(probe.closedPort, 'TIMEOUT', show);
    // The host's eth0 address: no route. 127.0.0.1 is the container's own loopback, where nothing listens.
    assert.match(probe.eth0, /^(ENETUNREACH|EHOSTUNREACH|TIMEOUT)$/, show);
    assert.equal(probe.loopback, 'ECONNREFUSED', show);
    // No DNS: the resolver's name servers cannot be reached.
    assert.notEqual(probe.lookup, 'RESOLVED', show);
    assert.match(probe.lookup, /^(EAI_AGAIN|ENOTFOUND|ECONNREFUSED|ETIMEOUT)$/, show);
    // What reached the stand-in carried the real key: the refused requests never left the gateway.
    assert.ok(fx.standin.requests.every((q) => q.headers['x-api-key'] === REAL_ANTHROPIC_KEY));
  });

  await step('the token is in no log line, no audit line and no upstream request', async () => {
    const logs = logLines.join('');
    if (process.env.E2E_DUMP) writeFileSync(join(process.env.E2E_DUMP, 'tcp-gateway.log'), logs);
    // The capture works: it holds the keys' lines, the TCP address and the refusals.
    assert.ok(logs.includes(c.key.id) && logs.includes(other.id), 'the gateway logged nothing about the keys');
    // At debug level nothing is held back (the gateway has no debug lines today; info and warn ones it has).
    assert.ok(logs.includes('"level":30') && logs.includes('"level":40'), logs);
    assert.ok(logs.includes("TCP requests without the key's token refused"), logs);
    const audit = readFileSync(join(fx.stateDir, 'audit.jsonl'), 'utf8');
    assert.ok(audit.includes(c.key.id));
    for (const secret of [token, otherToken]) {
      assert.ok(!logs.includes(secret), 'a token is in the gateway log');
      assert.ok(!audit.includes(secret), 'a token is in the audit file');
      // Nor its random part alone (as if re-encoded around the prefix).
      assert.ok(!logs.includes(secret.slice(6)) && !audit.includes(secret.slice(6)));
      for (const q of fx.standin.requests) {
        for (const [name, value] of Object.entries(q.headers)) assert.ok(!String(value).includes(secret), `the stand-in got a token in ${name}`);
        assert.ok(!q.body.includes(secret), `the stand-in got a token in the body of ${q.url}`);
      }
    }
  });

  await step('gateway run --transport tcp runs a container to completion, then removes its network and firewall table', async (t) => {
    const configFile = join(configDir, 'gateway.toml');
    writeFileSync(
      configFile,
      `state_dir = "${join(configDir, 's')}"\n[providers.anthropic]\nbase_url = "${fx.standin.url}"\napi_key_env = "E2E_TCP_REAL_KEY"\n`,
    );
    // This host's podman needs runc and explicit ulimits (test/support/podman.ts): a containers.conf for the CLI's podman.
    const containersConf = join(configDir, 'containers.conf');
    writeFileSync(containersConf, '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n[engine]\nruntime = "runc"\n');
    const before = new Set(await keyNetworks());
    // What existed while the container's call was on its way: its network and its table.
    const seen: { networks: string[]; tables: string[] } = { networks: [], tables: [] };
    onModels = async () => {
      seen.networks = (await keyNetworks()).filter((name) => !before.has(name));
      seen.tables = await keyTables();
    };
    const saved = { conf: process.env.CONTAINERS_CONF, key: process.env.E2E_TCP_REAL_KEY };
    process.env.CONTAINERS_CONF = containersConf;
    process.env.E2E_TCP_REAL_KEY = REAL_ANTHROPIC_KEY;
    const firstRequest = fx.standin.requests.length;
    const ms = Date.now();
    // Exits 7 only when the listener answered the token with the stand-in's model list.
    const script =
      'wget -q -O /tmp/models --header "x-api-key: $ANTHROPIC_API_KEY" --header "anthropic-version: 2023-06-01" "$ANTHROPIC_BASE_URL/v1/models" && grep -q claude-sonnet-4-5 /tmp/models && exit 7';
    let result: Awaited<ReturnType<typeof cli>>;
    try {
      result = await cli(['-c', configFile, 'run', '--transport', 'tcp', '--group', 'cli-tcp', '--user', '1000:1000', '--', image, 'sh', '-c', script]);
    } finally {
      onModels = undefined;
      for (const [name, value] of [
        ['CONTAINERS_CONF', saved.conf],
        ['E2E_TCP_REAL_KEY', saved.key],
      ] as const) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
    t.diagnostic(`gateway run --transport tcp: ${Date.now() - ms} ms`);
    assert.equal(result.code, 7, result.stderr);
    assert.match(result.stderr, /gateway: key [0-9a-z]{16} \(embedded gateway\), podman starting/);
    const models = fx.standin.requests.slice(firstRequest).filter((q) => q.url === '/v1/models');
    assert.equal(models.length, 1);
    assert.equal(models[0]!.headers['x-api-key'], REAL_ANTHROPIC_KEY);
    // While it ran: one network of its own, and its table.
    assert.equal(seen.networks.length, 1, JSON.stringify(seen));
    const [network] = seen.networks as [string];
    assert.match(network, /^llmgw-[0-9a-z]{8}$/);
    assert.ok(seen.tables.includes(network.replace('-', '_')), JSON.stringify(seen));
    // Afterwards: both gone.
    assert.ok(!(await keyNetworks()).includes(network), `network ${network} is still there`);
    assert.ok(!(await keyTables()).includes(network.replace('-', '_')), `table for ${network} is still there`);
  });
});
