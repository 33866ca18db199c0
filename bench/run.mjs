// `make bench`: one run, the same workloads side by side through
//   direct   client -> fake upstream (TCP loopback): the floor
//   bare     client -> Unix socket -> bench/bare-relay.mjs (node:http + undici, swaps the key) -> upstream:
//            the floor for a Node gateway (issue 20)
//   socket   client -> a key's Unix socket -> gateway -> upstream
//   shim     client -> shim/shim.mjs (TCP) -> socket -> gateway -> upstream: the real path
//   portkey  client -> @portkey-ai/gateway (TCP) -> upstream: a peer
//   other    client -> another gateway at --other URL -> upstream (its operator points it there)
// and egress (issue 14): TLS connects, large downloads and plain HTTP to a loopback site named
// bench.test, direct against through the key's socket (CONNECT, absolute form) and through the shim.
// and shared budgets (issue 17): a call whose group budget is held in Redis (redis-server on loopback)
// against one whose budget is the gateway's own, same gateway.
// and telemetry (issue 18): the socket path with the Prometheus endpoint (scraped each second) and the
// OTLP trace exporter fed from onCall, against the same without them.
// and more cores (issue 20): N gateway processes sharing a store, their keys side by side, against one.
// Every actor (upstream, gateway, shim, Portkey, load generator) is a process of its own, so the
// CPU time each spends is its own. Prints a table, writes bench/results.json.
//
//   node bench/run.mjs [--quick] [--profile] [--duration MS] [--cores N] [--only shared-budget|telemetry|cores]
//     --quick    shorter windows (smoke test)
//     --only shared-budget|telemetry|cores  that part alone, printed (bench/results.json is left as it is)
//     --cores N  gateway processes in the `cores` part (default: the machine's cores, at least 2)
//     --profile  after the measurements, profile the gateway (V8 CPU profiler) during json c1, json c16
//                and stream c1 on the socket path, one workload per profile, and summarize self time
//     --other URL  also run the API workloads (json, stream, paced) against another gateway at URL
//                (POST URL's path + /v1/messages), as the path `other`; its upstream must be the fake
//                upstream, whose URL and real key are printed before the workloads
//     --other-header 'name: value'  a header sent to it besides the base ones (repeatable)
//     --other-pid PID  its process, to measure its CPU from /proc (not measured without it)
//     --upstream-port N  the fake upstream's loopback port (default: a free one), so that another
//                gateway can be configured before the run
import { execFileSync, fork, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { summarizeProfile } from './profile.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.dirname(here);
const args = process.argv.slice(2);
const QUICK = args.includes('--quick');
const PROFILE = args.includes('--profile');
const argValue = (name, fallback) => {
  const i = args.indexOf(name);
  return i === -1 ? fallback : Number(args[i + 1]);
};
const DURATION = argValue('--duration', QUICK ? 1000 : 3000);
const OTHER_URL = args.includes('--other') ? new URL(args[args.indexOf('--other') + 1]) : undefined;
const OTHER_PID = argValue('--other-pid', undefined);
const UPSTREAM_PORT = argValue('--upstream-port', 0);
/** @type {Record<string, string>} */
const OTHER_HEADERS = {};
args.forEach((arg, i) => {
  if (arg !== '--other-header') return;
  const m = /^([^:]+):\s*(.*)$/.exec(args[i + 1] ?? '');
  if (!m) throw new Error(`--other-header: expected 'name: value', got ${args[i + 1]}`);
  OTHER_HEADERS[m[1].trim().toLowerCase()] = m[2];
});
const ONLY = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;
const PARTS = ['shared-budget', 'telemetry', 'cores'];
if (ONLY !== undefined && !PARTS.includes(ONLY)) throw new Error(`--only: unknown part ${ONLY} (known: ${PARTS.join(', ')})`);
const WARMUP = QUICK ? 300 : 700;
// Gateway processes in the `cores` part (issue 20): one per core, at least 2 so there is something to scale.
const CORES = Math.max(2, argValue('--cores', os.availableParallelism()));
const CORES_ROUNDS = QUICK ? 3 : 5;
// A shared budget the cores part spends to its end: a few hundred small calls at the bench's price.
const CORES_BUDGET_USD = 0.05;
// Unmeasured calls each path serves once, per mode, before any workload (see "priming" below).
const PRIME_MS = QUICK ? 1500 : 4000;
// The gateway against the bare relay: alternated rounds of windows this long (see below).
const BARE_ROUNDS = QUICK ? 5 : 9;
const BARE_WINDOW_MS = QUICK ? 500 : 1000;
// Before each window of those rounds for added latency: the paths are primed already.
const LATENCY_WARMUP_MS = QUICK ? 150 : 300;
const REAL_KEY = 'sk-ant-bench-REAL-7c1e9a';
const PLACEHOLDER = 'sk-ant-placeholder';
const STREAM_EVENTS = 1000;
const PACED_EVENTS = 100;
const PACE_MS = 2;
const MANY_KEYS = [1000, 10000];
const SUBSET = 200;
const CLK_TCK = 100;
// Egress: the made-up name the site is reached by (pinned to 127.0.0.1 in egress.hosts), one download's
// size on one tunnel, and on each of DOWNLOAD_PARALLEL tunnels at once.
const SITE_HOST = 'bench.test';
const DOWNLOAD_BYTES = (QUICK ? 64 : 256) * 2 ** 20;
const DOWNLOAD_PARALLEL = 4;
const WATCHDOG_MS = 15 * 60_000;
// Shared budget: sequential calls per key after a warm-up, and the group budget (never reached).
const SHARED_BUDGET_CALLS = QUICK ? 200 : 400;
const SHARED_BUDGET_WARMUP = 50;
const SHARED_BUDGET_USD = 1000;
// Telemetry: windows per variant, alternated (off, on, off, on) so drift falls on both alike.
const TELEMETRY_ROUNDS = 2;

/** @type {import('node:child_process').ChildProcess[]} */
const children = [];
const watchdog = setTimeout(() => {
  console.error(`bench: watchdog: still running after ${WATCHDOG_MS / 1000} s, giving up`);
  for (const child of children) child.kill('SIGKILL');
  process.exit(1);
}, WATCHDOG_MS);
watchdog.unref();
process.on('exit', () => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
});

// ---------------------------------------------------------------------------------------------
// Processes

/**
 * @param {string} file
 * @param {{ env?: Record<string, string>, execArgv?: string[], stdio?: import('node:child_process').StdioOptions }} [options]
 */
function start(file, { env = {}, execArgv = [], stdio } = {}) {
  const child = fork(file, [], {
    cwd: root,
    env: { ...process.env, ...env },
    execArgv,
    stdio: stdio ?? ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.push(child);
  return child;
}

/**
 * A gateway host (bench/gateway-host.mjs).
 * @param {Record<string, string>} env
 * @param {string[]} [execArgv]
 */
function startGateway(env, execArgv = []) {
  return start(path.join(here, 'gateway-host.mjs'), { env, execArgv });
}

/** Sends msg and waits for the first message of type `reply`, for at most timeoutMs. */
function request(child, msg, reply, timeoutMs = 120_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.off('message', onMessage);
      reject(new Error(`no '${reply}' from child ${child.pid} within ${timeoutMs} ms`));
    }, timeoutMs);
    const onMessage = (m) => {
      if (m.type === 'error') {
        clearTimeout(timer);
        child.off('message', onMessage);
        reject(new Error(m.message));
      } else if (m.type === reply) {
        clearTimeout(timer);
        child.off('message', onMessage);
        resolve(m);
      }
    };
    child.on('message', onMessage);
    if (msg) child.send(msg);
  });
}

async function stop(child, timeoutMs = 15_000) {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    child.send({ type: 'exit' });
  } catch {
    child.kill('SIGTERM');
  }
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  await exited;
  clearTimeout(timer);
}

/** CPU time (user + system) of a process, in ms, from /proc (10 ms resolution). */
function cpuMs(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}

/** Busy CPU time of the whole machine, in ms (everything but idle and iowait), from /proc/stat. */
function machineBusyMs() {
  const [, ...v] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = v;
  return ((user + nice + system + irq + softirq + steal) * 1000) / CLK_TCK;
}

async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const { port } = /** @type {net.AddressInfo} */ (server.address());
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function waitForPort(port, timeoutMs, host = '127.0.0.1') {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise((resolve) => {
      const socket = net.connect(port, host);
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return false;
}

/** @typedef {{ available: false, reason: string }} Unavailable */

/**
 * @param {string} socketPath
 * @returns {Promise<Unavailable | { available: true, child: import('node:child_process').ChildProcessByStdio<null, null, import('node:stream').Readable>, port: number, file: string }>}
 */
async function startShim(socketPath) {
  // BENCH_SHIM points at another copy (e.g. from a branch not merged yet); default: this tree's.
  const shimFile = process.env.BENCH_SHIM || path.join(root, 'shim', 'shim.mjs');
  if (!existsSync(shimFile)) return { available: false, reason: `${path.relative(root, shimFile)} is not on this branch yet` };
  const child = spawn(process.execPath, [shimFile, '--port', '0', '--socket', socketPath], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(child);
  let stderr = '';
  const port = await new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), 10_000);
    child.stderr.on('data', (data) => {
      stderr += data;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once('exit', () => resolve(undefined));
  });
  if (!port) {
    child.kill('SIGKILL');
    return { available: false, reason: `shim did not start: ${stderr.trim().slice(0, 300)}` };
  }
  return { available: true, child, port, file: shimFile };
}

/** The fake upstream (bench/upstream.mjs), on --upstream-port if given. */
async function startUpstream() {
  const child = start(path.join(here, 'upstream.mjs'), { env: { BENCH_REAL_KEY: REAL_KEY, BENCH_UPSTREAM_PORT: String(UPSTREAM_PORT) } });
  const { port } = await request(child, null, 'ready', 10_000);
  return { child, url: `http://127.0.0.1:${port}` };
}

/**
 * Another gateway (--other), if it accepts TCP connections within 5 s.
 * @returns {Promise<Unavailable | { available: true, url: URL }>}
 */
async function checkOther() {
  if (!OTHER_URL) return { available: false, reason: 'no --other URL' };
  const port = Number(OTHER_URL.port || (OTHER_URL.protocol === 'https:' ? 443 : 80));
  if (!(await waitForPort(port, 5_000, OTHER_URL.hostname))) return { available: false, reason: `nothing listens at ${OTHER_URL.origin}` };
  return { available: true, url: OTHER_URL };
}

/** The bare relay (bench/bare-relay.mjs) on a Unix socket of its own. */
/** @param {Record<string, string>} gatewayEnv */
async function startBare(gatewayEnv) {
  const child = start(path.join(here, 'bare-relay.mjs'), { env: gatewayEnv });
  const { socketPath } = await request(child, null, 'ready', 10_000);
  return { child, socketPath };
}

/**
 * @returns {Promise<Unavailable | { available: true, child: import('node:child_process').ChildProcessByStdio<null, null, import('node:stream').Readable>, port: number, stderr: () => string, logFile: string }>}
 */
async function startPortkey() {
  const bin = path.join(root, 'node_modules', '@portkey-ai', 'gateway', 'build', 'start-server.js');
  if (!existsSync(bin)) return { available: false, reason: '@portkey-ai/gateway is not installed (npm ci)' };
  const port = await freePort();
  const logFile = path.join(os.tmpdir(), `bench-portkey-${process.pid}.log`);
  const child = spawn(process.execPath, [bin, `--port=${port}`, '--headless'], {
    cwd: root,
    env: { ...process.env, NODE_ENV: 'production' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(child);
  let stderr = '';
  child.stderr.on('data', (d) => {
    if (stderr.length < 20_000) stderr += d;
  });
  if (!(await waitForPort(port, 20_000))) {
    child.kill('SIGKILL');
    return { available: false, reason: `Portkey did not listen within 20 s: ${stderr.slice(0, 300)}` };
  }
  return { available: true, child, port, stderr: () => stderr, logFile };
}

/**
 * The egress rows' destination: a self-signed certificate for bench.test (openssl), then bench/site.mjs.
 * @returns {Promise<Unavailable | { available: true, child: import('node:child_process').ChildProcess, httpsPort: number, httpPort: number, ca: string }>}
 */
async function startSite() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-site-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  try {
    // P-256, as the test CA's (test/support/test-ca.ts): the handshake's cost is the same kind a real registry's is.
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', `/CN=${SITE_HOST}`].concat([
        '-addext',
        `subjectAltName=DNS:${SITE_HOST}`,
        '-keyout',
        key,
        '-out',
        cert,
      ]),
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
  } catch (error) {
    return { available: false, reason: `openssl could not make a certificate: ${String(/** @type {Error} */ (error).message).slice(0, 200)}` };
  }
  const child = start(path.join(here, 'site.mjs'), { env: { BENCH_SITE_KEY: key, BENCH_SITE_CERT: cert } });
  const { httpsPort, httpPort } = await request(child, null, 'ready', 10_000);
  return { available: true, child, httpsPort, httpPort, ca: readFileSync(cert, 'utf8') };
}

/**
 * The shared store for the shared-budget rows: a redis-server on a free loopback port, no persistence.
 * @returns {Promise<Unavailable | { available: true, child: import('node:child_process').ChildProcess, port: number, version: string }>}
 */
async function startRedisServer() {
  let version;
  try {
    version = execFileSync('redis-server', ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    return { available: false, reason: 'redis-server is not installed (make host-packages)' };
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-redis-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
    stdio: 'ignore',
  });
  children.push(child);
  if (!(await waitForPort(port, 10_000))) {
    child.kill('SIGKILL');
    return { available: false, reason: 'redis-server did not listen within 10 s' };
  }
  return { available: true, child, port, version };
}

/** Stops a redis-server from startRedisServer and waits for it to exit. */
async function stopRedisServer(redis) {
  const exited = new Promise((resolve) => redis.child.once('exit', resolve));
  redis.child.kill('SIGTERM');
  await exited;
}

/**
 * Waits until every gateway host sees its shared store up: a store that has never seen a group warms
 * first (the hosts publish their spend into it).
 * @param {import('node:child_process').ChildProcess[]} hosts
 * @param {string} part what is waiting, for the error
 */
async function waitForStore(hosts, part) {
  const deadline = Date.now() + 30_000;
  const up = async () => (await Promise.all(hosts.map((host) => request(host, { type: 'store' }, 'store')))).every((report) => report.state === 'up');
  while (!(await up())) {
    if (Date.now() > deadline) throw new Error(`${part}: the store did not come up within 30 s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * The group `shared` as the hosts' store holds it, once its total is what their ledgers say (each
 * host publishes its spend there once a second), or after 10 s: the store's total, the ledgers' sum,
 * and each host's ledger.
 * @param {import('node:child_process').ChildProcess[]} hosts
 */
async function sharedSpend(hosts) {
  const reports = () => Promise.all(hosts.map((host) => request(host, { type: 'store' }, 'store')));
  const totals = (latest) => ({
    storeUsd: Math.max(...latest.map((report) => report.shared?.totalUsd ?? 0)),
    ledgersUsd: latest.reduce((sum, report) => sum + report.spentUsd, 0),
    perHostUsd: latest.map((report) => report.spentUsd),
  });
  let spend = totals(await reports());
  const deadline = Date.now() + 10_000;
  while (Math.abs(spend.storeUsd - spend.ledgersUsd) > 1e-9 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 250));
    spend = totals(await reports());
  }
  return spend;
}

// ---------------------------------------------------------------------------------------------
// Stats helpers

function quantile(values, p) {
  const a = Float64Array.from(values).sort();
  return a[Math.min(a.length - 1, Math.floor(p * a.length))];
}

/** The middle value (of an odd count, as the alternated rounds are). */
const median = (values) => quantile(values, 0.5);

/** The middle half of alternated rounds' values: their lower and upper quartiles. */
const middleHalf = (values) => [quantile(values, 0.25), quantile(values, 0.75)];

const f = (x, digits = 3) => (x === undefined || x === null || Number.isNaN(x) ? '—' : x.toFixed(digits));
const fs = (x, digits = 3) => (x === undefined || x === null || Number.isNaN(x) ? '—' : (x >= 0 ? '+' : '') + x.toFixed(digits));
const pad = (rows) => {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
  return rows.map((r) => `| ${r.map((cell, c) => String(cell).padEnd(widths[c])).join(' | ')} |`);
};
function table(header, rows) {
  const lines = pad([header, ...rows]);
  const sep = `|${header.map((_, c) => '-'.repeat(lines[0].split('|')[c + 1].length)).join('|')}|`;
  return [lines[0], sep, ...lines.slice(1)].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Main

const REQUEST_BODY = JSON.stringify({
  model: 'claude-sonnet-4-5',
  max_tokens: 64,
  messages: [{ role: 'user', content: 'Say hello to the benchmark.' }],
});
const STREAM_BODY = REQUEST_BODY.replace('"max_tokens":64', '"max_tokens":64,"stream":true');
// What a coding agent sends (about 90 KB): a long system prompt, tool schemas and a conversation
// full of code. The small body above hides what the gateway's request scan costs per byte, which a
// relay that never reads the body does not pay.
const CODE = 'function add(a, b) {\n  return a + b; // "sum"\n}\n'.repeat(40);
const AGENT_REQUEST_BODY = JSON.stringify({
  model: 'claude-sonnet-4-5',
  max_tokens: 64,
  system: [{ type: 'text', text: 'You are a coding agent. '.repeat(520) }],
  tools: Array.from({ length: 20 }, (_, i) => ({
    name: `tool${i}`,
    description: 'Does a thing. '.repeat(30),
    input_schema: { type: 'object', properties: { path: { type: 'string' }, content: { type: 'string' } } },
  })),
  messages: Array.from({ length: 30 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: [{ type: 'text', text: `Here is the file:\n${CODE}` }] })),
});
const BASE_HEADERS = { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'user-agent': 'bench/1' };

/**
 * Added latency of a shared group budget: one gateway of its own with a store on a loopback
 * redis-server, a key of the group `shared` (its budget reserved and settled in Redis, one round trip
 * each per call) and a key of the group `local` with a budget of its own (the gateway's books only).
 * Sequential small JSON calls (c1) on each, after a warm-up; also the gateway's CPU per call.
 * @param {import('node:child_process').ChildProcess} loadgen
 * @param {Record<string, string>} gatewayEnv
 */
async function measureSharedBudget(loadgen, gatewayEnv) {
  const redis = await startRedisServer();
  if (!redis.available) {
    console.log(`bench: shared budget: not available (${redis.reason})`);
    return { summary: { available: false, reason: redis.reason }, rows: [] };
  }
  console.log(`bench: shared budget (${redis.version.split(' ').slice(0, 3).join(' ')} on loopback), ${SHARED_BUDGET_CALLS} sequential calls per key`);
  const gw = startGateway({ ...gatewayEnv, BENCH_STORE_URL: `redis://127.0.0.1:${redis.port}`, BENCH_SHARED_BUDGET: String(SHARED_BUDGET_USD) });
  try {
    await request(gw, null, 'ready', 20_000);
    const [sharedKey] = (await request(gw, { type: 'mint', n: 1, group: 'shared' }, 'minted')).keys;
    const [localKey] = (await request(gw, { type: 'mint', n: 1, group: 'local', budgetUsd: SHARED_BUDGET_USD }, 'minted')).keys;
    await waitForStore([gw], 'shared budget');
    const headers = { ...BASE_HEADERS, 'x-api-key': PLACEHOLDER };
    const run = (key, n) =>
      request(
        loadgen,
        {
          type: 'run',
          target: { socketPaths: [key.socketPath] },
          path: '/v1/messages',
          mode: 'json',
          concurrency: 1,
          headers,
          body: REQUEST_BODY,
          durationMs: 300_000,
          maxRequests: n,
        },
        'result',
        360_000,
      );
    const rows = [];
    for (const [budget, key] of [
      ['local', localKey],
      ['shared', sharedKey],
    ]) {
      await run(key, SHARED_BUDGET_WARMUP);
      const cpuBefore = (await request(gw, { type: 'cpu' }, 'cpu')).cpu;
      const { result } = await run(key, SHARED_BUDGET_CALLS);
      const cpuAfter = (await request(gw, { type: 'cpu' }, 'cpu')).cpu;
      const gatewayUs = (cpuAfter.user + cpuAfter.system - cpuBefore.user - cpuBefore.system) / Math.max(1, result.requests);
      rows.push({ workload: `budget ${budget} c1`, path: 'socket', budget, ...result, cpuPerRequestUs: { gateway: gatewayUs } });
      const lat = result.latency;
      console.log(
        `  budget ${budget.padEnd(7)} ${String(result.requests).padStart(5)} calls  p50 ${f(lat?.p50)} p99 ${f(lat?.p99)} ms  gw CPU ${f(gatewayUs, 0)} µs/call` +
          (result.errors ? `  ERRORS ${result.errors} ${JSON.stringify(result.statuses)} ${result.errorSample ?? ''}` : ''),
      );
    }
    // Evidence the shared calls went through the store: the group's total there.
    const { storeUsd } = await sharedSpend([gw]);
    const [local, sharedRow] = rows;
    const summary = {
      available: true,
      redis: redis.version,
      calls: SHARED_BUDGET_CALLS,
      storeTotalUsd: storeUsd,
      addedP50Ms: sharedRow.latency.p50 - local.latency.p50,
      addedP99Ms: sharedRow.latency.p99 - local.latency.p99,
      addedGatewayCpuUs: sharedRow.cpuPerRequestUs.gateway - local.cpuPerRequestUs.gateway,
    };
    console.log(
      `  shared budget added: p50 ${fs(summary.addedP50Ms)} ms, p99 ${fs(summary.addedP99Ms)} ms; store total for the group $${f(summary.storeTotalUsd ?? NaN, 4)}`,
    );
    return { summary, rows };
  } finally {
    await stop(gw);
    await stopRedisServer(redis);
  }
}

/**
 * More cores (issue 20). A gateway is one event loop; a host with more cores runs one gateway process
 * per core and mints each key on one of them, the group budgets they share held in the store
 * (docs/performance.md, "More cores"). Here --cores N such processes, each with a state dir of its own,
 * share a store on a loopback redis-server:
 * - throughput: json c16 over a key on one process, then over a key on each of the N, in alternated
 *   rounds; req/s, and the CPU per call of all N processes together.
 * - correctness: a key of the group `shared` on each process, the group's budget (CORES_BUDGET_USD)
 *   held in the store; json c16 over the N keys spends it all. The store's total for the group must
 *   equal what the N ledgers say they spent and must not pass the budget.
 * @param {import('node:child_process').ChildProcess} loadgen
 * @param {import('node:child_process').ChildProcess} upstream
 * @param {Record<string, string>} gatewayEnv
 */
async function measureCores(loadgen, upstream, gatewayEnv) {
  const redis = await startRedisServer();
  if (!redis.available) {
    console.log(`bench: more cores: not available (${redis.reason})`);
    return { summary: { available: false, reason: redis.reason }, rows: [] };
  }
  console.log(`bench: more cores: ${CORES} gateway processes sharing ${redis.version.split(' ').slice(0, 3).join(' ')}, against one of them`);
  const hosts = Array.from({ length: CORES }, (_, i) =>
    startGateway({
      ...gatewayEnv,
      BENCH_STORE_URL: `redis://127.0.0.1:${redis.port}`,
      BENCH_SHARED_BUDGET: String(CORES_BUDGET_USD),
      BENCH_HOST_ID: `bench-${i}`,
    }),
  );
  try {
    await Promise.all(hosts.map((host) => request(host, null, 'ready', 20_000)));
    /** One key per process in each group: `bench` (a budget of its own, as the main key) and `shared`. */
    const own = [];
    const shared = [];
    for (const host of hosts) {
      own.push((await request(host, { type: 'mint', n: 1, budgetUsd: 1e6 }, 'minted')).keys[0]);
      shared.push((await request(host, { type: 'mint', n: 1, group: 'shared' }, 'minted')).keys[0]);
    }
    const headers = { ...BASE_HEADERS, 'x-api-key': PLACEHOLDER };
    const run = (keys, durationMs) =>
      request(
        loadgen,
        {
          type: 'run',
          target: { socketPaths: keys.map((k) => k.socketPath) },
          path: '/v1/messages',
          mode: 'json',
          concurrency: 16,
          headers,
          body: REQUEST_BODY,
          durationMs,
        },
        'result',
        durationMs + 60_000,
      );
    const cpuUs = async () => {
      const usages = await Promise.all(hosts.map((host) => request(host, { type: 'cpu' }, 'cpu')));
      return usages.reduce((sum, { cpu }) => sum + cpu.user + cpu.system, 0);
    };
    const mismatchesBefore = (await request(upstream, { type: 'stats' }, 'stats')).stats.keyMismatches;

    // Throughput: every process primed first, as the main gateway is.
    await run(own, PRIME_MS);
    const variants = { one: own.slice(0, 1), all: own };
    /** @type {Record<string, { rps: number, cpuUs: number, errors: number }[]>} */
    const rounds = { one: [], all: [] };
    for (let i = 0; i < CORES_ROUNDS; i++) {
      for (const [name, keys] of Object.entries(variants)) {
        const before = await cpuUs();
        const { result } = await run(keys, BARE_WINDOW_MS);
        const used = (await cpuUs()) - before;
        rounds[name].push({ rps: result.rps, cpuUs: used / Math.max(1, result.requests), errors: result.errors });
      }
    }
    const rows = Object.entries(rounds).map(([name, list]) => ({
      workload: `cores ${name} c16`,
      path: 'socket',
      processes: name === 'one' ? 1 : CORES,
      rps: median(list.map((x) => x.rps)),
      cpuPerRequestUs: { gateway: median(list.map((x) => x.cpuUs)) },
      errors: list.reduce((sum, x) => sum + x.errors, 0),
      // Counted over the whole part, on the row of all the processes.
      keyMismatches: 0,
      rounds: list,
    }));
    const throughputRatio = median(rounds.all.map((x, i) => x.rps / rounds.one[i].rps));

    // Correctness: the shared budget, spent to its end through every process at once.
    await waitForStore(hosts, 'more cores');
    const { result: spending } = await run(shared, QUICK ? 1500 : 3000);
    const { storeUsd, ledgersUsd, perHostUsd } = await sharedSpend(hosts);
    const answered = spending.statuses['200'] ?? 0;
    const agree = Math.abs(storeUsd - ledgersUsd) <= 1e-9;
    const withinBudget = storeUsd <= CORES_BUDGET_USD + 1e-12;
    // Refusals for budget_exhausted say the budget was reached, so the two checks above meant something.
    const exhausted = answered > 0 && (spending.statuses['402'] ?? 0) > 0;
    const mismatches = (await request(upstream, { type: 'stats' }, 'stats')).stats.keyMismatches - mismatchesBefore;
    const summary = {
      available: true,
      redis: redis.version,
      processes: CORES,
      rounds: CORES_ROUNDS,
      windowMs: BARE_WINDOW_MS,
      throughputRatio,
      budget: {
        budgetUsd: CORES_BUDGET_USD,
        answered,
        statuses: spending.statuses,
        ledgersUsd,
        storeUsd,
        perHostUsd,
        agree,
        withinBudget,
        exhausted,
        held: agree && withinBudget && exhausted,
      },
      keyMismatches: mismatches,
    };
    rows[1].keyMismatches = mismatches;
    for (const row of rows) {
      console.log(
        `  ${row.workload.padEnd(15)} ${row.processes} process(es)  ${f(row.rps, 0)} req/s  gw CPU ${f(row.cpuPerRequestUs.gateway, 0)} µs/call${row.errors ? `  ERRORS ${row.errors}` : ''}`,
      );
    }
    const b = summary.budget;
    console.log(
      `  ${CORES} processes against 1: ${f(throughputRatio, 2)}x req/s; shared budget $${CORES_BUDGET_USD}: ${answered} calls answered (${JSON.stringify(b.statuses)}), store $${f(b.storeUsd, 6)}, ledgers $${f(b.ledgersUsd, 6)}` +
        (b.held ? '' : '  MISMATCH'),
    );
    return { summary, rows };
  } finally {
    await Promise.all(hosts.map((host) => stop(host)));
    await stopRedisServer(redis);
  }
}

/**
 * The cost of telemetry on the hot path: two gateways side by side, one without telemetry and one with
 * BENCH_TELEMETRY=1 (Prometheus endpoint scraped each second, OTLP traces to a sink that answers 200),
 * json c1 and c16 through a key's socket, windows alternated off, on, off, on. Per variant: req/s and
 * p50/p99 averaged over its windows, gateway CPU per request over all of them.
 * @param {import('node:child_process').ChildProcess} loadgen
 * @param {Record<string, string>} gatewayEnv
 */
const TELEMETRY_VARIANTS = ['off', 'metrics', 'all'];

async function measureTelemetry(loadgen, gatewayEnv) {
  console.log(`bench: telemetry off, metrics only, metrics + traces; socket path, ${TELEMETRY_ROUNDS} alternated windows each`);
  const hosts = {
    off: startGateway(gatewayEnv),
    metrics: startGateway({ ...gatewayEnv, BENCH_TELEMETRY: 'metrics' }),
    all: startGateway({ ...gatewayEnv, BENCH_TELEMETRY: 'all' }),
  };
  try {
    const keys = {};
    for (const [name, gw] of Object.entries(hosts)) {
      await request(gw, null, 'ready', 20_000);
      [keys[name]] = (await request(gw, { type: 'mint', n: 1 }, 'minted')).keys;
    }
    const headers = { ...BASE_HEADERS, 'x-api-key': PLACEHOLDER };
    const run = (name, concurrency, durationMs) =>
      request(
        loadgen,
        {
          type: 'run',
          target: { socketPaths: [keys[name].socketPath] },
          path: '/v1/messages',
          mode: 'json',
          concurrency,
          headers,
          body: REQUEST_BODY,
          durationMs,
        },
        'result',
        durationMs + 60_000,
      );
    const rows = [];
    const summary = { available: true, rounds: TELEMETRY_ROUNDS, durationMs: DURATION };
    for (const concurrency of [1, 16]) {
      const windows = { off: [], metrics: [], all: [] };
      for (let round = 0; round < TELEMETRY_ROUNDS; round++) {
        for (const name of TELEMETRY_VARIANTS) {
          const gw = hosts[name];
          await run(name, concurrency, WARMUP);
          const before = (await request(gw, { type: 'cpu' }, 'cpu')).cpu;
          const { result } = await run(name, concurrency, DURATION);
          const after = (await request(gw, { type: 'cpu' }, 'cpu')).cpu;
          windows[name].push({ result, cpuUs: after.user + after.system - before.user - before.system });
        }
      }
      const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
      const byName = {};
      for (const name of TELEMETRY_VARIANTS) {
        const ws = windows[name];
        const requests = ws.reduce((sum, w) => sum + w.result.requests, 0);
        const row = {
          workload: `telemetry ${name} c${concurrency}`,
          path: 'socket',
          telemetry: name,
          concurrency,
          requests,
          errors: ws.reduce((sum, w) => sum + w.result.errors, 0),
          rps: mean(ws.map((w) => w.result.rps)),
          latency: { p50: mean(ws.map((w) => w.result.latency.p50)), p99: mean(ws.map((w) => w.result.latency.p99)) },
          cpuPerRequestUs: { gateway: ws.reduce((sum, w) => sum + w.cpuUs, 0) / Math.max(1, requests) },
          windows: ws.map((w) => ({ rps: w.result.rps, p50: w.result.latency.p50, p99: w.result.latency.p99 })),
        };
        rows.push(row);
        byName[name] = row;
        console.log(
          `  json c${String(concurrency).padEnd(3)} telemetry ${name.padEnd(7)} ${f(row.rps, 0).padStart(7)} req/s  p50 ${f(row.latency.p50)} p99 ${f(row.latency.p99)} ms  gw CPU ${f(row.cpuPerRequestUs.gateway, 0)} µs/req` +
            (row.errors ? `  ERRORS ${row.errors}` : ''),
        );
      }
      const { off } = byName;
      const against = (on) => ({
        rpsRatio: on.rps / off.rps,
        addedP50Ms: on.latency.p50 - off.latency.p50,
        addedP99Ms: on.latency.p99 - off.latency.p99,
        gatewayCpuRatio: on.cpuPerRequestUs.gateway / off.cpuPerRequestUs.gateway,
        addedGatewayCpuUs: on.cpuPerRequestUs.gateway - off.cpuPerRequestUs.gateway,
      });
      summary[`c${concurrency}`] = { metrics: against(byName.metrics), all: against(byName.all) };
    }
    // Evidence the outputs were live: scrapes done and OTLP exports the sink answered.
    summary.outputs = (await request(hosts.all, { type: 'telemetry' }, 'telemetry')).telemetry;
    console.log(`  telemetry outputs during the run: ${JSON.stringify(summary.outputs)}`);
    return { summary, rows };
  } finally {
    await Promise.all(Object.values(hosts).map((host) => stop(host)));
  }
}

/** `--only PART`: the upstream, the load generator and that part; printed, nothing written. */
async function onlyPart() {
  const { child: upstream, url: upstreamUrl } = await startUpstream();
  const loadgen = start(path.join(here, 'loadgen.mjs'));
  await request(loadgen, null, 'ready', 10_000);
  const gatewayEnv = { BENCH_UPSTREAM_URL: upstreamUrl, BENCH_REAL_KEY: REAL_KEY };
  let lines;
  if (ONLY === 'telemetry') {
    const { summary, rows } = await measureTelemetry(loadgen, gatewayEnv);
    lines = renderTelemetry({ telemetry: summary, workloads: rows });
  } else if (ONLY === 'cores') {
    const { summary, rows } = await measureCores(loadgen, upstream, gatewayEnv);
    lines = renderCores({ cores: summary, workloads: rows });
  } else {
    const { summary, rows } = await measureSharedBudget(loadgen, gatewayEnv);
    lines = renderSharedBudget({ sharedBudget: summary, workloads: rows });
  }
  await stop(loadgen);
  await stop(upstream);
  console.log(`\n${lines.join('\n')}\n\nbench: --only: bench/results.json left as it was`);
}

async function main() {
  const startedAt = new Date();
  const machine = {
    nproc: os.availableParallelism(),
    cpu: os.cpus()[0]?.model?.trim() ?? 'unknown',
    node: process.version,
    kernel: os.release(),
    memGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    fdLimit: (() => {
      const m = /Max open files\s+(\d+)/.exec(readFileSync('/proc/self/limits', 'utf8'));
      return m ? Number(m[1]) : undefined;
    })(),
  };
  console.log(`bench: ${machine.nproc} cores, ${machine.cpu}, Node ${machine.node}, fd limit ${machine.fdLimit}`);
  console.log(`bench: ${DURATION} ms per workload after ${WARMUP} ms warm-up${PROFILE ? ', then gateway CPU profiles' : ''}`);

  const { child: upstream, url: upstreamUrl } = await startUpstream();
  // What another gateway's operator points it at (--other), printed before any workload.
  console.log(`bench: fake upstream at ${upstreamUrl}, key ${REAL_KEY}`);
  const gatewayEnv = { BENCH_UPSTREAM_URL: upstreamUrl, BENCH_REAL_KEY: REAL_KEY };
  /** @type {Record<string, any>} */
  const results = {
    startedAt: startedAt.toISOString(),
    machine,
    settings: {
      durationMs: DURATION,
      warmupMs: WARMUP,
      primeMs: PRIME_MS,
      streamEvents: STREAM_EVENTS,
      pacedEvents: PACED_EVENTS,
      paceMs: PACE_MS,
      subset: SUBSET,
    },
    paths: {},
    workloads: [],
    keys: {},
  };

  // --- Memory, mint and revoke: a fresh gateway that has never served a request. -------------
  const maxKeys = Math.max(...MANY_KEYS);
  if (machine.fdLimit !== undefined && machine.fdLimit < maxKeys + 1000) {
    console.log(`bench: fd limit ${machine.fdLimit} is too low for ${maxKeys} keys; run through \`make bench\` (raises it)`);
  }
  {
    console.log('bench: memory per key, mint and revoke (fresh gateway process)');
    const gw = startGateway(gatewayEnv, ['--expose-gc']);
    await request(gw, null, 'ready', 20_000);
    const idle = (await request(gw, { type: 'mem' }, 'mem')).mem;
    const memory = { idle: { keys: 0, rss: idle.rss, heapUsed: idle.heapUsed, external: idle.external } };
    let live = [];
    const mintTimes = [];
    for (const target of MANY_KEYS) {
      const reply = await request(gw, { type: 'mint', n: target - live.length }, 'minted', 300_000);
      live = live.concat(reply.keys);
      mintTimes.push(...reply.times);
      const mem = (await request(gw, { type: 'mem' }, 'mem')).mem;
      memory[target] = {
        keys: target,
        rss: mem.rss,
        heapUsed: mem.heapUsed,
        rssPerKey: (mem.rss - idle.rss) / target,
        heapPerKey: (mem.heapUsed + mem.external - idle.heapUsed - idle.external) / target,
      };
      console.log(`  ${target} keys: RSS +${f((mem.rss - idle.rss) / target / 1024, 2)} KiB/key, heap +${f(memory[target].heapPerKey / 1024, 2)} KiB/key`);
    }
    const revoked = await request(gw, { type: 'revoke', ids: live.map((k) => k.id) }, 'revoked', 300_000);
    results.keys = {
      memory,
      mint: { n: mintTimes.length, p50Ms: quantile(mintTimes, 0.5), p99Ms: quantile(mintTimes, 0.99) },
      revoke: { n: revoked.times.length, p50Ms: quantile(revoked.times, 0.5), p99Ms: quantile(revoked.times, 0.99) },
    };
    await stop(gw);
  }

  // --- The gateway under load, the shim, Portkey, the load generator. --------------------------
  const profileDir = path.join(here, 'profiles');
  if (PROFILE) {
    rmSync(profileDir, { recursive: true, force: true });
    mkdirSync(profileDir, { recursive: true });
  }
  // The egress destination, and the rule that lets the bench group's keys (the main key) reach it.
  const site = await startSite();
  if (!site.available) console.log(`bench: egress: not available (${site.reason})`);
  const egress = site.available
    ? { hosts: { [SITE_HOST]: ['127.0.0.1'] }, groups: { bench: [`${SITE_HOST}:${site.httpsPort}`, `${SITE_HOST}:${site.httpPort}`] } }
    : undefined;
  const gw = startGateway(egress ? { ...gatewayEnv, BENCH_EGRESS: JSON.stringify(egress) } : gatewayEnv, ['--expose-gc']);
  results.gatewayEntry = (await request(gw, null, 'ready', 20_000)).entry;
  const idleMem = (await request(gw, { type: 'mem' }, 'mem')).mem;
  // Budgeted like a production key (never reached): its calls reserve and settle, as they would.
  const [mainKey] = (await request(gw, { type: 'mint', n: 1, budgetUsd: 1e6 }, 'minted')).keys;
  const shim = await startShim(mainKey.socketPath);
  const bare = await startBare(gatewayEnv);
  const portkey = await startPortkey();
  const other = await checkOther();
  const loadgen = start(path.join(here, 'loadgen.mjs'));
  await request(loadgen, null, 'ready', 10_000);

  /** @type {Record<string, { target: object, prefix?: string, headers: Record<string, string>, pids: [string, number | undefined][] }>} */
  const paths = {
    direct: { target: { origin: upstreamUrl }, headers: { ...BASE_HEADERS, 'x-api-key': REAL_KEY }, pids: [] },
    bare: { target: { socketPaths: [bare.socketPath] }, headers: { ...BASE_HEADERS, 'x-api-key': PLACEHOLDER }, pids: [['bare', bare.child.pid]] },
    socket: { target: { socketPaths: [mainKey.socketPath] }, headers: { ...BASE_HEADERS, 'x-api-key': PLACEHOLDER }, pids: [['gateway', gw.pid]] },
  };
  if (shim.available) {
    paths.shim = {
      target: { origin: `http://127.0.0.1:${shim.port}` },
      headers: { ...BASE_HEADERS, 'x-api-key': PLACEHOLDER },
      pids: [
        ['gateway', gw.pid],
        ['shim', shim.child.pid],
      ],
    };
  }
  if (portkey.available) {
    paths.portkey = {
      target: { origin: `http://127.0.0.1:${portkey.port}` },
      headers: { ...BASE_HEADERS, 'x-api-key': REAL_KEY, 'x-portkey-provider': 'anthropic', 'x-portkey-custom-host': `${upstreamUrl}/v1` },
      pids: [['portkey', portkey.child.pid]],
    };
  }
  if (other.available) {
    paths.other = {
      target: { origin: other.url.origin },
      prefix: other.url.pathname.replace(/\/$/, ''),
      headers: { ...BASE_HEADERS, ...OTHER_HEADERS },
      pids: OTHER_PID ? [['other', OTHER_PID]] : [],
    };
  }
  results.paths = {
    direct: { available: true },
    bare: { available: true },
    socket: { available: true },
    shim: shim.available ? { available: true, file: path.relative(root, shim.file) } : { available: false, reason: shim.reason },
    portkey: portkey.available ? { available: true } : { available: false, reason: portkey.reason },
  };
  if (OTHER_URL) {
    results.paths.other = other.available
      ? { available: true, url: other.url.href, headers: Object.keys(OTHER_HEADERS), cpuMeasured: OTHER_PID !== undefined }
      : { available: false, reason: other.reason };
  }
  for (const [name, info] of Object.entries(results.paths)) if (!info.available) console.log(`bench: ${name}: not available (${info.reason})`);

  let upstreamStats = (await request(upstream, { type: 'stats' }, 'stats')).stats;

  /**
   * One measured window of a loadgen command after a warm-up one, with the CPU each actor (`pids`,
   * and the load generator) spent in it per operation, and what else kept the machine busy.
   */
  async function measureWindow(cmd, pids, warmup = cmd, durationMs = DURATION) {
    await request(loadgen, { ...warmup, durationMs: WARMUP }, 'result', WARMUP + 60_000);
    const actors = [...pids, ['loadgen', loadgen.pid]];
    const before = Object.fromEntries(actors.map(([n, pid]) => [n, cpuMs(pid)]));
    const machineBefore = machineBusyMs();
    const gwCpuBefore = pids.some(([n]) => n === 'gateway') ? (await request(gw, { type: 'cpu' }, 'cpu')).cpu : undefined;
    const { result } = await request(loadgen, { ...cmd, durationMs }, 'result', durationMs + 60_000);
    const gwCpuAfter = gwCpuBefore ? (await request(gw, { type: 'cpu' }, 'cpu')).cpu : undefined;
    const after = Object.fromEntries(actors.map(([n, pid]) => [n, cpuMs(pid)]));
    const machineMs = machineBusyMs() - machineBefore;
    const oursMs = Object.keys(after).reduce((sum, k) => sum + after[k] - before[k], 0);
    // Anything else busy on the machine during the window (other users' tests, the runner itself).
    const otherCores = Math.max(0, (machineMs - oursMs) / result.elapsedMs);
    const n = Math.max(1, result.requests);
    const cpuPerRequestUs = {};
    for (const name of Object.keys(before)) cpuPerRequestUs[name] = ((after[name] - before[name]) * 1000) / n;
    if (gwCpuBefore) {
      // The gateway reports its own CPU with microsecond resolution: prefer it over /proc.
      cpuPerRequestUs.gateway = (gwCpuAfter.user + gwCpuAfter.system - gwCpuBefore.user - gwCpuBefore.system) / n;
    }
    // The kernel's share (system time: socket reads and writes) against the gateway's own code (user).
    const gatewaySystemShare = gwCpuBefore
      ? (gwCpuAfter.system - gwCpuBefore.system) / Math.max(1, gwCpuAfter.user + gwCpuAfter.system - gwCpuBefore.user - gwCpuBefore.system)
      : undefined;
    const cpuCoresBusy = Object.fromEntries(Object.keys(before).map((k) => [k, (cpuPerRequestUs[k] * n) / 1000 / result.elapsedMs]));
    return { result, cpuPerRequestUs, cpuCoresBusy, otherCores, gatewaySystemShare };
  }

  /** The load generator's command for a workload on a path. */
  function commandFor(workload, pathName, extra = {}) {
    const p = paths[pathName];
    return {
      type: 'run',
      target: extra.target ?? p.target,
      path: `${p.prefix ?? ''}/v1/messages`,
      mode: workload.mode,
      concurrency: workload.concurrency,
      headers: { ...p.headers, ...(extra.headers ?? {}) },
      body: workload.body ?? (workload.mode === 'json' ? REQUEST_BODY : STREAM_BODY),
    };
  }

  async function measure(workload, pathName, extra = {}) {
    const p = paths[pathName];
    const cmd = commandFor(workload, pathName, extra);
    const { result, cpuPerRequestUs, cpuCoresBusy, otherCores } = await measureWindow(cmd, [...p.pids, ['upstream', upstream.pid]]);
    const stats = (await request(upstream, { type: 'stats' }, 'stats')).stats;
    const mismatches = stats.keyMismatches - upstreamStats.keyMismatches;
    upstreamStats = stats;
    const row = { workload: workload.name, path: pathName, ...result, cpuPerRequestUs, cpuCoresBusy, otherCores, keyMismatches: mismatches };
    results.workloads.push(row);
    const lat = result.latency;
    console.log(
      `  ${workload.name.padEnd(16)} ${pathName.padEnd(8)} ${f(result.rps, 0).padStart(7)} req/s  p50 ${f(lat?.p50)} p99 ${f(lat?.p99)} ms` +
        (result.errors ? `  ERRORS ${result.errors} ${JSON.stringify(result.statuses)} ${result.errorSample ?? ''}` : '') +
        (mismatches ? `  KEY MISMATCHES ${mismatches}` : '') +
        (otherCores > 0.15 ? `  (other load on the machine: ${f(otherCores, 2)} cores)` : ''),
    );
    return row;
  }

  const workloads = [
    { name: 'json c1', mode: 'json', concurrency: 1 },
    { name: 'json c16', mode: 'json', concurrency: 16 },
    { name: 'json c64', mode: 'json', concurrency: 64 },
    { name: 'agent json c16', mode: 'json', concurrency: 16, body: AGENT_REQUEST_BODY },
    { name: 'stream c1', mode: 'stream', concurrency: 1 },
    { name: 'stream c16', mode: 'stream', concurrency: 16 },
    { name: 'stream c64', mode: 'stream', concurrency: 64 },
    { name: 'paced c1', mode: 'paced', concurrency: 1 },
    // The stall count's workloads: the upstream writes steadily, so a gap > 100 ms is the path's doing
    // (at stream c64 even direct stalls on 2 cores: the upstream itself falls behind).
    { name: 'paced c16', mode: 'paced', concurrency: 16 },
    { name: 'paced c64', mode: 'paced', concurrency: 64 },
  ];
  // Priming: every path first serves small and agent JSON calls and streams at c16 that are not
  // measured, so that the windows measure running processes, not a JIT compiling their code in their
  // first seconds. The gateway has far more code to compile than the bare relay or the upstream:
  // unprimed, its first windows (json c1 on the socket path) cost up to three times its steady
  // state, and the socket path measured slower than the shim path behind it (docs/performance.md).
  console.log(`bench: priming each path (${PRIME_MS} ms each of small json, agent json and stream calls at c16, not measured)`);
  const priming = workloads.filter((w) => ['json c16', 'agent json c16', 'stream c16'].includes(w.name));
  for (const name of Object.keys(paths)) {
    for (const workload of priming) {
      if (name === 'portkey' && workload.mode !== 'json') continue;
      await request(loadgen, { ...commandFor(workload, name), durationMs: PRIME_MS }, 'result', PRIME_MS + 60_000);
    }
  }
  upstreamStats = (await request(upstream, { type: 'stats' }, 'stats')).stats;
  console.log('bench: workloads (each path in turn)');
  for (const workload of workloads) {
    const extra = workload.mode === 'paced' ? { headers: { 'x-bench-events': String(PACED_EVENTS), 'x-bench-pace-ms': String(PACE_MS) } } : {};
    for (const name of Object.keys(paths)) {
      // Portkey's own limits: its Anthropic /v1/messages stream fails on Node 22 (see README); its
      // JSON path is what the issue compares against.
      if (name === 'portkey' && workload.mode !== 'json') continue;
      await measure(workload, name, extra);
    }
  }
  // The gateway against the bare relay (issue 20's ratios), alternated: bare, socket, bare, socket...
  // One window of each is at the mercy of whatever else the machine did in it (20-30% between runs
  // here); in windows side by side, drift falls on both alike. The figure is the median of the
  // rounds' ratios, shown with their range.
  console.log(`bench: the gateway against the bare relay, ${BARE_ROUNDS} alternated rounds of ${BARE_WINDOW_MS} ms windows`);
  results.againstBare = { rounds: BARE_ROUNDS, windowMs: BARE_WINDOW_MS, workloads: [] };
  for (const workload of workloads.filter((w) => ['json c1', 'json c16', 'agent json c16', 'stream c1', 'stream c16'].includes(w.name))) {
    const rounds = [];
    for (let round = 0; round < BARE_ROUNDS; round++) {
      const window = async (name, actor) => {
        const { result, cpuPerRequestUs } = await measureWindow(commandFor(workload, name), paths[name].pids, undefined, BARE_WINDOW_MS);
        const events = workload.mode === 'json' ? 1 : result.eventsPerStream;
        return { rps: result.rps, cpuUs: cpuPerRequestUs[actor] / events, errors: result.errors };
      };
      const bareWindow = await window('bare', 'bare');
      const gatewayWindow = await window('socket', 'gateway');
      rounds.push({ bare: bareWindow, gateway: gatewayWindow, cpuRatio: gatewayWindow.cpuUs / bareWindow.cpuUs, rpsRatio: gatewayWindow.rps / bareWindow.rps });
    }
    const row = {
      workload: workload.name,
      unit: workload.mode === 'json' ? 'request' : 'event',
      rounds,
      gatewayCpuUs: median(rounds.map((x) => x.gateway.cpuUs)),
      bareCpuUs: median(rounds.map((x) => x.bare.cpuUs)),
      cpuRatio: median(rounds.map((x) => x.cpuRatio)),
      cpuRatioRange: [Math.min(...rounds.map((x) => x.cpuRatio)), Math.max(...rounds.map((x) => x.cpuRatio))],
      rpsRatio: median(rounds.map((x) => x.rpsRatio)),
      rpsRatioRange: [Math.min(...rounds.map((x) => x.rpsRatio)), Math.max(...rounds.map((x) => x.rpsRatio))],
      errors: rounds.reduce((sum, x) => sum + x.bare.errors + x.gateway.errors, 0),
    };
    results.againstBare.workloads.push(row);
    console.log(
      `  ${workload.name.padEnd(16)} CPU per ${row.unit} ${f(row.gatewayCpuUs, 2)} vs ${f(row.bareCpuUs, 2)} µs, ratio ${f(row.cpuRatio, 2)} (${f(row.cpuRatioRange[0], 2)}-${f(row.cpuRatioRange[1], 2)}); throughput ${f(row.rpsRatio, 2)}x` +
        (row.errors ? `  ERRORS ${row.errors}` : ''),
    );
  }
  // Added latency at c1 (issue 20's p50 and p99 targets), alternated the same way: direct, socket,
  // shim and bare side by side in each round, so that each round's added latency is over a direct
  // window measured a few seconds away, not minutes.
  const latencyPaths = ['direct', 'socket', 'shim', 'bare'].filter((name) => paths[name]);
  console.log(`bench: added latency at json c1, ${BARE_ROUNDS} alternated rounds of ${BARE_WINDOW_MS} ms windows (${latencyPaths.join(', ')})`);
  const jsonC1 = workloads.find((w) => w.name === 'json c1');
  const latencyRounds = [];
  for (let round = 0; round < BARE_ROUNDS; round++) {
    const windows = {};
    for (const name of latencyPaths) {
      await request(loadgen, { ...commandFor(jsonC1, name), durationMs: LATENCY_WARMUP_MS }, 'result', 60_000);
      const { result } = await request(loadgen, { ...commandFor(jsonC1, name), durationMs: BARE_WINDOW_MS }, 'result', BARE_WINDOW_MS + 60_000);
      windows[name] = { p50: result.latency?.p50, p99: result.latency?.p99, errors: result.errors };
    }
    latencyRounds.push(windows);
  }
  results.latencyAtC1 = { rounds: latencyRounds, windowMs: BARE_WINDOW_MS };
  for (const name of latencyPaths.filter((p) => p !== 'direct')) {
    const added = (q) => median(addedInRounds(latencyRounds, name, q));
    const errors = latencyRounds.reduce((sum, w) => sum + w[name].errors + w.direct.errors, 0);
    console.log(
      `  ${name.padEnd(8)} added p50 ${fs(added('p50'))} ms, p99 ${fs(added('p99'))} ms (medians of the rounds)` + (errors ? `  ERRORS ${errors}` : ''),
    );
  }
  if (portkey.available) {
    // Portkey's streaming failure, recorded as evidence rather than assumed.
    const { result: probe } = await request(
      loadgen,
      {
        type: 'run',
        target: paths.portkey.target,
        path: '/v1/messages',
        mode: 'stream',
        concurrency: 1,
        headers: paths.portkey.headers,
        body: STREAM_BODY,
        durationMs: 200,
        maxRequests: 3,
      },
      'result',
    );
    results.paths.portkey.streaming = { statuses: probe.statuses, errors: probe.errors };
    console.log(`  portkey stream probe: statuses ${JSON.stringify(probe.statuses)}`);
  }

  // --- Egress: the same site reached directly and through the key's socket (and the shim). ------
  /** @type {Record<string, { tunnel: object, http: { target: object, path: string }, pids: [string, number | undefined][] }>} */
  const egressPaths = {};
  if (site.available) {
    const authority = `${SITE_HOST}:${site.httpsPort}`;
    const absolute = `http://${SITE_HOST}:${site.httpPort}/small`;
    egressPaths.direct = {
      tunnel: { host: '127.0.0.1', port: site.httpsPort },
      http: { target: { origin: `http://127.0.0.1:${site.httpPort}` }, path: '/small' },
      pids: [],
    };
    egressPaths.socket = {
      tunnel: { proxy: { path: mainKey.socketPath }, authority },
      http: { target: paths.socket.target, path: absolute },
      pids: paths.socket.pids,
    };
    if (shim.available) {
      egressPaths.shim = {
        tunnel: { proxy: { host: '127.0.0.1', port: shim.port }, authority },
        http: { target: paths.shim.target, path: absolute },
        pids: paths.shim.pids,
      };
    }
    results.egress = { available: true, host: SITE_HOST, rule: egress?.groups.bench, downloadBytes: DOWNLOAD_BYTES, parallel: DOWNLOAD_PARALLEL };
    console.log(`bench: egress to ${SITE_HOST} (pinned to 127.0.0.1): TLS connects, downloads, plain HTTP GET`);
    const tlsOf = (e) => ({ target: e.tunnel, servername: SITE_HOST, ca: site.ca });
    const egressWorkloads = [
      { name: 'tls connect c1', cmd: (e) => ({ type: 'connect', ...tlsOf(e), concurrency: 1 }) },
      {
        name: 'download c1',
        cmd: (e) => ({ type: 'download', ...tlsOf(e), concurrency: 1, size: DOWNLOAD_BYTES }),
        warmup: (e) => ({ type: 'download', ...tlsOf(e), concurrency: 1, size: DOWNLOAD_BYTES / 8 }),
      },
      {
        name: `download c${DOWNLOAD_PARALLEL}`,
        cmd: (e) => ({ type: 'download', ...tlsOf(e), concurrency: DOWNLOAD_PARALLEL, size: DOWNLOAD_BYTES / DOWNLOAD_PARALLEL }),
        warmup: (e) => ({ type: 'download', ...tlsOf(e), concurrency: DOWNLOAD_PARALLEL, size: DOWNLOAD_BYTES / 8 / DOWNLOAD_PARALLEL }),
      },
      { name: 'http get c1', cmd: (e) => ({ type: 'run', mode: 'json', method: 'GET', concurrency: 1, headers: { 'user-agent': 'bench/1' }, ...e.http }) },
    ];
    for (const w of egressWorkloads) {
      for (const [name, e] of Object.entries(egressPaths)) {
        const pids = [...e.pids, ['site', site.child.pid]];
        const { result, cpuPerRequestUs, cpuCoresBusy, otherCores, gatewaySystemShare } = await measureWindow(w.cmd(e), pids, w.warmup?.(e));
        const row = { workload: w.name, path: name, egress: true, ...result, cpuPerRequestUs, cpuCoresBusy, otherCores, gatewaySystemShare };
        results.workloads.push(row);
        const what =
          result.mbps !== undefined
            ? `${f(result.mbps, 0).padStart(7)} MB/s `
            : `${f(result.rps, 0).padStart(7)} op/s  p50 ${f(result.latency?.p50)} p99 ${f(result.latency?.p99)} ms`;
        console.log(
          `  ${w.name.padEnd(16)} ${name.padEnd(8)} ${what}` +
            (result.errors ? `  ERRORS ${result.errors} ${result.errorSample ?? JSON.stringify(result.statuses)}` : '') +
            (otherCores > 0.15 ? `  (other load on the machine: ${f(otherCores, 2)} cores)` : ''),
        );
      }
    }
  } else {
    results.egress = { available: false, reason: site.reason };
  }

  // --- Many live keys: the small workload over a random subset of them. ----------------------
  console.log(`bench: many live keys (json c16 over a random ${SUBSET} of them)`);
  let live = [mainKey];
  const manyMintTimes = [];
  for (const target of MANY_KEYS) {
    const reply = await request(gw, { type: 'mint', n: target - live.length }, 'minted', 300_000);
    live = live.concat(reply.keys);
    manyMintTimes.push(...reply.times);
    const shuffled = live.map((k) => k.socketPath);
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
    }
    const row = await measure({ name: `keys ${target} c16`, mode: 'json', concurrency: 16 }, 'socket', { target: { socketPaths: shuffled.slice(0, SUBSET) } });
    row.liveKeys = target;
  }
  results.keys.mintUnderLoadGateway = { n: manyMintTimes.length, p50Ms: quantile(manyMintTimes, 0.5), p99Ms: quantile(manyMintTimes, 0.99) };
  const busyMem = (await request(gw, { type: 'mem' }, 'mem')).mem;
  results.keys.gatewayIdle = { rss: idleMem.rss, heapUsed: idleMem.heapUsed };
  results.keys.gatewayAfterRun = { rss: busyMem.rss, heapUsed: busyMem.heapUsed, liveKeys: live.length };

  // --- Shared budget: its own gateway and redis-server. ------------------------------------------
  {
    const { summary, rows } = await measureSharedBudget(loadgen, gatewayEnv);
    results.sharedBudget = summary;
    results.workloads.push(...rows);
  }

  // --- Telemetry: two gateways of its own, off and on. -------------------------------------------
  {
    const { summary, rows } = await measureTelemetry(loadgen, gatewayEnv);
    results.telemetry = summary;
    results.workloads.push(...rows);
  }

  // --- More cores: gateways of its own sharing a store, and redis-server. ------------------------
  {
    const { summary, rows } = await measureCores(loadgen, upstream, gatewayEnv);
    results.cores = summary;
    results.workloads.push(...rows);
  }

  // --- Profiles: separate windows, after the measurements, so the profiler's cost is in no figure.
  if (PROFILE) {
    console.log('bench: gateway CPU profiles (socket path; the 10,000 keys are revoked first)');
    await request(gw, { type: 'revoke', ids: live.slice(1).map((k) => k.id) }, 'revoked', 300_000);
    results.profiles = {};
    const api = (mode, concurrency) => ({
      type: 'run',
      target: paths.socket.target,
      path: '/v1/messages',
      mode,
      concurrency,
      headers: paths.socket.headers,
      body: mode === 'json' ? REQUEST_BODY : STREAM_BODY,
    });
    /** @type {{ name: string, cmd: object }[]} */
    const profiled = [
      { name: 'json c1', cmd: api('json', 1) },
      { name: 'json c16', cmd: api('json', 16) },
      { name: 'stream c1', cmd: api('stream', 1) },
    ];
    if (egressPaths.socket) {
      const tunnel = { target: egressPaths.socket.tunnel, servername: SITE_HOST, ca: site.available ? site.ca : undefined, concurrency: 1 };
      profiled.push(
        { name: 'tls connect c1', cmd: { type: 'connect', ...tunnel } },
        { name: 'download c1', cmd: { type: 'download', ...tunnel, size: DOWNLOAD_BYTES } },
      );
    }
    for (const w of profiled) {
      const { cmd } = w;
      await request(loadgen, { ...cmd, durationMs: WARMUP }, 'result', WARMUP + 60_000);
      await request(gw, { type: 'profile-start' }, 'profile-started');
      const { result } = await request(loadgen, { ...cmd, durationMs: DURATION }, 'result', DURATION + 60_000);
      const file = path.join(profileDir, `${w.name.replaceAll(' ', '-')}.cpuprofile`);
      await request(gw, { type: 'profile-stop', file }, 'profile-stopped', 60_000);
      results.profiles[w.name] = { file: path.relative(root, file), requests: result.requests, rpsUnderProfiler: result.rps, ...summarizeProfile(file, 25) };
      console.log(`  ${w.name}: ${result.requests} requests profiled -> ${path.relative(root, file)}`);
    }
  }

  // --- Teardown. -------------------------------------------------------------------------------
  await stop(loadgen);
  if (shim.available) shim.child.kill('SIGTERM');
  if (portkey.available) {
    const pkErrors = portkey
      .stderr()
      .split('\n')
      .filter((l) => /error/i.test(l) && !/^\s+at /.test(l));
    results.paths.portkey.stderrErrors = [...new Set(pkErrors)].slice(0, 5);
    portkey.child.kill('SIGTERM');
  }
  await stop(gw, 60_000);
  await stop(bare.child);
  await stop(upstream);
  if (site.available) await stop(site.child);

  const report = render(results);
  console.log(`\n${report}`);
  writeFileSync(path.join(here, 'results.json'), JSON.stringify({ ...results, report }, null, 2));
  console.log(`\nbench: wrote bench/results.json`);
}

// ---------------------------------------------------------------------------------------------
// Report

function render(r) {
  const rows = r.workloads;
  const get = (w, p) => rows.find((x) => x.workload === w && x.path === p);
  const out = [];
  const m = r.machine;
  out.push(
    `Machine: ${m.nproc} cores, ${m.cpu}, Node ${m.node}, Linux ${m.kernel}. ${r.settings.durationMs} ms per workload after ${r.settings.warmupMs} ms warm-up; every actor is its own process, all on the same ${m.nproc} cores. Gateway: ${r.gatewayEntry}.`,
  );
  out.push('');
  const pathsShown = ['direct', 'bare', 'socket', 'shim', 'portkey', 'other'];
  const json = [];
  for (const w of ['json c1', 'json c16', 'json c64', 'agent json c16']) {
    const d = get(w, 'direct');
    for (const p of pathsShown) {
      const x = get(w, p);
      if (!x) {
        if (p === 'shim' && !r.paths.shim.available) json.push([w, p, 'not available', '', '', '', '', '', '', '', '']);
        continue;
      }
      json.push([
        w,
        p,
        f(x.rps, 0),
        p === 'direct' ? '1' : f(x.rps / d.rps, 2),
        f(x.latency.p50),
        f(x.latency.p99),
        p === 'direct' ? '' : fs(x.latency.p50 - d.latency.p50),
        p === 'direct' ? '' : fs(x.latency.p99 - d.latency.p99),
        gwCpu(x),
        `${f((x.cpuCoresBusy.loadgen ?? 0) * 100, 0)}%`,
        x.errors + (x.keyMismatches ? ` / ${x.keyMismatches} key` : ''),
      ]);
    }
  }
  out.push(
    `JSON request/response (POST /v1/messages, 304 B out): 105 B in, and ${f(Buffer.byteLength(AGENT_REQUEST_BODY) / 1024, 0)} KB in for \`agent json\` (a coding agent's request). Latency in ms.`,
  );
  out.push('');
  out.push(table(['workload', 'path', 'req/s', '× direct', 'p50', 'p99', '+p50', '+p99', 'proxy CPU µs/req', 'loadgen CPU', 'errors'], json));
  out.push('');

  const stream = [];
  for (const w of ['stream c1', 'stream c16', 'stream c64']) {
    const d = get(w, 'direct');
    for (const p of pathsShown) {
      const x = get(w, p);
      if (!x) {
        if (p === 'shim' && !r.paths.shim.available) stream.push([w, p, 'not available', '', '', '', '', '', '', '', '', '']);
        continue;
      }
      const us = (v) => f(v * 1000, 1);
      stream.push([
        w,
        p,
        f(x.rps, 0),
        f(x.ttfb.p50),
        p === 'direct' ? '' : fs(x.ttfb.p50 - d.ttfb.p50),
        f(x.latency.p50, 2),
        us(x.gaps.p50),
        us(x.gaps.p99),
        p === 'direct' ? '' : fs((x.gaps.p99 - d.gaps.p99) * 1000, 1),
        `${f(x.readsPerStream, 0)} / ${f(x.eventsPerStream, 0)}`,
        String(x.stalls ?? ''),
        gwCpu(x),
      ]);
    }
  }
  out.push(
    `Streaming: ${r.settings.streamEvents} SSE events per response, each its own write upstream, as fast as possible. TTFB and stream time in ms, gaps between consecutive events in µs.`,
  );
  out.push('');
  out.push(
    table(
      [
        'workload',
        'path',
        'streams/s',
        'TTFB p50',
        '+TTFB',
        'stream p50',
        'gap p50 µs',
        'gap p99 µs',
        '+gap p99 µs',
        'chunks / events',
        'stalls',
        'proxy CPU µs/stream',
      ],
      stream,
    ),
  );
  out.push('');

  const paced = [];
  for (const w of ['paced c1', 'paced c16', 'paced c64']) {
    const d = get(w, 'direct');
    for (const p of pathsShown) {
      const x = get(w, p);
      if (!x) continue;
      // A gateway that rewrites the events drops their send times: no delay to show.
      const delay = x.eventDelay ?? {};
      paced.push([
        w,
        p,
        f(delay.p50),
        f(delay.p99),
        p === 'direct' ? '' : fs(delay.p50 - d.eventDelay.p50),
        p === 'direct' ? '' : fs(delay.p99 - d.eventDelay.p99),
        `${f(x.readsPerStream, 0)} / ${f(x.eventsPerStream, 0)}`,
        `${x.stalls} of ${x.requests}`,
        gwCpu(x),
      ]);
    }
  }
  out.push(
    `Paced stream: ${r.settings.pacedEvents} events ${r.settings.paceMs} ms apart; delay = time the client read an event minus time the upstream wrote it (same monotonic clock), ms. Stalls: streams with a gap > 100 ms between events.`,
  );
  out.push('');
  out.push(table(['workload', 'path', 'event delay p50', 'p99', '+p50', '+p99', 'chunks / events', 'stalls', 'proxy CPU µs/stream'], paced));
  out.push('');

  const k = r.keys;
  const keyRows = [];
  const c16 = get('json c16', 'socket');
  keyRows.push(['1', f(c16.rps, 0), f(c16.latency.p50), f(c16.latency.p99), '', '']);
  for (const n of [1000, 10000]) {
    const x = get(`keys ${n} c16`, 'socket');
    const mem = k.memory[n];
    keyRows.push([
      String(n),
      x ? f(x.rps, 0) : '—',
      x ? f(x.latency.p50) : '—',
      x ? f(x.latency.p99) : '—',
      mem ? f(mem.rssPerKey / 1024, 2) : '—',
      mem ? f(mem.heapPerKey / 1024, 2) : '—',
    ]);
  }
  out.push(`Live keys (socket path, json c16; with many keys, each request goes to one of ${r.settings.subset} random keys).`);
  out.push(
    `Idle gateway RSS ${f(k.memory.idle.rss / 2 ** 20, 1)} MiB (0 keys, after GC). Mint p50 ${f(k.mint.p50Ms)} ms (p99 ${f(k.mint.p99Ms)}), revoke p50 ${f(k.revoke.p50Ms)} ms (p99 ${f(k.revoke.p99Ms)}), per key, one at a time, over ${k.mint.n} keys.`,
  );
  out.push('');
  out.push(table(['live keys', 'req/s', 'p50 ms', 'p99 ms', 'RSS KiB/key', 'heap KiB/key'], keyRows));
  out.push('');

  if (r.egress?.available) out.push(...renderEgress(r, get), '');
  else if (r.egress) out.push(`Egress: not available: ${r.egress.reason}`, '');
  if (r.sharedBudget) out.push(...renderSharedBudget(r), '');
  if (r.telemetry) out.push(...renderTelemetry(r), '');
  if (r.cores) out.push(...renderCores(r), '');

  const other = rows.map((x) => x.otherCores ?? 0);
  out.push(
    `Other load on the machine during the measured windows (CPU not used by the bench's processes): mean ${f(other.reduce((a, b) => a + b, 0) / other.length, 2)} cores, max ${f(Math.max(...other), 2)} cores.`,
  );
  out.push('');
  out.push(...renderAgainstBare(r, get), '');
  out.push('Targets (issues 7 and 20):');
  out.push('');
  out.push(table(['target', 'measured', 'met'], targets(r, get)));
  if (!r.paths.portkey.available) out.push(`\nPortkey: not available: ${r.paths.portkey.reason}`);
  if (r.paths.other) {
    const o = r.paths.other;
    out.push(
      o.available
        ? `\nother: ${o.url}${o.headers.length ? ` (headers added: ${o.headers.join(', ')})` : ''}; its CPU ${o.cpuMeasured ? 'from /proc' : 'not measured (no --other-pid): it counts as other load'}.`
        : `\nother: not available: ${o.reason}`,
    );
  }
  for (const [name, p] of Object.entries(r.profiles ?? {})) {
    out.push('');
    out.push(
      `Gateway CPU profile, ${name}, socket path (${p.file}; ${p.requests} ${unit(name)}s; self time, % of non-idle samples; ${f((p.busyMs / p.requests) * 1000, 0)} µs busy per ${unit(name)} on the main thread):`,
    );
    out.push('');
    out.push(
      table(
        ['self %', 'function', 'where'],
        p.top.slice(0, 12).map((t) => [f(t.selfPct, 1), t.name, t.where]),
      ),
    );
    out.push('');
    out.push(
      table(
        ['self %', 'by module'],
        p.byModule.slice(0, 8).map((t) => [f(t.selfPct, 1), t.module]),
      ),
    );
  }
  return out.join('\n');
}

/** The egress tables: TLS connect latency, tunnel throughput, plain HTTP through the proxy. */
function renderEgress(r, get) {
  const out = [];
  const e = r.egress;
  const shown = ['direct', 'socket', 'shim'];
  const mb = (bytes) => f(bytes / 1e6, 0);
  out.push(
    `Egress (issue 14): a loopback site reached as ${e.host} (egress.hosts pins it to 127.0.0.1; the bench group's rule: ${e.rule.join(', ')}). direct: TCP to 127.0.0.1 + TLS; socket: CONNECT on the key's socket, its 200, then TLS through the tunnel; shim: the same through shim/shim.mjs (what HTTPS_PROXY points at in a container). Self-signed P-256 certificate, a full TLS 1.3 handshake each time.`,
  );
  out.push('');
  const connect = [];
  const dc = get('tls connect c1', 'direct');
  for (const p of shown) {
    const x = get('tls connect c1', p);
    if (!x) continue;
    connect.push([
      p,
      f(x.rps, 0),
      f(x.latency.p50),
      f(x.latency.p99),
      p === 'direct' ? '' : fs(x.latency.p50 - dc.latency.p50),
      p === 'direct' ? '' : fs(x.latency.p99 - dc.latency.p99),
      x.proxyLatency ? `${f(x.proxyLatency.p50)} / ${f(x.proxyLatency.p99)}` : '',
      gwCpu(x),
      String(x.errors),
    ]);
  }
  out.push('Connect: open a connection, finish the TLS handshake, close; one at a time. Latency in ms.');
  out.push('');
  out.push(table(['path', 'connects/s', 'p50', 'p99', '+p50', '+p99', 'to 200 p50 / p99', 'proxy CPU µs/connect', 'errors'], connect));
  out.push('');
  const download = [];
  for (const w of ['download c1', `download c${e.parallel}`]) {
    const d = get(w, 'direct');
    for (const p of shown) {
      const x = get(w, p);
      if (!x) continue;
      // CPU per MB moved, per actor: what the relay costs next to the TLS at both ends.
      const perMb = (name) => (x.cpuPerRequestUs[name] * x.requests) / (x.bytes / 1e6);
      const relay = [
        x.cpuPerRequestUs.gateway !== undefined ? `gw ${f(perMb('gateway'), 0)}` : '',
        x.cpuPerRequestUs.shim !== undefined ? `shim ${f(perMb('shim'), 0)}` : '',
      ]
        .filter(Boolean)
        .join(' + ');
      download.push([
        w,
        p,
        f(x.mbps, 0),
        p === 'direct' ? '1' : f(x.mbps / d.mbps, 2),
        x.perConnection ? f(x.perConnection.p50, 0) : '—',
        `${x.requests} × ${mb(x.bytes / Math.max(1, x.requests))}`,
        relay ? `${relay}${x.gatewaySystemShare === undefined ? '' : ` (gw ${f(x.gatewaySystemShare * 100, 0)}% kernel)`}` : '—',
        `site ${f(perMb('site'), 0)} + loadgen ${f(perMb('loadgen'), 0)}`,
        String(x.errors),
      ]);
    }
  }
  out.push(
    `Download: GET of ${mb(e.downloadBytes)} MB (${e.downloadBytes / 2 ** 20} MiB) over HTTPS, one connection per download, back to back; c${e.parallel}: ${e.parallel} connections at once, ${mb(e.downloadBytes / e.parallel)} MB each. MB/s = 10^6 bytes of body per second over the window (handshakes included); per connection = while it transferred.`,
  );
  out.push('');
  out.push(
    table(['workload', 'path', 'MB/s', '× direct', 'per conn. MB/s p50', 'downloads × MB', 'relay CPU µs/MB', 'TLS ends CPU µs/MB', 'errors'], download),
  );
  out.push('');
  const plain = [];
  const dh = get('http get c1', 'direct');
  for (const p of shown) {
    const x = get('http get c1', p);
    if (!x) continue;
    plain.push([
      p,
      f(x.rps, 0),
      p === 'direct' ? '1' : f(x.rps / dh.rps, 2),
      f(x.latency.p50),
      f(x.latency.p99),
      p === 'direct' ? '' : fs(x.latency.p50 - dh.latency.p50),
      p === 'direct' ? '' : fs(x.latency.p99 - dh.latency.p99),
      gwCpu(x),
      String(x.errors),
    ]);
  }
  out.push(
    'Plain HTTP: GET /small (22 B), keep-alive client; direct in origin form to 127.0.0.1, through the proxy in absolute form (http://bench.test:PORT/small), which opens one upstream connection per request. c1, latency in ms.',
  );
  out.push('');
  out.push(table(['path', 'req/s', '× direct', 'p50', 'p99', '+p50', '+p99', 'proxy CPU µs/req', 'errors'], plain));
  return out;
}

/** The shared-budget table: a group budget held in Redis against a key budget held by the gateway. */
function renderSharedBudget(r) {
  const s = r.sharedBudget;
  if (!s.available) return [`Shared budget: not available: ${s.reason}`];
  const get = (budget) => r.workloads.find((x) => x.workload === `budget ${budget} c1`);
  const local = get('local');
  const rows = ['local', 'shared'].map((budget) => {
    const x = get(budget);
    return [
      budget,
      String(x.requests),
      f(x.latency.p50),
      f(x.latency.p99),
      budget === 'local' ? '' : fs(x.latency.p50 - local.latency.p50),
      budget === 'local' ? '' : fs(x.latency.p99 - local.latency.p99),
      f(x.cpuPerRequestUs.gateway, 0),
      String(x.errors),
    ];
  });
  return [
    `Shared budget (issue 17): one gateway, ${s.redis.split(' ').slice(0, 3).join(' ')} on loopback; small JSON calls one at a time on a key whose group budget is shared through Redis (reserve and settle, one Lua script each) and on a key with a budget of its own. Latency in ms; the store's total for the group afterwards: $${f(s.storeTotalUsd ?? NaN, 4)}.`,
    '',
    table(['budget', 'calls', 'p50', 'p99', '+p50', '+p99', 'gw CPU µs/call', 'errors'], rows),
  ];
}

/** The telemetry table: the socket path with metrics and traces on against off. */
function renderTelemetry(r) {
  const s = r.telemetry;
  const rows = [];
  for (const c of [1, 16]) {
    for (const name of TELEMETRY_VARIANTS) {
      const ratio = s[`c${c}`][name];
      const x = r.workloads.find((w) => w.workload === `telemetry ${name} c${c}`);
      rows.push([
        `json c${c}`,
        name,
        f(x.rps, 0),
        name === 'off' ? '' : `${f(ratio.rpsRatio, 3)}x`,
        f(x.latency.p50),
        f(x.latency.p99),
        name === 'off' ? '' : fs(ratio.addedP50Ms),
        name === 'off' ? '' : fs(ratio.addedP99Ms),
        f(x.cpuPerRequestUs.gateway, 0),
        name === 'off' ? '' : `${f(ratio.gatewayCpuRatio, 3)}x`,
        String(x.errors),
      ]);
    }
  }
  const o = s.outputs;
  return [
    `Telemetry (issue 18): the socket path through a gateway without telemetry, with the Prometheus endpoint only (scraped each second), and with the OTLP trace exporter too (to a loopback sink answering 200), fed from onCall; ${s.rounds} windows of ${s.durationMs} ms per variant, alternated; req/s and latency (ms) are means over the windows. Outputs live during the run: ${o ? `${o.scrapes} scrapes, ${o.exports} OTLP exports (${f(o.exportBytes / 1024, 0)} KiB)` : 'unknown'}.`,
    '',
    table(['workload', 'telemetry', 'req/s', '× off', 'p50', 'p99', '+p50', '+p99', 'gw CPU µs/req', '× off', 'errors'], rows),
  ];
}

/** The more-cores table: N gateway processes sharing a store against one of them. */
function renderCores(r) {
  const s = r.cores;
  if (!s.available) return [`More cores: not available: ${s.reason}`];
  const rows = ['one', 'all'].map((name) => {
    const x = r.workloads.find((w) => w.workload === `cores ${name} c16`);
    return [
      `json c16`,
      String(x.processes),
      f(x.rps, 0),
      name === 'one' ? '' : `${f(s.throughputRatio, 2)}x`,
      f(x.cpuPerRequestUs.gateway, 0),
      String(x.errors),
    ];
  });
  const b = s.budget;
  const refused = Object.entries(b.statuses)
    .filter(([status]) => status !== '200')
    .map(([status, n]) => `${n} × ${status}`)
    .join(', ');
  return [
    `More cores (issue 20): ${s.processes} gateway processes, each with its own state dir, sharing ${s.redis.split(' ').slice(0, 3).join(' ')} on loopback, against one of them; small JSON calls at c16 over a key on one process, then over a key on each (keys with a budget of their own), ${s.rounds} alternated rounds of ${s.windowMs} ms, medians; CPU per call is every process's together.`,
    '',
    table(['workload', 'processes', 'req/s', '× one', 'gw CPU µs/call', 'errors'], rows),
    '',
    `Shared budget across the ${s.processes} processes: $${b.budgetUsd} for the group, spent through a key on each at c16: ${b.answered} calls answered${refused ? `, ${refused}` : ''}${b.exhausted ? '' : ' (NOT SPENT OUT)'}; the store's total $${f(b.storeUsd, 6)}, the ledgers' $${f(b.ledgersUsd, 6)} (${b.perHostUsd.map((usd) => `$${f(usd, 6)}`).join(' + ')}): ${b.agree ? 'equal' : 'NOT EQUAL'}, ${b.withinBudget ? 'within the budget' : 'OVER THE BUDGET'}; the upstream saw ${s.keyMismatches ? `${s.keyMismatches} wrong keys` : 'the real key on every call'}.`,
  ];
}

/** What one operation of a workload is, for the profile summaries. */
const unit = (workload) => (workload.startsWith('tls connect') ? 'handshake' : workload.startsWith('download') ? 'download' : 'request');

function gwCpu(x) {
  const c = x.cpuPerRequestUs;
  const parts = [];
  if (c.bare !== undefined) parts.push(`bare ${f(c.bare, 0)}`);
  if (c.gateway !== undefined) parts.push(`gw ${f(c.gateway, 0)}`);
  if (c.shim !== undefined) parts.push(`shim ${f(c.shim, 0)}`);
  if (c.portkey !== undefined) parts.push(`portkey ${f(c.portkey, 0)}`);
  if (c.other !== undefined) parts.push(`other ${f(c.other, 0)}`);
  return parts.join(' + ') || '—';
}

/**
 * The gateway's own cost against the bare relay's: the medians of the alternated rounds (`r.againstBare`);
 * in a results file from before them, the single windows of the workloads.
 */
function againstBare(r, get) {
  const goals = { 'json c1': 1.3, 'json c16': 1.3, 'stream c1': 1.5, 'stream c16': 1.5 };
  const what = (w) => `${w.includes('json') ? 'CPU per request' : 'CPU per SSE event'}, ${w}`;
  if (r.againstBare) {
    return r.againstBare.workloads.map((x) => ({
      workload: x.workload,
      what: what(x.workload),
      gateway: x.gatewayCpuUs,
      bare: x.bareCpuUs,
      ratio: x.cpuRatio,
      range: x.cpuRatioRange,
      middle: middleHalf(x.rounds.map((round) => round.cpuRatio)),
      rpsRatio: x.rpsRatio,
      rpsRange: x.rpsRatioRange,
      rpsMiddle: middleHalf(x.rounds.map((round) => round.rpsRatio)),
      goal: goals[x.workload],
    }));
  }
  /** @param {string} w @param {string} p */
  const cpu = (w, p) => get(w, p)?.cpuPerRequestUs?.[p === 'bare' ? 'bare' : 'gateway'] / (get(w, p)?.eventsPerStream ?? 1);
  return Object.keys(goals).map((w) => ({
    workload: w,
    what: what(w),
    gateway: cpu(w, 'socket'),
    bare: cpu(w, 'bare'),
    ratio: cpu(w, 'socket') / cpu(w, 'bare'),
    range: undefined,
    middle: undefined,
    rpsRatio: get(w, 'socket')?.rps / get(w, 'bare')?.rps,
    rpsRange: undefined,
    rpsMiddle: undefined,
    goal: goals[w],
  }));
}

const range = (pair) => (pair ? `${f(pair[0], 2)}-${f(pair[1], 2)}` : '—');

/**
 * A figure's verdict against its goal (a ratio, or an added latency), from the middle half of the
 * alternated rounds (`middle`, their quartiles): met when three rounds in four meet it, not met when
 * three in four miss it, and otherwise within the noise: the machine moved more between windows than
 * the gap to the goal, and a rerun decides.
 * Without rounds (an old results file), the median's verdict.
 */
function roundsVerdict(median, middle, meets) {
  if (!middle) return meets(median) ? 'yes' : '**no**';
  if (meets(middle[0]) && meets(middle[1])) return 'yes';
  if (!meets(middle[0]) && !meets(middle[1])) return '**no**';
  return 'within noise';
}

function renderAgainstBare(r, get) {
  const measures = againstBare(r, get);
  const rows = measures.map((x) => [
    x.what,
    f(x.gateway, 2),
    f(x.bare, 2),
    f(x.ratio, 2),
    range(x.middle),
    range(x.range),
    x.goal ? `<= ${x.goal}` : '(information)',
  ]);
  const s16 = measures.find((x) => x.workload === 'stream c16');
  if (s16) rows.push(['streams/s, stream c16 (ratio)', '', '', f(s16.rpsRatio, 2), range(s16.rpsMiddle), range(s16.rpsRange), '>= 0.8']);
  const how = r.againstBare
    ? `${r.againstBare.rounds} alternated rounds of ${r.againstBare.windowMs} ms windows (bare, socket, bare, ...): medians, the middle half of the rounds' ratios (their quartiles, which the verdicts below use), and their whole range`
    : 'one window each';
  return [
    `The gateway (socket path) against the bare relay, same workloads, same run, ${how} (CPU in µs).`,
    '',
    table(['measure', 'gateway', 'bare relay', 'ratio', 'middle half', 'range', 'goal'], rows),
  ];
}

/** What a path added to direct's latency quantile `q` in each alternated round at json c1 that measured both. */
const addedInRounds = (rounds, name, q) => rounds.filter((round) => round[name] && round.direct).map((round) => round[name][q] - round.direct[q]);

/**
 * What a path adds to direct's latency quantile `q` at json c1: from the alternated rounds (each
 * round's path minus its direct window: their median and middle half), or in a results file from
 * before them, from the single windows.
 */
function addedAtC1(r, get, name, q) {
  const added = addedInRounds(r.latencyAtC1?.rounds ?? [], name, q);
  if (added.length) return { median: median(added), middle: middleHalf(added) };
  const x = get('json c1', name);
  const direct = get('json c1', 'direct');
  return x && direct ? { median: x.latency[q] - direct.latency[q], middle: undefined } : undefined;
}

function targets(r, get) {
  const t = [];
  const yes = (ok) => (ok === undefined ? 'n/a' : ok ? 'yes' : '**no**');
  const d1 = get('json c1', 'direct');
  for (const [q, goals] of [
    ['p50', { socket: 0.25, shim: 0.35 }],
    ['p99', { socket: 0.5, shim: 0.5 }],
  ]) {
    for (const [name, goal] of Object.entries(goals)) {
      const added = addedAtC1(r, get, name, q);
      const label = `added ${q} < ${goal} ms, ${name === 'shim' ? 'shim path' : 'socket'} (c1)`;
      if (!added) {
        t.push([label, 'not available', 'n/a']);
        continue;
      }
      const spread = added.middle ? ` (middle half ${fs(added.middle[0])} to ${fs(added.middle[1])})` : '';
      t.push([label, `${fs(added.median)} ms${spread}`, roundsVerdict(added.median, added.middle, (ms) => ms < goal)]);
    }
  }
  const bareRows = againstBare(r, get);
  for (const x of bareRows.filter((row) => row.goal !== undefined)) {
    t.push([
      `${x.what} <= ${x.goal}x the bare relay's`,
      `${f(x.ratio, 2)}x (${f(x.gateway, 1)} vs ${f(x.bare, 1)} µs; middle half ${range(x.middle)})`,
      roundsVerdict(x.ratio, x.middle, (ratio) => ratio <= x.goal),
    ]);
  }
  const stream16 = bareRows.find((x) => x.workload === 'stream c16');
  t.push([
    'stream throughput >= 0.8x the bare relay (c16)',
    `${f(stream16?.rpsRatio, 2)}x (middle half ${range(stream16?.rpsMiddle)})`,
    stream16 ? roundsVerdict(stream16.rpsRatio, stream16.rpsMiddle, (ratio) => ratio >= 0.8) : 'n/a',
  ]);
  // Stalls only where the upstream writes steadily (paced); direct and bare for reference. stream c64's
  // stalls are in the streaming table only: there even direct stalls on 2 cores.
  for (const w of ['paced c16', 'paced c64']) {
    for (const p of ['direct', 'bare', 'socket', 'shim']) {
      const x = get(w, p);
      const ref = p === 'direct' || p === 'bare';
      if (x)
        t.push([`${ref ? '(reference) ' : ''}no stalled stream (a gap > 100 ms), ${p} (${w})`, `${x.stalls} of ${x.requests}`, ref ? '' : yes(x.stalls === 0)]);
    }
  }
  for (const c of ['json c16', 'json c64']) {
    const d = get(c, 'direct');
    for (const p of ['socket', 'shim']) {
      const x = get(c, p);
      if (x) t.push([`added p99 < 2 ms, ${p} (${c.slice(5)})`, `${fs(x.latency.p99 - d.latency.p99)} ms`, yes(x.latency.p99 - d.latency.p99 < 2)]);
    }
  }
  const pd = get('paced c1', 'direct');
  for (const p of ['socket', 'shim']) {
    const x = get('paced c1', p);
    if (!x) continue;
    t.push([
      `stream event delay < 1 ms added, ${p} (paced, p50)`,
      `${fs(x.eventDelay.p50 - pd.eventDelay.p50)} ms`,
      yes(x.eventDelay.p50 - pd.eventDelay.p50 < 1),
    ]);
    t.push([
      `stream event delay < 1 ms added, ${p} (paced, p99)`,
      `${fs(x.eventDelay.p99 - pd.eventDelay.p99)} ms`,
      yes(x.eventDelay.p99 - pd.eventDelay.p99 < 1),
    ]);
  }
  for (const w of ['stream c1', 'paced c1']) {
    const d = get(w, 'direct');
    for (const p of ['socket', 'shim']) {
      const x = get(w, p);
      // Coalescing: the gateway delivering the same events in fewer reads than the upstream's own socket does.
      if (x)
        t.push([
          `no coalescing, ${p} (${w}: HTTP chunks per stream vs direct)`,
          `${f(x.readsPerStream, 0)} vs ${f(d.readsPerStream, 0)} (${f(x.eventsPerStream, 0)} events)`,
          yes(x.readsPerStream >= 0.9 * d.readsPerStream),
        ]);
    }
  }
  const d16 = get('json c16', 'direct');
  const s16 = get('json c16', 'socket');
  t.push(['throughput socket >= 40% of direct (c16)', `${f((100 * s16.rps) / d16.rps, 0)}%`, yes(s16.rps / d16.rps >= 0.4)]);
  const mem = r.keys.memory[10000] ?? r.keys.memory[1000];
  t.push([
    `< 20 KB per idle live key (RSS, ${mem.keys} keys)`,
    `${f(mem.rssPerKey / 1000, 2)} KB (heap ${f(mem.heapPerKey / 1000, 2)} KB)`,
    yes(mem.rssPerKey < 20_000),
  ]);
  const p16 = get('json c16', 'portkey');
  const h16 = get('json c16', 'shim');
  if (p16) {
    t.push(['>= 2x Portkey throughput (c16), socket', `${f(s16.rps / p16.rps, 2)}x (${f(s16.rps, 0)} vs ${f(p16.rps, 0)} req/s)`, yes(s16.rps / p16.rps >= 2)]);
    if (h16) t.push(['>= 2x Portkey throughput (c16), shim path', `${f(h16.rps / p16.rps, 2)}x`, yes(h16.rps / p16.rps >= 2)]);
    const pk1 = get('json c1', 'portkey');
    t.push(['(info) Portkey added p50 / p99 (c1)', `${fs(pk1.latency.p50 - d1.latency.p50)} / ${fs(pk1.latency.p99 - d1.latency.p99)} ms`, '']);
  } else {
    t.push(['>= 2x Portkey throughput (c16)', 'Portkey not available', 'n/a']);
  }
  const o1 = get('json c1', 'other');
  const o16 = get('json c16', 'other');
  if (o1 && o16) {
    t.push(['(info) other added p50 / p99 (c1)', `${fs(o1.latency.p50 - d1.latency.p50)} / ${fs(o1.latency.p99 - d1.latency.p99)} ms`, '']);
    t.push(['(info) socket throughput against other (c16)', `${f(s16.rps / o16.rps, 2)}x (${f(s16.rps, 0)} vs ${f(o16.rps, 0)} req/s)`, '']);
  }
  const cores = r.cores;
  if (cores?.available) {
    const b = cores.budget;
    t.push([
      `a group budget shared by ${cores.processes} gateway processes holds (spent out; store = their ledgers, within it)`,
      `$${f(b.storeUsd, 6)} of $${b.budgetUsd}`,
      yes(b.held),
    ]);
    t.push([`(info) ${cores.processes} gateway processes against one, json c16`, `${f(cores.throughputRatio, 2)}x req/s`, '']);
  }
  const mism = r.workloads.filter((x) => x.path !== 'direct').reduce((s, x) => s + (x.keyMismatches ?? 0), 0);
  t.push(['upstream saw the real key on every gateway request', `${mism} mismatches`, yes(mism === 0)]);
  return t;
}

(ONLY ? onlyPart() : main()).catch((error) => {
  console.error(error);
  for (const child of children) child.kill('SIGKILL');
  process.exit(1);
});
